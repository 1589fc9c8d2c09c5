"""A join the resident sends on while the joining server is still storing its own.

Spec "Joining Rooms": the resident server that accepts a ``send_join`` sends
the join on to the other servers in the room. A server whose own join the
resident accepted a moment earlier may still be fetching history (it has not
stored the room yet). The PDU must not be refused as for an unknown room:
a per-PDU error in a 200 ``/send`` answer is final, so the joiner would never
learn of that member (the harness saw a third server's join missing for
good when two servers joined one room at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from federation.clock import FakeClock
from federation.room_versions import ROOM_V11, ROOM_V12
from homeserver.handlers.room_joins import RoomJoins, room_joins
from tests.federation_outbound.nodes import link, start_node
from tests.loopback import serve

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
CAROL = "@carol:c.test"
HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection"}


class BackfillGate:
    """A proxy to one node that holds every ``/backfill`` request until released."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if "/backfill/" in request.path:
            self.held.set()
            await self.release.wait()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with aiohttp.ClientSession() as s, s.request(
            request.method, URL(self.upstream + request.raw_path, encoded=True),
            headers=headers, data=await request.read() or None,
        ) as resp:
            return web.Response(status=resp.status, body=await resp.read(),
                                content_type=resp.content_type)


@asynccontextmanager
async def gate_to(upstream: str) -> AsyncIterator[BackfillGate]:
    gate = BackfillGate(upstream)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", gate.handle)
    async with serve(app) as url:
        gate.url = url
        try:
            yield gate
        finally:
            gate.release.set()


def notify_waits(joins: RoomJoins) -> asyncio.Event:
    """Set when a PDU starts waiting for a join (instrumentation of the registry)."""
    started = asyncio.Event()
    original = joins.wait

    async def wait(*args: Any, **kwargs: Any) -> bool:
        started.set()
        return await original(*args, **kwargs)

    joins.wait = wait  # type: ignore[method-assign]
    return started


async def test_join_sent_on_during_our_join_is_kept(tmp_path: Path, database_url: str) -> None:
    clock = FakeClock()
    a = await start_node(tmp_path / "a", "a.test", clock,
                         extra={"tenants": [{"server_name": "c.test"}]})
    b = await start_node(tmp_path / "b", "b.test", clock, database_url=database_url)
    try:
        link([a, b], extra_names={"c.test": a})
        async with gate_to(a.hs.base_url("federation")) as gate:
            b.hs.keys.client.destination_overrides["a.test"] = gate.url  # type: ignore[union-attr]
            room = await a.create_room(ALICE, ROOM_V12)
            waiting = notify_waits(room_joins(b.hs.database))
            bob_join = asyncio.ensure_future(
                b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {}))
            # A accepted Bob's join; B is fetching history and has no room yet.
            await asyncio.wait({bob_join, asyncio.ensure_future(gate.held.wait())},
                               return_when=asyncio.FIRST_COMPLETED)
            assert not bob_join.done(), bob_join.result()
            assert await b.events.state.get_room_version_id("b.test", room) is None

            # Carol joins through A, which sends her join on to B now.
            await a.remote_rooms.remote_join("c.test", CAROL, room, ["a.test"], {})
            idle = asyncio.ensure_future(a.sender.wait_until_idle())
            waited = asyncio.ensure_future(waiting.wait())
            # B either answers at once (the PDU is lost) or holds it for the join.
            await asyncio.wait({idle, waited}, return_when=asyncio.FIRST_COMPLETED)
            gate.release.set()
            await bob_join
            await idle
            waited.cancel()

        state = await b.events.state.get_current_state("b.test", room)
        assert ("m.room.member", CAROL) in state, "Carol's join, sent on by A, was lost"
        stored = (await b.events.get_stored_events("b.test", [state[("m.room.member", CAROL)]]))
        carol = next(iter(stored.values()))
        assert not carol.outlier and carol.rejected_reason is None
        assert room_joins(b.hs.database).waiting("b.test", room) == 0
        assert not room_joins(b.hs.database).in_progress("b.test", room)
    finally:
        await b.hs.stop()
        await a.hs.stop()


async def test_pdu_for_a_room_we_are_not_joining_is_refused_at_once(
    tmp_path: Path,
) -> None:
    """Only a join in progress holds PDUs: an unknown room is refused as before."""
    clock = FakeClock()
    a = await start_node(tmp_path / "a", "a.test", clock)
    b = await start_node(tmp_path / "b", "b.test", clock)
    try:
        link([a, b])
        room = await a.create_room(ALICE, ROOM_V11)
        msg = await a.say("a.test", room, ALICE, "hello")
        resp = await a.hs.keys.client.put_json(  # type: ignore[union-attr]
            "b.test", "/_matrix/federation/v1/send/t1",
            {"origin": "a.test", "origin_server_ts": clock.time_ms(), "pdus": [dict(msg.pdu)]},
            origin="a.test",
        )
        assert resp["pdus"][msg.event_id]["error"] == f"unknown room {room}"
    finally:
        await b.hs.stop()
        await a.hs.stop()
