"""Real Concord nodes on loopback for outbound federation tests.

Each node is a HomeServer (listeners on 127.0.0.1 port 0) sharing one
FakeClock; their federation clients route every other node's name to its
bound port (``destination_overrides``), as names cannot carry OS-chosen ports.
:func:`client_pair` starts two such nodes that also serve the client API,
whose users (:class:`ClientUser`) log in with :meth:`ClientPair.login`.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from signedjson.key import generate_signing_key, write_signing_keys

from federation.clock import FakeClock
from federation.events import Event
from federation.room_versions import RoomVersion
from homeserver.config import parse_config
from homeserver.federation_sender import FederationSender
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.keys import key_service_for
from homeserver.server import HomeServer
from storage.stores.events import EventStore
from storage.stores.state import StateStore


class Node:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        keys = key_service_for(hs)
        self.events = EventStore(hs.database, StateStore(hs.database))
        self.creation = EventCreationHandler(
            hs.database, self.events, hs.clock, lambda n: keys.signing_keys(n)[0]
        )

    @property
    def name(self) -> str:
        return self.hs.server_name

    @property
    def sender(self) -> FederationSender:
        s = self.hs.federation_sender  # type: ignore[attr-defined]
        assert isinstance(s, FederationSender)
        return s

    @property
    def remote_rooms(self) -> Any:
        return self.hs.remote_rooms  # type: ignore[attr-defined]

    async def say(self, tenant: str, room_id: str, user: str, body: str) -> Event:
        return await self.creation.create_event(
            tenant, room_id, event_type="m.room.message", sender=user,
            content={"msgtype": "m.text", "body": body},
        )

    async def create_room(self, user: str, rv: RoomVersion, tenant: str | None = None) -> str:
        return await self.creation.create_room(tenant or self.name, user, rv)


def _write_key(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    write_signing_keys(buf, [generate_signing_key("k1")])
    (d / "signing.key").write_text(buf.getvalue())


async def start_node(d: Path, name: str, clock: FakeClock, database_url: str | None = None,
                     extra: dict[str, Any] | None = None) -> Node:
    _write_key(d)
    raw: dict[str, Any] = {
        "server_name": name,
        "data_dir": str(d),
        "signing_key_path": str(d / "signing.key"),
        "key_validity_period": "1d",
        "database": {"url": database_url or f"sqlite://{d / 'hs.db'}"},
        "listeners": [{"type": "federation", "port": 0, "bind_addresses": ["127.0.0.1"]}],
        "federation": {"verify_certificates": True, "trusted_key_servers": []},
    }
    raw.update(extra or {})
    cfg = parse_config(raw, base_dir=str(d))
    return Node(await HomeServer.start(cfg, clock=clock))


def link(nodes: list[Node], extra_names: dict[str, Node] | None = None) -> None:
    """Every node reaches every other (and every extra name) over loopback."""
    routes = {n.name: n.hs.base_url("federation") for n in nodes}
    for name, n in (extra_names or {}).items():
        routes[name] = n.hs.base_url("federation")
    for n in nodes:
        n.hs.keys.client.destination_overrides.update(routes)  # type: ignore[union-attr]


async def settle(nodes: list[Node]) -> None:
    """Until no node has a queue with work (each wait ends when its queues do)."""
    for _ in range(10):
        for n in nodes:
            await n.sender.wait_until_idle()
        if all(n.sender.running_queues == 0 for n in nodes):
            return


#: A federation and a client listener, both on 127.0.0.1 port 0.
CLIENT_LISTENERS = [
    {"type": "federation", "port": 0, "bind_addresses": ["127.0.0.1"]},
    {"type": "client", "port": 0, "bind_addresses": ["127.0.0.1"]},
]


@dataclass
class ClientUser:
    """A logged-in user of one node, calling its Client-Server API."""

    session: aiohttp.ClientSession
    base: str
    token: str

    async def call(self, method: str, path: str, body: Any = None,
                   params: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.session.request(
            method, f"{self.base}/_matrix/client/v3{path}", json=body, params=params,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as r:
            return r.status, await r.json()

    async def ok(self, method: str, path: str, body: Any = None,
                 params: dict[str, str] | None = None) -> Any:
        status, got = await self.call(method, path, body, params)
        assert status == 200, (path, status, got)
        return got

    async def sync(self, since: str | None = None, timeout_ms: int = 0) -> Any:
        params = {"timeout": str(timeout_ms)}
        if since is not None:
            params["since"] = since
        return await self.ok("GET", "/sync", params=params)


@dataclass
class ClientPair:
    """Nodes ``a.test`` and ``b.test``, linked, serving the client API too."""

    a: Node
    b: Node
    clock: FakeClock
    session: aiohttp.ClientSession

    async def login(self, node: Node, user_id: str, device_id: str | None = None
                    ) -> ClientUser:
        """Create ``user_id`` on the node's own tenant and log it in (a new device)."""
        now_ms = self.clock.time_ms()
        store = await node.hs.tenants.primary.user_store()
        await store.create_user(user_id, None, admin=False, now_ms=now_ms)
        token = secrets.token_urlsafe(24)
        await store.login(user_id, device_id or "DEV" + secrets.token_hex(4), token,
                          now_ms=now_ms)
        return ClientUser(self.session, node.hs.base_url("client"), token)


@asynccontextmanager
async def client_pair(d: Path, b_database_url: str | None = None) -> AsyncIterator[ClientPair]:
    """A :class:`ClientPair` on a new FakeClock: A on SQLite, B on
    ``b_database_url`` (else SQLite); both stopped when the block ends."""
    clock = FakeClock()
    a = await start_node(d / "a", "a.test", clock, extra={"listeners": CLIENT_LISTENERS})
    try:
        b = await start_node(d / "b", "b.test", clock, database_url=b_database_url,
                             extra={"listeners": CLIENT_LISTENERS})
        try:
            link([a, b])
            async with aiohttp.ClientSession() as session:
                yield ClientPair(a, b, clock, session)
        finally:
            await b.hs.stop()
    finally:
        await a.hs.stop()
