"""The outbox and the per-destination sender, against a recording peer on
loopback, with real stores on both engines and a FakeClock (no sleeps)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import aiohttp
import pytest
from signedjson.key import get_verify_key

from federation.clock import FakeClock
from federation.room_versions import ROOM_V11
from federation.transport.client import FederationClient
from federation.transport.wire import parse_authorization_header
from homeserver.federation_sender import BackoffPolicy, FederationSender
from storage.database import Database
from storage.stores.outbox import OutboxStore
from tests.federation_outbound.conftest import ALICE, LOCAL, LocalTenant, RecordingPeer

BOB = "@bob:b.test"
CAROL = "@carol:c.test"
POLICY = BackoffPolicy(min_interval_ms=10_000, jitter=0.0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_sender(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: RecordingPeer,
    clock: FakeClock, *, attach: bool = True,
) -> FederationSender:
    client = FederationClient(
        session, signing_keys={LOCAL: tenant.key}, default_origin=LOCAL,
        destination_overrides={"b.test": peer.url, "c.test": peer.url},
    )
    async def database_for(_: str) -> Database:
        return tenant.db

    sender = FederationSender(client, clock, database_for, policy=POLICY,
                              rng=random.Random(1))
    if attach:
        sender.attach(tenant.creation.outbox)
    return sender


async def outbox_rows(db: Database) -> list[tuple[str, str]]:
    rows = await db.fetch("SELECT destination, event_id FROM federation_outbox ORDER BY seq")
    return [(str(r[0]), str(r[1])) for r in rows]


async def test_outbox_rows_for_joined_servers_only(tenant: LocalTenant) -> None:
    room = await tenant.room_with_remote_members([BOB, CAROL])
    # A room nobody else is in queues nothing.
    lonely = await tenant.creation.create_room(LOCAL, ALICE, ROOM_V11)
    assert await outbox_rows(tenant.db) == []
    msg = await tenant.say(room, "hello")
    await tenant.say(lonely, "echo")
    assert await outbox_rows(tenant.db) == [("b.test", msg.event_id), ("c.test", msg.event_id)]
    leave = await tenant.creation.create_event(
        LOCAL, room, event_type="m.room.member", sender=ALICE, state_key=CAROL,
        content={"membership": "leave"},
    )
    # A kick is sent to the kicked user's server too, so it learns of it.
    assert ("c.test", leave.event_id) in await outbox_rows(tenant.db)
    after = await tenant.say(room, "bye carol")
    assert ("c.test", after.event_id) not in await outbox_rows(tenant.db)
    assert ("b.test", after.event_id) in await outbox_rows(tenant.db)


async def test_rolled_back_persist_leaves_no_event_and_no_outbox_row(
    tenant: LocalTenant,
) -> None:
    room = await tenant.room_with_remote_members([BOB])
    before = await tenant.db.fetchval("SELECT COUNT(*) FROM events")

    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        async with tenant.db.transaction("crashing_persist") as txn:
            ev = await tenant.creation.create_event_txn(
                txn, LOCAL, room, event_type="m.room.message", sender=ALICE,
                content={"body": "lost"},
            )
            # Inside the transaction both exist...
            n = await txn.fetchval("SELECT COUNT(*) FROM federation_outbox WHERE event_id = $1",
                                   ev.event_id)
            assert n == 1
            raise Crash
    # ...and after the rollback neither does.
    assert await tenant.db.fetchval("SELECT COUNT(*) FROM events") == before
    assert await outbox_rows(tenant.db) == []


async def test_delivery_signed_and_outbox_emptied(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: RecordingPeer, clock: FakeClock
) -> None:
    sender = make_sender(tenant, session, peer, clock)
    try:
        room = await tenant.room_with_remote_members([BOB])
        msg = await tenant.say(room, "hello")
        await peer.wait_for(1)
        await sender.wait_until_idle()
        txn_id, body, auth = peer.received[0]
        assert body["origin"] == LOCAL and [p["content"] for p in body["pdus"]] == [
            {"msgtype": "m.text", "body": "hello"}]
        assert body["pdus"][0] == msg.pdu and body["edus"] == []
        x = parse_authorization_header(auth)
        assert x.origin == LOCAL and x.destination == "b.test"
        assert await outbox_rows(tenant.db) == []
        # The queue's task ended: an idle destination costs nothing.
        assert sender.running_queues == 0
        state = await OutboxStore(tenant.db).get_destination("b.test")
        assert state is None or state.next_retry_ts is None
        assert get_verify_key(tenant.key) is not None
    finally:
        await sender.stop()


async def test_retry_reuses_txn_id_then_batches_in_order(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: RecordingPeer, clock: FakeClock
) -> None:
    sender = make_sender(tenant, session, peer, clock)
    try:
        room = await tenant.room_with_remote_members([BOB])
        peer.failures = [(500, {"errcode": "M_UNKNOWN"}), (502, {})]
        first = await tenant.say(room, "m0")
        await peer.wait_for(1)
        await sender.wait_until_idle()
        store = OutboxStore(tenant.db)
        state = await store.get_destination("b.test")
        assert state is not None and state.failure_count == 1
        assert state.next_retry_ts == clock.time_ms() + 10_000
        # B is down: 119 more events queue up; nothing is sent meanwhile.
        later = [await tenant.say(room, f"m{i}") for i in range(1, 120)]
        await sender.wait_until_idle()
        assert len(peer.received) == 1
        clock.advance(9.9)
        await sender.wait_until_idle()
        assert len(peer.received) == 1
        clock.advance(0.1)
        await peer.wait_for(2)  # still failing: backoff doubles
        await sender.wait_until_idle()
        state = await store.get_destination("b.test")
        assert state is not None and state.failure_count == 2
        assert state.retry_interval_ms == 20_000
        clock.advance(20)
        await peer.wait_for(5)
        await sender.wait_until_idle()
        txn_ids = [t for t, _, _ in peer.received]
        # The same transaction, unchanged, under the same ID, three times...
        assert txn_ids[0] == txn_ids[1] == txn_ids[2]
        assert peer.received[0][1] == peer.received[1][1] == peer.received[2][1]
        # ...then new IDs for the rest, at most 50 PDUs each, in stream order.
        assert len(set(txn_ids)) == 4
        sizes = [len(b["pdus"]) for _, b, _ in peer.received]
        assert sizes == [1, 1, 1, 50, 50, 19][: len(sizes)]
        await peer.wait_for(6)
        await sender.wait_until_idle()
        sent = [p["content"]["body"] for _, b, _ in peer.received[2:] for p in b["pdus"]]
        assert sent == [e.content["body"] for e in [first, *later]]
        assert await outbox_rows(tenant.db) == []
        state = await store.get_destination("b.test")
        assert state is not None and state.failure_count == 0 and state.next_retry_ts is None
        assert sender.running_queues == 0
    finally:
        await sender.stop()


async def test_backoff_survives_restart_and_peer_seen_wakes(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: RecordingPeer, clock: FakeClock
) -> None:
    sender = make_sender(tenant, session, peer, clock)
    room = await tenant.room_with_remote_members([BOB])
    peer.failures = [(429, {"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 60_000})]
    await tenant.say(room, "before restart")
    await peer.wait_for(1)
    await sender.wait_until_idle()
    await sender.stop()
    state = await OutboxStore(tenant.db).get_destination("b.test")
    # retry_after_ms is honoured when longer than the backoff.
    assert state is not None and state.retry_interval_ms == 60_000

    # A new sender (a restart) finds the row and the backoff in the database.
    sender = make_sender(tenant, session, peer, clock)
    try:
        await sender.start()
        await sender.wait_until_idle()
        assert sender.running_queues == 1 and len(peer.received) == 1
        # An inbound request from B ends the backoff at once.
        await sender.on_peer_seen("b.test")
        await peer.wait_for(2)
        await sender.wait_until_idle()
        assert peer.received[0][0] == peer.received[1][0]
        assert await outbox_rows(tenant.db) == []
    finally:
        await sender.stop()


async def test_unattached_writer_rows_found_by_sweep(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: RecordingPeer, clock: FakeClock
) -> None:
    sender = make_sender(tenant, session, peer, clock, attach=False)
    sender._store(tenant.db)  # the node registers each database it serves
    try:
        room = await tenant.room_with_remote_members([BOB])
        await sender.start()
        await tenant.say(room, "found later")
        await sender.wait_until_idle()
        assert peer.received == []
        clock.advance(60)
        await peer.wait_for(1)
        await sender.wait_until_idle()
        assert await outbox_rows(tenant.db) == []
    finally:
        await sender.stop()


async def test_edus_at_most_100_per_transaction(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: RecordingPeer, clock: FakeClock
) -> None:
    sender = make_sender(tenant, session, peer, clock)
    try:
        peer.down_forever = True
        await sender.send_edu(LOCAL, ["b.test", LOCAL], "m.typing",
                              {"room_id": "!r:a.test", "user_id": ALICE, "typing": True})
        await peer.wait_for(1)
        await sender.wait_until_idle()
        for i in range(149):
            await sender.send_edu(LOCAL, ["b.test"], "m.receipt", {"n": i})
        peer.down_forever = False
        clock.advance(10)
        await peer.wait_for(3)
        await sender.wait_until_idle()
        edus = [b["edus"] for _, b, _ in peer.received]
        assert [len(e) for e in edus] == [1, 1, 100, 49]
        assert edus[1][0] == {"edu_type": "m.typing", "content": {
            "room_id": "!r:a.test", "user_id": ALICE, "typing": True}}
        assert [e["content"]["n"] for e in edus[2] + edus[3]] == list(range(149))
        # Only b.test was queued: our own name is never a destination.
        assert {x.split('destination="')[1].split('"')[0] for _, _, x in peer.received} == {
            "b.test"}
    finally:
        await sender.stop()


async def test_edu_to_room_and_notify_serves_new_database(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: RecordingPeer, clock: FakeClock
) -> None:
    # Neither attached nor serving the database: the client API's
    # notify_new_events is what makes this sender find the rows.
    sender = make_sender(tenant, session, peer, clock, attach=False)
    try:
        room = await tenant.room_with_remote_members([BOB, CAROL])
        msg = await tenant.say(room, "from the client API")
        assert peer.received == []
        sender.notify_new_events(LOCAL, [msg])
        await peer.wait_for(2)
        await sender.wait_until_idle()
        assert sorted(parse_authorization_header(a).destination or "" for _, _, a in
                      peer.received) == ["b.test", "c.test"]
        await sender.send_edu_to_room(LOCAL, room, "m.typing",
                                      {"room_id": room, "user_id": ALICE, "typing": True})
        await peer.wait_for(4)
        await sender.wait_until_idle()
        edus = [b["edus"] for _, b, _ in peer.received[2:]]
        assert edus == [[{"edu_type": "m.typing",
                          "content": {"room_id": room, "user_id": ALICE, "typing": True}}]] * 2
    finally:
        await sender.stop()
