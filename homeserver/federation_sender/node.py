"""Outbound federation assembled for one node.

:func:`start_federation_outbound` builds the node's
:class:`~homeserver.federation_sender.FederationSender` over the federation
client of ``hs.keys`` and sets ``hs.federation_sender`` (``send_edu``,
``on_peer_seen``) and ``hs.remote_rooms`` (the client API's
:class:`~homeserver.handlers.remote_rooms.RemoteRooms`). Tenants with a
dedicated database are served from it: the sender sweeps every database it
is given and every remote-rooms call runs over the tenant's database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from federation.event_format import server_name_of
from federation.events import Event
from homeserver.federation_sender.backoff import BackoffPolicy, DeliveryLimits
from homeserver.federation_sender.outbox import OutboxWriter
from homeserver.federation_sender.sender import FederationSender
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.handlers.federation_client_ops import FederationRemoteRooms
from homeserver.keys import KeyService, key_service_for
from storage.database import Database, Transaction
from storage.stores.events import EventStore
from storage.stores.state import StateStore

__all__ = ["RemoteRoomsRouter", "new_server_hook", "start_federation_outbound"]

logger = logging.getLogger(__name__)

#: At most this many forward extremities go to a server that just joined.
_MAX_CATCH_UP_EXTREMITIES = 20


class RemoteRoomsRouter:
    """:class:`RemoteRooms` for every tenant: each call over the tenant's database."""

    def __init__(self, hs: Any, keys: KeyService) -> None:
        self._hs = hs
        self._keys = keys
        self._by_db: dict[int, FederationRemoteRooms] = {}

    async def database_for(self, tenant: str) -> Database:
        registry: Any = getattr(self._hs, "tenants", None)
        t = registry.get(tenant) if registry is not None else None
        if t is None or registry is None:
            db: Database = self._hs.database
            return db
        found: Database = await registry.database(t)
        return found

    async def for_tenant(self, tenant: str) -> FederationRemoteRooms:
        db = await self.database_for(tenant)
        ops = self._by_db.get(id(db))
        if ops is None:
            hs, keys = self._hs, self._keys
            shared = getattr(hs, "event_store", None)
            events = (shared if isinstance(shared, EventStore) and db is hs.database
                      else EventStore(db, StateStore(db)))

            def key_for(name: str) -> Any:
                return keys.signing_keys(name)[0]

            creation = EventCreationHandler(db, events, hs.clock, key_for)
            sender = getattr(hs, "federation_sender", None)
            if isinstance(sender, FederationSender):
                sender.serve(db)
            ops = FederationRemoteRooms(
                db=db, events=events, creation=creation, keyring=keys.keyring,
                client=keys.client, clock=hs.clock, signing_key_for=key_for,
            )
            self._by_db[id(db)] = ops
        return ops

    async def remote_join(
        self, tenant: str, user_id: str, room_id_or_alias: str, servers: Sequence[str],
        content: Mapping[str, Any],
    ) -> str:
        ops = await self.for_tenant(tenant)
        return await ops.remote_join(tenant, user_id, room_id_or_alias, servers, content)

    async def remote_leave(
        self, tenant: str, user_id: str, room_id: str, content: Mapping[str, Any]
    ) -> str:
        return await (await self.for_tenant(tenant)).remote_leave(tenant, user_id, room_id,
                                                                  content)

    async def remote_invite(
        self, tenant: str, sender: str, room_id: str, target: str, content: Mapping[str, Any]
    ) -> str:
        return await (await self.for_tenant(tenant)).remote_invite(tenant, sender, room_id,
                                                                   target, content)

    async def remote_public_rooms(
        self, tenant: str, server: str, *, limit: int | None, since: str | None,
        search_filter: Mapping[str, Any] | None, include_all_networks: bool,
        third_party_instance_id: str | None,
    ) -> dict[str, Any]:
        return await (await self.for_tenant(tenant)).remote_public_rooms(
            tenant, server, limit=limit, since=since, search_filter=search_filter,
            include_all_networks=include_all_networks,
            third_party_instance_id=third_party_instance_id,
        )

    async def query_alias(self, tenant: str, room_alias: str) -> tuple[str, list[str]]:
        return await (await self.for_tenant(tenant)).query_alias(tenant, room_alias)

    async def query_profile(self, tenant: str, user_id: str) -> dict[str, Any]:
        return await (await self.for_tenant(tenant)).query_profile(tenant, user_id)


