"""The Database contract, run against both engines."""

from __future__ import annotations

import asyncio

import pytest

from storage.database import Database, Row
from storage.errors import (
    IntegrityError,
    InvalidDatabaseURL,
    TransactionFailed,
    UniqueViolation,
)

COUNTER_TABLE = "CREATE TABLE counter (name TEXT PRIMARY KEY, n BIGINT NOT NULL)"


async def test_engine_matches_url(database: Database, database_url: str) -> None:
    expected = "sqlite" if database_url.startswith("sqlite:") else "postgres"
    assert database.engine == expected


async def test_crud(database: Database) -> None:
    await database.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "node_id", "abc")
    assert await database.fetchval("SELECT value FROM node_info WHERE key = $1", "node_id") == "abc"

    await database.execute("UPDATE node_info SET value = $2 WHERE key = $1", "node_id", "def")
    row = await database.fetchrow("SELECT key, value FROM node_info WHERE key = $1", "node_id")
    assert row is not None
    assert (row["key"], row["value"]) == ("node_id", "def")

    await database.execute("DELETE FROM node_info WHERE key = $1", "node_id")
    assert await database.fetchrow("SELECT key FROM node_info WHERE key = $1", "node_id") is None
    assert await database.fetchval("SELECT value FROM node_info WHERE key = $1", "node_id") is None
    assert await database.fetch("SELECT key FROM node_info") == []


async def test_rows_read_by_name_and_position(database: Database) -> None:
    await database.execute(
        "INSERT INTO node_info (key, value) VALUES ($1, $2), ($3, $4)", "a", "1", "b", "2"
    )
    rows = await database.fetch("SELECT key, value FROM node_info ORDER BY key")
    assert [type(r) for r in rows] == [Row, Row]
    first = rows[0]
    assert first["key"] == first[0] == "a"
    assert first["value"] == first[1] == "1"
    assert first[-1] == "1"
    assert len(first) == 2
    assert tuple(first) == ("a", "1")
    assert first.keys() == ["key", "value"]
    assert first.as_dict() == {"key": "a", "value": "1"}
    assert first.get("missing", 7) == 7
    assert "key" in first
    with pytest.raises(KeyError, match="missing"):
        first["missing"]
    with pytest.raises(IndexError):
        first[2]


async def test_integer_and_null_values_round_trip(database: Database) -> None:
    await database.execute(COUNTER_TABLE)
    big = 2**62 + 5
    await database.execute("INSERT INTO counter (name, n) VALUES ($1, $2)", "big", big)
    assert await database.fetchval("SELECT n FROM counter WHERE name = $1", "big") == big
    assert await database.fetchval("SELECT NULL") is None


async def test_placeholders_out_of_order_and_repeated(database: Database) -> None:
    row = await database.fetchrow(
        "SELECT CAST($2 AS TEXT) AS b, CAST($1 AS TEXT) AS a, CAST($1 AS TEXT) AS a2", "x", "y"
    )
    assert row is not None
    assert tuple(row) == ("y", "x", "x")


async def test_placeholder_ten_is_not_placeholder_one(database: Database) -> None:
    args = [f"v{i}" for i in range(1, 12)]
    row = await database.fetchrow(
        "SELECT CAST($10 AS TEXT) AS ten, CAST($1 AS TEXT) AS one, CAST($11 AS TEXT) AS eleven, "
        "CAST($2 AS TEXT), CAST($3 AS TEXT), CAST($4 AS TEXT), CAST($5 AS TEXT), CAST($6 AS TEXT), CAST($7 AS TEXT), CAST($8 AS TEXT), CAST($9 AS TEXT)",
        *args,
    )
    assert row is not None
    assert (row["ten"], row["one"], row["eleven"]) == ("v10", "v1", "v11")


async def test_dollar_inside_literals_and_comments_is_left_alone(database: Database) -> None:
    await database.execute(
        "INSERT INTO node_info (key, value) VALUES ($1, '$1 costs $10, isn''t it? $2')", "k"
    )
    assert (
        await database.fetchval("SELECT value FROM node_info WHERE key = $1", "k")
        == "$1 costs $10, isn't it? $2"
    )

    row = await database.fetchrow(
        """
        SELECT value AS "$1", -- $2 in a line comment
               /* $3 in a block comment */ '$1' AS lit
        FROM node_info WHERE key = $1
        """,
        "k",
    )
    assert row is not None
    assert row["$1"] == "$1 costs $10, isn't it? $2"
    assert row["lit"] == "$1"


