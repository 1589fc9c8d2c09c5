"""What the subcommands that work on the config's database share.

They load the config, report a bad one the same way, open (and migrate) the
database it names and turn the errors they expect into a one-line reason
and exit status 1.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from federation.clock import RealClock
from homeserver.config import ConfigError, HomeserverConfig, load_config
from homeserver.tenants import TenantRegistry
from storage.database import Database
from storage.migrations import apply_migrations

__all__ = ["open_database", "open_registry", "report_config_error", "run_with_config"]


def report_config_error(prog: str, config_path: str, error: ConfigError) -> int:
    """Print every problem of the config at ``config_path``; exit status 1."""
    print(f"{prog}: {config_path}: invalid configuration:", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def run_with_config(
    prog: str,
    config_path: str,
    main: Callable[[HomeserverConfig], Coroutine[Any, Any, None]],
    errors: tuple[type[Exception], ...],
) -> int:
    """Load the config and run ``main(config)``; exit status 0, or 1 with
    ``prog: reason`` for a bad config or one of ``errors``."""
    try:
        config = load_config(config_path)
    except ConfigError as e:
        return report_config_error(prog, config_path, e)
    try:
        asyncio.run(main(config))
    except errors as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    return 0


async def open_database(config: HomeserverConfig) -> Database:
    """The config's database, opened and migrated (closed again if that fails)."""
    # The config holds durations in milliseconds.
    db = await Database.open(
        config.database.url, connect_timeout=config.database.connect_timeout / 1000
    )
    try:
        await apply_migrations(db)
    except BaseException:
        await db.close()
        raise
    return db


async def open_registry(config: HomeserverConfig) -> tuple[Database, TenantRegistry]:
    """The node's database (migrated) and its tenant registry, for CLI tools."""
    db = await open_database(config)
    try:
        registry = await TenantRegistry.load(config=config, database=db, clock=RealClock())
    except BaseException:
        await db.close()
        raise
    return db, registry
