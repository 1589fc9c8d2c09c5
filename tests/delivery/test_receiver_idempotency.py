"""Two real Concord nodes: a transaction delivered twice, a reused txnId with
other content, a replay of a whole window, and two origins writing into one
room at once. Nothing is stored twice at the receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from federation.clock import FakeClock
from federation.room_versions import ROOM_V11
from federation.transport.client import FederationHttpError
from homeserver.federation_sender.admin import DeliveryAdmin, ReplayScopeError
from homeserver.keys import key_service_for
from tests.federation_outbound.nodes import Node, link, settle, start_node

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
CAROL = "@carol:c.test"


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, Node]]:
    clock = FakeClock()
    a = await start_node(tmp_path / "a", "a.test", clock)
    b = await start_node(tmp_path / "b", "b.test", clock)
    c = await start_node(tmp_path / "c", "c.test", clock)
    link([a, b, c])
    try:
        yield a, b, c
    finally:
        for n in (c, b, a):
            await n.hs.stop()


async def stream_ids(node: Node, tenant: str, room: str) -> list[str]:
    return [s.event.event_id for s in
            await node.events.get_stream_events(tenant, 0, 10_000, room_id=room)]


def admin_of(node: Node) -> DeliveryAdmin:
    async def database_for(_: str) -> object:
        return node.hs.database

    return DeliveryAdmin(clock=node.hs.clock, origins=lambda: [node.name],
                         database_for=database_for,  # type: ignore[arg-type]
                         sender=node.sender)


async def test_duplicate_transaction_reused_txn_id_and_window_replay(
    nodes: tuple[Node, Node, Node],
) -> None:
    a, b, _ = nodes
    room = await a.create_room(ALICE, ROOM_V11)
    await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {})
    assert isinstance(a.hs.clock, FakeClock)
    a.hs.clock.advance(60)
    window_start = a.hs.clock.time_ms()
    sent = [await a.say("a.test", room, ALICE, f"m{i}") for i in range(60)]
    await settle([a, b])
    before = await stream_ids(b, "b.test", room)
    assert [e.event_id for e in sent] == before[-60:]
    max_stream = await b.events.get_max_stream_ordering("b.test")

    # The same transaction twice: the second answer is the first, nothing changes.
    client = key_service_for(a.hs).client
    body = {"origin": "a.test", "origin_server_ts": a.hs.clock.time_ms(),
            "pdus": [sent[0].pdu, sent[1].pdu], "edus": []}
    first = await client.put_json("b.test", "/_matrix/federation/v1/send/dup1", body)
    again = await client.put_json("b.test", "/_matrix/federation/v1/send/dup1", body)
    assert first == again == {"pdus": {sent[0].event_id: {}, sent[1].event_id: {}}}
    # The same txnId with other content: refused, clearly.
    other = dict(body, pdus=[sent[2].pdu])
    with pytest.raises(FederationHttpError) as e:
        await client.put_json("b.test", "/_matrix/federation/v1/send/dup1", other)
    assert e.value.status == 400 and e.value.errcode == "M_INVALID_PARAM"
    assert "different content" in str(e.value.body)

    # A peer that lost data: the whole window again, through the outbox.
    admin = admin_of(a)
    queued = await admin.replay_window("b.test", window_start, room_id=room)
    assert queued == 60
    await settle([a, b])
    assert await a.hs.database.fetchval("SELECT COUNT(*) FROM federation_outbox") == 0
    assert await a.hs.database.fetchval("SELECT COUNT(*) FROM federation_dead_letters") == 0
    assert await stream_ids(b, "b.test", room) == before
    assert await b.events.get_max_stream_ordering("b.test") == max_stream
    registry = b.hs.metrics.registry
    assert (registry.get_sample_value("concord_federation_inbound_pdus_total",
                                      {"result": "duplicate"}) or 0) >= queued
    assert registry.get_sample_value("concord_federation_inbound_transactions_total",
                                     {"result": "replayed"}) == 1
    assert registry.get_sample_value("concord_federation_inbound_transactions_total",
                                     {"result": "refused"}) == 1

    with pytest.raises(ReplayScopeError):
        await admin.replay_window("nobody.test", 0)


async def test_a_txn_id_past_the_window_is_processed_again(
    nodes: tuple[Node, Node, Node],
) -> None:
    a, b, _ = nodes
    room = await a.create_room(ALICE, ROOM_V11)
    await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {})
    msg = await a.say("a.test", room, ALICE, "old")
    await settle([a, b])
    client = key_service_for(a.hs).client
    body = {"origin": "a.test", "origin_server_ts": 1, "pdus": [msg.pdu], "edus": []}
    await client.put_json("b.test", "/_matrix/federation/v1/send/w1", body)
    assert isinstance(a.hs.clock, FakeClock)
    a.hs.clock.advance(86_400 + 1)  # past the default window of a day
    other = dict(body, origin_server_ts=2)
    # Forgotten: handled as new (the PDU itself is still stored once).
    assert await client.put_json("b.test", "/_matrix/federation/v1/send/w1", other) == {
        "pdus": {msg.event_id: {}}}
    assert (await stream_ids(b, "b.test", room)).count(msg.event_id) == 1


async def test_two_origins_write_into_one_room_at_once(nodes: tuple[Node, Node, Node]) -> None:
    a, b, c = nodes
    room = await a.create_room(ALICE, ROOM_V11)
    await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {})
    await c.remote_rooms.remote_join("c.test", CAROL, room, ["a.test"], {})
    await settle([a, b, c])
    # B and C each send 20 events, interleaved, while both queues run.
    sent = await asyncio.gather(*(
        n.say(t, room, u, f"{t} {i}") for i in range(20)
        for n, t, u in ((b, "b.test", BOB), (c, "c.test", CAROL))
    ))
    await settle([a, b, c])
    await settle([a, b, c])
    ids = {e.event_id for e in sent}
    for node, tenant in ((a, "a.test"), (b, "b.test"), (c, "c.test")):
        visible = await stream_ids(node, tenant, room)
        assert ids <= set(visible), tenant
        assert len(visible) == len(set(visible))
        rows = await node.hs.database.fetch(
            "SELECT soft_failed, rejected_reason FROM events WHERE tenant = $1 AND room_id = $2 "
            "AND type = 'm.room.message'", tenant, room)
        assert len(rows) == 40 and all(not r[0] and r[1] is None for r in rows), tenant
    # Every server ends with the same forward extremities.
    ext = [set(await n.events.get_forward_extremities(t, room))
           for n, t in ((a, "a.test"), (b, "b.test"), (c, "c.test"))]
    assert ext[0] == ext[1] == ext[2]


async def test_a_receipt_edu_applied_twice_is_one_receipt(
    nodes: tuple[Node, Node, Node],
) -> None:
    a, b, _ = nodes
    room = await a.create_room(ALICE, ROOM_V11)
    await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {})
    msg = await a.say("a.test", room, ALICE, "read me")
    await settle([a, b])
    client = key_service_for(a.hs).client
    edu = {"edu_type": "m.receipt", "content": {room: {"m.read": {
        ALICE: {"event_ids": [msg.event_id], "data": {"ts": 1}}}}}}
    for txn_id in ("r1", "r2", "r2"):
        body = {"origin": "a.test", "origin_server_ts": 5, "pdus": [], "edus": [edu]}
        assert await client.put_json(
            "b.test", f"/_matrix/federation/v1/send/{txn_id}", body) == {"pdus": {}}
    rows = await b.hs.database.fetch(
        "SELECT event_id FROM receipts WHERE tenant = 'b.test' AND room_id = $1 "
        "AND user_id = $2", room, ALICE)
    assert [r[0] for r in rows] == [msg.event_id]
