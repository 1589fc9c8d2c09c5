"""One async Database over SQLite and PostgreSQL.

SQL is written once, in PostgreSQL's dialect of placeholders (``$1, $2``);
the SQLite engine rewrites it. The methods mirror asyncpg's (``execute``,
``fetch``, ``fetchrow``, ``fetchval``) and return the same :class:`Row` type
on both engines::

    db = await Database.open("sqlite:///var/lib/concord/homeserver.db")
    row = await db.fetchrow("SELECT value FROM node_info WHERE key = $1", "node_id")
    async with db.transaction("store_node_id") as txn:
        await txn.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "node_id", v)

Every transaction has a name, and is passed explicitly to the code that runs
inside it (by convention, functions taking one end in ``_txn``). Every query
is timed; one slower than :data:`SLOW_QUERY_SECONDS` is logged as a warning
with the name of its transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar, cast

from federation.clock import Clock, RealClock
from storage.engines import Engine, EngineConnection, Row, open_engine
from storage.errors import TransactionFailed, redact_url

__all__ = ["Database", "EngineName", "Row", "SLOW_QUERY_SECONDS", "Transaction"]

logger = logging.getLogger(__name__)

EngineName = Literal["sqlite", "postgres"]

SLOW_QUERY_SECONDS = 1.0
SLOW_TRANSACTION_SECONDS = 1.0

T = TypeVar("T")

# Label for statements run outside any transaction, in slow-query warnings.
_NO_TRANSACTION = "-"


def _shorten(sql: str, limit: int = 200) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class Database:
    """A connection pool to one database, on either engine.

    Open with :meth:`open`; close with :meth:`close`.
    """

    def __init__(self, engine: Engine, url: str, clock: Clock) -> None:
        self._engine = engine
        self._url = redact_url(url)
        self.clock = clock
        # Tasks inside a transaction, to refuse `db.*` calls from them (see
        # `_refuse_inside_transaction`); detection only, nothing reads it to
        # pick a connection.
        self._txn_tasks: dict[asyncio.Task[Any], str] = {}

    @classmethod
    async def open(
        cls,
        url: str,
        connect_timeout: float = 10.0,
        *,
        clock: Clock | None = None,
    ) -> Database:
        """Connect to the database at ``url``.

        Raises :class:`storage.errors.DatabaseUnavailable` within
        ``connect_timeout`` seconds if it does not answer, and
        :class:`storage.errors.InvalidDatabaseURL` for an unknown scheme.
        """
        engine = await open_engine(url, connect_timeout)
        return cls(engine, url, clock or RealClock())

    @property
    def engine(self) -> EngineName:
        return cast(EngineName, self._engine.name)

    @property
    def url(self) -> str:
        """The URL this database was opened with, password hidden."""
        return self._url

    async def close(self) -> None:
        await self._engine.close()

    # Single statements, each in its own implicit transaction.

    async def execute(self, sql: str, *args: Any) -> None:
        await self._statement(sql, lambda conn: conn.execute(sql, args))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._statement(sql, lambda conn: conn.fetch(sql, args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    async def _statement(self, sql: str, run: Callable[[EngineConnection], Awaitable[T]]) -> T:
        self._refuse_inside_transaction()
        async with self._engine.statement(sql) as conn:
            return await timed(self.clock, _NO_TRANSACTION, sql, run(conn))

    def _refuse_inside_transaction(self) -> None:
        # A task holding a transaction that called `db.*` would read around
        # its own uncommitted writes, or on SQLite wait forever for the write
        # lock it holds itself. Refuse on both engines, so a test on either
        # catches it.
        task = asyncio.current_task()
        name = self._txn_tasks.get(task) if task is not None else None
        if name is not None:
            raise RuntimeError(
                f"called the Database while this task is inside transaction {name!r}; "
                "use that transaction object instead"
            )

    @asynccontextmanager
    async def transaction(self, name: str) -> AsyncIterator[Transaction]:
        """A write transaction, committed when the block ends and rolled back
        if it raises.

        ``name`` says what the transaction is for; it appears in slow-query
        and slow-transaction warnings. On SQLite transactions run one at a
        time; on PostgreSQL they run concurrently (see
        :meth:`Transaction.lock`).
        """
        if not name:
            raise ValueError("every transaction needs a name")
        self._refuse_inside_transaction()
        task = asyncio.current_task()
        started = self.clock.monotonic()
        async with self._engine.transaction() as conn:
            txn = Transaction(name, conn, self.clock)
            if task is not None:
                self._txn_tasks[task] = name
            try:
                yield txn
                if txn._failed is not None:
                    # The block caught a statement's error and carried on:
                    # committing now would keep half its work on SQLite.
                    raise TransactionFailed(
                        f"transaction {name!r} ended normally after a statement in it "
                        f"failed ({txn._failed!r}); rolled back"
                    ) from txn._failed
            finally:
                txn._active = False
                if task is not None:
                    self._txn_tasks.pop(task, None)
        elapsed = self.clock.monotonic() - started
        if elapsed > SLOW_TRANSACTION_SECONDS:
            logger.warning("Slow transaction %s took %.3f s", name, elapsed)


class Transaction:
    """An open transaction, handed to the code that runs inside it.

    After a statement in it fails, the transaction refuses further statements
    (:class:`storage.errors.TransactionFailed`) and is rolled back at the end
    of its block, even if the block caught the error (it then raises
    :class:`~storage.errors.TransactionFailed`): PostgreSQL behaves so, and
    SQLite is made to match.
    """

    def __init__(self, name: str, conn: EngineConnection, clock: Clock) -> None:
        self.name = name
        self._conn = conn
        self._clock = clock
        self._active = True
        self._failed: BaseException | None = None

    async def execute(self, sql: str, *args: Any) -> None:
        await self._run(sql, self._conn.execute(sql, args))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._run(sql, self._conn.fetch(sql, args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    async def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None:
        await self._run(sql, self._conn.executemany(sql, args_seq))

    async def execute_script(self, sql: str) -> None:
        """Run several ``;``-separated statements, without parameters, inside
        this transaction. For migrations."""
        await self._run(sql, self._conn.execute_script(sql))

    async def lock(self, key: str) -> None:
        """Hold a lock named ``key`` until this transaction ends, exclusive
        across every process using the database.

        Take it before a read-modify-write (read a counter, write it plus
        one). On PostgreSQL it is an advisory transaction lock; on SQLite,
        write transactions already exclude each other, so it costs nothing.
        """
        await self._run(f"lock {key}", self._conn.lock(key))

    async def _run(self, sql: str, op: Awaitable[T]) -> T:
        if not self._active:
            _close_unawaited(op)
            raise RuntimeError(f"transaction {self.name!r} has ended")
        if self._failed is not None:
            _close_unawaited(op)
            raise TransactionFailed(
                f"transaction {self.name!r} already failed ({self._failed!r}); "
                "it will be rolled back"
            ) from self._failed
        try:
            return await timed(self._clock, self.name, sql, op)
        except BaseException as e:
            self._failed = e
            raise


def _close_unawaited(op: Awaitable[Any]) -> None:
    close = getattr(op, "close", None)
    if close is not None:
        close()


async def timed(clock: Clock, label: str, sql: str, op: Awaitable[T]) -> T:
    """Await ``op``, warning if it takes longer than :data:`SLOW_QUERY_SECONDS`."""
    started = clock.monotonic()
    try:
        return await op
    finally:
        elapsed = clock.monotonic() - started
        if elapsed > SLOW_QUERY_SECONDS:
            logger.warning("Slow query in %s took %.3f s: %s", label, elapsed, _shorten(sql))
