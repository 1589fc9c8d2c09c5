"""The stores the client API handlers use, for one tenant.

A tenant's data lives in the database its resolver names (shared or
dedicated, ``homeserver/tenants.py``); handlers are tenant-agnostic and take
a :class:`TenantStores` for the request's tenant. Stores are built once per
database (the state store's caches are shared by every tenant of it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from signedjson.types import SigningKey

from federation.clock import Clock
from homeserver.handlers.event_creation import EventCreationHandler
from storage.database import Database
from storage.stores.account_data import AccountDataStore
from storage.stores.client_txns import ClientTxnStore
from storage.stores.events import EventStore
from storage.stores.federation_inbound import FederationInboundStore
from storage.stores.filters import FilterStore
from storage.stores.profiles import ProfileStore
from storage.stores.receipts import ReceiptStore
from storage.stores.room_aliases import RoomAliasStore
from storage.stores.room_directory import RoomDirectoryStore
from storage.stores.room_memberships import RoomMembershipStore
from storage.stores.room_timeline import RoomTimelineStore
from storage.stores.state import StateStore

__all__ = ["DatabaseStores", "TenantStores"]


@dataclass(frozen=True)
class DatabaseStores:
    """Every client-API store over one database."""

    db: Database
    events: EventStore
    creation: EventCreationHandler
    aliases: RoomAliasStore
    txns: ClientTxnStore
    receipts: ReceiptStore
    account_data: AccountDataStore
    profiles: ProfileStore
    directory: RoomDirectoryStore
    memberships: RoomMembershipStore
    timeline: RoomTimelineStore
    filters: FilterStore
    #: Invites of local users received over federation (``PUT /v2/invite``).
    invites: FederationInboundStore

    @classmethod
    def build(
        cls, db: Database, clock: Clock, signing_key_for: Callable[[str], SigningKey],
        events: EventStore | None = None,
    ) -> DatabaseStores:
        events = events or EventStore(db, StateStore(db))
        return cls(
            db=db,
            events=events,
            creation=EventCreationHandler(db, events, clock, signing_key_for),
            aliases=RoomAliasStore(db),
            txns=ClientTxnStore(db),
            receipts=ReceiptStore(db),
            account_data=AccountDataStore(db),
            profiles=ProfileStore(db),
            directory=RoomDirectoryStore(db),
            memberships=RoomMembershipStore(db),
            timeline=RoomTimelineStore(db),
            filters=FilterStore(db),
            invites=FederationInboundStore(db),
        )


@dataclass(frozen=True)
class TenantStores:
    """One tenant (its server name) and the stores of its database."""

    server_name: str
    s: DatabaseStores

    @property
    def db(self) -> Database:
        return self.s.db
