"""The sender against a peer that is down, slow, unreachable, rate limiting or
refusing: every event arrives once and in order, or is in the dead letters
with its reason. Real stores on both engines, a FakeClock (no sleeps)."""

from __future__ import annotations

import random
import socket

import aiohttp

from federation.clock import FakeClock
from federation.transport.client import FederationClient
from homeserver.federation_sender import BackoffPolicy, DeliveryLimits, FederationSender
from storage.database import Database
from storage.stores.dead_letters import DeadLetterFilter, DeadLetterStore
from storage.stores.outbox import OutboxStore
from tests.delivery.conftest import ScriptedPeer
from tests.federation_outbound.conftest import LOCAL, LocalTenant

BOB = "@bob:b.test"
POLICY = BackoffPolicy(min_interval_ms=10_000, max_interval_ms=3_600_000, jitter=0.0)


def make_sender(
    tenant: LocalTenant, session: aiohttp.ClientSession, url: str, clock: FakeClock,
    *, limits: DeliveryLimits | None = None, timeout_s: float = 30.0,
) -> FederationSender:
    client = FederationClient(
        session, signing_keys={LOCAL: tenant.key}, default_origin=LOCAL,
        destination_overrides={"b.test": url}, timeout_s=timeout_s,
    )

    async def database_for(_: str) -> Database:
        return tenant.db

    sender = FederationSender(client, clock, database_for, policy=POLICY,
                              limits=limits, rng=random.Random(1))
    sender.attach(tenant.creation.outbox)
    return sender


def metric(sender: FederationSender, name: str, **labels: str) -> float:
    value = sender.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


async def outbox_count(db: Database) -> int:
    return int(await db.fetchval("SELECT COUNT(*) FROM federation_outbox"))


async def test_peer_down_then_up_every_event_once_in_order(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: ScriptedPeer, clock: FakeClock
) -> None:
    sender = make_sender(tenant, session, peer.url, clock)
    try:
        room = await tenant.room_with_remote_members([BOB])
        peer.status = (503, {"errcode": "M_UNKNOWN", "error": "down"})
        sent = [await tenant.say(room, f"m{i}") for i in range(130)]
        await peer.wait_attempts(1)
        await sender.wait_until_idle()
        # Down for three retries: 10, 20, 40 s.
        for n, wait in ((2, 10), (3, 20), (4, 40)):
            clock.advance(wait)
            await peer.wait_attempts(n)
            await sender.wait_until_idle()
        assert metric(sender, "concord_federation_queue_depth", destination="b.test") == 130
        assert metric(sender, "concord_federation_destinations_backing_off") == 1
        assert metric(sender, "concord_federation_transactions_failed_total",
                      reason="http_5xx") == 4
        assert metric(sender, "concord_federation_transaction_retries_total") == 3
        peer.status = None
        clock.advance(80)
        await peer.wait_attempts(7)
        await sender.wait_until_idle()
        assert peer.event_ids() == [e.event_id for e in sent]
        assert await outbox_count(tenant.db) == 0
        assert await DeadLetterStore(tenant.db).count() == 0
        assert metric(sender, "concord_federation_queue_depth", destination="b.test") == 0
        assert metric(sender, "concord_federation_pdus_sent_total") == 130
        assert metric(sender, "concord_federation_destinations_backing_off") == 0
        # Queued while the peer was down: 200 s of the FakeClock.
        assert metric(sender, "concord_federation_delivery_latency_seconds_count") == 130
        assert metric(sender, "concord_federation_delivery_latency_seconds_sum") >= 130 * 150
    finally:
        await sender.stop()


