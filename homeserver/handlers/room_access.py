"""Who may read or act in a room, from its current state; identifier checks.

Spec: client-server-api: a user who is not (and was not) in a room gets
``403 M_FORBIDDEN`` from its read endpoints, whether or not the server knows
the room (so the answer does not reveal the room exists); a user who left
may read what they could see up to their leave (history_visibility.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from federation.errors import Codes, MatrixError
from federation.event_format import is_valid_user_id
from homeserver.handlers.client_stores import TenantStores
from storage.stores.state import StateMap

__all__ = [
    "ReadAccess",
    "check_event_id",
    "check_room_id",
    "check_user_id",
    "get_membership",
    "require_joined",
    "require_read_access",
    "state_content",
]

MAX_ID_BYTES = 255


def check_room_id(room_id: str) -> str:
    if (not room_id.startswith("!") or len(room_id) < 2
            or len(room_id.encode()) > MAX_ID_BYTES):
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid room ID {room_id!r}")
    return room_id


def check_event_id(event_id: str) -> str:
    if (not event_id.startswith("$") or len(event_id) < 2
            or len(event_id.encode()) > MAX_ID_BYTES):
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid event ID {event_id!r}")
    return event_id


def check_user_id(user_id: Any) -> str:
    if not isinstance(user_id, str) or not is_valid_user_id(user_id):
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid user ID {user_id!r}")
    return user_id


async def state_content(
    ts: TenantStores, state: StateMap, event_type: str, state_key: str = ""
) -> dict[str, Any] | None:
    eid = state.get((event_type, state_key))
    if eid is None:
        return None
    ev = (await ts.s.events.get_events(ts.server_name, [eid])).get(eid)
    return None if ev is None else dict(ev.content)


async def get_membership(
    ts: TenantStores, room_id: str, user_id: str, state: StateMap | None = None
) -> tuple[str | None, str | None]:
    """``(membership, member event ID)`` of ``user_id`` in the room's current state."""
    if state is None:
        state = await ts.s.events.state.get_current_state(ts.server_name, room_id)
    eid = state.get(("m.room.member", user_id))
    if eid is None:
        return None, None
    content = await state_content(ts, state, "m.room.member", user_id) or {}
    m = content.get("membership")
    return (m if isinstance(m, str) else None), eid


def _not_in_room(user_id: str, room_id: str) -> MatrixError:
    return MatrixError(403, Codes.FORBIDDEN, f"User {user_id} is not in room {room_id}")


async def require_joined(ts: TenantStores, room_id: str, user_id: str) -> StateMap:
    """The room's current state, if ``user_id`` is joined; else 403."""
    state = await ts.s.events.state.get_current_state(ts.server_name, room_id)
    membership, _ = await get_membership(ts, room_id, user_id, state)
    if membership != "join":
        raise _not_in_room(user_id, room_id)
    return state


@dataclass(frozen=True)
class ReadAccess:
    """How far a user may read a room: ``upto`` is the stream position of
    their leave (None: up to now), ``upto_topo`` its topological position
    ``(depth, stream_ordering)`` (history order, what pagination compares)."""

    membership: str | None
    upto: int | None
    state: StateMap
    upto_topo: tuple[int, int] | None = None

    def hides(self, depth: int, stream_ordering: int) -> bool:
        """Whether an event at that position comes after the user's leave."""
        if self.upto_topo is None:
            return False
        return (depth, stream_ordering) > self.upto_topo


async def require_read_access(ts: TenantStores, room_id: str, user_id: str) -> ReadAccess:
    state = await ts.s.events.state.get_current_state(ts.server_name, room_id)
    membership, member_eid = await get_membership(ts, room_id, user_id, state)
    if membership == "join":
        return ReadAccess(membership, None, state)
    if membership in ("leave", "ban") and member_eid is not None:
        positions = await ts.s.memberships.membership_stream_positions(
            ts.server_name, room_id, user_id
        )
        joined = await _ever_joined(ts, positions)
        if joined:
            upto = next((p for p, e in positions if e == member_eid), None)
            if upto is not None:
                left_state = await ts.s.events.get_state_after(ts.server_name, member_eid)
                left = await ts.s.events.get_event(ts.server_name, member_eid)
                depth = left.event.depth if left is not None else 0
                return ReadAccess(membership, upto, left_state or state, (depth, upto))
    vis = await state_content(ts, state, "m.room.history_visibility")
    if state and (vis or {}).get("history_visibility") == "world_readable":
        return ReadAccess(membership, None, state)
    if membership == "invite":
        return ReadAccess(membership, None, state)
    raise _not_in_room(user_id, room_id)


async def _ever_joined(ts: TenantStores, positions: list[tuple[int, str]]) -> bool:
    loaded = await ts.s.events.get_events(ts.server_name, [e for _, e in positions])
    return any(ev.content.get("membership") == "join" for ev in loaded.values())
