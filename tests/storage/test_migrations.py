"""Numbered migrations on both engines: order, once only, atomic, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.database import Database
from storage.errors import DatabaseTooNew, MigrationFailed
from storage.migrations import MIGRATIONS_DIR, apply_migrations, discover_migrations

# A small history of test migrations. Each would fail if run twice (CREATE
# TABLE without IF NOT EXISTS, INSERT into a primary key), so "applied once"
# is checked by the database itself.
HISTORY: dict[str, str] = {
    "0001_first.sql": """
        CREATE TABLE first (id BIGINT PRIMARY KEY, note TEXT NOT NULL);
        INSERT INTO first (id, note) VALUES (1, 'semi;colon and $1');
    """,
    "0002_engine_specific.sqlite.sql": """
        CREATE TABLE flavour (engine TEXT NOT NULL);
        INSERT INTO flavour (engine) VALUES ('sqlite');
        CREATE TRIGGER first_insert AFTER INSERT ON first BEGIN
            INSERT INTO flavour (engine) VALUES ('trigger; fired');
        END;
    """,
    "0002_engine_specific.postgres.sql": """
        CREATE TABLE flavour (engine TEXT NOT NULL);
        INSERT INTO flavour (engine) VALUES ('postgres');
        CREATE FUNCTION first_insert() RETURNS trigger AS $$
        BEGIN
            INSERT INTO flavour (engine) VALUES ('trigger; fired');
            RETURN NEW;
        END;
        $$ LANGUAGE plpgsql;
        CREATE TRIGGER first_insert AFTER INSERT ON first
            FOR EACH ROW EXECUTE FUNCTION first_insert();
    """,
    "0003_second.sql": """
        CREATE TABLE second (id BIGINT PRIMARY KEY);
        INSERT INTO second (id) VALUES (3);
        -- a trailing comment
    """,
    "0010_gap_in_numbers.sql": """
        ALTER TABLE second ADD COLUMN extra TEXT;
        INSERT INTO first (id, note) VALUES (10, 'ten');
    """,
}
ALL_VERSIONS = [1, 2, 3, 10]


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql, encoding="utf-8")
    return directory


def history_up_to(version: int) -> dict[str, str]:
    return {name: sql for name, sql in HISTORY.items() if int(name.split("_")[0]) <= version}


async def recorded(db: Database) -> list[tuple[int, str]]:
    rows = await db.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    return [(int(r["version"]), r["name"]) for r in rows]


async def table_exists(db: Database, table: str) -> bool:
    # A query that fails on a missing table, on either engine.
    try:
        await db.fetch(f"SELECT 1 FROM {table} WHERE 1 = 0")
    except Exception:
        return False
    return True


@pytest.fixture
async def empty_db(database_url: str) -> AsyncIterator[Database]:
    db = await Database.open(database_url)
    try:
        yield db
    finally:
        await db.close()


async def test_real_migrations_from_empty(empty_db: Database) -> None:
    expected = [m.version for m in discover_migrations()]
    assert expected[0] == 1
    assert await apply_migrations(empty_db) == expected
    assert [v for v, _ in await recorded(empty_db)] == expected
    await empty_db.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "k", "v")
    assert await apply_migrations(empty_db) == []


async def test_history_from_empty(empty_db: Database, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", HISTORY)
    assert await apply_migrations(empty_db, directory) == ALL_VERSIONS
    assert await recorded(empty_db) == [
        (1, "first"),
        (2, "engine_specific"),
        (3, "second"),
        (10, "gap_in_numbers"),
    ]
    # The engine's own variant of 0002 ran, with its trigger (fired by 0010).
    flavours = [r[0] for r in await empty_db.fetch("SELECT engine FROM flavour ORDER BY engine")]
    assert flavours == sorted([empty_db.engine, "trigger; fired"])
    assert await empty_db.fetchval("SELECT note FROM first WHERE id = 1") == "semi;colon and $1"
    applied_ts = await empty_db.fetchval("SELECT MIN(applied_ts) FROM schema_migrations")
    assert applied_ts > 1_600_000_000_000

    assert await apply_migrations(empty_db, directory) == []
    assert len(await recorded(empty_db)) == 4


@pytest.mark.parametrize("start", [0, 1, 2, 3])
async def test_history_from_every_earlier_version(
    empty_db: Database, tmp_path: Path, start: int
) -> None:
    old = write_migrations(tmp_path / "old", history_up_to(start))
    new = write_migrations(tmp_path / "new", HISTORY)
    first_run = [v for v in ALL_VERSIONS if v <= start]
    assert await apply_migrations(empty_db, old) == first_run
    assert await apply_migrations(empty_db, new) == [v for v in ALL_VERSIONS if v > start]
    assert [v for v, _ in await recorded(empty_db)] == ALL_VERSIONS
    assert await empty_db.fetchval("SELECT COUNT(*) FROM first") == 2
    assert await apply_migrations(empty_db, new) == []


async def test_failing_migration_leaves_nothing_behind(empty_db: Database, tmp_path: Path) -> None:
    broken = {
        "0001_first.sql": HISTORY["0001_first.sql"],
        "0002_broken.sql": """
            CREATE TABLE half (id BIGINT PRIMARY KEY);
            INSERT INTO half (id) VALUES (1);
            INSERT INTO first (id, note) VALUES (2, 'two');
            INSERT INTO first (id, note) VALUES (1, 'duplicate key');
        """,
        "0003_after.sql": "CREATE TABLE after_broken (id BIGINT);",
    }
    directory = write_migrations(tmp_path / "m", broken)
    with pytest.raises(MigrationFailed) as info:
        await apply_migrations(empty_db, directory)
    assert info.value.filename == "0002_broken.sql"
    assert "0002_broken.sql" in str(info.value)
    assert "UniqueViolation" in str(info.value)

    # 0001 stays applied; nothing of 0002 remains; 0003 never ran.
    assert await recorded(empty_db) == [(1, "first")]
    assert not await table_exists(empty_db, "half")
    assert not await table_exists(empty_db, "after_broken")
    assert await empty_db.fetchval("SELECT COUNT(*) FROM first") == 1

    # Fixed, it applies from where it stopped.
    (directory / "0002_broken.sql").write_text(
        "CREATE TABLE half (id BIGINT PRIMARY KEY);", encoding="utf-8"
    )
    assert await apply_migrations(empty_db, directory) == [2, 3]


async def test_syntax_error_names_the_file(empty_db: Database, tmp_path: Path) -> None:
    directory = write_migrations(
        tmp_path / "m",
        {"0001_typo.sql": "CREATE TABLE ok (id BIGINT);\nCREAT TABLE typo (id BIGINT);"},
    )
    with pytest.raises(MigrationFailed, match="0001_typo.sql"):
        await apply_migrations(empty_db, directory)
    assert not await table_exists(empty_db, "ok")
    assert await recorded(empty_db) == []


async def test_database_newer_than_code_is_refused(empty_db: Database, tmp_path: Path) -> None:
    newer = write_migrations(tmp_path / "newer", HISTORY)
    older = write_migrations(tmp_path / "older", history_up_to(2))
    await apply_migrations(empty_db, newer)
    with pytest.raises(DatabaseTooNew) as info:
        await apply_migrations(empty_db, older)
    assert info.value.unknown_versions == [3, 10]
    assert info.value.latest_known == 2
    message = str(info.value)
    assert "0003, 0010" in message and "0002" in message and "newer" in message
    assert [v for v, _ in await recorded(empty_db)] == ALL_VERSIONS


async def test_two_processes_migrating_at_once(database_url: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", HISTORY)
    first = await Database.open(database_url)
    second = await Database.open(database_url)
    try:
        results = await asyncio.gather(
            apply_migrations(first, directory), apply_migrations(second, directory)
        )
        assert sorted(results[0] + results[1]) == ALL_VERSIONS
        assert [v for v, _ in await recorded(first)] == ALL_VERSIONS
    finally:
        await first.close()
        await second.close()


async def test_real_migration_directory_is_well_formed() -> None:
    migrations = discover_migrations(MIGRATIONS_DIR)
    versions = [m.version for m in migrations]
    assert versions == sorted(set(versions))
    assert migrations[0].label == "0001_initial"


@pytest.mark.parametrize(
    ("files", "complaint"),
    [
        ({"0001-dash.sql": "SELECT 1;"}, "does not match"),
        ({"0001_Upper.sql": "SELECT 1;"}, "does not match"),
        ({"0001_x.mysql.sql": "SELECT 1;"}, "does not match"),
        ({"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 1;"}, "another name"),
        ({"0001_a.sqlite.sql": "SELECT 1;"}, "for postgres"),
    ],
)
def test_malformed_migration_directories(
    tmp_path: Path, files: dict[str, str], complaint: str
) -> None:
    directory = write_migrations(tmp_path / "m", files)
    with pytest.raises(MigrationFailed, match=complaint):
        discover_migrations(directory)


def test_other_files_are_ignored(tmp_path: Path) -> None:
    directory = write_migrations(
        tmp_path / "m", {"0001_a.sql": "SELECT 1;", "README.md": "notes", "__init__.py": ""}
    )
    assert [m.label for m in discover_migrations(directory)] == ["0001_a"]
