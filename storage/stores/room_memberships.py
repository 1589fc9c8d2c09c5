"""Which rooms a user has a membership in, read from the event graph.

The rooms a user was ever invited to, joined, left or was banned from are
the rooms holding an ``m.room.member`` event whose state key is the user
(index ``events_type_state_key``, migration 0005); their current membership
is then read from each room's current state. Reading the graph (rather than
keeping a membership table up to date) means events persisted by any path,
federation included, are counted. Also holds forgotten rooms
(``room_forgotten``) and the redactions of a room.
"""

from __future__ import annotations

from collections.abc import Iterable

from storage.database import Database
from storage.stores.state import Queryable

__all__ = ["RoomMembershipStore"]


class RoomMembershipStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def rooms_with_membership_events(self, tenant: str, user_id: str) -> list[str]:
        """Rooms holding any accepted membership event of ``user_id``."""
        rows = await self._db.fetch(
            "SELECT DISTINCT room_id FROM events WHERE tenant = $1 AND type = 'm.room.member' "
            "AND state_key = $2 AND outlier = 0 AND rejected_reason IS NULL",
            tenant, user_id,
        )
        return sorted(str(r[0]) for r in rows)

    async def membership_stream_positions(
        self, tenant: str, room_id: str, user_id: str
    ) -> list[tuple[int, str]]:
        """``(stream_ordering, event_id)`` of the user's membership events in a
        room, in stream order."""
        rows = await self._db.fetch(
            "SELECT stream_ordering, event_id FROM events WHERE tenant = $1 AND room_id = $2 "
            "AND type = 'm.room.member' AND state_key = $3 AND outlier = 0 "
            "AND rejected_reason IS NULL AND soft_failed = 0 ORDER BY stream_ordering",
            tenant, room_id, user_id,
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    async def membership_event_ids_in(
        self, tenant: str, user_id: str, room_id: str
    ) -> list[str]:
        """Every accepted or outlier membership event of ``user_id`` in a room
        (an invite received over federation, or the leave that rejected one,
        is an outlier: this tenant holds no state of the room)."""
        rows = await self._db.fetch(
            "SELECT event_id FROM events WHERE tenant = $1 AND room_id = $2 "
            "AND type = 'm.room.member' AND state_key = $3 "
            "AND rejected_reason IS NULL AND soft_failed = 0 ORDER BY stream_ordering",
            tenant, room_id, user_id,
        )
        return [str(r[0]) for r in rows]

    async def redaction_event_ids(
        self, tenant: str, room_id: str, *, conn: Queryable | None = None
    ) -> list[str]:
        """Accepted ``m.room.redaction`` events of the room."""
        rows = await (conn or self._db).fetch(
            "SELECT event_id FROM events WHERE tenant = $1 AND room_id = $2 "
            "AND type = 'm.room.redaction' AND outlier = 0 AND rejected_reason IS NULL "
            "AND soft_failed = 0",
            tenant, room_id,
        )
        return [str(r[0]) for r in rows]

    async def forget(self, tenant: str, user_id: str, room_id: str) -> None:
        await self._db.execute(
            "INSERT INTO room_forgotten (tenant, user_id, room_id) VALUES ($1, $2, $3) "
            "ON CONFLICT (tenant, user_id, room_id) DO NOTHING",
            tenant, user_id, room_id,
        )

    async def unforget(self, tenant: str, user_id: str, room_id: str) -> None:
        await self._db.execute(
            "DELETE FROM room_forgotten WHERE tenant = $1 AND user_id = $2 AND room_id = $3",
            tenant, user_id, room_id,
        )

    async def forgotten_rooms(self, tenant: str, user_id: str) -> set[str]:
        rows = await self._db.fetch(
            "SELECT room_id FROM room_forgotten WHERE tenant = $1 AND user_id = $2",
            tenant, user_id,
        )
        return {str(r[0]) for r in rows}

    async def all_room_ids(self, tenant: str) -> list[str]:
        rows = await self._db.fetch(
            "SELECT room_id FROM room_current_state WHERE tenant = $1 ORDER BY room_id", tenant
        )
        return [str(r[0]) for r in rows]

    async def stream_positions(
        self, tenant: str, event_ids: Iterable[str]
    ) -> dict[str, int]:
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, int] = {}
        for eid in ids:
            v = await self._db.fetchval(
                "SELECT stream_ordering FROM events WHERE tenant = $1 AND event_id = $2",
                tenant, eid,
            )
            if v is not None:
                out[eid] = int(v)
        return out