def accepted_event_hook(sender: FederationSender, db: Database, events: EventStore) -> Any:
    """For the inbound ``FederationServer.on_event_accepted_txn``: a join or
    leave a resident server accepted for another server goes to the other
    servers in the room (spec "Joining Rooms": the resident server sends it
    on), queued in the transaction that persists it."""
    writer = OutboxWriter(db, events, sender.clock)
    writer.on_enqueued = sender._on_enqueued

    async def hook(txn: Transaction, tenant: str, event: Event) -> None:
        await writer.write_event_txn(txn, tenant, event,
                                     exclude=(server_name_of(event.sender),))

    return hook


def new_server_hook(
    sender: FederationSender, db: Database, events: EventStore
) -> Callable[[str, Sequence[Event]], None]:
    """For the inbound ``TransactionHandler.on_events``: when a received join
    brings a server into the room (its first joined member in our current
    state), our forward extremities go to that server.

    Why: we send each event to the servers in the room as we see it when we
    create it (spec "Sending events"). A server whose join reached us late,
    relayed by the resident that accepted it ("Joining Rooms"), misses the
    events we created in between, and nobody else sends them: the resident
    relays only the joins and leaves it accepts itself. Our extremities reach
    it, and from them it fetches anything else it lacks
    (``/get_missing_events``); an event it already holds is answered as such.
    """
    outbox = OutboxWriter(db, events, sender.clock).store
    tasks: set[asyncio.Future[None]] = set()

    async def catch_up(tenant: str, room_id: str, server: str) -> None:
        async with db.transaction("outbox_new_server") as txn:
            joined = await events.state.get_joined_users(tenant, room_id, server=server,
                                                         txn=txn)
            if len(joined) != 1:
                return  # it was in the room already (or has left again)
            extremities = await events.get_forward_extremities(tenant, room_id, txn=txn)
            for eid in extremities[:_MAX_CATCH_UP_EXTREMITIES]:
                await outbox.enqueue_pdu_txn(
                    txn, tenant, {server}, eid, room_id, sender.clock.time_ms()
                )
        if extremities:
            logger.debug("%s joined %s: sending it our %d extremities",
                         server, room_id, len(extremities))
            sender._on_enqueued(db, tenant, {server})

    async def guarded(tenant: str, room_id: str, server: str) -> None:
        try:
            await catch_up(tenant, room_id, server)
        except Exception:
            logger.exception("sending extremities of %s to %s failed", room_id, server)

    def hook(tenant: str, evs: Sequence[Event]) -> None:
        for ev in evs:
            if ev.type != "m.room.member" or ev.membership != "join" or not ev.state_key:
                continue
            server = ev.state_key.split(":", 1)[-1]
            if server and server != tenant:
                task = asyncio.ensure_future(guarded(tenant, ev.room_id, server))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    return hook


async def start_federation_outbound(hs: Any) -> FederationSender:
    """Build and start the node's sender; set ``hs.federation_sender`` and
    ``hs.remote_rooms``. Stop it with ``await hs.federation_sender.stop()``."""
    keys = key_service_for(hs)
    router = RemoteRoomsRouter(hs, keys)
    fed = hs.config.federation
    sender = FederationSender(
        keys.client, hs.clock, router.database_for,
        policy=BackoffPolicy(min_interval_ms=fed.retry_min_interval,
                             max_interval_ms=fed.retry_max_interval),
        limits=DeliveryLimits(max_attempts=fed.max_delivery_attempts,
                              max_age_ms=fed.max_delivery_age),
        metrics=hs.metrics.federation,
    )
    sender.serve(hs.database)
    registry: Any = getattr(hs, "tenants", None)
    if registry is not None:
        # A suspended tenant sends nothing; its rows wait for its resumption.
        def suspended(origin: str) -> bool:
            tenant = registry.get(origin)
            return tenant is not None and not tenant.is_active

        sender.origin_paused = suspended
    hs.federation_sender = sender
    hs.remote_rooms = router
    await sender.start()
    return sender
