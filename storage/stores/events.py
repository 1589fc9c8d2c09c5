"""The event graph: events, their prev/auth edges, forward extremities, stream order.

Spec: ``server-server-api.md`` "PDUs" (prev_events form the room DAG; a new
event's prev_events are the events with no child yet, the *forward
extremities*), "Rejection" and "Soft failure" (how rejected and soft-failed
events are kept), and "Room State Resolution".

Every row carries the tenant (local server name) that holds it. Events are
stored as the canonical JSON of the PDU as received, with the fields the
server queries copied into columns. Each event's state before and after is a
state group (:mod:`storage.stores.state`); events persisted in one call share
one transaction and batched inserts.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from canonicaljson import encode_canonical_json

from federation.events import Event
from federation.room_versions import RoomVersion, get_room_version
from storage.engines import Row
from storage.stores.state import (
    GroupPlan,
    Queryable,
    ResolvedState,
    StateKey,
    StateMap,
    StateStore,
    Writer,
    allocate_counter,
    chunks,
    fetch_event_json,
    in_list,
    values_list,
)

__all__ = [
    "EventStore",
    "NewEvent",
    "PersistedEvent",
    "StoreStateResolutionView",
    "StoredEvent",
]


@dataclass(frozen=True)
class NewEvent:
    """An event to persist and what the server decided about it.

    ``state_before`` is the state before the event. Leave it ``None`` when it
    follows from the graph: the empty state for an event without
    prev_events (the create event), or the state after its only prev event.
    An event with several prev_events needs it (resolved by the caller, see
    ``federation.state_res``). An ``outlier`` has no known state: only the
    event and its edges are stored. A ``backfilled`` event is history fetched
    with ``/backfill``: it takes a negative stream ordering (before every
    event received live, so an incremental ``/sync`` never shows it as new)
    and leaves the forward extremities alone.
    """

    event: Event
    state_before: ResolvedState | None = None
    rejected_reason: str | None = None
    soft_failed: bool = False
    outlier: bool = False
    backfilled: bool = False


@dataclass(frozen=True)
class PersistedEvent:
    event_id: str
    stream_ordering: int
    state_group_before: int | None
    state_group_after: int | None
    # False when the event was already stored (persisting again changed nothing).
    newly_persisted: bool


@dataclass(frozen=True)
class StoredEvent:
    """An event with what the server recorded about it."""

    event: Event
    stream_ordering: int
    rejected_reason: str | None
    soft_failed: bool
    outlier: bool
    state_group_before: int | None
    state_group_after: int | None


_EVENT_COLUMNS = (
    "event_id, room_version, json, stream_ordering, rejected_reason, soft_failed, "
    "outlier, state_group_before, state_group_after"
)


class _ParsedJson:
    """Parsed event JSON by its exact text, an LRU bounded by the text held.

    Rows are read again and again (a large room's member events for every
    join and every state request); parsing is the costly part. Keyed by the
    text itself, an entry can never disagree with the row it stands for. The
    parsed objects are shared: events are read-only (``Event.pdu`` is a
    ``Mapping``), and whoever needs to change one copies it first.
    """

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.chars = 0
        self._items: OrderedDict[str, Any] = OrderedDict()

    def loads(self, text: str) -> Any:
        hit = self._items.get(text)
        if hit is not None:
            self._items.move_to_end(text)
            return hit
        value = json.loads(text)
        if len(text) <= self.max_chars // 64:
            self._items[text] = value
            self.chars += len(text)
            while self.chars > self.max_chars:
                old, _ = self._items.popitem(last=False)
                self.chars -= len(old)
        return value


#: Room versions by stored identifier (only supported ones get in).
_ROOM_VERSIONS: dict[Any, RoomVersion] = {}

#: About 4,000 events of 1 KiB: a large room's member events.
_PARSED = _ParsedJson(4_000_000)


def _stored(row: Row) -> StoredEvent:
    rv_id = row["room_version"]
    rv = _ROOM_VERSIONS.get(rv_id)
    if rv is None:
        rv = _ROOM_VERSIONS[rv_id] = get_room_version(str(rv_id))
    event = Event(
        _PARSED.loads(row["json"]), str(row["event_id"]), rv, row["rejected_reason"]
    )
    return StoredEvent(
        event=event,
        stream_ordering=int(row["stream_ordering"]),
        rejected_reason=row["rejected_reason"],
        soft_failed=bool(row["soft_failed"]),
        outlier=bool(row["outlier"]),
        state_group_before=_opt_int(row["state_group_before"]),
        state_group_after=_opt_int(row["state_group_after"]),
    )


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def canonical_json_text(pdu: Mapping[str, Any]) -> str:
    return encode_canonical_json(dict(pdu)).decode("utf-8")


class EventStore:
    """Events and their graph; composes a :class:`StateStore` for their states."""

    def __init__(self, db: Queryable, state: StateStore) -> None:
        self._db = db
        self.state = state

    def _conn(self, txn: Queryable | None) -> Queryable:
        return self._db if txn is None else txn

    # Reading events

    async def get_stored_events(
        self, tenant: str, event_ids: Iterable[str], *, txn: Queryable | None = None
    ) -> dict[str, StoredEvent]:
        """The stored events among ``event_ids`` (unknown IDs are left out)."""
        ids = list(dict.fromkeys(event_ids))
        conn = self._conn(txn)
        found: dict[str, StoredEvent] = {}
        for part in chunks(ids):
            rows = await conn.fetch(
                f"SELECT {_EVENT_COLUMNS} FROM events "
                f"WHERE tenant = $1 AND event_id IN ({in_list(part, 2)})",
                tenant,
                *part,
            )
            for r in rows:
                found[str(r["event_id"])] = _stored(r)
        return found

    async def get_events(
        self, tenant: str, event_ids: Iterable[str], *, txn: Queryable | None = None
    ) -> dict[str, Event]:
        """The stored events among ``event_ids``; ``Event.rejected_reason`` is set."""
        stored = await self.get_stored_events(tenant, event_ids, txn=txn)
        return {eid: s.event for eid, s in stored.items()}

    async def get_event_json(
        self, tenant: str, event_ids: Iterable[str], *, txn: Queryable | None = None
    ) -> dict[str, str]:
        """The stored JSON text (canonical JSON of the PDU) of the stored
        events among ``event_ids``: for answers that pass events on as they
        are, without parsing them into :class:`Event` objects and encoding
        them again."""
        return await fetch_event_json(self._conn(txn), tenant, event_ids)

    async def get_event(
        self, tenant: str, event_id: str, *, txn: Queryable | None = None
    ) -> StoredEvent | None:
        return (await self.get_stored_events(tenant, [event_id], txn=txn)).get(event_id)

    async def have_events(
        self, tenant: str, event_ids: Iterable[str], *, txn: Queryable | None = None
    ) -> set[str]:
        ids = list(dict.fromkeys(event_ids))
        conn = self._conn(txn)
        have: set[str] = set()
        for part in chunks(ids):
            rows = await conn.fetch(
                f"SELECT event_id FROM events WHERE tenant = $1 AND event_id IN "
                f"({in_list(part, 2)})",
                tenant,
                *part,
            )
            have.update(str(r[0]) for r in rows)
        return have

    async def get_prev_event_ids(
        self, tenant: str, event_id: str, *, txn: Queryable | None = None
    ) -> set[str]:
        rows = await self._conn(txn).fetch(
            "SELECT prev_event_id FROM event_edges WHERE tenant = $1 AND event_id = $2",
            tenant,
            event_id,
        )
        return {str(r[0]) for r in rows}

    async def get_auth_event_ids(
        self, tenant: str, event_id: str, *, txn: Queryable | None = None
    ) -> set[str]:
        rows = await self._conn(txn).fetch(
            "SELECT auth_event_id FROM event_auth_edges WHERE tenant = $1 AND event_id = $2",
            tenant,
            event_id,
        )
        return {str(r[0]) for r in rows}

    async def get_child_event_ids(
        self, tenant: str, event_id: str, *, txn: Queryable | None = None
    ) -> set[str]:
        """Events that list ``event_id`` in their prev_events."""
        rows = await self._conn(txn).fetch(
            "SELECT event_id FROM event_edges WHERE tenant = $1 AND prev_event_id = $2",
            tenant,
            event_id,
        )
        return {str(r[0]) for r in rows}

    async def get_ids_followed_by_accepted(
        self, tenant: str, event_ids: Iterable[str], *, txn: Queryable | None = None
    ) -> set[str]:
        """Those of ``event_ids`` that a stored accepted event (not an outlier,
        soft-failed or rejected) lists in its prev_events: such an event never
        becomes a forward extremity again."""
        ids = list(dict.fromkeys(event_ids))
        conn = self._conn(txn)
        followed: set[str] = set()
        for part in chunks(ids):
            rows = await conn.fetch(
                "SELECT DISTINCT g.prev_event_id FROM event_edges g "
                "JOIN events e ON e.tenant = g.tenant AND e.event_id = g.event_id "
                f"WHERE g.tenant = $1 AND g.prev_event_id IN ({in_list(part, 2)}) "
                "AND e.outlier = 0 AND e.soft_failed = 0 AND e.rejected_reason IS NULL",
                tenant,
                *part,
            )
            followed.update(str(r[0]) for r in rows)
        return followed

    async def get_auth_chain_ids(
        self,
        tenant: str,
        event_ids: Iterable[str],
        *,
        include_given: bool = False,
        txn: Queryable | None = None,
    ) -> set[str]:
        """The auth chain of ``event_ids``: their auth events, recursively.

        Spec: ``server-server-api.md`` "Auth chain" (the auth events of an
        event, their auth events, and so on). One recursive query; ``UNION``
        (not ``UNION ALL``) drops revisited events, so it ends on any graph.
        """
        ids = list(dict.fromkeys(event_ids))
        conn = self._conn(txn)
        chain: set[str] = set(ids) if include_given else set()
        for part in chunks(ids):
            rows = await conn.fetch(
                "WITH RECURSIVE chain(event_id) AS ("
                f" SELECT a.auth_event_id FROM (VALUES {values_list(part, 2)}) AS v"
                " JOIN event_auth_edges a ON a.tenant = $1 AND a.event_id = v.column1"
                " UNION"
                " SELECT a.auth_event_id FROM event_auth_edges a"
                " JOIN chain c ON a.event_id = c.event_id WHERE a.tenant = $1"
                ") SELECT event_id FROM chain",
                tenant,
                *part,
            )
            chain.update(str(r[0]) for r in rows)
        return chain

    # Forward extremities and stream

    async def get_forward_extremities(
        self, tenant: str, room_id: str, *, txn: Queryable | None = None
    ) -> list[str]:
        """The room's forward extremities, deepest first (ties by event ID)."""
        rows = await self._conn(txn).fetch(
            "SELECT x.event_id FROM event_forward_extremities x "
            "JOIN events e ON e.tenant = x.tenant AND e.event_id = x.event_id "
            "WHERE x.tenant = $1 AND x.room_id = $2 "
            "ORDER BY e.depth DESC, x.event_id",
            tenant,
            room_id,
        )
        return [str(r[0]) for r in rows]

    async def set_forward_extremities_txn(
        self, txn: Writer, tenant: str, room_id: str, event_ids: Iterable[str]
    ) -> None:
        """Replace the room's forward extremities (persisting maintains them already)."""
        await txn.execute(
            "DELETE FROM event_forward_extremities WHERE tenant = $1 AND room_id = $2",
            tenant,
            room_id,
        )
        await txn.executemany(
            "INSERT INTO event_forward_extremities (tenant, room_id, event_id) "
            "VALUES ($1, $2, $3)",
            [(tenant, room_id, e) for e in dict.fromkeys(event_ids)],
        )

    async def get_max_stream_ordering(
        self, tenant: str, *, txn: Queryable | None = None
    ) -> int:
        rows = await self._conn(txn).fetch(
            "SELECT MAX(stream_ordering) FROM events WHERE tenant = $1", tenant
        )
        return int(rows[0][0] or 0)

    async def get_stream_events(
        self,
        tenant: str,
        after: int,
        limit: int,
        *,
        room_id: str | None = None,
        txn: Queryable | None = None,
    ) -> list[StoredEvent]:
        """Events clients may see, in stream order, after stream position ``after``.

        Outliers, rejected and soft-failed events are left out (spec:
        "Rejection", "Soft failure": neither is relayed to clients).
        """
        args: list[Any] = [tenant, after, limit]
        room_clause = ""
        if room_id is not None:
            room_clause = "AND room_id = $4 "
            args.append(room_id)
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE tenant = $1 AND stream_ordering > $2 "
            f"AND outlier = 0 AND soft_failed = 0 AND rejected_reason IS NULL {room_clause}"
            "ORDER BY stream_ordering LIMIT $3"
        )
        rows = await self._conn(txn).fetch(sql, *args)
        return [_stored(r) for r in rows]

    # State at events

    async def get_state_groups_for_event(
        self, tenant: str, event_id: str, *, txn: Queryable | None = None
    ) -> tuple[int | None, int | None] | None:
        """``(before, after)`` groups of an event; ``None`` if unknown or an outlier."""
        rows = await self._conn(txn).fetch(
            "SELECT state_group_before, state_group_after, outlier FROM events "
            "WHERE tenant = $1 AND event_id = $2",
            tenant,
            event_id,
        )
        if not rows or rows[0]["outlier"]:
            return None
        return _opt_int(rows[0][0]), _opt_int(rows[0][1])

    async def get_state_before(
        self, tenant: str, event_id: str, *, txn: Queryable | None = None
    ) -> StateMap | None:
        """The room state before the event; ``None`` if unknown or an outlier."""
        groups = await self.get_state_groups_for_event(tenant, event_id, txn=txn)
        if groups is None:
            return None
        return await self.state.get_state_group(tenant, groups[0], txn=txn)

    async def get_state_after(
        self, tenant: str, event_id: str, *, txn: Queryable | None = None
    ) -> StateMap | None:
        """The room state after the event; ``None`` if unknown or an outlier."""
        groups = await self.get_state_groups_for_event(tenant, event_id, txn=txn)
        if groups is None:
            return None
        return await self.state.get_state_group(tenant, groups[1], txn=txn)

    # Writing

    async def persist_event_txn(
        self, txn: Writer, tenant: str, new: NewEvent
    ) -> PersistedEvent:
        return (await self.persist_events_txn(txn, tenant, [new]))[0]

    async def persist_events_txn(
        self, txn: Writer, tenant: str, items: Sequence[NewEvent]
    ) -> list[PersistedEvent]:
        """Persist events, their edges and states, and update forward extremities.

        Events are taken in order, so one may build on an earlier one. An event
        already stored is left as it is (persisting is idempotent), except that
        an outlier persisted again with its state stops being an outlier.
        Accepted events (not rejected, soft-failed nor outliers) become forward
        extremities unless an accepted event already follows them, and remove
        their prev_events from the forward extremities (spec: "Soft failure":
        soft-failed events are not added).
        """
        await txn.lock(f"event_graph:{tenant}")
        unique: dict[str, NewEvent] = {}
        for item in items:
            unique.setdefault(item.event.event_id, item)
        existing = await self.get_stored_events(tenant, unique, txn=txn)

        results: dict[str, PersistedEvent] = {}
        to_write: list[NewEvent] = []
        promote: set[str] = set()
        for eid, item in unique.items():
            old = existing.get(eid)
            if old is not None and (not old.outlier or item.outlier):
                results[eid] = PersistedEvent(
                    eid, old.stream_ordering, old.state_group_before,
                    old.state_group_after, False,
                )
                continue
            if old is not None:
                promote.add(eid)
            to_write.append(item)
        if not to_write:
            return [results[i.event.event_id] for i in items]

        groups_by_event = await self._plan_states_txn(txn, tenant, to_write)
        streams = await self._allocate_streams_txn(txn, tenant, to_write)

        event_rows: list[tuple[Any, ...]] = []
        promote_rows: list[tuple[Any, ...]] = []
        for n, item in enumerate(to_write):
            ev = item.event
            before, after = groups_by_event[ev.event_id]
            stream = streams[n]
            results[ev.event_id] = PersistedEvent(ev.event_id, stream, before, after, True)
            if ev.event_id in promote:
                promote_rows.append((
                    tenant, ev.event_id, stream, item.rejected_reason,
                    int(item.soft_failed), before, after,
                ))
                continue
            event_rows.append((
                tenant, ev.event_id, ev.room_id, ev.room_version.identifier, ev.type,
                ev.state_key if ev.is_state() else None, ev.sender, ev.depth,
                ev.origin_server_ts, stream, canonical_json_text(ev.pdu),
                item.rejected_reason, int(item.soft_failed), int(item.outlier),
                before, after,
            ))
        await txn.executemany(
            "INSERT INTO events (tenant, event_id, room_id, room_version, type, state_key, "
            "sender, depth, origin_server_ts, stream_ordering, json, rejected_reason, "
            "soft_failed, outlier, state_group_before, state_group_after) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            event_rows,
        )
        await txn.executemany(
            "UPDATE events SET outlier = 0, stream_ordering = $3, rejected_reason = $4, "
            "soft_failed = $5, state_group_before = $6, state_group_after = $7 "
            "WHERE tenant = $1 AND event_id = $2",
            promote_rows,
        )
        new_items = [i for i in to_write if i.event.event_id not in promote]
        await txn.executemany(
            "INSERT INTO event_edges (tenant, event_id, prev_event_id) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            [
                (tenant, i.event.event_id, p)
                for i in new_items
                for p in dict.fromkeys(i.event.prev_event_ids)
            ],
        )
        await txn.executemany(
            "INSERT INTO event_auth_edges (tenant, event_id, auth_event_id) "
            "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            [
                (tenant, i.event.event_id, a)
                for i in new_items
                for a in dict.fromkeys(i.event.auth_event_ids)
            ],
        )
        await self._update_extremities_txn(txn, tenant, to_write)
        await self._update_backward_extremities_txn(txn, tenant, to_write)
        return [results[i.event.event_id] for i in items]

    @staticmethod
    async def _allocate_streams_txn(
        txn: Writer, tenant: str, items: Sequence[NewEvent]
    ) -> list[int]:
        """Stream orderings for ``items``, in order.

        Live events count up from 1 (counter ``stream``); backfilled events
        count down from -1 (counter ``backfill_stream``), so each backfilled
        batch sorts before everything stored earlier, and within a batch
        later items (newer history) still get larger orderings.
        """
        n_live = sum(1 for i in items if not i.backfilled)
        n_back = len(items) - n_live
        next_live = await allocate_counter(txn, tenant, "stream", n_live) if n_live else 0
        back = (await allocate_counter(txn, tenant, "backfill_stream", n_back)
                if n_back else 0)
        # The batch takes -(back + n_back - 1) .. -back, oldest first.
        next_back = -(back + n_back - 1)
        out: list[int] = []
        for item in items:
            if item.backfilled:
                out.append(next_back)
                next_back += 1
            else:
                out.append(next_live)
                next_live += 1
        return out

    async def _update_backward_extremities_txn(
        self, txn: Writer, tenant: str, written: Sequence[NewEvent]
    ) -> None:
        """Keep ``event_backward_extremities``: an event that joins the
        timeline stops being one; the prev_events of an accepted timeline
        event that are not timeline events here become one (the point where
        ``/backfill`` continues history)."""
        timeline = [i.event for i in written if not i.outlier]
        if not timeline:
            return
        ids = [ev.event_id for ev in timeline]
        for part in chunks(ids):
            await txn.execute(
                "DELETE FROM event_backward_extremities WHERE tenant = $1 "
                f"AND event_id IN ({in_list(part, 2)})",
                tenant,
                *part,
            )
        accepted = [
            i.event for i in written
            if not i.outlier and not i.soft_failed and i.rejected_reason is None
        ]
        prevs = list({p for ev in accepted for p in ev.prev_event_ids} - set(ids))
        if not prevs:
            return
        in_timeline: set[str] = set()
        for part in chunks(prevs):
            rows = await txn.fetch(
                "SELECT event_id FROM events WHERE tenant = $1 AND outlier = 0 "
                f"AND event_id IN ({in_list(part, 2)})",
                tenant,
                *part,
            )
            in_timeline.update(str(r[0]) for r in rows)
        rows_out: dict[tuple[str, str], int] = {}
        for ev in accepted:
            for p in ev.prev_event_ids:
                if p in in_timeline or p in ids:
                    continue
                key = (ev.room_id, p)
                rows_out[key] = max(rows_out.get(key, ev.depth), ev.depth)
        await txn.executemany(
            "INSERT INTO event_backward_extremities (tenant, room_id, event_id, depth) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            [(tenant, room, p, d) for (room, p), d in rows_out.items()],
        )

    async def get_backward_extremities(
        self, tenant: str, room_id: str, *, max_depth: int | None = None,
        txn: Queryable | None = None,
    ) -> list[tuple[str, int]]:
        """The room's backward extremities as ``(event_id, depth of the child
        that refers to it)``, deepest first; ``max_depth`` leaves out those
        whose child is deeper."""
        args: list[Any] = [tenant, room_id]
        clause = ""
        if max_depth is not None:
            clause = "AND depth <= $3 "
            args.append(max_depth)
        rows = await self._conn(txn).fetch(
            "SELECT event_id, depth FROM event_backward_extremities "
            f"WHERE tenant = $1 AND room_id = $2 {clause}ORDER BY depth DESC, event_id",
            *args,
        )
        return [(str(r[0]), int(r[1])) for r in rows]

    async def _plan_states_txn(
        self, txn: Writer, tenant: str, items: Sequence[NewEvent]
    ) -> dict[str, tuple[int | None, int | None]]:
        """State groups before/after each event, writing the new groups."""
        state = self.state
        batch_after: dict[str, int | None] = {}
        needed_prevs = {
            i.event.prev_event_ids[0]
            for i in items
            if not i.outlier and i.state_before is None and len(i.event.prev_event_ids) == 1
        }
        needed_prevs -= {i.event.event_id for i in items}
        prev_groups: dict[str, tuple[int | None, int | None]] = {}
        for eid in needed_prevs:
            groups = await self.get_state_groups_for_event(tenant, eid, txn=txn)
            if groups is not None:
                prev_groups[eid] = groups

        n_groups = 0
        for i in items:
            if i.outlier:
                continue
            sb = i.state_before
            if sb is not None and sb.group is None and (sb.state or sb.predecessor is not None):
                n_groups += 1
            if i.event.is_state() and i.rejected_reason is None:
                n_groups += 1
        next_group = (
            await allocate_counter(txn, tenant, "state_group", n_groups) if n_groups else 0
        )

        plan = state.new_plan(tenant)
        out: dict[str, tuple[int | None, int | None]] = {}
        for item in items:
            ev = item.event
            if item.outlier:
                out[ev.event_id] = (None, None)
                continue
            # The state before, as a group and (when at hand) a full map.
            before_map: StateMap | None = None
            sb = item.state_before
            if sb is not None:
                if sb.group is not None:
                    before_group: int | None = sb.group
                elif sb.state or sb.predecessor is not None:
                    before_group = next_group
                    next_group += 1
                    await state.plan_group(
                        txn, plan, before_group, ev.room_id, sb.state,
                        predecessor=sb.predecessor,
                    )
                else:
                    before_group = None
                before_map = sb.state
            else:
                prevs = ev.prev_event_ids
                if not prevs:
                    before_group = None
                    before_map = {}
                elif len(prevs) == 1 and prevs[0] in batch_after:
                    before_group = batch_after[prevs[0]]
                elif len(prevs) == 1 and prevs[0] in prev_groups:
                    before_group = prev_groups[prevs[0]][1]
                else:
                    raise ValueError(
                        f"state before {ev.event_id} is not implied by the graph "
                        f"(prev_events {prevs}); pass NewEvent.state_before"
                    )
            after_group = before_group
            if ev.is_state() and item.rejected_reason is None:
                after_group = next_group
                next_group += 1
                after_map = await self._state_after(
                    txn, tenant, plan, before_group, before_map, ev
                )
                await state.plan_group(
                    txn, plan, after_group, ev.room_id, after_map,
                    predecessor=before_group, changed=[ev.state_tuple],
                )
                plan.last_full = (after_group, after_map)
            batch_after[ev.event_id] = after_group
            out[ev.event_id] = (before_group, after_group)
        await state.write_plan_txn(txn, plan)
        return out

    async def _state_after(
        self,
        txn: Writer,
        tenant: str,
        plan: GroupPlan,
        before_group: int | None,
        before_map: StateMap | None,
        ev: Event,
    ) -> dict[StateKey, str]:
        """A dict of the state after ``ev``, owned by the caller."""
        if (
            before_map is None
            and plan.last_full is not None
            and plan.last_full[0] == before_group
        ):
            # The previous event's state after, which nothing else holds: update
            # it in place rather than copy a large room's state per event.
            after: dict[StateKey, str] = plan.last_full[1]
            plan.last_full = None
        else:
            if before_map is None:
                before_map = await self.state.get_plan_state(txn, plan, before_group)
            after = dict(before_map)
        after[ev.state_tuple] = ev.event_id
        return after

    async def _update_extremities_txn(
        self, txn: Writer, tenant: str, written: Sequence[NewEvent]
    ) -> None:
        accepted = [
            i.event
            for i in written
            if not i.outlier and not i.soft_failed and i.rejected_reason is None
            and not i.backfilled
        ]
        if not accepted:
            return
        by_room: dict[str, list[Event]] = {}
        for ev in accepted:
            by_room.setdefault(ev.room_id, []).append(ev)
        for room_id, events in by_room.items():
            prevs = list({p for ev in events for p in ev.prev_event_ids})
            for part in chunks(prevs):
                await txn.execute(
                    "DELETE FROM event_forward_extremities WHERE tenant = $1 AND room_id = $2 "
                    f"AND event_id IN ({in_list(part, 3)})",
                    tenant,
                    room_id,
                    *part,
                )
            ids = [ev.event_id for ev in events]
            followed = await self.get_ids_followed_by_accepted(tenant, ids, txn=txn)
            await txn.executemany(
                "INSERT INTO event_forward_extremities (tenant, room_id, event_id) "
                "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                [(tenant, room_id, e) for e in ids if e not in followed],
            )


class StoreStateResolutionView:
    """One tenant's events as ``federation.state_res`` reads them.

    Implements its ``StateResolutionStore`` (``get_events``, rejected events
    included) and ``AuthChainDifferenceStore`` (the auth difference by
    recursive query rather than by loading every auth event into memory).
    Pass ``txn`` to read inside a transaction that is persisting events.
    """

    def __init__(self, events: EventStore, tenant: str, txn: Queryable | None = None) -> None:
        self._events = events
        self._tenant = tenant
        self._txn = txn

    async def get_events(self, event_ids: Iterable[str]) -> Mapping[str, Event]:
        return await self._events.get_events(self._tenant, event_ids, txn=self._txn)

    async def get_auth_chain_difference(
        self, state_sets: Sequence[AbstractSet[str]]
    ) -> set[str]:
        """Union minus intersection of the sets' auth chains, each including
        the set's own events (``federation.state_res.store``)."""
        chains = [
            await self._events.get_auth_chain_ids(
                self._tenant, s, include_given=True, txn=self._txn
            )
            for s in state_sets
        ]
        if not chains:
            return set()
        union: set[str] = set().union(*chains)
        return union - chains[0].intersection(*chains[1:])
