"""Database engines: the only modules that know which driver is underneath.

:func:`open_engine` picks one by the URL's scheme; drivers are imported only
when their engine is used, so a SQLite node never loads asyncpg.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from storage.engines._base import Engine, EngineConnection, Row
from storage.errors import InvalidDatabaseURL, redact_url

__all__ = ["Engine", "EngineConnection", "Row", "open_engine"]

SQLITE_SCHEMES = frozenset({"sqlite"})
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})


async def open_engine(url: str, connect_timeout: float) -> Engine:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as e:
        raise InvalidDatabaseURL(f"Malformed database URL {redact_url(url)}: {e}") from None
    if scheme in SQLITE_SCHEMES:
        from storage.engines.sqlite import SqliteEngine

        return await SqliteEngine.connect(url, connect_timeout)
    if scheme in POSTGRES_SCHEMES:
        from storage.engines.postgres import PostgresEngine

        return await PostgresEngine.connect(url, connect_timeout)
    raise InvalidDatabaseURL(
        f"Unsupported database URL {redact_url(url)}: expected sqlite:///ABSOLUTE/PATH.db, "
        "sqlite:///:memory: or postgresql://USER@HOST:PORT/DBNAME"
    )
