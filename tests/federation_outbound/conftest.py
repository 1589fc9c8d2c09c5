"""Helpers for outbound federation tests: a room with remote members on one
tenant's graph, and a recording peer on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from signedjson.key import generate_signing_key
from signedjson.types import SigningKey

from federation.clock import FakeClock
from federation.events import Event
from federation.hashes import compute_event_id
from federation.room_versions import ROOM_V11, RoomVersion
from federation.signing import add_hashes_and_signatures
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.handlers.event_receipt import EventReceiptHandler
from storage.database import Database
from storage.stores.events import EventStore
from storage.stores.state import StateStore
from tests.loopback import serve

LOCAL = "a.test"
ALICE = "@alice:a.test"


class LocalTenant:
    """Tenant ``a.test`` on a real database, with handlers for creating and
    receiving events."""

    def __init__(self, db: Database, clock: FakeClock) -> None:
        self.db = db
        self.clock = clock
        self.key = generate_signing_key("a1")
        self.events = EventStore(db, StateStore(db))
        self.creation = EventCreationHandler(db, self.events, clock, {LOCAL: self.key}.__getitem__)
        self.receipt = EventReceiptHandler(db, self.events)
        self.remote_keys: dict[str, SigningKey] = {}

    async def room_with_remote_members(
        self, remote_users: list[str], rv: RoomVersion = ROOM_V11
    ) -> str:
        """A public room of alice's that each remote user has joined."""
        room_id = await self.creation.create_room(LOCAL, ALICE, rv)
        for user in remote_users:
            await self.remote_join(room_id, user, rv)
        return room_id

    async def remote_join(self, room_id: str, user: str, rv: RoomVersion) -> Event:
        server = user.split(":", 1)[1]
        key = self.remote_keys.setdefault(server, generate_signing_key("r1"))
        state = await self.events.state.get_current_state(LOCAL, room_id)
        prevs = await self.events.get_forward_extremities(LOCAL, room_id)
        auth = [state[k] for k in (("m.room.create", ""), ("m.room.power_levels", ""),
                                   ("m.room.join_rules", "")) if k in state]
        if rv.room_id_from_create_event:
            auth = auth[1:]
        depth = max(e.depth for e in (await self.events.get_events(LOCAL, prevs)).values()) + 1
        pdu: dict[str, Any] = {
            "type": "m.room.member", "room_id": room_id, "sender": user, "state_key": user,
            "content": {"membership": "join"}, "prev_events": prevs, "auth_events": auth,
            "depth": depth, "origin_server_ts": self.clock.time_ms(),
        }
        signed = add_hashes_and_signatures(pdu, rv, server, key)
        ev = Event(signed, compute_event_id(signed, rv), rv)
        await self.receipt.receive_verified_pdu(LOCAL, ev)
        return ev

    async def say(self, room_id: str, body: str) -> Event:
        return await self.creation.create_event(
            LOCAL, room_id, event_type="m.room.message", sender=ALICE,
            content={"msgtype": "m.text", "body": body},
        )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tenant(database: Database, clock: FakeClock) -> LocalTenant:
    return LocalTenant(database, clock)


class RecordingPeer:
    """A federation peer that records ``PUT /send/{txnId}`` and answers as told."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any], str]] = []
        #: Statuses to answer next (then 200 for ever).
        self.failures: list[tuple[int, dict[str, Any]]] = []
        self.down_forever = False
        self.url = ""
        self._cond = asyncio.Condition()

    async def send(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        txn_id = request.match_info["txn_id"]
        auth = request.headers.get("Authorization", "")
        async with self._cond:
            self.received.append((txn_id, body, auth))
            self._cond.notify_all()
        if self.down_forever:
            return web.json_response({"errcode": "M_UNKNOWN", "error": "down"}, status=503)
        if self.failures:
            status, err = self.failures.pop(0)
            return web.json_response(err, status=status)
        return web.json_response({"pdus": {p.get("event_id", "?"): {} for p in body["pdus"]}})

    async def wait_for(self, n: int) -> None:
        """Until ``n`` requests arrived (bounded, so a bug fails instead of hanging)."""
        async def reached() -> None:
            async with self._cond:
                await self._cond.wait_for(lambda: len(self.received) >= n)

        await asyncio.wait_for(reached(), 20)


@pytest.fixture
async def peer() -> AsyncIterator[RecordingPeer]:
    p = RecordingPeer()
    app = web.Application()
    app.router.add_put("/_matrix/federation/v1/send/{txn_id}", p.send)
    async with serve(app) as url:
        p.url = url
        yield p
