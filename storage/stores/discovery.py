"""The room discovery index: crawled peers, their health, their public rooms.

Tables: migration ``0014_room_discovery`` (docs/usage/room_discovery.md).
``discovery_rooms`` holds one row per (server, room) seen in that server's
published room directory (federation ``publicRooms``), with the time first
and last seen; ``discovery_peers`` one row per peer with its current health
and last crawl; ``discovery_probes`` the probe results of the rolling window
and ``discovery_peer_history`` every health state change (numbered per
peer, ``seq``: migration ``0015_discovery_history_order``).

Search is the one engine-dependent part: PostgreSQL uses full-text search
(``search_vector``, GIN) with a trigram fallback (``word_similarity``
through the ``<%`` operator and the GIN trigram index) when the ``pg_trgm``
extension is installed; SQLite uses ``LIKE``. The choice is made once, in
:meth:`DiscoveryStore.search_capability`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from storage.database import Database, Row
from storage.stores.state import Queryable, chunks, in_list

__all__ = [
    "DiscoveryStore",
    "IndexedRoom",
    "PeerRecord",
    "ProbeRecord",
    "SearchCapability",
    "SortKey",
    "TRIGRAM_THRESHOLD",
]

SortKey = Literal["members", "recent", "relevance"]
SearchCapability = Literal["like", "fulltext", "fulltext+trigram"]

#: ``word_similarity`` at or above this counts as a fuzzy match: one or two
#: wrong letters in a word of eight or more ("photgraphy") score 0.6-0.7; an
#: unrelated word scores near 0. Applied as ``pg_trgm.word_similarity_threshold``
#: (what the indexable ``<%`` operator compares with) for each search alone.
TRIGRAM_THRESHOLD = 0.5
_WORD_SIMILARITY_SETTING = "pg_trgm.word_similarity_threshold"

_PEER_COLUMNS = (
    "server_name, added_by_admin, added_ts, state, state_since_ts, state_reason, "
    "last_probe_ts, last_latency_ms, last_crawl_ts, last_crawl_ok_ts, "
    "last_crawl_duration_ms, last_crawl_error, last_crawl_rooms, next_crawl_ts"
)
_ROOM_COLUMNS = (
    "server_name, room_id, name, topic, canonical_alias, avatar_url, num_joined_members, "
    "world_readable, guest_can_join, join_rule, room_type, first_seen_ts, last_seen_ts"
)


@dataclass(frozen=True)
class IndexedRoom:
    """A room of a peer's directory as the index holds it (the spec's
    ``PublishedRoomsChunk`` fields plus where and when it was seen)."""

    server_name: str
    room_id: str
    num_joined_members: int
    world_readable: bool
    guest_can_join: bool
    name: str | None = None
    topic: str | None = None
    canonical_alias: str | None = None
    avatar_url: str | None = None
    join_rule: str | None = None
    room_type: str | None = None
    first_seen_ts: int = 0
    last_seen_ts: int = 0

    def search_text(self) -> str:
        """What search matches: name, topic and alias, lower-cased, the alias's
        punctuation as spaces so ``#rust-lang:b.test`` is found by "rust"."""
        alias = self.canonical_alias or ""
        alias_words = re.sub(r"[#:._\-]+", " ", alias)
        parts = [self.name or "", self.topic or "", alias, alias_words]
        return " ".join(p for p in parts if p).casefold()


@dataclass(frozen=True)
class PeerRecord:
    server_name: str
    added_by_admin: bool
    added_ts: int
    state: str
    state_since_ts: int
    state_reason: str | None
    last_probe_ts: int | None
    last_latency_ms: int | None
    last_crawl_ts: int | None
    last_crawl_ok_ts: int | None
    last_crawl_duration_ms: int | None
    last_crawl_error: str | None
    last_crawl_rooms: int | None
    next_crawl_ts: int | None


@dataclass(frozen=True)
class ProbeRecord:
    ts: int
    ok: bool
    keys_fresh: bool
    latency_ms: int
    error: str | None = None


def _peer(r: Row) -> PeerRecord:
    return PeerRecord(
        server_name=str(r[0]), added_by_admin=bool(r[1]), added_ts=int(r[2]), state=str(r[3]),
        state_since_ts=int(r[4]), state_reason=r[5], last_probe_ts=r[6], last_latency_ms=r[7],
        last_crawl_ts=r[8], last_crawl_ok_ts=r[9], last_crawl_duration_ms=r[10],
        last_crawl_error=r[11], last_crawl_rooms=r[12], next_crawl_ts=r[13],
    )


