"""Applying a room's ``m.room.server_acl`` to the servers that call us.

Spec: ``server-server-api.md`` "Server Access Control Lists (ACLs)": when a
remote server makes a request about a room whose ACL denies it, "the
receiving server MUST reply with a 403 HTTP status code and an ``errcode``
of ``M_FORBIDDEN``"; in ``/send`` each PDU of such a room is refused with an
error for its event ID, and ``m.typing``/``m.receipt`` EDUs for it are
ignored. The ACL is the one in the room's *current* state (as Synapse reads
it); a room we hold no state for has none. The matching itself is
:mod:`federation.server_acl`.
"""

from __future__ import annotations

from collections import OrderedDict

from federation.errors import Codes, MatrixError
from federation.server_acl import ServerAcl
from storage.stores.events import EventStore

__all__ = ["RoomServerAcls"]

ACL_KEY = ("m.room.server_acl", "")
_PARSED_MAX = 1024


class RoomServerAcls:
    def __init__(self, events: EventStore) -> None:
        self._events = events
        # ACL event ID -> its parsed content. Events never change, so entries
        # never go stale; the room's current state says which one applies.
        self._parsed: OrderedDict[str, ServerAcl] = OrderedDict()

    async def acl_of(self, tenant: str, room_id: str) -> ServerAcl | None:
        """The ACL in the room's current state, ``None`` if it has none."""
        current = await self._events.state.get_current_state(tenant, room_id)
        event_id = current.get(ACL_KEY)
        if event_id is None:
            return None
        acl = self._parsed.get(event_id)
        if acl is not None:
            self._parsed.move_to_end(event_id)
            return acl
        stored = await self._events.get_event(tenant, event_id)
        if stored is None:
            return None
        acl = ServerAcl.from_content(stored.event.content)
        self._parsed[event_id] = acl
        if len(self._parsed) > _PARSED_MAX:
            self._parsed.popitem(last=False)
        return acl

    async def allows(self, tenant: str, room_id: str, server: str) -> bool:
        """Whether the room's ACL lets ``server`` take part (no ACL: yes)."""
        if server == tenant:
            return True
        acl = await self.acl_of(tenant, room_id)
        return acl is None or acl.allows(server)

    async def check(self, tenant: str, room_id: str, server: str) -> None:
        """Raise 403 ``M_FORBIDDEN`` if the room's ACL denies ``server``."""
        if not await self.allows(tenant, room_id, server):
            raise MatrixError(
                403, Codes.FORBIDDEN, f"Server {server} is denied by the server ACL of {room_id}"
            )
