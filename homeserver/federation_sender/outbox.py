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
from collections.abc import Callable, Collection

from federation.clock import Clock
from federation.event_format import server_name_of
from federation.events import Event
from storage.database import Database, Transaction
from storage.stores.events import EventStore
from storage.stores.outbox import OutboxStore

__all__ = ["OutboxWriter", "joined_servers_txn", "register_waker"]

EnqueuedCallback = Callable[[Database, str, Collection[str]], None]

#: The sender serving each open database (``FederationSender.serve``), for
#: writers built without one, such as the client API's.
_wakers: weakref.WeakKeyDictionary[Database, EnqueuedCallback] = weakref.WeakKeyDictionary()


def register_waker(db: Database, callback: EnqueuedCallback) -> None:
    _wakers[db] = callback


async def joined_servers_txn(
    txn: Transaction | None, events: EventStore, tenant: str, room_id: str
) -> set[str]:
    """Servers with a joined member in the room's current state, as ``tenant``
    sees it (read inside ``txn``: after the event being sent and the state it
    makes current)."""
    return set(await events.state.get_joined_servers(tenant, room_id, txn=txn))


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

    async def destinations_for_event_txn(
        self, txn: Transaction, tenant: str, event: Event
    ) -> set[str]:
        """Where ``event`` goes: see the module docstring. Call after the event
        and the room's current state are persisted in ``txn``."""
        servers = await joined_servers_txn(txn, self._events, tenant, event.room_id)
        if (
            event.type == "m.room.member"
            and event.state_key
            and event.membership in ("leave", "ban")
        ):
            servers.add(server_name_of(event.state_key))
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
