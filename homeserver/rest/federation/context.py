"""Builds the inbound federation handlers and finds the tenant of a request.

A node may host several server names (tenants); a request is for the tenant
named by its X-Matrix ``destination``. Each tenant is served from the
database the tenant registry resolves for it (the node's for a shared
tenant, its own for a dedicated one); handlers are built once per database
(the state store's caches are per database).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from federation.events import Event
from homeserver.handlers.event_receipt import EventReceiptHandler
from homeserver.handlers.federation_receiver import TransactionHandler
from homeserver.handlers.federation_server import FederationServer
from homeserver.handlers.missing_events import MissingEventsFetcher
from homeserver.handlers.room_acl import RoomServerAcls
from homeserver.handlers.room_joins import room_joins
from homeserver.handlers.server_visibility import ServerVisibility
from homeserver.http.x_matrix import authenticated_origin, request_destination
from homeserver.keys import KeyService, key_service_for
from homeserver.ratelimit import Ratelimiter
from storage.database import Database
from storage.stores.events import EventStore
from storage.stores.federation_inbound import FederationInboundStore
from storage.stores.profiles import ProfileStore
from storage.stores.receipts import ReceiptStore
from storage.stores.room_aliases import RoomAliasStore
from storage.stores.room_directory import RoomDirectoryStore
from storage.stores.state import StateStore

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["InboundContext", "InboundHandlers"]

logger = logging.getLogger(__name__)

PEER_SEEN_INTERVAL_S = 10.0

#: The kinds of federation request limited per origin server (``ratelimiting.
#: federation_<kind>_per_second`` / ``_burst``), and what a 429 calls them.
RATELIMITED = {"send": "transactions", "join": "membership requests", "query": "queries"}


@dataclass(frozen=True)
class InboundHandlers:
    """The inbound federation handlers over one database."""

    db: Database
    events: EventStore
    store: FederationInboundStore
    visibility: ServerVisibility
    fetcher: MissingEventsFetcher
    transactions: TransactionHandler
    server: FederationServer


class InboundContext:
    def __init__(self, hs: HomeServer, keys: KeyService) -> None:
        self._hs = hs
        self._keys = keys
        self._by_db: dict[int, InboundHandlers] = {}
        self._seen: dict[str, float] = {}
        rc = hs.config.ratelimiting
        self._limiters = {
            kind: Ratelimiter(
                hs.clock,
                per_second=getattr(rc, f"federation_{kind}_per_second"),
                burst=getattr(rc, f"federation_{kind}_burst"),
            )
            for kind in RATELIMITED
        }

    @classmethod
    def for_homeserver(cls, hs: HomeServer) -> InboundContext:
        return cls(hs, key_service_for(hs))

    @staticmethod
    def origin(request: web.Request) -> str:
        return authenticated_origin(request)

    @staticmethod
    def tenant(request: web.Request) -> str:
        """The hosted server name the request was addressed to (X-Matrix destination)."""
        return request_destination(request)

    def ratelimit(self, kind: str, origin: str) -> None:
        """Take one token of ``origin``'s ``kind`` bucket, or raise 429
        ``M_LIMIT_EXCEEDED`` with ``retry_after_ms`` (per origin server, across
        tenants: the node bears the load)."""
        self._limiters[kind].check(origin, what=f"federation {RATELIMITED[kind]} from {origin}")

    async def _database_for(self, tenant: str) -> Database:
        # The one resolver (homeserver/tenants.py): a dedicated tenant's rows
        # live in its own database, never in the node's.
        registry: Any = getattr(self._hs, "tenants", None)
        t = registry.get(tenant) if registry is not None else None
        if t is None:
            db: Database = self._hs.database
            return db
        found: Database = await t.database()
        return found

    async def handlers(self, tenant: str) -> InboundHandlers:
        db = await self._database_for(tenant)
        found = self._by_db.get(id(db))
        if found is None:
            found = self._build(db)
            self._by_db[id(db)] = found
        return found

    async def peer_seen(self, origin: str) -> None:
        """An authenticated request from ``origin`` proves it is up: end the
        backoff of our queue to it. The database is written at most every
        ``PEER_SEEN_INTERVAL_S`` per origin, except when a queue to it is
        asleep in a backoff (that began after the last request, say)."""
        sender: Any = getattr(self._hs, "federation_sender", None)
        if sender is None or not hasattr(sender, "on_peer_seen"):
            return
        now = self._hs.clock.monotonic()
        last = self._seen.get(origin)
        asleep = getattr(sender, "backing_off_towards", None)
        if (last is not None and now - last < PEER_SEEN_INTERVAL_S
                and not (asleep is not None and asleep(origin))):
            return
        self._seen[origin] = now
        try:
            await sender.on_peer_seen(origin)
        except Exception:
            logger.exception("Waking the queue to %s failed", origin)

    def _event_store(self, db: Database) -> EventStore:
        # Share the node's event store (and its state caches) when it has one.
        shared = getattr(self._hs, "event_store", None)
        if isinstance(shared, EventStore) and db is self._hs.database:
            return shared
        return EventStore(db, StateStore(db))

    def _build(self, db: Database) -> InboundHandlers:
        hs, keys = self._hs, self._keys
        events = self._event_store(db)
        store = FederationInboundStore(db)
        receipt = EventReceiptHandler(db, events)
        visibility = ServerVisibility(events)
        acls = RoomServerAcls(events)
        fetcher = MissingEventsFetcher(db, events, receipt, keys.keyring, keys.client)
        transactions = TransactionHandler(
            events, store, keys.keyring, fetcher, hs.clock, acls=acls,
            window_ms=hs.config.federation.inbound_transaction_window,
            metrics=hs.metrics.federation,
        )
        trust = getattr(hs, "trust", None)
        if trust is not None:
            transactions.pdu_refusal = trust.pdu_refusal
        server = FederationServer(
            db=db, events=events, receipt=receipt, visibility=visibility,
            keyring=keys.keyring, store=store, clock=hs.clock,
            signing_key_for=lambda name: keys.signing_keys(name)[0],
            aliases=RoomAliasStore(db), profiles=ProfileStore(db),
            published=RoomDirectoryStore(db), acls=acls,
        )
        handlers = InboundHandlers(db, events, store, visibility, fetcher, transactions, server)
        self._wire(handlers)
        return handlers

    def _wire(self, h: InboundHandlers) -> None:
        """Connect to the parts of the node that exist: /sync wake-ups, typing, receipts."""
        notifier: Any = getattr(self._hs, "notifier", None)
        receipts = ReceiptStore(h.db)

        async def on_receipt(tenant: str, origin: str, content: Any) -> None:
            # Spec "Receipts": {room_id: {receipt_type: {user_id: {event_ids, data}}}}.
            rooms: list[str] = []
            for room_id, by_type in content.items():
                for receipt_type, by_user in (by_type or {}).items():
                    if receipt_type != "m.read" or not isinstance(by_user, dict):
                        continue
                    for user_id, receipt in by_user.items():
                        ids = receipt.get("event_ids") if isinstance(receipt, dict) else None
                        data = receipt.get("data") if isinstance(receipt, dict) else None
                        data = data if isinstance(data, dict) else {}
                        if (not isinstance(user_id, str)
                                or user_id.split(":", 1)[-1] != origin
                                or not isinstance(ids, list) or not ids
                                or not isinstance(ids[0], str)):
                            continue
                        ts = data.get("ts")
                        thread = data.get("thread_id")
                        await receipts.put_receipt(
                            tenant, room_id, receipt_type, user_id,
                            thread if isinstance(thread, str) else "", ids[0],
                            ts if type(ts) is int else self._hs.clock.time_ms(),
                        )
                        rooms.append(room_id)
            if notifier is not None and rooms:
                notifier.notify(tenant, room_ids=rooms)

        h.transactions.register_edu_handler("m.receipt", on_receipt)
        h.transactions.joins = room_joins(h.db)
        sender: Any = getattr(self._hs, "federation_sender", None)
        if sender is not None:
            # Joins/leaves accepted for other servers go on to the rest of the room.
            from homeserver.federation_sender.node import accepted_event_hook, new_server_hook

            if hasattr(sender, "serve"):
                # A dedicated tenant's outbox lives in its own database.
                sender.serve(h.db)
            h.server.on_event_accepted_txn.append(accepted_event_hook(sender, h.db, h.events))
            # A server whose join reached us late gets what we sent meanwhile.
            h.transactions.on_events.append(new_server_hook(sender, h.db, h.events))

        if notifier is not None:
            def wake(tenant: str, evs: Sequence[Event]) -> None:
                notifier.on_new_events(tenant, evs)

            async def wake_one(tenant: str, ev: Event) -> None:
                notifier.on_new_events(tenant, [ev])

            h.transactions.on_events.append(lambda t, evs: wake(t, evs))
            h.server.on_event_accepted.append(wake_one)
            h.server.on_invite.append(wake_one)
        typing: Any = getattr(self._hs, "typing", None)
        if typing is not None and hasattr(typing, "set_typing"):
            async def is_joined(tenant: str, room_id: str, user_id: str) -> bool:
                # Spec "Typing Notifications": only members of the room may type
                # in it; like Synapse, a typing EDU for anyone else is dropped.
                state = await h.events.state.get_current_state(tenant, room_id)
                member = state.get(("m.room.member", user_id))
                if member is None:
                    return False
                found = await h.events.get_events(tenant, [member])
                ev = found.get(member)
                return ev is not None and ev.content.get("membership") == "join"

            async def on_typing(tenant: str, origin: str, content: Any) -> None:
                user_id = content.get("user_id")
                room_id = content.get("room_id")
                if (isinstance(user_id, str) and user_id.split(":", 1)[-1] == origin
                        and isinstance(room_id, str)
                        and isinstance(content.get("typing"), bool)
                        and await is_joined(tenant, room_id, user_id)):
                    typing.set_typing(tenant, room_id, user_id, content["typing"])

            h.transactions.register_edu_handler("m.typing", on_typing)
