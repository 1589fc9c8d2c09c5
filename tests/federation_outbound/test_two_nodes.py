"""Two real Concord nodes: events go out through the outbox, joins go
through make_join/send_join, invites and leaves over federation. Node A runs
on SQLite, node B once per storage engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from federation.clock import FakeClock
from federation.errors import MatrixError
from federation.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from tests.federation_outbound.nodes import Node, link, settle, start_node
from tests.loopback import serve

ALICE = "@alice:a.test"
BOB = "@bob:b.test"


@pytest.fixture
async def two(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Node, Node]]:
    """Node A (SQLite) and node B (each engine, through ``database_url``)."""
    clock = FakeClock()
    a = await start_node(tmp_path / "a", "a.test", clock)
    b = await start_node(tmp_path / "b", "b.test", clock, database_url=database_url)
    link([a, b])
    try:
        yield a, b
    finally:
        await b.hs.stop()
        await a.hs.stop()


async def outbox_count(node: Node) -> int:
    return int(await node.hs.database.fetchval("SELECT COUNT(*) FROM federation_outbox"))


@pytest.mark.parametrize("rv", [ROOM_V10, ROOM_V11, ROOM_V12], ids=lambda v: f"v{v.identifier}")
async def test_join_then_events_flow_both_ways(two: tuple[Node, Node], rv: RoomVersion) -> None:
    a, b = two
    room = await a.create_room(ALICE, rv)
    history = [await a.say("a.test", room, ALICE, f"before {i}") for i in range(5)]

    joined = await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {
        "displayname": "Bob"})
    assert joined == room
    # B holds the room's state, with bob joined, the same as A's.
    b_state = await b.events.state.get_current_state("b.test", room)
    await settle([a, b])
    a_state = await a.events.state.get_current_state("a.test", room)
    assert dict(b_state) == dict(a_state)
    bob_join = (await b.events.get_events("b.test", [b_state[("m.room.member", BOB)]]))
    assert next(iter(bob_join.values())).content == {"membership": "join", "displayname": "Bob"}
    # Recent history was backfilled and is visible (not outliers), before the join.
    visible = [s.event for s in await b.events.get_stream_events("b.test", 0, 1000,
                                                                 room_id=room)]
    bodies = [e.content.get("body") for e in visible if e.type == "m.room.message"]
    assert bodies == [e.content["body"] for e in history]
    assert visible[-1].type == "m.room.member" and visible[-1].state_key == BOB

    # A's new events reach B through the outbox; the rows are then gone.
    msg = await a.say("a.test", room, ALICE, "hello bob")
    await settle([a, b])
    assert (await b.events.get_event("b.test", msg.event_id)) is not None
    assert await outbox_count(a) == 0
    # And B's reach A.
    reply = await b.say("b.test", room, BOB, "hi alice")
    await settle([a, b])
    got = await a.events.get_event("a.test", reply.event_id)
    assert got is not None and not got.outlier and got.rejected_reason is None
    assert await outbox_count(b) == 0
    assert a.sender.running_queues == 0 and b.sender.running_queues == 0


async def test_join_tries_next_server_and_reports_failure(two: tuple[Node, Node]) -> None:
    a, b = two
    room = await a.create_room(ALICE, ROOM_V11)
    b.hs.keys.client.destination_overrides["dead.test"] = "http://127.0.0.1:9"  # type: ignore[union-attr]
    assert await b.remote_rooms.remote_join("b.test", BOB, room, ["dead.test", "a.test"],
                                            {}) == room
    with pytest.raises(MatrixError) as e:
        await b.remote_rooms.remote_join("b.test", "@carol:b.test", "!nope:dead.test",
                                         ["dead.test"], {})
    assert e.value.code == 502


async def test_invite_accept_and_leave(two: tuple[Node, Node]) -> None:
    a, b = two
    room = await a.create_room(ALICE, ROOM_V11, )
    invite_id = await a.remote_rooms.remote_invite("a.test", ALICE, room, BOB, {})
    a_state = await a.events.state.get_current_state("a.test", room)
    assert a_state[("m.room.member", BOB)] == invite_id
    invite = await a.events.get_event("a.test", invite_id)
    assert invite is not None and "b.test" in invite.event.pdu["signatures"]
    # B recorded it for bob.
    stored = await b.events.get_event("b.test", invite_id)
    assert stored is not None and stored.event.membership == "invite"

    await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {})
    await settle([a, b])
    leave_id = await b.creation.create_event(
        "b.test", room, event_type="m.room.member", sender=BOB, state_key=BOB,
        content={"membership": "leave"},
    )
    await settle([a, b])
    a_state = await a.events.state.get_current_state("a.test", room)
    assert a_state[("m.room.member", BOB)] == leave_id.event_id


async def test_reject_invite_over_federation(two: tuple[Node, Node]) -> None:
    a, b = two
    room = await a.create_room(ALICE, ROOM_V12)
    await a.remote_rooms.remote_invite("a.test", ALICE, room, BOB, {})
    # Bob declines without ever joining: make_leave/send_leave through A.
    leave_id = await b.remote_rooms.remote_leave("b.test", BOB, room, {})
    await settle([a, b])
    a_state = await a.events.state.get_current_state("a.test", room)
    assert a_state[("m.room.member", BOB)] == leave_id
    left = await a.events.get_event("a.test", leave_id)
    assert left is not None and left.event.membership == "leave"


TamperFn = Callable[[dict[str, Any]], None]


@asynccontextmanager
async def send_join_tampered(a: Node, b: Node, tamper: TamperFn) -> AsyncIterator[None]:
    """B reaches A through a proxy that alters A's send_join answers with ``tamper``."""
    upstream = a.hs.base_url("federation")

    async def forward(request: web.Request) -> web.StreamResponse:
        async with aiohttp.ClientSession() as s:
            async with s.request(request.method, URL(upstream + request.raw_path, encoded=True),
                                 headers={k: v for k, v in request.headers.items()
                                          if k.lower() in ("authorization", "content-type")},
                                 data=await request.read()) as resp:
                body = await resp.json()
                status = resp.status
        if "/send_join/" in request.path and status == 200:
            tamper(body)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    async with serve(app) as url:
        b.hs.keys.client.destination_overrides["a.test"] = url  # type: ignore[union-attr]
        yield


