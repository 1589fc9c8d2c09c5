"""SQLite through aiosqlite: one writer, several readers, WAL.

SQLite allows one writer at a time per file. Rather than let concurrent
writers collide and fail with "database is locked", every write in this
process goes through a single connection behind an :class:`asyncio.Lock`, and
each write transaction starts with ``BEGIN IMMEDIATE`` so that it takes the
file's write lock up front (another *process* then waits up to the busy
timeout instead of failing half-way through). In WAL mode readers do not block
the writer, so plain reads run on a small pool of read-only connections. An
in-memory database is private to its connection, so there everything shares
the writer.

Every connection gets the same settings: ``journal_mode=WAL`` (stored in the
file), ``foreign_keys=ON`` (off by default in SQLite), ``synchronous=NORMAL``
(durable across application crashes; in WAL mode a power loss can drop the
last commits but never corrupts) and a busy timeout.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, NoReturn, cast

import aiosqlite

from storage.engines._base import Args, Engine, EngineConnection, Row, column_index
from storage.errors import (
    DatabaseUnavailable,
    IntegrityError,
    InvalidDatabaseURL,
    UniqueViolation,
)

__all__ = ["SqliteEngine", "convert_placeholders", "split_statements"]

# How long a connection waits for another process's lock before failing.
BUSY_TIMEOUT_MS = 30_000
MAX_READERS = 4

# Tokens that may contain a "$1" which is not a placeholder, matched first so
# the placeholder alternative never sees their insides.
_SQL_TOKEN = re.compile(
    r"""
      '(?:[^']|'')*'          # string literal, '' escapes a quote
    | "(?:[^"]|"")*"          # quoted identifier
    | `[^`]*`                 # MySQL-style identifier, which SQLite accepts
    | --[^\n]*                # line comment
    | /\*.*?(?:\*/|\Z)        # block comment
    | \$(\d+)                 # placeholder: $1, $10, ...
    """,
    re.VERBOSE | re.DOTALL,
)

_READ_ONLY_START = re.compile(r"\s*\(*\s*(SELECT|VALUES|EXPLAIN|WITH)\b", re.IGNORECASE)
_WRITE_KEYWORD = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)

# Extended result codes (https://www.sqlite.org/rescode.html) for violations of
# uniqueness: UNIQUE, PRIMARY KEY and INTEGER PRIMARY KEY (rowid).
_UNIQUE_CODES = frozenset({2067, 1555, 2579})


@functools.lru_cache(maxsize=4096)
def convert_placeholders(sql: str) -> str:
    """Rewrite ``$N`` placeholders to SQLite's numbered ``?N``.

    Numbered rather than bare ``?`` so that ``$2`` before ``$1``, or ``$1``
    used twice, bind the same arguments as on PostgreSQL. ``$1`` inside string
    literals, quoted identifiers and comments is left alone.
    """

    def replace(m: re.Match[str]) -> str:
        number = m.group(1)
        return f"?{number}" if number is not None else m.group(0)

    return _SQL_TOKEN.sub(replace, sql)


def split_statements(script: str) -> list[str]:
    """Split a script into complete statements.

    ``sqlite3.executescript`` would commit the surrounding transaction first,
    so scripts are run statement by statement instead. SQLite's own
    :func:`sqlite3.complete_statement` decides where a statement ends, which
    gets semicolons inside literals, comments and trigger bodies right.
    """
    statements: list[str] = []
    buffer = ""
    pieces = script.split(";")
    for i, piece in enumerate(pieces):
        buffer += piece
        if i < len(pieces) - 1:
            buffer += ";"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


def is_read_only(sql: str) -> bool:
    """Whether ``sql`` only reads, and may therefore run on a reader connection.

    Errs towards "writes": a false "writes" merely serialises a read behind
    the writer, a false "reads" would fail on a read-only connection.
    """
    if not _READ_ONLY_START.match(sql):
        return False
    return _WRITE_KEYWORD.search(sql) is None


def path_from_url(url: str) -> str:
    """``sqlite:///abs/path.db`` -> ``/abs/path.db``; ``sqlite:///:memory:`` -> ``:memory:``."""
    rest = url[len("sqlite://") :] if url.lower().startswith("sqlite://") else ""
    if rest in ("/:memory:", ":memory:"):
        return ":memory:"
    if not rest.startswith("/") or rest == "/":
        raise InvalidDatabaseURL(
            f"SQLite URL {url!r} must name an absolute path: sqlite:///ABSOLUTE/PATH.db"
        )
    return rest


class _RowFactory:
    """sqlite3 row factory building :class:`Row`; runs on the connection's thread.

    sqlite3 hands the same ``description`` object to every row of one result,
    so the column index is computed once per result.
    """

    def __init__(self) -> None:
        self._description: Any = None
        self._columns: dict[str, int] = {}

    def __call__(self, cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
        description = cursor.description
        if description is not self._description:
            self._description = description
            self._columns = column_index([d[0] for d in description])
        return Row(values, self._columns)


def _raise_storage_error(e: sqlite3.IntegrityError) -> NoReturn:
    if getattr(e, "sqlite_errorcode", None) in _UNIQUE_CODES:
        raise UniqueViolation(str(e)) from e
    raise IntegrityError(str(e)) from e


class _SqliteConnection:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, args: Args) -> None:
        await self._fetch_converted(convert_placeholders(sql), args)

    async def fetch(self, sql: str, args: Args) -> list[Row]:
        return await self._fetch_converted(convert_placeholders(sql), args)

    async def _fetch_converted(self, sql: str, args: Args) -> list[Row]:
        try:
            rows = await self._conn.execute_fetchall(sql, tuple(args))
        except sqlite3.IntegrityError as e:
            _raise_storage_error(e)
        return cast(list[Row], rows)

    async def executemany(self, sql: str, args_seq: Iterable[Args]) -> None:
        try:
            async with self._conn.executemany(
                convert_placeholders(sql), [tuple(a) for a in args_seq]
            ):
                pass
        except sqlite3.IntegrityError as e:
            _raise_storage_error(e)

    async def execute_script(self, sql: str) -> None:
        for statement in split_statements(sql):
            await self._fetch_converted(statement, ())

    async def lock(self, key: str) -> None:
        # A write transaction already holds the file's only write lock.
        return None


class SqliteEngine(Engine):
    name = "sqlite"

    def __init__(self, path: str, writer: aiosqlite.Connection) -> None:
        self._path = path
        self._writer = writer
        self._in_memory = path == ":memory:"
        self._write_lock = asyncio.Lock()
        self._readers_idle: list[aiosqlite.Connection] = []
        self._reader_slots = asyncio.Semaphore(MAX_READERS)
        self._closed = False

    @classmethod
    async def connect(cls, url: str, connect_timeout: float) -> SqliteEngine:
        path = path_from_url(url)
        try:
            async with asyncio.timeout(connect_timeout):
                if path != ":memory:":
                    # Find an unusable file here, on a plain thread: an
                    # aiosqlite connection that fails to open leaves its worker
                    # thread to finish after we return.
                    await asyncio.to_thread(_probe, path)
                writer = await _open_connection(path, reader=False)
        except TimeoutError:
            raise DatabaseUnavailable(
                url, connect_timeout, f"SQLite file {path} did not open in time (locked?)"
            ) from None
        except (sqlite3.Error, OSError) as e:
            raise DatabaseUnavailable(url, connect_timeout, f"cannot open {path}: {e}") from e
        return cls(path, writer)

    @asynccontextmanager
    async def statement(self, sql: str) -> AsyncIterator[EngineConnection]:
        if not self._in_memory and is_read_only(sql):
            async with self._reader() as conn:
                yield conn
        else:
            async with self._write_lock_held():
                yield _SqliteConnection(self._writer)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[EngineConnection]:
        async with self._write_lock_held():
            conn = self._writer
            try:
                await conn.execute_fetchall("BEGIN IMMEDIATE")
                yield _SqliteConnection(conn)
            except BaseException:
                await _rollback_quietly(conn)
                raise
            try:
                await conn.execute_fetchall("COMMIT")
            except BaseException:
                await _rollback_quietly(conn)
                raise

    @asynccontextmanager
    async def _write_lock_held(self) -> AsyncIterator[None]:
        self._check_open()
        async with self._write_lock:
            yield

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[EngineConnection]:
        self._check_open()
        async with self._reader_slots:
            if self._readers_idle:
                conn = self._readers_idle.pop()
            else:
                conn = await _open_connection(self._path, reader=True)
            try:
                yield _SqliteConnection(conn)
            finally:
                # aiosqlite runs a connection's calls in order on its own
                # thread, so even after a cancelled query the next user's
                # statement simply queues behind it.
                if self._closed:
                    await conn.close()
                else:
                    self._readers_idle.append(conn)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("database is closed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        readers, self._readers_idle = self._readers_idle, []
        for conn in readers:
            await conn.close()
        async with self._write_lock:
            await self._writer.close()


def _probe(path: str) -> None:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
    finally:
        conn.close()


async def _open_connection(path: str, *, reader: bool) -> aiosqlite.Connection:
    # isolation_level=None: the sqlite3 module must not open transactions
    # behind our back; we issue BEGIN IMMEDIATE / COMMIT ourselves.
    conn = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        # aiosqlite types row_factory as a class; any callable works.
        conn.row_factory = cast(type, _RowFactory())
        if not reader:
            rows = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
            mode = str(next(iter(rows))[0]).lower()
            if mode not in ("wal", "memory"):
                raise sqlite3.OperationalError(f"could not switch to WAL (journal_mode={mode})")
        await conn.execute_fetchall("PRAGMA foreign_keys = ON")
        await conn.execute_fetchall("PRAGMA synchronous = NORMAL")
        await conn.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if reader:
            await conn.execute_fetchall("PRAGMA query_only = ON")
    except Exception:
        await conn.close()
        raise
    except BaseException:
        # Cancelled, likely by the connect timeout while a statement waits on
        # a lock: close() would queue behind it, so only ask the thread to
        # close the connection and stop once that statement returns.
        conn.stop()
        raise
    return conn


async def _rollback_quietly(conn: aiosqlite.Connection) -> None:
    try:
        await conn.execute_fetchall("ROLLBACK")
    except sqlite3.OperationalError:
        # "cannot rollback - no transaction is active": BEGIN failed, or SQLite
        # already rolled back on its own after an error such as SQLITE_FULL.
        pass
