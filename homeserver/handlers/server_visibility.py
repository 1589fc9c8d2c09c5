"""What another server may see of a room (server-side history visibility).

Spec: ``client-server-api`` "History visibility" (``world_readable``,
``shared``, ``invited``, ``joined``) applied to servers as Synapse does
(``synapse/visibility.py`` ``filter_events_for_server``), and
``server-server-api.md``: a server answers requests about a room only to
servers that may see it. (What a *user* may see is
:mod:`homeserver.handlers.visibility`.)

Two levels:

* the room: a server may ask about a room if it has a joined member in the
  room's current state, or the room is ``world_readable``
  (:meth:`ServerVisibility.check_room`, else 403 ``M_FORBIDDEN``);
* each event: with ``invited``/``joined`` visibility at the event, a server
  whose users were neither invited (for ``invited``) nor joined at that
  event gets the event *redacted* (:meth:`ServerVisibility.filter_events`),
  which keeps the DAG intact for it while hiding the content.
"""

from __future__ import annotations

from collections.abc import Sequence

from federation.errors import Codes, MatrixError
from federation.event_format import server_name_of
from federation.events import Event
from federation.redaction import redact
from storage.stores.events import EventStore
from storage.stores.state import StateMap

__all__ = ["ServerVisibility"]

HISTORY_KEY = ("m.room.history_visibility", "")


class ServerVisibility:
    def __init__(self, events: EventStore) -> None:
        self._events = events

    async def _memberships_of(
        self, tenant: str, state: StateMap, server: str
    ) -> list[str]:
        ids = [
            eid for (typ, key), eid in state.items()
            if typ == "m.room.member" and server_name_of(key) == server
        ]
        loaded = await self._events.get_events(tenant, ids)
        return [m for e in loaded.values() if (m := e.membership) is not None]

    async def _history_visibility(self, tenant: str, state: StateMap) -> str:
        eid = state.get(HISTORY_KEY)
        if eid is None:
            return "shared"  # the spec's default
        ev = await self._events.get_event(tenant, eid)
        value = ev.event.content.get("history_visibility") if ev is not None else None
        return value if isinstance(value, str) else "shared"

    async def server_in_room(self, tenant: str, room_id: str, server: str) -> bool:
        """Whether ``server`` has a joined member in the room's current state
        (the current members index, not the member events themselves)."""
        return await self._events.state.is_server_joined(tenant, room_id, server)

    async def joined_servers(self, tenant: str, room_id: str) -> list[str]:
        """Servers with a joined member in the room's current state, sorted."""
        return await self._events.state.get_joined_servers(tenant, room_id)

    async def may_see_room(self, tenant: str, room_id: str, server: str) -> bool:
        if server == tenant:
            return True
        if await self._events.state.get_room_version_id(tenant, room_id) is None:
            return False
        if await self.server_in_room(tenant, room_id, server):
            return True
        current = await self._events.state.get_current_state(tenant, room_id)
        return await self._history_visibility(tenant, current) == "world_readable"

    async def check_room(self, tenant: str, room_id: str, server: str) -> None:
        """Raise 403 ``M_FORBIDDEN`` unless ``server`` may see ``room_id``.

        An unknown room gets the same answer, so the reply does not tell a
        stranger which rooms exist here.
        """
        if not await self.may_see_room(tenant, room_id, server):
            raise MatrixError(
                403, Codes.FORBIDDEN, f"{server} is not in room {room_id} and may not see it"
            )

    async def may_see_event(self, tenant: str, event: Event, server: str) -> bool:
        """Whether ``server`` may see ``event``'s content (history visibility at it)."""
        if server == tenant:
            return True
        before = await self._events.get_state_before(tenant, event.event_id)
        if before is None:
            # An outlier (an auth or state event fetched for its own sake): no
            # state is known at it, and such events are part of every auth chain
            # a member may ask for.
            return True
        visibility = await self._history_visibility(tenant, before)
        if visibility in ("world_readable", "shared"):
            return True
        memberships = await self._memberships_of(tenant, before, server)
        if "join" in memberships:
            return True
        return visibility == "invited" and "invite" in memberships

    async def filter_events(
        self, tenant: str, events: Sequence[Event], server: str
    ) -> list[Event]:
        """``events`` in order, those ``server`` may not see redacted."""
        out: list[Event] = []
        for ev in events:
            if await self.may_see_event(tenant, ev, server):
                out.append(ev)
            else:
                out.append(Event(redact(ev.pdu, ev.room_version), ev.event_id, ev.room_version))
        return out