async def assert_nothing_stored(b: Node, room: str) -> None:
    assert await b.events.state.get_room_version_id("b.test", room) is None
    assert int(await b.hs.database.fetchval(
        "SELECT COUNT(*) FROM events WHERE room_id = $1", room)) == 0


async def test_join_refuses_tampered_state_and_stores_nothing(
    two: tuple[Node, Node],
) -> None:
    """A resident whose send_join answer carries a forged create event: the
    join fails with a clear error and B stores nothing of the room."""
    a, b = two
    room = await a.create_room(ALICE, ROOM_V11)

    def forge_create(body: dict[str, Any]) -> None:
        for pdu in body["state"] + body["auth_chain"]:
            if pdu["type"] == "m.room.create":
                sigs = pdu["signatures"]["a.test"]
                sigs[next(iter(sigs))] = "A" * 86

    async with send_join_tampered(a, b, forge_create):
        with pytest.raises(MatrixError) as e:
            await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {})
    assert "m.room.create" in e.value.msg
    await assert_nothing_stored(b, room)


def forge_joiner_signature(body: dict[str, Any]) -> None:
    # A required signature (the joining server's own, spec "Signing
    # Events"); a resident's extra signature is only required for restricted
    # joins (join_authorised_via_users_server).
    sigs = body["event"]["signatures"]["b.test"]
    sigs[next(iter(sigs))] = "A" * 86


def alter_join_content(body: dict[str, Any]) -> None:
    # Not in the redacted form, so the event ID stays the same.
    body["event"]["content"]["displayname"] = "Mallory"


@pytest.mark.parametrize(
    ("tamper", "says"),
    [(forge_joiner_signature, "bad signatures"), (alter_join_content, "altered content")],
    ids=["forged-signature", "altered-content"],
)
async def test_join_refuses_a_bad_countersigned_copy_of_our_join(
    two: tuple[Node, Node], tamper: TamperFn, says: str
) -> None:
    """The resident's copy of our join in the send_join answer (same event
    ID) is checked like any received event: a forged signature or altered
    content fails the join and B stores nothing."""
    a, b = two
    room = await a.create_room(ALICE, ROOM_V11)
    async with send_join_tampered(a, b, tamper):
        with pytest.raises(MatrixError) as e:
            await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"],
                                             {"displayname": "Bob"})
    assert e.value.code == 502 and says in e.value.msg, e.value.msg
    await assert_nothing_stored(b, room)
