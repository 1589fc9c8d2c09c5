"""Quotas end to end over HTTP (issue 5, "Quotas per tenant"): over the limit
is 403 ``M_RESOURCE_LIMIT_EXCEEDED`` with the limit in the message and
nothing stored; ``max_rooms`` holds under concurrent ``createRoom``s."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from federation.clock import FakeClock
from homeserver.server import HomeServer
from tests.tenants.conftest import Api, NodeFn

B = "b.test"
V = "/_matrix/client/v3"
ApiFor = Callable[[HomeServer, str | None], Api]


async def test_event_rate_over_http(node: NodeFn, api_for: ApiFor, clock: FakeClock) -> None:
    hs = await node(tenants=[{"server_name": B, "quotas": {"max_events_per_minute": 3}}])
    b = api_for(hs, B)
    bob = (await b.admin_register("bob", "pw-bob-1"))["access_token"]
    status, got = await b.call("POST", f"{V}/createRoom", {}, token=bob)
    assert status == 200, got
    room = got["room_id"]
    db = await hs.tenants.get(B).database()  # type: ignore[union-attr]

    async def count() -> int:
        return int(await db.fetchval("SELECT COUNT(*) FROM events WHERE tenant = $1", B))

    sent = 0
    status = 200
    for i in range(10):
        before = await count()
        status, got = await b.call("PUT", f"{V}/rooms/{room}/send/m.room.message/t{i}",
                                   {"msgtype": "m.text", "body": f"m{i}"}, token=bob)
        if status != 200:
            assert await count() == before
            break
        sent += 1
    assert (status, got["errcode"]) == (403, "M_RESOURCE_LIMIT_EXCEEDED"), got
    assert "3 events per minute" in got["error"]
    assert got["retry_after_ms"] > 0
    assert 1 <= sent <= 3
    # State and membership changes are events too.
    before = await count()
    status, got = await b.call("PUT", f"{V}/rooms/{room}/state/m.room.topic", {"topic": "t"},
                               token=bob)
    assert (status, got["errcode"]) == (403, "M_RESOURCE_LIMIT_EXCEEDED"), got
    assert await count() == before
    # The bucket refills with the clock; the same txn ID now goes through.
    clock.advance(60)
    status, got = await b.call("PUT", f"{V}/rooms/{room}/send/m.room.message/t{sent}",
                               {"msgtype": "m.text", "body": "later"}, token=bob)
    assert status == 200, got
    assert await count() == before + 1


async def test_max_rooms_holds_under_concurrency(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node(tenants=[{"server_name": B, "quotas": {"max_rooms": 2}}])
    b = api_for(hs, B)
    tokens = [(await b.admin_register(f"u{i}", f"pw-u{i}-1"))["access_token"]
              for i in range(3)]
    results = await asyncio.gather(*(
        b.call("POST", f"{V}/createRoom", {"name": f"r{i}"}, token=tokens[i % 3])
        for i in range(8)))
    ok = [got for status, got in results if status == 200]
    refused = [got for status, got in results if status != 200]
    assert len(ok) == 2, results
    assert all((got["errcode"], "limit of 2 rooms" in got["error"])
               == ("M_RESOURCE_LIMIT_EXCEEDED", True) for got in refused), refused
    assert {status for status, _ in results} == {200, 403}
    store = await hs.tenants.get(B).user_store()  # type: ignore[union-attr]
    assert await store.count_created_rooms() == 2
    # Nothing of a refused room was stored.
    rooms = await hs.database.fetch(
        "SELECT DISTINCT room_id FROM events WHERE tenant = $1", B)
    assert sorted(r[0] for r in rooms) == sorted(got["room_id"] for got in ok)
