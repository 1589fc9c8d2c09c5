"""Writing the outbox in the transaction that persists an event.

Spec: ``server-server-api.md`` "PDUs": an event is sent to the servers in the
room, i.e. the servers of its joined members (``m.room.member`` with
``membership: join`` in the room's current state), minus the sender's own
server. Other tenants of this node are destinations like any other. The
server of a member who leaves, or is kicked or banned, by this event also
gets it, so it learns of its own departure.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Collection

from federation.clock import Clock
from federation.events import Event
from storage.database import Database, Transaction
from storage.stores.events import EventStore
from storage.stores.outbox import OutboxStore

__all__ = ["OutboxWriter", "joined_servers_txn", "register_waker"]

#: Member events seen, by ID (an ID fixes its content, so entries never go stale).
_MEMBER_CACHE_SIZE = 100_000

EnqueuedCallback = Callable[[Database, str, Collection[str]], None]

#: The sender serving each open database (``FederationSender.serve``), for
#: writers built without one, such as the client API's.
_wakers: weakref.WeakKeyDictionary[Database, EnqueuedCallback] = weakref.WeakKeyDictionary()


def register_waker(db: Database, callback: EnqueuedCallback) -> None:
    _wakers[db] = callback


class _MemberCache:
    def __init__(self, size: int) -> None:
        self._size = size
        self._d: OrderedDict[str, str | None] = OrderedDict()

    def get(self, event_id: str) -> tuple[bool, str | None]:
        if event_id in self._d:
            self._d.move_to_end(event_id)
            return True, self._d[event_id]
        return False, None

    def put(self, event_id: str, membership: str | None) -> None:
        self._d[event_id] = membership
        if len(self._d) > self._size:
            self._d.popitem(last=False)


def _server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


async def joined_servers_txn(
    txn: Transaction | None,
    events: EventStore,
    tenant: str,
    room_id: str,
    *,
    cache: _MemberCache | None = None,
) -> set[str]:
    """Servers with a joined member in the room's current state, as ``tenant`` sees it."""
    state = await events.state.get_current_state(tenant, room_id, txn=txn)
    members = {k[1]: eid for k, eid in state.items() if k[0] == "m.room.member"}
    memberships: dict[str, str | None] = {}
    unknown: list[str] = []
    for eid in members.values():
        hit, m = cache.get(eid) if cache is not None else (False, None)
        if hit:
            memberships[eid] = m
        else:
            unknown.append(eid)
    if unknown:
        loaded = await events.get_events(tenant, unknown, txn=txn)
        for eid in unknown:
            ev = loaded.get(eid)
            m = ev.membership if ev is not None else None
            memberships[eid] = m
            if cache is not None and ev is not None:
                cache.put(eid, m)
    return {
        _server_of(user) for user, eid in members.items() if memberships.get(eid) == "join"
    }


class OutboxWriter:
    """Writes the outbox rows of locally created events.

    ``on_enqueued(database, origin, destinations)`` (set by the
    :class:`~homeserver.federation_sender.FederationSender` that serves this
    database) wakes the destinations' queues; it may run before the
    transaction commits, which is safe because the queue's claim waits on
    the origin's outbox lock held by the writing transaction.
    """

    def __init__(self, db: Database, events: EventStore, clock: Clock) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self.store = OutboxStore(db)
        self.on_enqueued: EnqueuedCallback | None = None
        self._members = _MemberCache(_MEMBER_CACHE_SIZE)

    async def destinations_for_event_txn(
        self, txn: Transaction, tenant: str, event: Event
    ) -> set[str]:
        """Where ``event`` goes: see the module docstring. Call after the event
        and the room's current state are persisted in ``txn``."""
        servers = await joined_servers_txn(
            txn, self._events, tenant, event.room_id, cache=self._members
        )
        if (
            event.type == "m.room.member"
            and event.state_key
            and event.membership in ("leave", "ban")
        ):
            servers.add(_server_of(event.state_key))
        servers.discard(tenant)
        servers.discard("")
        return servers

    async def write_event_txn(
        self, txn: Transaction, tenant: str, event: Event, *, exclude: Collection[str] = ()
    ) -> set[str]:
        """Queue ``event`` for every destination (but ``exclude``), inside
        ``txn``; returns them."""
        destinations = await self.destinations_for_event_txn(txn, tenant, event)
        destinations.difference_update(exclude)
        if destinations:
            await self.store.enqueue_pdu_txn(
                txn, tenant, destinations, event.event_id, event.room_id, self._clock.time_ms()
            )
            wake = self.on_enqueued or _wakers.get(self._db)
            if wake is not None:
                wake(self._db, tenant, destinations)
        return destinations
