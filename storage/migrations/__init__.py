"""Numbered schema migrations, applied in order, each exactly once.

A migration is a file in this directory named ``NNNN_what_it_does.sql``: the
number in the name fixes the order (never a position in a list). Where the
engines need different SQL, ``NNNN_name.sqlite.sql`` and
``NNNN_name.postgres.sql`` replace the plain file for that engine; a version
must have a file for each engine, plain or specific.

:func:`apply_migrations` runs each missing migration in its own transaction
together with its row in ``schema_migrations``, so a migration is either
applied and recorded, or neither. See ``docs/development/database_schema.md``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from storage.database import Database
from storage.errors import DatabaseTooNew, MigrationFailed

__all__ = ["Migration", "apply_migrations", "discover_migrations", "MIGRATIONS_DIR"]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent

ENGINES = ("sqlite", "postgres")

_FILENAME = re.compile(
    r"^(?P<version>\d+)_(?P<name>[a-z0-9_]+?)(?:\.(?P<engine>sqlite|postgres))?\.sql$"
)

# Serialises migration runs of several processes starting at once.
_LOCK_KEY = "concord.schema_migrations"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_ts BIGINT NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    # Engine name -> file; the key None holds the plain, engine-neutral file.
    files: dict[str | None, Path] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    def file_for(self, engine: str) -> Path:
        path = self.files.get(engine) or self.files.get(None)
        if path is None:
            raise MigrationFailed(
                self.label, f"no {self.label}.sql or {self.label}.{engine}.sql for {engine}"
            )
        return path


def discover_migrations(directory: Path | str | None = None) -> list[Migration]:
    """The migrations in ``directory`` (default: this package), by version.

    Raises :class:`MigrationFailed` for a ``.sql`` file whose name does not
    follow the pattern, two names for one number, or a version that lacks a
    file for some engine, so that a typo fails loudly rather than skipping a
    migration.
    """
    root = Path(directory) if directory is not None else MIGRATIONS_DIR
    found: dict[int, Migration] = {}
    for path in sorted(root.iterdir()):
        if not path.name.endswith(".sql"):
            continue
        m = _FILENAME.match(path.name)
        if m is None:
            raise MigrationFailed(
                path.name,
                "file name does not match NNNN_name.sql, NNNN_name.sqlite.sql or "
                "NNNN_name.postgres.sql (lower-case name)",
            )
        version = int(m["version"])
        migration = found.setdefault(version, Migration(version, m["name"]))
        if migration.name != m["name"]:
            raise MigrationFailed(
                path.name, f"version {version} already has another name, {migration.label}"
            )
        migration.files[m["engine"]] = path
    for migration in found.values():
        for engine in ENGINES:
            migration.file_for(engine)
    return [found[v] for v in sorted(found)]


async def apply_migrations(db: Database, directory: Path | str | None = None) -> list[int]:
    """Bring ``db``'s schema up to date; return the versions applied, in order.

    Raises :class:`DatabaseTooNew` (and changes nothing) if the database
    records a version this code does not have, and :class:`MigrationFailed`
    if a migration fails, after rolling that migration back; migrations
    before it stay applied.

    Safe to run from several processes at once: each transaction takes the
    same cross-process lock and re-checks what is applied.
    """
    migrations = discover_migrations(directory)
    async with db.transaction("schema_migrations_init") as txn:
        await txn.lock(_LOCK_KEY)
        await txn.execute(_CREATE_TABLE)
        applied = {int(r[0]) for r in await txn.fetch("SELECT version FROM schema_migrations")}

    known = {m.version for m in migrations}
    unknown = applied - known
    if unknown:
        raise DatabaseTooNew(sorted(unknown), max(known, default=0))

    done: list[int] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        if await _apply_one(db, migration):
            done.append(migration.version)
    return done


async def _apply_one(db: Database, migration: Migration) -> bool:
    """Apply one migration with its record; False if another process beat us to it."""
    path = migration.file_for(db.engine)
    try:
        sql = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MigrationFailed(path.name, f"cannot read it: {e}") from e
    try:
        async with db.transaction(f"migration_{migration.label}") as txn:
            await txn.lock(_LOCK_KEY)
            already = await txn.fetchval(
                "SELECT version FROM schema_migrations WHERE version = $1", migration.version
            )
            if already is not None:
                return False
            await txn.execute_script(sql)
            await txn.execute(
                "INSERT INTO schema_migrations (version, name, applied_ts) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                db.clock.time_ms(),
            )
    except MigrationFailed:
        raise
    except Exception as e:
        raise MigrationFailed(path.name, f"{type(e).__name__}: {_first_line(e)}") from e
    logger.info("Applied schema migration %s", path.name)
    return True


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else repr(e)
