"""PostgreSQL through an asyncpg connection pool.

asyncpg already speaks ``$1`` placeholders, so SQL passes through unchanged.
Transactions run at PostgreSQL's default isolation (READ COMMITTED) on a
pooled connection each; unlike SQLite, writers here really run concurrently,
so read-modify-write code takes :meth:`Transaction.lock` first (a
transaction-scoped advisory lock, which SQLite does not need).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import asyncpg

from storage.engines._base import Args, Engine, EngineConnection, Row, column_index
from storage.errors import DatabaseUnavailable, IntegrityError, UniqueViolation

__all__ = ["PostgresEngine"]

POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10


def _raise_storage_error(e: asyncpg.IntegrityConstraintViolationError) -> NoReturn:
    if isinstance(e, asyncpg.UniqueViolationError):
        raise UniqueViolation(str(e)) from e
    raise IntegrityError(str(e)) from e


def _rows(records: list[Any]) -> list[Row]:
    if not records:
        return []
    columns = column_index(list(records[0].keys()))
    return [Row(tuple(record), columns) for record in records]


class _PostgresConnection:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, args: Args) -> None:
        try:
            await self._conn.execute(sql, *args)
        except asyncpg.IntegrityConstraintViolationError as e:
            _raise_storage_error(e)

    async def fetch(self, sql: str, args: Args) -> list[Row]:
        try:
            records = await self._conn.fetch(sql, *args)
        except asyncpg.IntegrityConstraintViolationError as e:
            _raise_storage_error(e)
        return _rows(records)

    async def executemany(self, sql: str, args_seq: Iterable[Args]) -> None:
        try:
            await self._conn.executemany(sql, [tuple(a) for a in args_seq])
        except asyncpg.IntegrityConstraintViolationError as e:
            _raise_storage_error(e)

    async def execute_script(self, sql: str) -> None:
        # Without arguments asyncpg uses the simple query protocol, which runs
        # several statements in one go (inside the open transaction).
        try:
            await self._conn.execute(sql)
        except asyncpg.IntegrityConstraintViolationError as e:
            _raise_storage_error(e)

    async def lock(self, key: str) -> None:
        await self._conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)


class PostgresEngine(Engine):
    name = "postgres"

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, connect_timeout: float) -> PostgresEngine:
        try:
            # asyncpg's own `timeout` bounds each connection attempt; the outer
            # one bounds the whole pool set-up, which may try several
            # addresses for one host name.
            async with asyncio.timeout(connect_timeout):
                pool = await asyncpg.create_pool(
                    url,
                    min_size=POOL_MIN_SIZE,
                    max_size=POOL_MAX_SIZE,
                    timeout=connect_timeout,
                )
        except TimeoutError:
            raise DatabaseUnavailable(
                url, connect_timeout, f"no answer within {connect_timeout:g} s"
            ) from None
        except ConnectionRefusedError as e:
            raise DatabaseUnavailable(url, connect_timeout, "connection refused") from e
        except OSError as e:
            reason = e.strerror or str(e) or type(e).__name__
            raise DatabaseUnavailable(url, connect_timeout, f"cannot connect: {reason}") from e
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            # Wrong database name, authentication refused, server starting up.
            raise DatabaseUnavailable(url, connect_timeout, f"{type(e).__name__}: {e}") from e
        return cls(pool)

    @asynccontextmanager
    async def statement(self, sql: str) -> AsyncIterator[EngineConnection]:
        async with self._pool.acquire() as conn:
            yield _PostgresConnection(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[EngineConnection]:
        async with self._pool.acquire() as conn:
            tr = conn.transaction()
            await tr.start()
            try:
                yield _PostgresConnection(conn)
            except BaseException:
                await tr.rollback()
                raise
            try:
                await tr.commit()
            except asyncpg.IntegrityConstraintViolationError as e:
                # A deferred constraint checked at commit.
                _raise_storage_error(e)

    async def close(self) -> None:
        await self._pool.close()
