"""Reading a room's events for ``/messages``, ``/sync`` and ``/context``
(client-server-api "Pagination").

Two orders. *Stream order* is the order this server stored events in: a
stream position is a stream ordering ``P`` meaning "just after the event
with stream ordering ``P``"; ``/sync`` follows it. *Topological order* is
the room's history order, ``(depth, stream_ordering)``: a topological
position ``(D, P)`` means "just after the event at ``(D, P)``"; ``/messages``
and ``/context`` walk it, so events fetched late (backfill, missing events)
appear where they belong (docs/development/event_graph.md, "History order").

Outliers, rejected and soft-failed events are never returned
(server-server-api "Rejection", "Soft failure").
"""

from __future__ import annotations

from collections.abc import Iterable

from storage.database import Database
from storage.stores.events import _EVENT_COLUMNS, StoredEvent, _stored
from storage.stores.state import chunks, in_list

__all__ = ["RoomTimelineStore", "TopoPos"]

#: A topological position: ``(depth, stream_ordering)`` of an event.
TopoPos = tuple[int, int]

_VISIBLE = "outlier = 0 AND soft_failed = 0 AND rejected_reason IS NULL"


class RoomTimelineStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_room_events(
        self, tenant: str, room_id: str, *, from_pos: int, to_pos: int | None,
        backwards: bool, limit: int,
    ) -> list[StoredEvent]:
        """Forwards: ``from_pos < s <= to_pos`` ascending; backwards:
        ``to_pos < s <= from_pos`` descending. ``to_pos`` None: unbounded."""
        if backwards:
            low = -(2**62) if to_pos is None else to_pos
            sql = (
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE tenant = $1 AND room_id = $2 "
                f"AND stream_ordering <= $3 AND stream_ordering > $4 AND {_VISIBLE} "
                "ORDER BY stream_ordering DESC LIMIT $5"
            )
            rows = await self._db.fetch(sql, tenant, room_id, from_pos, low, limit)
        else:
            high = 2**62 if to_pos is None else to_pos
            sql = (
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE tenant = $1 AND room_id = $2 "
                f"AND stream_ordering > $3 AND stream_ordering <= $4 AND {_VISIBLE} "
                "ORDER BY stream_ordering LIMIT $5"
            )
            rows = await self._db.fetch(sql, tenant, room_id, from_pos, high, limit)
        return [_stored(r) for r in rows]

    async def get_room_events_topo(
        self, tenant: str, room_id: str, *, from_pos: TopoPos | None,
        to_pos: TopoPos | None, backwards: bool, limit: int, max_stream: int | None = None,
    ) -> list[StoredEvent]:
        """Topological order. Forwards: ``from_pos < p <= to_pos`` ascending;
        backwards: ``to_pos < p <= from_pos`` descending. ``None`` bounds
        are open; ``max_stream`` leaves out events stored after that stream
        position."""
        if backwards:
            upper, lower, order = from_pos, to_pos, "DESC"
        else:
            upper, lower, order = to_pos, from_pos, "ASC"
        clauses = ["tenant = $1", "room_id = $2", _VISIBLE]
        args: list[object] = [tenant, room_id]
        if upper is not None:
            clauses.append(f"(depth, stream_ordering) <= (${len(args) + 1}, ${len(args) + 2})")
            args.extend(upper)
        if lower is not None:
            clauses.append(f"(depth, stream_ordering) > (${len(args) + 1}, ${len(args) + 2})")
            args.extend(lower)
        if max_stream is not None:
            clauses.append(f"stream_ordering <= ${len(args) + 1}")
            args.append(max_stream)
        args.append(limit)
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} "
            f"ORDER BY depth {order}, stream_ordering {order} LIMIT ${len(args)}"
        )
        rows = await self._db.fetch(sql, *args)
        return [_stored(r) for r in rows]

    async def topo_position_at_stream(
        self, tenant: str, room_id: str, stream: int
    ) -> TopoPos | None:
        """The topological position just after the room's last event (in
        history order) among those stored at or before stream position
        ``stream``: where a stream token meets the topological order."""
        row = await self._db.fetchrow(
            "SELECT depth, stream_ordering FROM events WHERE tenant = $1 AND room_id = $2 "
            f"AND stream_ordering <= $3 AND {_VISIBLE} "
            "ORDER BY depth DESC, stream_ordering DESC LIMIT 1",
            tenant, room_id, stream,
        )
        return None if row is None else (int(row[0]), int(row[1]))

    async def rooms_with_events_between(
        self, tenant: str, room_ids: Iterable[str], after: int, upto: int
    ) -> set[str]:
        ids = list(dict.fromkeys(room_ids))
        found: set[str] = set()
        for part in chunks(ids):
            rows = await self._db.fetch(
                "SELECT DISTINCT room_id FROM events WHERE tenant = $1 AND stream_ordering > $2 "
                f"AND stream_ordering <= $3 AND {_VISIBLE} AND room_id IN ({in_list(part, 4)})",
                tenant, after, upto, *part,
            )
            found.update(str(r[0]) for r in rows)
        return found

    async def last_event_at_or_before(
        self, tenant: str, room_id: str, pos: int
    ) -> StoredEvent | None:
        """The room's last accepted event at or before stream position ``pos``."""
        rows = await self._db.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE tenant = $1 AND room_id = $2 "
            f"AND stream_ordering <= $3 AND {_VISIBLE} ORDER BY stream_ordering DESC LIMIT 1",
            tenant, room_id, pos,
        )
        return _stored(rows[0]) if rows else None
