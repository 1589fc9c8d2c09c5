"""Numbered migrations on both engines: order, once only, atomic, refusals."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from storage.database import Database
from storage.errors import DatabaseTooNew, MigrationFailed
from storage.migrations import MIGRATIONS_DIR, apply_migrations, discover_migrations
from tests.conftest import create_postgres_database, drop_postgres_database

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


Schema = dict[str, list[tuple[str, str]]]

# The from-empty schema per engine, built once per run: every upgrade case
# compares against it.
_FROM_EMPTY: dict[str, Schema] = {}

REAL_VERSIONS = [m.version for m in discover_migrations()]


@pytest.fixture(scope="module")
def shared_postgres_database() -> Iterator[str]:
    """One PostgreSQL database for the upgrade cases, each in its own schema.

    CREATE/DROP DATABASE costs seconds on a loaded machine; a schema per case
    isolates as well for a fraction of it.
    """
    url = asyncio.run(create_postgres_database())
    try:
        yield url
    finally:
        asyncio.run(drop_postgres_database(url))


@asynccontextmanager
async def isolated_db(engine: str, tmp_path: Path, shared_pg: str) -> AsyncIterator[Database]:
    """An empty database: a fresh SQLite file, or a fresh schema in ``shared_pg``."""
    if engine == "sqlite":
        db = await Database.open(f"sqlite://{tmp_path / f'{secrets.token_hex(4)}.db'}")
        try:
            yield db
        finally:
            await db.close()
        return
    schema = f"upgrade_{secrets.token_hex(6)}"
    setup = await Database.open(shared_pg)
    try:
        await setup.execute(f"CREATE SCHEMA {schema}")
        # asyncpg passes unknown URL parameters on as server settings; without
        # waiting for each commit to reach the disk, the cases run faster.
        db = await Database.open(f"{shared_pg}?search_path={schema}&synchronous_commit=off")
        try:
            yield db
        finally:
            await db.close()
    finally:
        await setup.execute(f"DROP SCHEMA {schema} CASCADE")
        await setup.close()


async def schema_of(db: Database) -> Schema:
    """Tables with their (column, declared type), as the engine reports them."""
    tables: Schema = {}
    if db.engine == "sqlite":
        names = [
            r[0]
            for r in await db.fetch(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        for name in names:
            rows = await db.fetch(f"SELECT name, type FROM pragma_table_info('{name}')")
            tables[name] = sorted((r[0], r[1]) for r in rows)
        return tables
    rows = await db.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() ORDER BY table_name, column_name"
    )
    for r in rows:
        tables.setdefault(r[0], []).append((r[1], r[2]))
    return tables


async def from_empty_schema(engine: str, tmp_path: Path, shared_pg: str) -> Schema:
    if engine not in _FROM_EMPTY:
        async with isolated_db(engine, tmp_path, shared_pg) as db:
            assert await apply_migrations(db) == REAL_VERSIONS
            _FROM_EMPTY[engine] = await schema_of(db)
    return _FROM_EMPTY[engine]


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
@pytest.mark.parametrize("start", REAL_VERSIONS)
async def test_real_upgrade_from_every_version(
    tmp_path: Path, shared_postgres_database: str, engine: str, start: int
) -> None:
    """A database made by an older release upgrades to the same schema as a new one."""
    old = tmp_path / "old"
    old.mkdir()
    for migration in discover_migrations():
        if migration.version <= start:
            for path in migration.files.values():
                shutil.copy(path, old / path.name)
    expected = await from_empty_schema(engine, tmp_path, shared_postgres_database)

    async with isolated_db(engine, tmp_path, shared_postgres_database) as db:
        assert await apply_migrations(db, old) == [v for v in REAL_VERSIONS if v <= start]

        # Rows an older release wrote must survive the later migrations.
        await db.execute("INSERT INTO node_info (key, value) VALUES ($1, $2)", "old", str(start))
        if start >= 4:
            await db.execute(
                "INSERT INTO users (tenant, user_id, created_ts) VALUES ($1, $2, $3)",
                "example.org",
                "@old:example.org",
                1,
            )

        assert await apply_migrations(db) == [v for v in REAL_VERSIONS if v > start]
        assert [v for v, _ in await recorded(db)] == REAL_VERSIONS
        assert await db.fetchval("SELECT value FROM node_info WHERE key = 'old'") == str(start)
        if start >= 4:
            assert await db.fetchval("SELECT COUNT(*) FROM users") == 1
        schema = await schema_of(db)
        assert "schema_migrations" in schema and "node_info" in schema
        assert schema == expected


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


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_current_members_backfilled_from_current_state(
    tmp_path: Path, shared_postgres_database: str, engine: str
) -> None:
    """Migration 0016 fills room_current_members from each room's current
    state group, resolved through its delta chain (removals included), as
    StateStore keeps it from then on."""
    from storage.stores.events import EventStore, NewEvent
    from storage.stores.state import ResolvedState, StateKey, StateStore
    from tests.storage.test_event_graph import make_event

    old = tmp_path / "old"
    old.mkdir()
    for migration in discover_migrations():
        if migration.version < 16:
            for path in migration.files.values():
                shutil.copy(path, old / path.name)
    async with isolated_db(engine, tmp_path, shared_postgres_database) as db:
        await apply_migrations(db, old)
        state = StateStore(db)
        events = EventStore(db, state)
        expected: set[tuple[str | None, ...]] = set()
        membership_of: dict[str, str | int] = {}
        async with db.transaction("old_rooms") as txn:
            for tenant, room, steps in (("a.test", "!big:a.test", 40),
                                        ("a.test", "!small:a.test", 1),
                                        ("b.test", "!big:a.test", 7)):
                model: dict[StateKey, str] = {("m.room.create", ""): "$create"}
                group = None
                for step in range(steps):
                    n = step % 9
                    user = f"@u{n}:s{n % 3}.test"
                    if step % 5 == 4:
                        model.pop(("m.room.member", user), None)  # a removal: NULL entry
                    else:
                        m = ("join", "leave", "invite", 7)[step % 4]
                        eid = f"${tenant}{room}{step}"
                        membership_of[eid] = m
                        ev = make_event(eid, "m.room.member", prev=[], state_key=user,
                                        sender=user, room_id=room, content={"membership": m})
                        await events.persist_events_txn(txn, tenant,
                                                        [NewEvent(ev, outlier=True)])
                        model[("m.room.member", user)] = eid
                    group = await state.store_state_txn(
                        txn, tenant, room, ResolvedState(dict(model), predecessor=group))
                await txn.execute(
                    "INSERT INTO room_current_state (tenant, room_id, room_version, state_group) "
                    "VALUES ($1, $2, '10', $3)", tenant, room, group)
                for (typ, user), eid in model.items():
                    if typ == "m.room.member":
                        m = membership_of[eid]
                        expected.add((tenant, room, user, user.split(":")[1],
                                      m if isinstance(m, str) else None, eid))
            await txn.execute(
                "INSERT INTO room_current_state (tenant, room_id, room_version, state_group) "
                "VALUES ('a.test', '!empty:a.test', '10', NULL)")
        stats = await state.stats("a.test", "!big:a.test")
        assert stats.groups == 40 and stats.chain_bound > 3  # a real delta chain
        assert await apply_migrations(db) == [v for v in REAL_VERSIONS if v >= 16]
        rows = await db.fetch("SELECT tenant, room_id, user_id, server, membership, event_id "
                              "FROM room_current_members")
        assert {tuple(r) for r in rows} == expected
        assert {e[4] for e in expected} == {"join", "leave", "invite", None}
        assert await StateStore(db).get_joined_servers("a.test", "!big:a.test") == sorted(
            {e[3] for e in expected if e[:2] == ("a.test", "!big:a.test") and e[4] == "join"})