async def test_transaction_commits(database: Database) -> None:
    async with database.transaction("test_commit") as txn:
        assert txn.name == "test_commit"
        await txn.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "a", "1")
        await txn.executemany(
            "INSERT INTO node_info (key, value) VALUES ($1, $2)", [("b", "2"), ("c", "3")]
        )
        # A transaction sees its own writes.
        assert await txn.fetchval("SELECT COUNT(*) FROM node_info") == 3
        row = await txn.fetchrow("SELECT value FROM node_info WHERE key = $1", "c")
        assert row is not None and row["value"] == "3"
    assert [
        tuple(r) for r in await database.fetch("SELECT key, value FROM node_info ORDER BY key")
    ] == [
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
    ]


class Boom(Exception):
    pass


async def test_transaction_rolls_back_on_exception(database: Database) -> None:
    await database.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "kept", "1")
    with pytest.raises(Boom):
        async with database.transaction("test_rollback") as txn:
            await txn.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "lost", "2")
            await txn.execute("UPDATE node_info SET value = $1 WHERE key = $2", "changed", "kept")
            await txn.execute("CREATE TABLE lost_table (x BIGINT)")
            raise Boom()
    rows = await database.fetch("SELECT key, value FROM node_info")
    assert [tuple(r) for r in rows] == [("kept", "1")]
    # DDL is transactional on both engines too.
    await database.execute("CREATE TABLE lost_table (x BIGINT)")
    # The connection is usable again afterwards.
    async with database.transaction("after_rollback") as txn:
        await txn.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "next", "3")
    assert await database.fetchval("SELECT COUNT(*) FROM node_info") == 2


async def test_transaction_rolls_back_when_cancelled(database: Database) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def writer() -> None:
        async with database.transaction("test_cancelled") as txn:
            await txn.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "lost", "1")
            entered.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await database.fetch("SELECT key FROM node_info") == []
    async with database.transaction("after_cancel") as txn:
        await txn.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "next", "1")
    assert await database.fetchval("SELECT COUNT(*) FROM node_info") == 1


async def test_unique_violation_is_a_storage_error(database: Database) -> None:
    await database.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "a", "1")
    with pytest.raises(UniqueViolation):
        await database.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "a", "2")
    with pytest.raises(IntegrityError) as info:
        await database.execute("INSERT INTO node_info (key, value) VALUES ($1, NULL)", "b")
    assert not isinstance(info.value, UniqueViolation)
    assert await database.fetchval("SELECT value FROM node_info WHERE key = $1", "a") == "1"


async def test_failed_statement_dooms_the_transaction(database: Database) -> None:
    await database.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "a", "1")
    # Catching the error does not save the transaction: it is rolled back.
    with pytest.raises(TransactionFailed, match="test_doomed"):
        async with database.transaction("test_doomed") as txn:
            await txn.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "b", "2")
            with pytest.raises(UniqueViolation):
                await txn.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "a", "x")
            # SQLite would carry on here; PostgreSQL would not. Both refuse.
            with pytest.raises(TransactionFailed):
                await txn.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "c", "3")
    assert [r[0] for r in await database.fetch("SELECT key FROM node_info")] == ["a"]


async def test_on_conflict_do_nothing_is_portable(database: Database) -> None:
    async with database.transaction("test_upsert") as txn:
        for value in ("1", "2"):
            await txn.execute(
                "INSERT INTO node_info (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                "a",
                value,
            )
    assert await database.fetchval("SELECT value FROM node_info WHERE key = $1", "a") == "1"


async def test_transaction_object_is_dead_after_its_block(database: Database) -> None:
    async with database.transaction("test_dead") as txn:
        pass
    with pytest.raises(RuntimeError, match="test_dead"):
        await txn.fetch("SELECT 1")


async def test_database_calls_inside_a_transaction_are_refused(database: Database) -> None:
    async with database.transaction("test_outer") as txn:
        with pytest.raises(RuntimeError, match="test_outer"):
            await database.fetch("SELECT 1")
        with pytest.raises(RuntimeError, match="test_outer"):
            async with database.transaction("test_inner"):
                pass
        assert await txn.fetchval("SELECT 1") == 1


async def test_transactions_need_a_name(database: Database) -> None:
    with pytest.raises(ValueError):
        async with database.transaction(""):
            pass


