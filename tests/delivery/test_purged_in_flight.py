"""An event of a transaction in flight is purged before the retry: the
purged event goes to the dead letters and the rest is sent under a NEW
txnId, because the receiver may already hold the old txnId with the old
body and (spec: transactions are idempotent per txnId) a real receiver
refuses one txnId with other content. Against a real Concord receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from federation.clock import FakeClock
from federation.room_versions import ROOM_V11
from storage.stores.dead_letters import DeadLetterFilter, DeadLetterStore
from storage.stores.outbox import OutboxStore
from tests.federation_outbound.nodes import Node, link, settle, start_node

ALICE = "@alice:a.test"
BOB = "@bob:b.test"


class LossyRelay:
    """Relays a's requests to b. Each ``PUT /send`` takes the next mode:
    ``down`` (503, b never sees it), ``lose`` (b processes it, a gets a 503
    as if the answer was lost), then ``forward`` for ever."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.modes: list[str] = []
        #: (txnId, body, status b answered or None) per /send, in order.
        self.sends: list[tuple[str, dict[str, Any], int | None]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sent = asyncio.Condition()

    async def record(self, txn_id: str, body: dict[str, Any], status: int | None) -> None:
        async with self._sent:
            self.sends.append((txn_id, body, status))
            self._sent.notify_all()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()

        async def relay(request: web.Request) -> web.Response:
            raw = await request.read()
            send = request.path.startswith("/_matrix/federation/v1/send/")
            mode = (self.modes.pop(0) if self.modes else "forward") if send else "forward"
            if mode == "down":
                await self.record(request.path.rsplit("/", 1)[1], await request.json(), None)
                return web.json_response({"errcode": "M_UNKNOWN", "error": "down"}, status=503)
            assert self._session is not None
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() not in ("host", "content-length")}
            async with self._session.request(request.method, self.target + request.path_qs,
                                             headers=headers, data=raw) as resp:
                body = await resp.read()
                status, ctype = resp.status, resp.content_type
            if send:
                await self.record(request.path.rsplit("/", 1)[1], await request.json(), status)
            if mode == "lose":
                return web.json_response({"errcode": "M_UNKNOWN", "error": "lost"}, status=503)
            return web.Response(status=status, body=body, content_type=ctype)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", relay)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def wait_sends(self, nodes: list[Node], n: int) -> None:
        """Until ``n`` transactions went through and every queue is idle again."""
        async def reached() -> None:
            async with self._sent:
                await self._sent.wait_for(lambda: len(self.sends) >= n)
            await settle(nodes)

        await asyncio.wait_for(reached(), 20)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, LossyRelay, FakeClock]]:
    clock = FakeClock()
    a = await start_node(tmp_path / "a", "a.test", clock)
    b = await start_node(tmp_path / "b", "b.test", clock)
    link([a, b])
    relay = LossyRelay(b.hs.base_url("federation"))
    await relay.start()
    try:
        yield a, b, relay, clock
    finally:
        await relay.close()
        for n in (b, a):
            await n.hs.stop()


async def test_purged_event_of_an_in_flight_transaction(
    two: tuple[Node, Node, LossyRelay, FakeClock],
) -> None:
    a, b, relay, clock = two
    room = await a.create_room(ALICE, ROOM_V11)
    await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {})
    await settle([a, b])
    a.hs.keys.client.destination_overrides["b.test"] = relay.url  # type: ignore[union-attr]

    # b is down for one attempt; two events queue up behind it and then go
    # out as one transaction, which b stores but whose answer is lost.
    relay.modes = ["down", "forward", "lose"]
    await a.say("a.test", room, ALICE, "first")
    await relay.wait_sends([a, b], 1)
    gone = await a.say("a.test", room, ALICE, "purged later")
    kept = await a.say("a.test", room, ALICE, "kept")
    clock.advance(60)
    await relay.wait_sends([a, b], 3)
    txn_id, body, status = relay.sends[2]
    assert status == 200 and len(body["pdus"]) == 2  # b holds txn_id with both events
    assert await b.events.get_event("b.test", gone.event_id) is not None

    # Purged at a before the retry.
    await a.hs.database.execute("DELETE FROM events WHERE event_id = $1", gone.event_id)
    clock.advance(3600)
    await relay.wait_sends([a, b], 4)
    assert len(relay.sends) == 4
    retry_id, retry_body, retry_status = relay.sends[3]
    assert retry_id != txn_id and retry_status == 200
    assert [p["content"]["body"] for p in retry_body["pdus"]] == ["kept"]
    # b never saw one txnId with two bodies.
    bodies: dict[str, dict[str, Any]] = {}
    for t, sent, _ in relay.sends:
        assert bodies.setdefault(t, sent) == sent, t
    # Only the purged event is a dead letter; nothing is left queued or backing off.
    dead = DeadLetterStore(a.hs.database)
    (letter,) = await dead.list_dead_letters(DeadLetterFilter(), limit=10)
    assert (letter.event_id, letter.reason) == (gone.event_id, "event_missing")
    assert await a.hs.database.fetchval("SELECT COUNT(*) FROM federation_outbox") == 0
    state = await OutboxStore(a.hs.database).get_destination("b.test")
    assert state is not None and state.next_retry_ts is None
    assert await b.events.get_event("b.test", kept.event_id) is not None
