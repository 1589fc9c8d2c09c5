"""``homeserver migrate``: bring the database schema up to date, then exit.

``homeserver run`` applies migrations at start-up too; this command lets an
operator do it on its own (before a rolling upgrade, say) and see what ran.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from homeserver.cli._common import report_config_error
from homeserver.config import ConfigError, load_config
from storage.database import Database
from storage.errors import StorageError
from storage.migrations import apply_migrations, discover_migrations

__all__ = ["add_parser", "migrate"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "migrate",
        help="Apply pending database migrations and exit.",
        description="Connect to the database the config names and apply every schema "
        "migration it lacks, each in its own transaction. Prints what was applied, or "
        "that the schema is up to date. Exits 0 on success, 1 if the database is "
        "unavailable, newer than this Concord, or a migration fails (that migration is "
        "rolled back whole).",
    )
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="the YAML config")
    p.set_defaults(func=migrate)


def migrate(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        return report_config_error("homeserver migrate", args.config, e)
    # The config holds durations in milliseconds.
    timeout_s = config.database.connect_timeout / 1000
    try:
        applied = asyncio.run(_apply(config.database.url, timeout_s))
    except StorageError as e:
        # DatabaseUnavailable, DatabaseTooNew, MigrationFailed, InvalidDatabaseURL:
        # each message says what is wrong and with which database or file.
        print(f"homeserver migrate: {e}", file=sys.stderr)
        return 1
    labels = {m.version: m.label for m in discover_migrations()}
    if applied:
        for version in applied:
            print(f"applied {labels[version]}")
    else:
        latest = max(labels, default=0)
        print(f"up to date (latest migration {labels.get(latest, '0000')})")
    return 0


async def _apply(url: str, connect_timeout: float) -> list[int]:
    db = await Database.open(url, connect_timeout=connect_timeout)
    try:
        return await apply_migrations(db)
    finally:
        await db.close()
