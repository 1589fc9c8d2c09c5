"""``GET /publicRooms`` without an access token (spec: list_public_rooms has no
security on GET): the tenant comes from the Host; a token that is sent is
still checked; POST and other servers' directories still need a user."""

from __future__ import annotations

from collections.abc import Callable

from homeserver.server import HomeServer
from tests.tenants.conftest import PRIMARY, Api, NodeFn

B = "b.test"
V = "/_matrix/client/v3"
ApiFor = Callable[[HomeServer, str | None], Api]


async def test_public_rooms_without_token(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node(tenants=[{"server_name": B}], client_hostnames=["matrix.hs.test"])
    a, b = api_for(hs, PRIMARY), api_for(hs, B)
    alice = (await a.admin_register("alice", "pw-alice-1"))["access_token"]
    status, got = await a.call("POST", f"{V}/createRoom", {
        "preset": "public_chat", "visibility": "public", "name": "Lobby"}, token=alice)
    assert status == 200, got
    room = got["room_id"]

    for api in (a, a.as_host("matrix.hs.test"), a.as_host(f"{PRIMARY}:8008")):
        status, got = await api.call("GET", f"{V}/publicRooms")
        assert status == 200, got
        assert [(r["room_id"], r["name"]) for r in got["chunk"]] == [(room, "Lobby")]
        assert got["total_room_count_estimate"] == 1
    status, got = await a.call("GET", f"{V}/publicRooms?server={PRIMARY}&limit=1")
    assert (status, [r["room_id"] for r in got["chunk"]]) == (200, [room]), got
    status, got = await a.call("GET", "/_matrix/client/r0/publicRooms")
    assert (status, [r["room_id"] for r in got["chunk"]]) == (200, [room]), got

    # The other tenant's directory is its own.
    status, got = await b.call("GET", f"{V}/publicRooms")
    assert (status, got["chunk"]) == (200, []), got

    # Still refused: a bad token, another server's directory, POST, an unknown host.
    status, got = await a.call("GET", f"{V}/publicRooms", token="nope")
    assert (status, got["errcode"]) == (401, "M_UNKNOWN_TOKEN"), got
    status, got = await a.call("GET", f"{V}/publicRooms?server={B}")
    assert (status, got["errcode"]) == (401, "M_MISSING_TOKEN"), got
    status, got = await a.call("POST", f"{V}/publicRooms", {})
    assert (status, got["errcode"]) == (401, "M_MISSING_TOKEN"), got
    status, got = await a.as_host("nowhere.test").call("GET", f"{V}/publicRooms")
    assert (status, got["errcode"]) == (404, "M_UNRECOGNIZED"), got
    # With a token it works as before.
    status, got = await a.call("GET", f"{V}/publicRooms", token=alice)
    assert (status, [r["room_id"] for r in got["chunk"]]) == (200, [room]), got