async def test_concurrent_read_modify_write_is_exact(database: Database) -> None:
    """20 tasks each read a counter and write it plus one; none is lost."""
    await database.execute(COUNTER_TABLE)
    await database.execute("INSERT INTO counter (name, n) VALUES ($1, $2)", "c", 0)

    async def increment() -> None:
        async with database.transaction("test_increment") as txn:
            await txn.lock("counter:c")
            n = await txn.fetchval("SELECT n FROM counter WHERE name = $1", "c")
            # Let the other tasks run between the read and the write.
            await asyncio.sleep(0)
            await txn.execute("UPDATE counter SET n = $1 WHERE name = $2", n + 1, "c")

    await asyncio.gather(*(increment() for _ in range(20)))
    assert await database.fetchval("SELECT n FROM counter WHERE name = $1", "c") == 20


async def test_concurrent_writers_and_readers(database: Database) -> None:
    """Writers in transactions and plain statements, readers alongside: no
    "database is locked", every write counted."""
    await database.execute(COUNTER_TABLE)
    await database.execute("INSERT INTO counter (name, n) VALUES ($1, $2)", "c", 0)

    async def txn_writer() -> None:
        async with database.transaction("test_writer") as txn:
            await txn.execute("UPDATE counter SET n = n + 1 WHERE name = $1", "c")

    async def plain_writer() -> None:
        await database.execute("UPDATE counter SET n = n + 1 WHERE name = $1", "c")

    async def reader() -> int:
        value = await database.fetchval("SELECT n FROM counter WHERE name = $1", "c")
        assert isinstance(value, int)
        return value

    results = await asyncio.gather(
        *(txn_writer() for _ in range(20)),
        *(plain_writer() for _ in range(20)),
        *(reader() for _ in range(20)),
    )
    assert all(0 <= r <= 40 for r in results[40:])
    assert await database.fetchval("SELECT n FROM counter WHERE name = $1", "c") == 40


async def test_readers_see_only_committed_data(database: Database) -> None:
    inserted = asyncio.Event()
    release = asyncio.Event()

    async def writer() -> None:
        async with database.transaction("test_uncommitted") as txn:
            await txn.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "a", "1")
            inserted.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await inserted.wait()
    assert await database.fetchval("SELECT COUNT(*) FROM node_info") == 0
    release.set()
    await task
    assert await database.fetchval("SELECT COUNT(*) FROM node_info") == 1


async def test_two_databases_on_one_file_or_server(database_url: str) -> None:
    """Two processes' worth of pools writing at once: SQLite's BEGIN IMMEDIATE
    and busy timeout make the second wait instead of failing."""
    first = await Database.open(database_url)
    second = await Database.open(database_url)
    try:
        await first.execute(COUNTER_TABLE)
        await first.execute("INSERT INTO counter (name, n) VALUES ($1, $2)", "c", 0)

        async def increment(db: Database) -> None:
            async with db.transaction("test_two_pools") as txn:
                await txn.lock("counter:c")
                n = await txn.fetchval("SELECT n FROM counter WHERE name = $1", "c")
                await asyncio.sleep(0)
                await txn.execute("UPDATE counter SET n = $1 WHERE name = $2", n + 1, "c")

        await asyncio.gather(*(increment(db) for db in (first, second) for _ in range(10)))
        assert await second.fetchval("SELECT n FROM counter WHERE name = $1", "c") == 20
    finally:
        await first.close()
        await second.close()


async def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(InvalidDatabaseURL, match="mysql"):
        await Database.open("mysql://root:hunter2@localhost/db")
    with pytest.raises(InvalidDatabaseURL) as info:
        await Database.open("mysql://root:hunter2@localhost/db")
    assert "hunter2" not in str(info.value)


async def test_sqlite_url_must_be_absolute() -> None:
    with pytest.raises(InvalidDatabaseURL, match="absolute"):
        await Database.open("sqlite://relative.db")


async def test_in_memory_sqlite() -> None:
    db = await Database.open("sqlite:///:memory:")
    try:
        await db.execute("CREATE TABLE t (x BIGINT)")
        async with db.transaction("test_memory") as txn:
            await txn.executemany("INSERT INTO t (x) VALUES ($1)", [(1,), (2,)])
        # Reads share the one connection of a private in-memory database.
        assert await db.fetchval("SELECT SUM(x) FROM t") == 3
    finally:
        await db.close()
