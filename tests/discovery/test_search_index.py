"""Discovery search on PostgreSQL: the plans of the statements the store
runs use the full-text and trigram indexes, and the fuzzy matching they
serve keeps its threshold and ranking."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from federation.clock import FakeClock
from homeserver.discovery.service import TRIGRAM_INDEX_SQL, build_discovery
from storage.database import Database
from storage.migrations import apply_migrations
from storage.stores.discovery import DiscoveryStore, IndexedRoom, SortKey
from tests.discovery.helpers import start_nodes

SERVERS = ["a.test", "b.test", "c.test"]
ROOMS_PER_SERVER = 1000
# Rooms holding each planted word, per server. "music" is in 30 % of them:
# at this size that is what makes PostgreSQL, left to flatten the match into
# the members-ordered page, walk the members index instead (at 100,000
# rooms it does so for a rare word too, docs/benchmarks.md).
PLANTED = {"photography": 10, "astronomy": 2, "music": 300}
SORTS: list[SortKey] = ["relevance", "members", "recent"]


def _room(server: str, room_id: str, name: str, members: int = 1,
          topic: str | None = None) -> IndexedRoom:
    return IndexedRoom(server, room_id, members, False, False, name=name, topic=topic,
                       first_seen_ts=0)


def _filler(server: str) -> list[IndexedRoom]:
    """``ROOMS_PER_SERVER`` rooms of made-up words, the planted words in a few."""
    rng = random.Random(server)
    vocab = ["".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3))
             for _ in range(500)]
    rooms = []
    for i in range(ROOMS_PER_SERVER):
        words = rng.choices(vocab, k=6)
        planted = [w for w, n in PLANTED.items() if i < n]
        rooms.append(_room(server, f"!r{i}:{server}", " ".join(planted + words[:2]),
                           members=rng.randint(1, 1000), topic=" ".join(words[2:])))
    return rooms


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
async def filled(postgres_url: str) -> AsyncIterator[Database]:
    """A migrated PostgreSQL database (pg_trgm installed) with 3,000 rooms,
    vacuumed and analysed as autovacuum would leave it, so that the planner's
    statistics, and so its plans, are the same on every run."""
    db = await Database.open(postgres_url)
    try:
        await apply_migrations(db)
        store = DiscoveryStore(db)
        for server in SERVERS:
            await store.replace_rooms(server, _filler(server), 1)
        await _admin(postgres_url, "VACUUM ANALYZE discovery_rooms")
        yield db
    finally:
        await db.close()


def _uses(plan: list[str], index: str) -> bool:
    return any(f"Index Scan on {index}" in line for line in plan)


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("query", ["astronomy", "photgraphy", "rust programming", "music"])
async def test_fuzzy_search_plans_use_both_text_indexes(
    filled: Database, query: str, sort: SortKey
) -> None:
    store = DiscoveryStore(filled)
    assert await store.search_capability() == "fulltext+trigram"
    plans = await store.explain_search(servers=SERVERS, query=query, sort=sort)
    for name, plan in plans.items():
        text = "\n".join(plan)
        assert "BitmapOr" in text, (name, text)
        assert _uses(plan, "discovery_rooms_fts"), (name, text)
        assert _uses(plan, "discovery_rooms_trgm"), (name, text)
        assert "Seq Scan" not in text, (name, text)
        # Not a walk down the members or first-seen order testing every row.
        assert "discovery_rooms_by_" not in text, (name, text)


async def test_explain_is_of_the_search_that_runs(filled: Database) -> None:
    """EXPLAIN ANALYZE runs the same statements: its row counts are the search's."""
    store = DiscoveryStore(filled)
    hits, total = await store.search(servers=SERVERS, query="photgraphy", sort="relevance",
                                     after=None, limit=5)
    assert total == 30 and len(hits) == 5
    plans = await store.explain_search(servers=SERVERS, query="photgraphy", sort="relevance",
                                       limit=5, analyze=True)
    assert "rows=30 loops=1" in "\n".join(plans["count"])
    assert plans["page"][0].startswith("Limit") and "rows=5 loops=1" in plans["page"][0]


async def test_full_text_only_plans_use_the_full_text_index(
    filled: Database, postgres_url: str
) -> None:
    """Without pg_trgm (dropped with its index), on its own statistics the
    planner takes the full-text index for a word few rooms have."""
    await _admin(postgres_url, "DROP EXTENSION pg_trgm CASCADE", "ANALYZE discovery_rooms")
    store = DiscoveryStore(filled)
    assert await store.search_capability() == "fulltext"
    for sort in SORTS:
        plans = await store.explain_search(servers=SERVERS, query="astronomy", sort=sort)
        for name, plan in plans.items():
            text = "\n".join(plan)
            assert _uses(plan, "discovery_rooms_fts"), (sort, name, text)
            assert "Seq Scan" not in text and "discovery_rooms_by_" not in text, (name, text)
    hits, total = await store.search(servers=SERVERS, query="astronomy", sort="members",
                                     after=None, limit=10)
    assert total == 6 and len(hits) == 6
    assert [r.num_joined_members for r, _ in hits] == sorted(
        (r.num_joined_members for r, _ in hits), reverse=True)