def _room(r: Row) -> IndexedRoom:
    return IndexedRoom(
        server_name=str(r[0]), room_id=str(r[1]), name=r[2], topic=r[3], canonical_alias=r[4],
        avatar_url=r[5], num_joined_members=int(r[6]), world_readable=bool(r[7]),
        guest_can_join=bool(r[8]), join_rule=r[9], room_type=r[10], first_seen_ts=int(r[11]),
        last_seen_ts=int(r[12]),
    )


def _like_pattern(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class _SearchStatements:
    """What one search runs: the number of matches, then the page."""

    count_sql: str
    count_args: tuple[Any, ...]
    page_sql: str
    page_args: tuple[Any, ...]
    #: ``(setting, value)`` pairs for the search's own transaction; none: it
    #: runs without one.
    settings: tuple[tuple[str, str], ...] = ()


def _search_statements(
    capability: SearchCapability,
    trigram_indexed: bool,
    *,
    servers: Sequence[str],
    query: str | None,
    sort: SortKey,
    after: tuple[Any, str, str] | None,
    limit: int,
) -> _SearchStatements:
    """The SQL of :meth:`DiscoveryStore.search`, in one place, so that
    :meth:`DiscoveryStore.explain_search` explains exactly what it runs."""
    args: list[Any] = list(servers)
    where = [f"server_name IN ({in_list(servers, 1)})"]
    score_sql = "0"
    settings: tuple[tuple[str, str], ...] = ()
    if query:
        if capability == "like":
            words = [w for w in query.casefold().split() if w][:8]
            field_score = []
            for w in words:
                args.append(_like_pattern(w))
                n = len(args)
                where.append(f"search_text LIKE ${n} ESCAPE '\\'")
                field_score.append(
                    f"(CASE WHEN LOWER(COALESCE(name, '')) LIKE ${n} ESCAPE '\\' "
                    f"THEN 4 ELSE 0 END + CASE WHEN LOWER(COALESCE(canonical_alias, '')) "
                    f"LIKE ${n} ESCAPE '\\' THEN 2 ELSE 0 END + 1)"
                )
            score_sql = " + ".join(field_score) or "0"
        else:
            args.append(query)
            q = len(args)
            tsq = f"plainto_tsquery('simple', ${q})"
            match = f"search_vector @@ {tsq}"
            rank = f"CAST(ts_rank(search_vector, {tsq}) AS DOUBLE PRECISION)"
            if capability == "fulltext+trigram":
                # `<%` is `word_similarity(q, search_text) >= threshold` with the
                # threshold a setting (set below for this search alone); unlike the
                # function call, the operator can use the trigram index, so with
                # the full-text condition the OR is a BitmapOr of both indexes.
                match = f"({match} OR ${q} <% search_text)"
                # Exact words rank above fuzzy ones: rank adds to similarity.
                rank = f"({rank} + CAST(word_similarity(${q}, search_text) AS DOUBLE PRECISION))"
                settings = ((_WORD_SIMILARITY_SETTING, repr(TRIGRAM_THRESHOLD)),)
                if trigram_indexed:
                    # The planner costs `<%` like `=`, but on a row it costs tens
                    # of microseconds: a plan that tests it on every row (a
                    # sequential scan, chosen for a common word or while the GIN
                    # pending lists are long) takes seconds at 100,000 rooms
                    # where the indexes take milliseconds (docs/benchmarks.md).
                    settings += (("enable_seqscan", "off"),)
            where.append(match)
            score_sql = rank
    if sort == "members":
        key_sql = "num_joined_members"
    elif sort == "recent":
        key_sql = "first_seen_ts"
    else:
        key_sql = "score"
    if sort != "relevance":
        score_sql = "0"  # not read; computing it for every match would cost
    inner = (
        f"SELECT {_ROOM_COLUMNS}, {score_sql} AS score FROM discovery_rooms "
        f"WHERE {' AND '.join(where)}"
    )
    if query and capability != "like":
        # Planned apart from the ORDER BY ... LIMIT, the matches come from the
        # text indexes. Flattened into it, PostgreSQL may instead walk the
        # members or first-seen index testing the text condition on each row
        # until it has a page: seconds for a word few rooms have.
        source = f"WITH matched AS MATERIALIZED ({inner}) SELECT * FROM matched"
    else:
        source = f"SELECT * FROM ({inner}) AS matched"
    outer_where = ""
    page_args = list(args)
    if after is not None:
        value, server, room = after
        page_args.extend([value, server, room])
        v, s, r = len(page_args) - 2, len(page_args) - 1, len(page_args)
        outer_where = (
            f"WHERE ({key_sql} < ${v} OR ({key_sql} = ${v} AND "
            f"(server_name > ${s} OR (server_name = ${s} AND room_id > ${r}))))"
        )
    page_args.append(limit)
    return _SearchStatements(
        count_sql=f"SELECT COUNT(*) FROM ({inner}) AS matched",
        count_args=tuple(args),
        page_sql=(
            f"{source} {outer_where} "
            f"ORDER BY {key_sql} DESC, server_name, room_id LIMIT ${len(page_args)}"
        ),
        page_args=tuple(page_args),
        settings=settings,
    )


class DiscoveryStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._capability: SearchCapability | None = None
        self._trigram_indexed = False

    @property
    def database(self) -> Database:
        return self._db

    async def search_capability(self) -> SearchCapability:
        """How this database searches (cached: extensions do not come and go)."""
        if self._capability is None:
            if self._db.engine != "postgres":
                self._capability = "like"
            else:
                # The trigram index exists only if pg_trgm did when migration
                # 0014 ran (docs/usage/room_discovery.md).
                row = await self._db.fetchrow(
                    "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'), "
                    "to_regclass('discovery_rooms_trgm') IS NOT NULL"
                )
                assert row is not None
                self._capability = "fulltext+trigram" if row[0] else "fulltext"
                self._trigram_indexed = bool(row[0] and row[1])
        return self._capability

    async def trigram_indexed(self) -> bool:
        """Whether fuzzy matches go through ``discovery_rooms_trgm`` (pg_trgm
        installed after migration 0014 leaves them unindexed)."""
        await self.search_capability()
        return self._trigram_indexed

    # -- peers --------------------------------------------------------------------------------

    async def ensure_peer(self, server_name: str, now_ms: int) -> None:
        await self._db.execute(
            "INSERT INTO discovery_peers (server_name, added_ts, state_since_ts) "
            "VALUES ($1, $2, $2) ON CONFLICT (server_name) DO NOTHING",
            server_name, now_ms,
        )

    async def set_admin_peer(self, server_name: str, added: bool, now_ms: int) -> None:
        await self.ensure_peer(server_name, now_ms)
        await self._db.execute(
            "UPDATE discovery_peers SET added_by_admin = $2 WHERE server_name = $1",
            server_name, 1 if added else 0,
        )

    async def get_peer(self, server_name: str) -> PeerRecord | None:
        row = await self._db.fetchrow(
            f"SELECT {_PEER_COLUMNS} FROM discovery_peers WHERE server_name = $1", server_name
        )
        return None if row is None else _peer(row)

    async def list_peers(self) -> list[PeerRecord]:
        rows = await self._db.fetch(
            f"SELECT {_PEER_COLUMNS} FROM discovery_peers ORDER BY server_name"
        )
        return [_peer(r) for r in rows]

    async def forget_peer(self, server_name: str) -> None:
        """Drop a peer with its rooms, probes and history (no longer crawled)."""
        async with self._db.transaction("discovery_forget_peer") as txn:
            for table in ("discovery_rooms", "discovery_probes", "discovery_peer_history",
                          "discovery_peers"):
                await txn.execute(f"DELETE FROM {table} WHERE server_name = $1", server_name)

    async def forget_orphan_rooms(self) -> int:
        """Drop rooms of servers that are no longer peers: a crawl that was
        under way when its peer was forgotten writes them after the fact.
        Returns how many went."""
        gone = await self._db.fetch(
            "DELETE FROM discovery_rooms WHERE server_name NOT IN "
            "(SELECT server_name FROM discovery_peers) RETURNING room_id"
        )
        return len(gone)

    async def record_probe(
        self, server_name: str, probe: ProbeRecord, *, keep_after_ts: int
    ) -> None:
        """Store one probe result and prune the ones older than ``keep_after_ts``."""
        async with self._db.transaction("discovery_record_probe") as txn:
            await txn.execute(
                "INSERT INTO discovery_probes (server_name, ts, ok, keys_fresh, latency_ms, error) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                server_name, probe.ts, int(probe.ok), int(probe.keys_fresh), probe.latency_ms,
                None if probe.error is None else probe.error[:500],
            )
            await txn.execute(
                "DELETE FROM discovery_probes WHERE server_name = $1 AND ts < $2",
                server_name, keep_after_ts,
            )
            await txn.execute(
                "UPDATE discovery_peers SET last_probe_ts = $2, last_latency_ms = $3 "
                "WHERE server_name = $1",
                server_name, probe.ts, probe.latency_ms,
            )

    async def probes_since(self, server_name: str, since_ts: int) -> list[ProbeRecord]:
        rows = await self._db.fetch(
            "SELECT ts, ok, keys_fresh, latency_ms, error FROM discovery_probes "
            "WHERE server_name = $1 AND ts >= $2 ORDER BY ts",
            server_name, since_ts,
        )
        return [ProbeRecord(int(r[0]), bool(r[1]), bool(r[2]), int(r[3]), r[4]) for r in rows]

    async def set_state(
        self, server_name: str, state: str, reason: str | None, now_ms: int
    ) -> bool:
        """Record ``state``; a change is appended to the history. True if it changed."""
        async with self._db.transaction("discovery_set_state") as txn:
            # The history's next seq is read and written in this transaction.
            await txn.lock(f"discovery_peer:{server_name}")
            current = await txn.fetchval(
                "SELECT state FROM discovery_peers WHERE server_name = $1", server_name
            )
            if current == state:
                await txn.execute(
                    "UPDATE discovery_peers SET state_reason = $2 WHERE server_name = $1",
                    server_name, reason,
                )
                return False
            await txn.execute(
                "UPDATE discovery_peers SET state = $2, state_since_ts = $3, state_reason = $4 "
                "WHERE server_name = $1",
                server_name, state, now_ms, reason,
            )
            await txn.execute(
                "INSERT INTO discovery_peer_history (server_name, ts, state, reason, seq) "
                "SELECT $1, $2, $3, $4, COALESCE(MAX(seq), 0) + 1 FROM discovery_peer_history "
                "WHERE server_name = $1",
                server_name, now_ms, state, reason,
            )
            return True

    async def history(self, server_name: str, limit: int = 50) -> list[tuple[int, str, str | None]]:
        """The latest state changes, newest first: ``(ts, state, reason)``
        (in the order they were stored, even within one millisecond)."""
        rows = await self._db.fetch(
            "SELECT ts, state, reason FROM discovery_peer_history WHERE server_name = $1 "
            "ORDER BY seq DESC, ts DESC LIMIT $2",
            server_name, limit,
        )
        return [(int(r[0]), str(r[1]), r[2]) for r in rows]

    async def prune_history(self, before_ts: int) -> None:
        await self._db.execute("DELETE FROM discovery_peer_history WHERE ts < $1", before_ts)

    async def record_crawl(
        self, server_name: str, *, now_ms: int, ok: bool, duration_ms: int,
        error: str | None, rooms: int | None, next_crawl_ts: int | None,
    ) -> None:
        await self._db.execute(
            "UPDATE discovery_peers SET last_crawl_ts = $2, "
            "last_crawl_ok_ts = CASE WHEN $3 = 1 THEN $2 ELSE last_crawl_ok_ts END, "
            "last_crawl_duration_ms = $4, last_crawl_error = $5, "
            "last_crawl_rooms = COALESCE($6, last_crawl_rooms), next_crawl_ts = $7 "
            "WHERE server_name = $1",
            server_name, now_ms, 1 if ok else 0, duration_ms,
            None if error is None else error[:500], rooms, next_crawl_ts,
        )

    # -- rooms --------------------------------------------------------------------------------

    async def replace_rooms(
        self, server_name: str, rooms: Sequence[IndexedRoom], now_ms: int
    ) -> int:
        """A complete crawl of ``server_name``: upsert every room seen (keeping
        its first-seen time) and expire the rooms it no longer lists, in one
        transaction. Returns how many rooms expired."""
        seen = {r.room_id for r in rooms}
        async with self._db.transaction("discovery_replace_rooms") as txn:
            existing = await txn.fetch(
                "SELECT room_id FROM discovery_rooms WHERE server_name = $1", server_name
            )
            gone = [str(r[0]) for r in existing if str(r[0]) not in seen]
            for batch in chunks(gone):
                await txn.execute(
                    f"DELETE FROM discovery_rooms WHERE server_name = $1 "
                    f"AND room_id IN ({in_list(batch, 2)})",
                    server_name, *batch,
                )
            await txn.executemany(
                f"INSERT INTO discovery_rooms ({_ROOM_COLUMNS}, search_text) VALUES "
                "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13) "
                "ON CONFLICT (server_name, room_id) DO UPDATE SET name = $3, topic = $4, "
                "canonical_alias = $5, avatar_url = $6, num_joined_members = $7, "
                "world_readable = $8, guest_can_join = $9, join_rule = $10, room_type = $11, "
                "last_seen_ts = $12, search_text = $13",
                [
                    (server_name, r.room_id, r.name, r.topic, r.canonical_alias, r.avatar_url,
                     r.num_joined_members, int(r.world_readable), int(r.guest_can_join),
                     r.join_rule, r.room_type, now_ms, r.search_text())
                    for r in rooms
                ],
            )
        return len(gone)

    async def count_rooms(self) -> dict[str, int]:
        rows = await self._db.fetch(
            "SELECT server_name, COUNT(*) FROM discovery_rooms GROUP BY server_name"
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def room_ids(self, server_name: str) -> set[str]:
        rows = await self._db.fetch(
            "SELECT room_id FROM discovery_rooms WHERE server_name = $1", server_name
        )
        return {str(r[0]) for r in rows}

    async def search(
        self,
        *,
        servers: Sequence[str],
        query: str | None,
        sort: SortKey,
        after: tuple[Any, str, str] | None,
        limit: int,
    ) -> tuple[list[tuple[IndexedRoom, Any]], int]:
        """One page of rooms of ``servers`` matching ``query``, in ``sort``
        order, strictly after the key ``after`` = ``(sort value, server, room
        ID)``; returns ``[(room, sort value)]`` and the number of matches.

        Orders: ``members`` (most joined first), ``recent`` (first seen most
        recently first), ``relevance`` (best match first; needs a query). Ties
        break on (server, room ID), so every row has a distinct key and the
        pagination is stable.
        """
        if not servers:
            return [], 0
        statements = _search_statements(
            await self.search_capability(), self._trigram_indexed, servers=servers,
            query=query, sort=sort, after=after, limit=limit,
        )
        async with self._search_reader(statements) as reader:
            counted = await reader.fetch(statements.count_sql, *statements.count_args)
            rows = await reader.fetch(statements.page_sql, *statements.page_args)
        total = counted[0][0] if counted else 0
        out = []
        for row in rows:
            indexed = _room(row)
            if sort == "members":
                key: Any = indexed.num_joined_members
            elif sort == "recent":
                key = indexed.first_seen_ts
            else:
                key = row[13]
            out.append((indexed, key))
        return out, int(total or 0)

    async def explain_search(
        self,
        *,
        servers: Sequence[str],
        query: str | None,
        sort: SortKey,
        after: tuple[Any, str, str] | None = None,
        limit: int = 21,
        analyze: bool = False,
    ) -> dict[str, list[str]]:
        """The plans of the two statements :meth:`search` runs for these
        arguments, ``{"count": lines, "page": lines}``, made under the same
        settings in the same kind of session (for tests and ``bench/``).

        PostgreSQL: ``EXPLAIN`` (with ``analyze``, ``EXPLAIN (ANALYZE,
        BUFFERS)``, which runs them); SQLite: ``EXPLAIN QUERY PLAN``'s
        details (``analyze`` is ignored).
        """
        if not servers:
            raise ValueError("search runs nothing without servers")
        statements = _search_statements(
            await self.search_capability(), self._trigram_indexed, servers=servers,
            query=query, sort=sort, after=after, limit=limit,
        )
        if self._db.engine == "postgres":
            prefix, column = ("EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "), 0
        else:
            prefix, column = "EXPLAIN QUERY PLAN ", 3
        plans: dict[str, list[str]] = {}
        async with self._search_reader(statements) as reader:
            for name, sql, args in (
                ("count", statements.count_sql, statements.count_args),
                ("page", statements.page_sql, statements.page_args),
            ):
                plans[name] = [str(r[column]) for r in await reader.fetch(prefix + sql, *args)]
        return plans

    @asynccontextmanager
    async def _search_reader(self, statements: _SearchStatements) -> AsyncIterator[Queryable]:
        """Where a search runs: straight on the pool, or, when it needs
        settings, in a transaction of its own that sets them for itself only
        (``set_config(..., true)`` is ``SET LOCAL``: the pooled connection's
        next user gets the defaults back)."""
        if not statements.settings:
            yield self._db
            return
        async with self._db.transaction("discovery_search") as txn:
            calls = ", ".join(
                f"set_config(${2 * i + 1}, ${2 * i + 2}, true)"
                for i in range(len(statements.settings))
            )
            await txn.fetch(
                f"SELECT {calls}", *[part for pair in statements.settings for part in pair]
            )
            yield txn
