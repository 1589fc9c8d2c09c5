"""Real Concord nodes on loopback for outbound federation tests.

Each node is a HomeServer (listeners on 127.0.0.1 port 0) sharing one
FakeClock; their federation clients route every other node's name to its
bound port (``destination_overrides``), as names cannot carry OS-chosen ports.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

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
