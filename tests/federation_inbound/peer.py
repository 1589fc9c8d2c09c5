"""A Concord node and a crafted peer, on loopback, for inbound federation tests.

The node is a real HomeServer (federation listener on 127.0.0.1 port 0, a
real database on SQLite or PostgreSQL, FakeClock). The peer is test code
built from the protocol library: it signs events (``add_hashes_and_signatures``)
and X-Matrix requests (the real :class:`FederationClient`), and runs a small
aiohttp server that publishes its key and serves its events to the node's
fetches (``/event``, ``/state_ids``, ``/get_missing_events``, ``/event_auth``),
counting each request.

Shared by the tests of ``tests/federation_inbound`` (through its conftest's
fixtures) and ``tests/federation/test_bad_input.py`` (through
:class:`NodeAndPeer`).
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from signedjson.key import generate_signing_key, write_signing_keys

from federation.clock import FakeClock
from federation.events import Event
from federation.hashes import compute_event_id
from federation.room_versions import RoomVersion
from federation.server_keys import OldVerifyKey, build_server_key_response
from federation.signing import add_hashes_and_signatures
from federation.transport.client import FederationClient, FederationHttpError
from homeserver.config import parse_config
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.http import trust as trust_check
from homeserver.http import x_matrix
from homeserver.keys import key_service_for
from homeserver.rest import federation as federation_rest
from homeserver.rest import keys as keys_rest
from homeserver.server import HomeServer
from storage.stores.events import EventStore
from storage.stores.state import StateStore

NODE = "node.test"
PEER = "peer.test"
ALICE = "@alice:node.test"
PEER_USER = "@pat:peer.test"


class Node:
    def __init__(self, hs: HomeServer) -> None:
        self.hs = hs
        self.events = EventStore(hs.database, StateStore(hs.database))
        keys = key_service_for(hs)
        self.creation = EventCreationHandler(
            hs.database, self.events, hs.clock, lambda n: keys.signing_keys(n)[0]
        )

    @property
    def url(self) -> str:
        return self.hs.base_url("federation")

    async def create_room(self, rv: RoomVersion, **kw: Any) -> str:
        return await self.creation.create_room(NODE, ALICE, rv, **kw)

    async def send(self, room_id: str, event_type: str, content: dict[str, Any],
                   state_key: str | None = None, sender: str = ALICE) -> Event:
        return await self.creation.create_event(
            NODE, room_id, event_type=event_type, sender=sender, content=content,
            state_key=state_key,
        )


class Peer:
    """A remote server made of test code: signs, sends, and serves its events."""

    def __init__(self, name: str, clock: FakeClock, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.clock = clock
        self.key = generate_signing_key("p1")
        self.client = FederationClient(
            session, signing_keys={name: self.key}, default_origin=name
        )
        #: Events this peer serves, by ID.
        self.served: dict[str, dict[str, Any]] = {}
        #: state_ids answers by event ID: (state IDs, auth chain IDs).
        self.state_ids: dict[str, tuple[list[str], list[str]]] = {}
        self.missing_events_answer: list[dict[str, Any]] | None = None
        self.counts: Counter[str] = Counter()
        #: Retired keys published under old_verify_keys.
        self.old_keys: list[OldVerifyKey] = []
        #: Transactions the node sent to this peer (answered 200, nothing kept).
        self.received: list[dict[str, Any]] = []
        self.url = ""

    def event(self, rv: RoomVersion, **pdu: Any) -> dict[str, Any]:
        pdu.setdefault("origin_server_ts", self.clock.time_ms())
        pdu.setdefault("content", {})
        return add_hashes_and_signatures(pdu, rv, self.name, self.key)

    @staticmethod
    def event_id(pdu: dict[str, Any], rv: RoomVersion) -> str:
        return compute_event_id(pdu, rv)

    def serve(self, rv: RoomVersion, *pdus: dict[str, Any]) -> None:
        for p in pdus:
            self.served[compute_event_id(p, rv)] = p

    async def request(self, method: str, path: str, body: Any = None,
                      query: dict[str, Any] | None = None) -> tuple[int, Any]:
        try:
            got = await self.client.request_json(method, NODE, path, body=body, query=query)
            return 200, got
        except FederationHttpError as e:
            return e.status, e.body

    def app(self) -> web.Application:
        app = web.Application()

        async def key(request: web.Request) -> web.Response:
            self.counts["key"] += 1
            return web.json_response(build_server_key_response(
                self.name, [self.key], self.old_keys, now_ms=self.clock.time_ms(),
                validity_ms=86400_000,
            ))

        async def event(request: web.Request) -> web.Response:
            self.counts["event"] += 1
            pdu = self.served.get(request.match_info["event_id"])
            if pdu is None:
                return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)
            return web.json_response({"origin": self.name, "origin_server_ts": 0,
                                      "pdus": [pdu]})

        async def state_ids(request: web.Request) -> web.Response:
            self.counts["state_ids"] += 1
            got = self.state_ids.get(request.query.get("event_id", ""))
            if got is None:
                return web.json_response({"errcode": "M_NOT_FOUND", "error": "no"}, status=404)
            return web.json_response({"pdu_ids": got[0], "auth_chain_ids": got[1]})

        async def missing(request: web.Request) -> web.Response:
            self.counts["get_missing_events"] += 1
            self.last_missing_request = await request.json()
            return web.json_response({"events": self.missing_events_answer or []})

        async def event_auth(request: web.Request) -> web.Response:
            self.counts["event_auth"] += 1
            return web.json_response({"auth_chain": list(self.served.values())})

        async def send(request: web.Request) -> web.Response:
            self.counts["send"] += 1
            self.received.append(await request.json())
            return web.json_response({"pdus": {}})

        app.router.add_get("/_matrix/key/v2/server", key)
        app.router.add_put("/_matrix/federation/v1/send/{txn_id}", send)
        app.router.add_get("/_matrix/federation/v1/event/{event_id}", event)
        app.router.add_get("/_matrix/federation/v1/state_ids/{room_id}", state_ids)
        app.router.add_post("/_matrix/federation/v1/get_missing_events/{room_id}", missing)
        app.router.add_get("/_matrix/federation/v1/event_auth/{room_id}/{event_id}",
                           event_auth)
        return app


def room_path(endpoint: str, *parts: str) -> str:
    return "/_matrix/federation/" + endpoint + "".join("/" + quote(p, safe="") for p in parts)


Setup = tuple[Node, Peer]


class NodeAndPeer:
    """Starts nodes with a peer each; :meth:`close` stops everything in reverse."""

    def __init__(self, tmp_path: Path, clock: FakeClock) -> None:
        self._tmp_path = tmp_path
        self._clock = clock
        self._started: list[Any] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self, db_url: str, config_extra: dict[str, Any] | None = None) -> Setup:
        """A node on ``db_url`` (``config_extra`` merged into its config) and its peer."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        session, clock = self._session, self._clock
        d = self._tmp_path / "node"
        d.mkdir(exist_ok=True)
        buf = io.StringIO()
        write_signing_keys(buf, [generate_signing_key("n1")])
        (d / "signing.key").write_text(buf.getvalue())
        raw: dict[str, Any] = {
            "server_name": NODE,
            "data_dir": str(d),
            "signing_key_path": str(d / "signing.key"),
            "database": {"url": db_url},
            "listeners": [{"type": "federation", "port": 0, "bind_addresses": ["127.0.0.1"]}],
            "federation": {"verify_certificates": False, "trusted_key_servers": []},
        }
        for key, value in (config_extra or {}).items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        cfg = parse_config(raw, base_dir=str(d))
        hs = await HomeServer.start(cfg, clock=clock, registrars={
            "federation": [trust_check.register, x_matrix.register, keys_rest.register,
                           federation_rest.register],
        })
        self._started.append(hs)
        peer = Peer(PEER, clock, session)
        runner = web.AppRunner(peer.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._started.append(runner)
        port = runner.addresses[0][1]
        peer.url = f"http://127.0.0.1:{port}"
        node = Node(hs)
        key_service_for(hs).client.destination_overrides[PEER] = peer.url
        peer.client.destination_overrides[NODE] = node.url
        return node, peer

    async def close(self) -> None:
        for thing in reversed(self._started):
            if isinstance(thing, HomeServer):
                await thing.stop()
            else:
                await thing.cleanup()
        self._started.clear()
        if self._session is not None:
            await self._session.close()
