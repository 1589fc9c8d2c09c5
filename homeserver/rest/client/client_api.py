"""The client API's handlers, built once per HomeServer and shared by its servlets.

``client_api(hs)`` builds them on first use from the node's clock, config,
tenants and notifier; federation plugs in through ``hs.remote_rooms`` (a
:class:`~homeserver.handlers.remote_rooms.RemoteRooms`) and per-tenant
quotas through ``hs.quotas`` (``check_can_create_room(tenant, txn)``,
``check_event_rate(tenant)``), both optional.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from homeserver.auth import Requester
from homeserver.handlers.backfill import PaginationBackfiller
from homeserver.handlers.client_stores import DatabaseStores, TenantStores
from homeserver.handlers.directory import DirectoryHandler
from homeserver.handlers.message import MessageHandler
from homeserver.handlers.pagination import PaginationHandler
from homeserver.handlers.profile import ProfileHandler
from homeserver.handlers.receipts import ReceiptsHandler
from homeserver.handlers.remote_rooms import FederationUnavailable, RemoteRooms
from homeserver.handlers.room_creation_client import RoomCreationClientHandler
from homeserver.handlers.room_member import RoomMemberHandler
from homeserver.handlers.sync import SyncHandler
from homeserver.handlers.typing import TypingHandler
from homeserver.notifier import Notifier
from homeserver.tenants import Tenant
from storage.database import Database, Transaction

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["ClientAPI", "client_api", "client_patterns", "register_early"]

logger = logging.getLogger(__name__)


def client_patterns(path: str, *, r0: bool = True) -> tuple[str, ...]:
    """The v3 path and (for endpoints older clients still call) its r0 alias."""
    out = [f"/_matrix/client/v3{path}"]
    if r0:
        out.append(f"/_matrix/client/r0{path}")
    return tuple(out)


class _RemoteProxy:
    """Forwards to ``hs.remote_rooms`` as it is at call time (federation may
    attach it after the client listener started)."""

    def __init__(self, hs: HomeServer) -> None:
        self._hs = hs
        self._fallback = FederationUnavailable()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._hs, "remote_rooms", None) or self._fallback
        return getattr(target, name)


class _FederationBackfill:
    """:class:`~homeserver.handlers.pagination.RoomBackfiller` over federation
    (``hs.keys``: keyring and signed client), one per database."""

    def __init__(self, hs: HomeServer) -> None:
        self._hs = hs
        self._by_db: dict[int, tuple[Database, PaginationBackfiller]] = {}

    async def backfill(
        self, ts: TenantStores, room_id: str, *, max_depth: int | None, limit: int
    ) -> int:
        keys = getattr(self._hs, "keys", None)
        if keys is None:
            return 0
        found = self._by_db.get(id(ts.db))
        if found is None or found[0] is not ts.db:
            found = (ts.db, PaginationBackfiller(
                db=ts.db, events=ts.s.events, keyring=keys.keyring, client=keys.client,
                clock=self._hs.clock,
            ))
            self._by_db[id(ts.db)] = found
        return await found[1].backfill(ts.server_name, room_id, max_depth=max_depth,
                                       limit=limit)


class ClientAPI:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        clock = hs.clock
        notifier = getattr(hs, "notifier", None)
        if notifier is None:
            notifier = Notifier(clock)
            hs.notifier = notifier  # type: ignore[attr-defined]
        self.notifier: Notifier = notifier
        remote: RemoteRooms = _RemoteProxy(hs)
        self.typing = TypingHandler(clock, notifier)
        # Inbound federation applies remote typing EDUs here.
        hs.typing = self.typing  # type: ignore[attr-defined]
        self.messages = MessageHandler(
            clock, on_new_events=[notifier.on_new_events, self._to_federation_sender],
            check_event_rate=self._check_event_rate,
        )
        self.profiles = ProfileHandler(self.messages, remote, self._user_exists)
        self.directory = DirectoryHandler(clock, remote)
        self.members = RoomMemberHandler(self.messages, self.profiles, self.directory, remote)
        self.rooms = RoomCreationClientHandler(
            clock, self.messages, self.profiles, remote,
            default_room_version=hs.config.default_room_version,
            check_can_create_room=self._check_can_create_room,
        )
        self.pagination = PaginationHandler(clock, backfiller=_FederationBackfill(hs))
        self.receipts = ReceiptsHandler(clock, notifier, send_edu=self.send_edu_to_room)
        self.sync = SyncHandler(clock, notifier, self.typing)
        self._by_db: dict[int, DatabaseStores] = {}

    # Per-tenant stores

    def _signing_key_for(self, server_name: str) -> Any:
        tenant = self.hs.tenants.get(server_name)
        if tenant is None:
            raise KeyError(f"{server_name} is not hosted here")
        return tenant.signing_keys()[0]

    async def stores_for(self, requester: Requester) -> TenantStores:
        return await self.stores_for_tenant(requester.tenant)

    async def stores_for_tenant(self, tenant: Tenant) -> TenantStores:
        db = await tenant.database()
        return TenantStores(tenant.server_name, self._database_stores(db))

    def _database_stores(self, db: Database) -> DatabaseStores:
        found = self._by_db.get(id(db))
        if found is None or found.db is not db:
            found = DatabaseStores.build(db, self.hs.clock, self._signing_key_for)
            self._by_db[id(db)] = found
        return found

    async def auth(self, request: web.Request) -> tuple[Requester, TenantStores]:
        requester = await self.hs.auth.get_user_by_req(request)
        return requester, await self.stores_for(requester)

    # Optional collaborators owned by others

    async def _quota(self, name: str, server_name: str, *args: Any) -> None:
        quotas = getattr(self.hs, "quotas", None)
        fn = getattr(quotas, name, None)
        if fn is None:
            return
        tenant = self.hs.tenants.get(server_name)
        result = fn(tenant, *args)
        if inspect.isawaitable(result):
            await result

    async def _check_event_rate(self, server_name: str) -> None:
        await self._quota("check_event_rate", server_name)

    async def _check_can_create_room(self, server_name: str, txn: Transaction) -> None:
        await self._quota("check_can_create_room", server_name, txn)

    def _to_federation_sender(self, server_name: str, events: Iterable[Any]) -> None:
        sender = getattr(self.hs, "federation_sender", None)
        notify = getattr(sender, "notify_new_events", None)
        if notify is not None:
            notify(server_name, list(events))

    async def send_edu_to_room(
        self, origin: str, room_id: str, edu_type: str, content: dict[str, Any]
    ) -> None:
        """Send an EDU (``m.typing``, ``m.receipt``) to the room's other servers,
        if this node federates. Ephemeral: a failure is logged, not raised."""
        sender = getattr(self.hs, "federation_sender", None)
        fn = getattr(sender, "send_edu_to_room", None)
        if fn is None:
            return
        try:
            await fn(origin, room_id, edu_type, content)
        except Exception:
            logger.exception("Sending %s for %s failed", edu_type, room_id)

    async def _user_exists(self, server_name: str, user_id: str) -> bool:
        tenant = self.hs.tenants.get(server_name)
        if tenant is None:
            return False
        store = await tenant.user_store()
        return await store.get_user(user_id) is not None

    async def close(self) -> None:
        await self.typing.close()


def client_api(hs: HomeServer) -> ClientAPI:
    api: ClientAPI | None = getattr(hs, "client_api", None)
    if api is None:
        api = ClientAPI(hs)
        hs.client_api = api  # type: ignore[attr-defined]
    return api


def register_early(app: web.Application, hs: HomeServer) -> None:
    """Build the client API before any listener's servlets need ``hs.notifier``
    or ``hs.typing`` (federation's inbound EDUs and events use them)."""
    client_api(hs)
