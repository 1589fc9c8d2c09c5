"""A dedicated-mode tenant federates: inbound federation for it is served from
its own database (the tenant resolver), not the node's. Both engines."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any

from homeserver.server import HomeServer
from tests.tenants.conftest import PRIMARY, Api, NodeFn

B = "b.test"
V = "/_matrix/client/v3"
ApiFor = Callable[[HomeServer, str | None], Api]


async def settle(hs: HomeServer) -> None:
    sender: Any = hs.federation_sender
    for _ in range(10):
        await sender.wait_until_idle()
        if sender.running_queues == 0:
            return


async def bodies(api: Api, token: str, room: str) -> list[str]:
    status, got = await api.call("GET", f"{V}/rooms/{room}/messages?dir=b&limit=50", token=token)
    assert status == 200, got
    return [e["content"].get("body") for e in got["chunk"] if e["type"] == "m.room.message"]


async def test_dedicated_tenant_federates_with_primary(
    node: NodeFn, api_for: ApiFor, second_database_url: str
) -> None:
    hs = await node(tenants=[{"server_name": B, "mode": "dedicated",
                              "database_url": second_database_url}])
    fed = hs.base_url("federation")
    hs.keys.client.destination_overrides.update({B: fed, PRIMARY: fed})  # type: ignore[union-attr]
    a, b = api_for(hs, PRIMARY), api_for(hs, B)
    alice = (await a.admin_register("alice", "pw-alice-1"))["access_token"]
    bob = (await b.admin_register("bob", "pw-bob-1"))["access_token"]

    status, got = await b.call("POST", f"{V}/createRoom", {
        "preset": "public_chat", "visibility": "public", "name": "B lobby",
        "room_alias_name": "lobby"}, token=bob)
    assert status == 200, got
    room = got["room_id"]
    tenant = hs.tenants.get(B)
    assert tenant is not None
    dedicated = await tenant.database()
    # The room lives in B's database only.
    assert await hs.database.fetchval(
        "SELECT COUNT(*) FROM events WHERE room_id = $1", room) == 0
    assert await dedicated.fetchval(
        "SELECT COUNT(*) FROM events WHERE room_id = $1", room) > 0

    # Alice (primary tenant) sees B's directory over federation.
    status, got = await a.call("GET", f"{V}/publicRooms?server={B}", token=alice)
    assert status == 200, got
    assert [(r["room_id"], r.get("name")) for r in got["chunk"]] == [(room, "B lobby")]

    # B's alias resolves from A over federation.
    alias = urllib.parse.quote(f"#lobby:{B}")
    status, got = await a.call("GET", f"{V}/directory/room/{alias}", token=alice)
    assert (status, got.get("room_id")) == (200, room), got
    assert B in got["servers"]

    # Alice joins by alias over loopback federation (make_join/send_join to B).
    status, got = await a.call("POST", f"{V}/join/{alias}", {}, token=alice)
    assert (status, got.get("room_id")) == (200, room), got
    await settle(hs)
    status, got = await b.call("GET", f"{V}/rooms/{room}/joined_members", token=bob)
    assert status == 200, got
    assert set(got["joined"]) == {"@alice:hs.test", "@bob:b.test"}

    # A message each way.
    status, got = await b.call("PUT", f"{V}/rooms/{room}/send/m.room.message/t1",
                               {"msgtype": "m.text", "body": "from bob"}, token=bob)
    assert status == 200, got
    status, got = await a.call("PUT", f"{V}/rooms/{room}/send/m.room.message/t1",
                               {"msgtype": "m.text", "body": "from alice"}, token=alice)
    assert status == 200, got
    await settle(hs)
    assert set(await bodies(a, alice, room)) == {"from bob", "from alice"}
    assert set(await bodies(b, bob, room)) == {"from bob", "from alice"}
    # Every PDU B received went to B's database, none to the node's under B.
    assert await hs.database.fetchval(
        "SELECT COUNT(*) FROM events WHERE tenant = $1", B) == 0
