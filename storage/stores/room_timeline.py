"""Reading a room's events in stream order, in both directions, for
``/messages``, ``/sync`` and ``/context`` (client-server-api "Pagination").

A position is a stream ordering ``P`` meaning "just after the event with
stream ordering ``P``". Outliers, rejected and soft-failed events are never
returned (server-server-api "Rejection", "Soft failure").
"""

from __future__ import annotations

from collections.abc import Iterable

from storage.database import Database
from storage.stores.events import _EVENT_COLUMNS, StoredEvent, _stored
from storage.stores.state import chunks, in_list

__all__ = ["RoomTimelineStore"]

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
            low = -1 if to_pos is None else to_pos
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
