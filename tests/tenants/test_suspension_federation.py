"""A suspended tenant sends no federation: its outbound queues pause with
their rows kept (nothing dead-lettered) and deliver once it is resumed
(issue 5: "Suspending one ... stops its federation"). Both engines."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from federation.clock import FakeClock
from homeserver.server import HomeServer
from homeserver.tenants import TenantState
from tests.tenants.conftest import PRIMARY, Api, NodeFn

B = "b.test"
V = "/_matrix/client/v3"
ApiFor = Callable[[HomeServer, str | None], Api]


async def settle(hs: HomeServer) -> None:
    sender: Any = hs.federation_sender
    await sender.sweep()
    for _ in range(10):
        await sender.wait_until_idle()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_suspended_tenant_queues_pause_and_resume(
    node: NodeFn, api_for: ApiFor, clock: FakeClock
) -> None:
    hs = await node(tenants=[{"server_name": B}])
    fed = hs.base_url("federation")
    overrides = hs.keys.client.destination_overrides  # type: ignore[union-attr]
    overrides.update({B: fed, PRIMARY: fed})
    a, b = api_for(hs, PRIMARY), api_for(hs, B)
    alice = (await a.admin_register("alice", "pw-alice-1"))["access_token"]
    bob = (await b.admin_register("bob", "pw-bob-1"))["access_token"]
    status, got = await a.call("POST", f"{V}/createRoom", {"preset": "public_chat"},
                               token=alice)
    assert status == 200, got
    room = got["room_id"]
    status, got = await b.call("POST", f"{V}/join/{room}?server_name={PRIMARY}", {},
                               token=bob)
    assert status == 200, got
    await settle(hs)

    async def alice_sees() -> list[str]:
        status, got = await a.call("GET", f"{V}/rooms/{room}/messages?dir=b", token=alice)
        assert status == 200, got
        return [e["content"]["body"] for e in got["chunk"] if e["type"] == "m.room.message"]

    async def queued() -> int:
        return int(await hs.database.fetchval(
            "SELECT COUNT(*) FROM federation_outbox WHERE origin = $1", B))

    async def dead() -> int:
        return int(await hs.database.fetchval("SELECT COUNT(*) FROM federation_dead_letters"))

    # Bob's message cannot reach hs.test yet: it stays queued, backing off.
    overrides[PRIMARY] = closed_port_url()
    status, got = await b.call("PUT", f"{V}/rooms/{room}/send/m.room.message/t1",
                               {"msgtype": "m.text", "body": "held back"}, token=bob)
    assert status == 200, got
    await settle(hs)
    assert await queued() == 1

    await hs.tenants.set_state(B, TenantState.SUSPENDED)
    overrides[PRIMARY] = fed
    status, got = await b.call("PUT", f"{V}/rooms/{room}/send/m.room.message/t2",
                               {"msgtype": "m.text", "body": "new"}, token=bob)
    assert (status, got["errcode"]) == (403, "M_FORBIDDEN"), got
    # Long past any backoff and several sweeps: nothing leaves, nothing is dropped.
    for _ in range(5):
        clock.advance(3600)
        await settle(hs)
    assert await queued() == 1
    assert await dead() == 0
    assert await alice_sees() == []
    status, got = await b.call("GET", f"{V}/rooms/{room}/messages?dir=b", token=bob)
    assert (status, got["errcode"]) == (403, "M_FORBIDDEN"), got  # B's client API is off

    await hs.tenants.set_state(B, TenantState.ACTIVE)
    clock.advance(3600)
    await settle(hs)
    assert await queued() == 0
    assert await dead() == 0
    assert await alice_sees() == ["held back"]
