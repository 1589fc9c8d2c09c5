"""Which events a user may see: the spec's history visibility rules.

Spec: ``client-server-api/modules/history_visibility.md``, "Server
behaviour". Visibility depends on the state of the room *at the event*:

1. ``world_readable`` at the event: allow;
2. the user's membership at the event is ``join``: allow;
3. ``shared`` at the event and the user joined the room at any point after
   the event: allow. A user who is joined now is such a user (Synapse reads
   it so too: shared history is hidden only from those not in the room), so
   events on a branch of the room's graph concurrent with their join, whose
   state does not list them, are not hidden from them;
4. membership ``invite`` and visibility ``invited``: allow;
5. otherwise deny.

A ``m.room.history_visibility`` event is visible if the rules allow it with
the visibility before *or* after it; the user's own ``m.room.member`` events
likewise with their membership before or after. An unknown or missing
visibility reads as ``shared``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from homeserver.handlers.client_stores import TenantStores
from storage.stores.events import StoredEvent
from storage.stores.state import StateMap

__all__ = ["VISIBILITIES", "filter_events_for_client", "is_allowed"]

VISIBILITIES = ("world_readable", "shared", "invited", "joined")
HV_KEY = ("m.room.history_visibility", "")


def _visibility(content: Mapping[str, Any] | None) -> str:
    value = (content or {}).get("history_visibility")
    return value if value in VISIBILITIES else "shared"


def _membership(content: Mapping[str, Any] | None) -> str | None:
    value = (content or {}).get("membership")
    return value if isinstance(value, str) else None


def is_allowed(visibility: str, membership: str | None, joined_later: bool) -> bool:
    if visibility == "world_readable":
        return True
    if membership == "join":
        return True
    if visibility == "shared" and joined_later:
        return True
    return membership == "invite" and visibility == "invited"


async def filter_events_for_client(
    ts: TenantStores, user_id: str, events: Sequence[StoredEvent]
) -> list[StoredEvent]:
    """The events of ``events`` (any rooms) that ``user_id`` may see, in order."""
    if not events:
        return []
    tenant = ts.server_name
    state_store = ts.s.events.state
    # History positions (depth, stream ordering) of the user's joins, per
    # room: rule 3 asks whether one comes after the event in the room's
    # history (not in the order this server happened to receive them).
    joins: dict[str, list[tuple[int, int]]] = {}
    # The user's membership event in each room's current state.
    member_now: dict[str, str | None] = {}
    needed: set[str] = set()
    states: dict[int | None, StateMap] = {}
    for se in events:
        room = se.event.room_id
        if room not in joins:
            current = await state_store.get_current_state(tenant, room)
            now = member_now[room] = current.get(("m.room.member", user_id))
            if now is not None:
                needed.add(now)
            positions = await ts.s.memberships.membership_stream_positions(
                tenant, room, user_id
            )
            joins[room] = []
            if positions:
                loaded = await ts.s.events.get_events(tenant, [e for _, e in positions])
                joins[room] = [
                    (loaded[eid].depth, pos) for pos, eid in positions
                    if eid in loaded and _membership(loaded[eid].content) == "join"
                ]
        group = se.state_group_before
        if group not in states:
            states[group] = await state_store.get_state_group(tenant, group)
        state = states[group]
        for key in (HV_KEY, ("m.room.member", user_id)):
            if key in state:
                needed.add(state[key])
    contents = {
        eid: ev.content for eid, ev in (await ts.s.events.get_events(tenant, needed)).items()
    }

    out: list[StoredEvent] = []
    for se in events:
        ev = se.event
        state = states[se.state_group_before]
        vis = _visibility(contents.get(state.get(HV_KEY, "")))
        member = _membership(contents.get(state.get(("m.room.member", user_id), "")))
        joined_now = _membership(contents.get(member_now[ev.room_id] or "")) == "join"
        joined_later = joined_now or any(
            p > (ev.depth, se.stream_ordering) for p in joins[ev.room_id]
        )
        ok = is_allowed(vis, member, joined_later)
        if not ok and ev.type == "m.room.history_visibility" and ev.state_key == "":
            ok = is_allowed(_visibility(ev.content), member, joined_later)
        if not ok and ev.type == "m.room.member" and ev.state_key == user_id:
            ok = is_allowed(vis, _membership(ev.content), joined_later)
        if ok:
            out.append(se)
    return out
