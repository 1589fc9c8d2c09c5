"""The discovery store and health rules in isolation: pg_trgm missing,
expiry, cursors, health states."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from federation.errors import MatrixError
from homeserver.discovery.health import HealthSettings, evaluate
from homeserver.discovery.service import decode_cursor, encode_cursor, parse_room
from storage.database import Database
from storage.migrations import apply_migrations
from storage.stores.discovery import DiscoveryStore, IndexedRoom, ProbeRecord

SETTINGS = HealthSettings(degraded_latency_ms=2000, offline_failures=3)


def _room(room_id: str, name: str, members: int = 1) -> IndexedRoom:
    return IndexedRoom("b.test", room_id, members, False, False, name=name)


def _as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.split("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


async def test_migration_without_pg_trgm_degrades_to_full_text(postgres_url: str) -> None:
    """A role that may not create extensions: the migration still applies,
    search finds exact words, fuzzy matching is off."""
    role = f"concord_nocreate_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(postgres_url)
    dbname = urlsplit(postgres_url).path.lstrip("/")
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{dbname}" TO "{role}"')
        await admin.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO "{role}"')
        db = await Database.open(_as_user(postgres_url, role))
        try:
            assert 14 in await apply_migrations(db)
            store = DiscoveryStore(db)
            assert await store.search_capability() == "fulltext"
            await store.replace_rooms("b.test", [_room("!p:b.test", "Photography club")], 1)
            hits, total = await store.search(servers=["b.test"], query="photography",
                                             sort="relevance", after=None, limit=10)
            assert [r.room_id for r, _ in hits] == ["!p:b.test"] and total == 1
            misses, _ = await store.search(servers=["b.test"], query="photgraphy",
                                           sort="relevance", after=None, limit=10)
            assert misses == []
        finally:
            await db.close()
        assert await admin.fetchval(
            "SELECT COUNT(*) FROM pg_extension WHERE extname = 'pg_trgm'") == 0
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.close()
        server = await asyncpg.connect(_as_user(postgres_url, "postgres").rsplit("/", 1)[0]
                                       + "/postgres")
        try:
            await server.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            await server.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await server.close()


async def test_replace_rooms_expires_and_keeps_first_seen(database: Database) -> None:
    store = DiscoveryStore(database)
    await store.ensure_peer("b.test", 1)
    assert await store.replace_rooms("b.test", [_room("!a:b.test", "A"),
                                                _room("!b:b.test", "B")], 100) == 0
    assert await store.replace_rooms("b.test", [_room("!b:b.test", "B2", 5)], 100) == 1
    hits, _ = await store.search(servers=["b.test"], query=None, sort="recent", after=None,
                                 limit=10)
    assert [(r.room_id, r.name, r.first_seen_ts) for r, _ in hits] == [("!b:b.test", "B2", 100)]


async def test_like_search_escapes_wildcards(database: Database) -> None:
    store = DiscoveryStore(database)
    await store.replace_rooms("b.test", [_room("!a:b.test", "100% fun"),
                                         _room("!b:b.test", "1000 fun")], 1)
    hits, _ = await store.search(servers=["b.test"], query="100%", sort="relevance",
                                 after=None, limit=10)
    if database.engine == "sqlite":
        assert [r.room_id for r, _ in hits] == ["!a:b.test"]
    else:  # "1000" is a fuzzy (trigram) match there, ranked below the exact word
        assert [r.room_id for r, _ in hits] == ["!a:b.test", "!b:b.test"]


def test_health_states() -> None:
    ok = ProbeRecord(0, True, True, 10)
    fail = ProbeRecord(0, False, False, 0, "refused")
    assert evaluate([], SETTINGS)[0] == "unknown"
    assert evaluate([ok, ok], SETTINGS)[0] == "online"
    assert evaluate([ok, fail], SETTINGS)[0] == "degraded"
    assert evaluate([fail, fail, ok], SETTINGS)[0] == "degraded"
    assert evaluate([ok, fail, fail, fail], SETTINGS) == (
        "offline", "the last 3 probes failed: refused")
    assert evaluate([ProbeRecord(0, True, False, 10)], SETTINGS)[0] == "degraded"
    assert evaluate([ProbeRecord(0, True, True, 5000)], SETTINGS)[0] == "degraded"
    assert evaluate([ok], SETTINGS, delivery_error="HTTP 502")[0] == "degraded"


def test_cursors_and_room_parsing() -> None:
    cursor = encode_cursor("members", None, (3, "b.test", "!r:b.test"))
    assert decode_cursor(cursor, "members", None) == (3, "b.test", "!r:b.test")
    for bad in ("", "!!", encode_cursor("recent", None, (3, "b", "!r"))):
        with pytest.raises(MatrixError):
            decode_cursor(bad or "x", "members", None)
    with pytest.raises(MatrixError):
        decode_cursor(encode_cursor("relevance", "cats", (0.5, "b", "!r")), "relevance", "dogs")
    assert parse_room("b.test", {"room_id": "!r:b.test", "num_joined_members": True}) is None
    assert parse_room("b.test", {"room_id": "r", "num_joined_members": 1}) is None
    room = parse_room("b.test", {"room_id": "!r:b.test", "num_joined_members": 2,
                                 "canonical_alias": "not-an-alias", "avatar_url": "http://x",
                                 "name": "n" * 5000, "world_readable": "yes"})
    assert room is not None and room.canonical_alias is None and room.avatar_url is None
    assert room.name is not None and len(room.name) == 1000 and room.world_readable is False
