"""Nodes and a synthetic peer for the room discovery tests.

Nodes are real HomeServers on loopback sharing one FakeClock
(tests/federation_outbound/nodes.py); the synthetic peer is a small aiohttp
server that answers the three federation endpoints a crawl touches
(``/version``, ``/_matrix/key/v2/server``, ``/publicRooms``) with a
generated directory, so 500 rooms cost no event graph.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from federation.clock import FakeClock
from federation.room_versions import ROOM_V11
from storage.stores.room_directory import RoomDirectoryStore
from tests.client.conftest import Client
from tests.federation_outbound.nodes import Node, start_node


async def start_nodes(
    tmp_path: Path, names: Sequence[str], clock: FakeClock,
    extra: dict[str, dict[str, Any]] | None = None,
    database_urls: dict[str, str] | None = None,
) -> list[Node]:
    nodes = []
    for name in names:
        nodes.append(await start_node(
            tmp_path / name, name, clock, (database_urls or {}).get(name),
            extra=(extra or {}).get(name),
        ))
    return nodes


async def make_room(
    node: Node, user: str, name: str, *, topic: str | None = None, public: bool = True,
    tenant: str | None = None,
) -> str:
    """A named room of ``tenant`` (default: the node's own name, whose rows
    live in the node's database: a shared tenant's do too)."""
    tenant = tenant or node.name
    room_id = await node.create_room(user, ROOM_V11, tenant)
    await node.creation.create_event(
        tenant, room_id, event_type="m.room.name", sender=user, state_key="",
        content={"name": name},
    )
    if topic is not None:
        await node.creation.create_event(
            tenant, room_id, event_type="m.room.topic", sender=user, state_key="",
            content={"topic": topic},
        )
    if public:
        await RoomDirectoryStore(node.hs.database).set_visibility(
            tenant, room_id, True, node.hs.clock.time_ms()
        )
    return room_id


class SyntheticPeer:
    """A federation peer with a generated published room directory."""

    def __init__(self, server_name: str, clock: FakeClock, rooms: list[dict[str, Any]]) -> None:
        self.server_name = server_name
        self.clock = clock
        self.rooms = rooms
        self.requests: list[str] = []
        #: Endpoints ("version", "keys", "publicRooms") answering 500 for now.
        self.failing: set[str] = set()
        #: While set, publicRooms waits for it (a crawl held mid-way);
        #: ``directory_asked`` is set when such a request arrives.
        self.hold_directory: asyncio.Event | None = None
        self.directory_asked = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/_matrix/federation/v1/version", self._version)
        app.router.add_get("/_matrix/key/v2/server", self._keys)
        app.router.add_get("/_matrix/federation/v1/publicRooms", self._public_rooms)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _failure(self, endpoint: str) -> web.Response | None:
        self.requests.append(endpoint)
        if endpoint not in self.failing:
            return None
        return web.json_response({"errcode": "M_UNKNOWN", "error": f"{endpoint} is failing"},
                                 status=500)

    async def _version(self, request: web.Request) -> web.Response:
        if (failed := self._failure("version")) is not None:
            return failed
        return web.json_response({"server": {"name": "synthetic", "version": "1"}})

    async def _keys(self, request: web.Request) -> web.Response:
        if (failed := self._failure("keys")) is not None:
            return failed
        return web.json_response({
            "server_name": self.server_name, "verify_keys": {},
            "valid_until_ts": self.clock.time_ms() + 86_400_000,
        })

    async def _public_rooms(self, request: web.Request) -> web.Response:
        if (failed := self._failure("publicRooms")) is not None:
            return failed
        self.directory_asked.set()
        if self.hold_directory is not None:
            await self.hold_directory.wait()
        limit = int(request.query.get("limit", "0"))
        start = int(request.query.get("since", "0"))
        end = len(self.rooms) if not limit else min(len(self.rooms), start + limit)
        body: dict[str, Any] = {"chunk": self.rooms[start:end],
                                "total_room_count_estimate": len(self.rooms)}
        if end < len(self.rooms):
            body["next_batch"] = str(end)
        return web.json_response(body)


#: Both listeners: the directory tests speak the client API and federation.
CLIENT_AND_FEDERATION = [
    {"type": "federation", "port": 0, "bind_addresses": ["127.0.0.1"]},
    {"type": "client", "port": 0, "bind_addresses": ["127.0.0.1"]},
]


async def start_client_node(
    d: Path, name: str, clock: FakeClock, database_url: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Node:
    """A node with a client listener too; no discovery task (nothing runs in
    the background), cheap password hashes."""
    config: dict[str, Any] = {"listeners": CLIENT_AND_FEDERATION, "password_hash_rounds": 4,
                              "discovery": {"enabled": False}}
    config.update(extra or {})
    return await start_node(d, name, clock, database_url, extra=config)


async def client_user(http: aiohttp.ClientSession, node: Node, localpart: str) -> Client:
    """A user registered on ``node``, calling its client API over loopback."""
    hs = node.hs
    user_id, login = await hs.accounts.register(hs.tenants.primary, localpart,
                                                f"{localpart}-pass-1")
    assert login is not None
    return Client(http, hs.base_url("client"), user_id, login.access_token)


async def walk_both_ways(
    fetch: Callable[[str | None], Awaitable[dict[str, Any]]],
) -> list[list[str]]:
    """Pages a ``publicRooms`` listing forward with ``next_batch`` from the
    start, then back with ``prev_batch`` from the last page, and returns the
    forward pages (room IDs).

    Asserts what the spec's tokens promise: no ``prev_batch`` on the first
    page, no ``next_batch`` on the last, each room exactly once, and paging
    back gives the same pages as paging forward.
    """
    forward: list[dict[str, Any]] = [await fetch(None)]
    assert "prev_batch" not in forward[0], forward[0]
    while "next_batch" in forward[-1]:
        assert len(forward) < 100, "next_batch never ends"
        forward.append(await fetch(forward[-1]["next_batch"]))
        assert "prev_batch" in forward[-1], forward[-1]
    pages = [[str(r["room_id"]) for r in body["chunk"]] for body in forward]
    flat = [r for page in pages for r in page]
    assert len(flat) == len(set(flat)), pages
    back = [pages[-1]]
    body = forward[-1]
    while "prev_batch" in body:
        assert len(back) <= len(pages), "prev_batch never ends"
        body = await fetch(body["prev_batch"])
        back.append([str(r["room_id"]) for r in body["chunk"]])
        assert "next_batch" in body, body
    assert back[::-1] == pages
    return pages