async def test_timeout_then_recovery(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: ScriptedPeer, clock: FakeClock
) -> None:
    # The client's timeout is real time (aiohttp); 0.2 s keeps the test fast.
    sender = make_sender(tenant, session, peer.url, clock, timeout_s=0.2)
    try:
        room = await tenant.room_with_remote_members([BOB])
        peer.hang = True
        msg = await tenant.say(room, "slow")
        await peer.wait_attempts(1)
        await sender.wait_until_idle()
        assert metric(sender, "concord_federation_transactions_failed_total",
                      reason="timeout") == 1
        state = await OutboxStore(tenant.db).get_destination("b.test")
        assert state is not None and "timed out" in (state.last_error or "")
        peer.hang = False
        clock.advance(10)
        await peer.wait_attempts(2)
        await sender.wait_until_idle()
        assert peer.attempts[0][0] == peer.attempts[1][0]  # same txnId
        assert peer.event_ids() == [msg.event_id]
    finally:
        await sender.stop()


async def test_connection_refused_then_peer_appears(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: ScriptedPeer, clock: FakeClock
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    sender = make_sender(tenant, session, closed, clock)
    try:
        room = await tenant.room_with_remote_members([BOB])
        msgs = [await tenant.say(room, f"m{i}") for i in range(3)]
        await sender.wait_until_idle()
        assert metric(sender, "concord_federation_transactions_failed_total",
                      reason="connection") >= 1
        assert peer.attempts == []
        sender.client.destination_overrides["b.test"] = peer.url
        clock.advance(10)
        await peer.wait_attempts(1)
        await sender.wait_until_idle()
        assert peer.event_ids() == [m.event_id for m in msgs]
    finally:
        await sender.stop()


async def test_429_retry_after_is_honoured(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: ScriptedPeer, clock: FakeClock
) -> None:
    sender = make_sender(tenant, session, peer.url, clock)
    try:
        room = await tenant.room_with_remote_members([BOB])
        peer.answers = [(429, {"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 45_000})]
        msg = await tenant.say(room, "later")
        await peer.wait_attempts(1)
        await sender.wait_until_idle()
        clock.advance(44)
        await sender.wait_until_idle()
        assert len(peer.attempts) == 1  # not before retry_after_ms
        clock.advance(1)
        await peer.wait_attempts(2)
        await sender.wait_until_idle()
        assert peer.event_ids() == [msg.event_id]
        assert metric(sender, "concord_federation_transactions_failed_total",
                      reason="http_429") == 1
        assert await DeadLetterStore(tenant.db).count() == 0
    finally:
        await sender.stop()


async def test_one_rejected_pdu_is_dead_lettered_the_rest_delivered(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: ScriptedPeer, clock: FakeClock
) -> None:
    room = await tenant.room_with_remote_members([BOB])
    msgs = [await tenant.say(room, f"m{i}") for i in range(3)]  # one transaction
    sender = make_sender(tenant, session, peer.url, clock)
    try:
        peer.status = (503, {})
        await sender.start()
        await peer.wait_attempts(1)
        await sender.wait_until_idle()
        peer.status = None
        peer.reject[msgs[1].event_id] = "rejected: not allowed by the auth rules"
        clock.advance(10)
        await peer.wait_attempts(2)
        await sender.wait_until_idle()
        assert peer.event_ids() == [m.event_id for m in msgs]
        assert await outbox_count(tenant.db) == 0
        letters = await DeadLetterStore(tenant.db).list_dead_letters(DeadLetterFilter(), limit=10)
        assert [(d.event_id, d.reason, d.room_id) for d in letters] == [
            (msgs[1].event_id, "pdu_rejected", room)]
        assert letters[0].last_error == "rejected: not allowed by the auth rules"
        assert letters[0].attempts == 1 and letters[0].txn_id == peer.acked_order[0]
        assert metric(sender, "concord_federation_dead_letters", reason="pdu_rejected") == 1
        # Not retried: the peer's per-PDU answer is final.
        clock.advance(3600)
        await sender.wait_until_idle()
        assert len(peer.attempts) == 2
    finally:
        await sender.stop()


async def test_4xx_dead_letters_the_transaction_without_backoff(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: ScriptedPeer, clock: FakeClock
) -> None:
    sender = make_sender(tenant, session, peer.url, clock)
    try:
        room = await tenant.room_with_remote_members([BOB])
        peer.answers = [(403, {"errcode": "M_FORBIDDEN", "error": "not in my trust domain"})]
        refused = await tenant.say(room, "refused")
        await peer.wait_attempts(1)
        await sender.wait_until_idle()
        later = await tenant.say(room, "accepted")
        await peer.wait_attempts(2)
        await sender.wait_until_idle()
        assert peer.event_ids() == [later.event_id]
        (letter,) = await DeadLetterStore(tenant.db).list_dead_letters(
            DeadLetterFilter(reason="rejected"), limit=10)
        assert letter.event_id == refused.event_id
        assert "403 M_FORBIDDEN" in (letter.last_error or "")
        state = await OutboxStore(tenant.db).get_destination("b.test")
        assert state is None or state.next_retry_ts is None
    finally:
        await sender.stop()


async def test_max_attempts_and_max_age_move_to_dead_letters(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: ScriptedPeer, clock: FakeClock
) -> None:
    room = await tenant.room_with_remote_members([BOB])
    # Queued before the sender starts: its start-up sweep finds 60 rows.
    first = [await tenant.say(room, f"a{i}") for i in range(60)]
    limits = DeliveryLimits(max_attempts=3, max_age_ms=3_600_000)
    sender = make_sender(tenant, session, peer.url, clock, limits=limits)
    try:
        peer.status = (500, {"errcode": "M_UNKNOWN", "error": "broken"})
        await sender.start()
        await peer.wait_attempts(1)
        await sender.wait_until_idle()
        clock.advance(10)
        await peer.wait_attempts(2)
        await sender.wait_until_idle()
        clock.advance(20)
        await peer.wait_attempts(3)
        await sender.wait_until_idle()
        dead = DeadLetterStore(tenant.db)
        letters = await dead.list_dead_letters(DeadLetterFilter(), limit=100)
        # The first transaction (50 PDUs) gave up after 3 attempts.
        assert [d.event_id for d in letters] == [e.event_id for e in first[:50]]
        assert {d.reason for d in letters} == {"max_attempts"}
        assert {d.attempts for d in letters} == {3}
        assert all("HTTP 500" in (d.last_error or "") for d in letters)
        assert letters[0].first_attempt_ts is not None and letters[0].last_attempt_ts is not None
        # The rest (10 rows) waits; an hour later a failing attempt finds them too old.
        clock.advance(3600)
        await peer.wait_attempts(4)
        await sender.wait_until_idle()
        assert await outbox_count(tenant.db) == 0
        assert await dead.count(DeadLetterFilter(reason="max_age")) == 10
        assert await dead.count() == 60  # nothing dropped without a row
        assert metric(sender, "concord_federation_dead_lettered_total", reason="max_age") == 10
        assert metric(sender, "concord_federation_dead_letters", reason="max_attempts") == 50
    finally:
        await sender.stop()


async def test_purged_event_is_dead_lettered_not_dropped(
    tenant: LocalTenant, session: aiohttp.ClientSession, peer: ScriptedPeer, clock: FakeClock
) -> None:
    sender = make_sender(tenant, session, peer.url, clock)
    try:
        room = await tenant.room_with_remote_members([BOB])
        peer.status = (503, {})
        gone = await tenant.say(room, "purged later")
        kept = await tenant.say(room, "kept")
        await peer.wait_attempts(1)
        await sender.wait_until_idle()
        await tenant.db.execute("DELETE FROM events WHERE event_id = $1", gone.event_id)
        peer.status = None
        clock.advance(10)
        await peer.wait_attempts(2)
        await sender.wait_until_idle()
        assert peer.event_ids() == [kept.event_id]
        (letter,) = await DeadLetterStore(tenant.db).list_dead_letters(
            DeadLetterFilter(), limit=10)
        assert (letter.event_id, letter.reason) == (gone.event_id, "event_missing")
    finally:
        await sender.stop()