async def test_trigram_extension_without_its_index_still_matches_fuzzily(
    filled: Database, postgres_url: str
) -> None:
    """pg_trgm installed after migration 0014 ran: no trigram index, fuzzy
    matching unindexed (and no planner setting that assumes the index)."""
    await _admin(postgres_url, "DROP INDEX discovery_rooms_trgm")
    store = DiscoveryStore(filled)
    assert await store.search_capability() == "fulltext+trigram"
    hits, total = await store.search(servers=SERVERS, query="photgraphy", sort="relevance",
                                     after=None, limit=50)
    assert total == 30 and all("photography" in (r.name or "") for r, _ in hits)
    plans = await store.explain_search(servers=SERVERS, query="photgraphy", sort="relevance")
    assert not any(_uses(plan, "discovery_rooms_trgm") for plan in plans.values())


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[Database]:
    db = await Database.open(postgres_url)
    try:
        await apply_migrations(db)
        yield db
    finally:
        await db.close()


async def _ids(store: DiscoveryStore, query: str, sort: SortKey = "relevance") -> list[str]:
    hits, total = await store.search(servers=["b.test"], query=query, sort=sort, after=None,
                                     limit=50)
    assert total == len(hits)
    return [r.room_id for r, _ in hits]


async def test_threshold_is_word_similarity_at_or_above_one_half(pg: Database) -> None:
    """TRIGRAM_THRESHOLD = 0.5, inclusive: "abc" against "abx" shares 2 of
    its 4 trigrams (0.5, found; pg_trgm's default threshold, 0.6, would miss
    it), "abcd" against "abxy" 2 of 5 (0.4, not found)."""
    store = DiscoveryStore(pg)
    await store.replace_rooms("b.test", [_room("b.test", "!x:b.test", "Abx club"),
                                         _room("b.test", "!y:b.test", "Abxy club")], 1)
    assert await _ids(store, "abc") == ["!x:b.test", "!y:b.test"]
    assert await _ids(store, "abcd") == []


async def test_exact_words_rank_above_fuzzy_ones(pg: Database) -> None:
    store = DiscoveryStore(pg)
    await store.replace_rooms("b.test", [
        _room("b.test", "!fuzzy:b.test", "Fotography fans", members=500),
        _room("b.test", "!exact:b.test", "Photography club", members=5),
        _room("b.test", "!topic:b.test", "Club", topic="landscape photography", members=50),
        _room("b.test", "!other:b.test", "Cooking", members=900),
    ], 1)
    ranked = await _ids(store, "photography")
    assert ranked[2:] == ["!fuzzy:b.test"] and set(ranked[:2]) == {"!exact:b.test",
                                                                    "!topic:b.test"}
    assert await _ids(store, "photography", "members") == [
        "!fuzzy:b.test", "!topic:b.test", "!exact:b.test"]
    # The misspelling finds the two photography rooms (0.64), not "fotography"
    # (5 of its 11 trigrams: 0.45).
    assert set(await _ids(store, "photgraphy")) == {"!exact:b.test", "!topic:b.test"}
    # Relevance pages: each room exactly once, in the one-page order.
    seen: list[str] = []
    after = None
    while True:
        page, total = await store.search(servers=["b.test"], query="photography",
                                         sort="relevance", after=after, limit=1)
        assert total == 3
        if not page:
            break
        seen.append(page[0][0].room_id)
        after = (page[0][1], page[0][0].server_name, page[0][0].room_id)
    assert seen == ranked


async def test_search_settings_do_not_outlive_the_search(pg: Database) -> None:
    """The threshold and planner setting are the search's own (SET LOCAL):
    the pooled connection comes back with PostgreSQL's defaults."""
    store = DiscoveryStore(pg)
    await store.replace_rooms("b.test", [_room("b.test", "!p:b.test", "Photography club")], 1)
    assert await _ids(store, "photgraphy") == ["!p:b.test"]
    row = await pg.fetchrow(
        "SELECT current_setting('pg_trgm.word_similarity_threshold'), "
        "current_setting('enable_seqscan')"
    )
    assert row is not None and tuple(row) == ("0.6", "on")


async def test_explain_search_on_sqlite(sqlite_url: str) -> None:
    db = await Database.open(sqlite_url)
    try:
        await apply_migrations(db)
        store = DiscoveryStore(db)
        plans = await store.explain_search(servers=["b.test"], query="photo", sort="members")
        assert set(plans) == {"count", "page"}
        assert all(any("discovery_rooms" in line for line in plan) for plan in plans.values())
    finally:
        await db.close()



@pytest.mark.parametrize("missing", ["index", "extension"])
async def test_first_search_warns_with_the_statement_to_run(
    tmp_path: Path, postgres_url: str, caplog: pytest.LogCaptureFixture, missing: str
) -> None:
    """The operator is told, once, what to run: the trigram index when pg_trgm
    came after migration 0014, both statements when pg_trgm is missing."""
    clock = FakeClock()
    (a,) = await start_nodes(tmp_path, ["a.test"], clock,
                             database_urls={"a.test": postgres_url})
    try:
        if missing == "index":
            await _admin(postgres_url, "DROP INDEX discovery_rooms_trgm")
        else:
            await _admin(postgres_url, "DROP EXTENSION pg_trgm CASCADE")
        d = build_discovery(a.hs)
        caplog.set_level(logging.WARNING, logger="homeserver.discovery.service")
        for _ in range(2):
            await d.search(tenant="a.test", query="photgraphy", limit=None, since=None,
                           server=None, sort=None)
        warnings = [r.getMessage() for r in caplog.records
                    if r.name == "homeserver.discovery.service"]
        assert len(warnings) == 1, warnings
        assert TRIGRAM_INDEX_SQL in warnings[0]
        assert ("CREATE EXTENSION pg_trgm" in warnings[0]) == (missing == "extension")
    finally:
        await a.hs.stop()
