"""History visibility, aliases and the public room directory, profiles, capabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from federation.clock import FakeClock
from homeserver.server import HomeServer
from tests.client.conftest import Client, Node, node_config


async def _bodies(client: Client, room: str) -> list[Any]:
    page = await client.ok("GET", f"/rooms/{room}/messages",
                           params={"dir": "f", "limit": "100"})
    return [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"]


async def test_history_visibility(node: Node) -> None:
    alice = await node.user("alice")
    bob = await node.user("bob")
    carol = await node.user("carol")

    async def room_with(visibility: str) -> str:
        room = await alice.create_room(preset="public_chat")
        await alice.ok("PUT", f"/rooms/{room}/state/m.room.history_visibility",
                       {"history_visibility": visibility})
        return room

    joined = await room_with("joined")
    await alice.send(joined, "before invite")
    await alice.ok("POST", f"/rooms/{joined}/invite", {"user_id": bob.user_id})
    await alice.send(joined, "while invited")
    await bob.ok("POST", f"/join/{joined}")
    await alice.send(joined, "after join")
    assert await _bodies(bob, joined) == ["after join"]

    invited = await room_with("invited")
    await alice.send(invited, "before invite")
    await alice.ok("POST", f"/rooms/{invited}/invite", {"user_id": bob.user_id})
    await alice.send(invited, "while invited")
    await bob.ok("POST", f"/join/{invited}")
    assert await _bodies(bob, invited) == ["while invited"]

    shared = await room_with("shared")
    await alice.send(shared, "old")
    # Not joined yet: nothing to read.
    status, err = await bob.call("GET", f"/rooms/{shared}/messages")
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
    await bob.ok("POST", f"/join/{shared}")
    assert await _bodies(bob, shared) == ["old"]
    await bob.ok("POST", f"/rooms/{shared}/leave")
    await alice.send(shared, "after bob left")
    assert await _bodies(bob, shared) == ["old"]

    world = await room_with("world_readable")
    await alice.send(world, "for everyone")
    assert await _bodies(carol, world) == ["for everyone"]
    assert (await carol.call("PUT", f"/rooms/{world}/send/m.room.message/x", {}))[0] == 403
    # Carol was never in `shared`: nothing, not even the state.
    for path in (f"/rooms/{shared}/state", f"/rooms/{shared}/members",
                 f"/rooms/{shared}/messages"):
        assert (await carol.call("GET", path))[0] == 403


async def test_aliases_and_public_rooms(node: Node) -> None:
    alice = await node.user("alice")
    bob = await node.user("bob", admin=False)
    admin = await node.user("admin", admin=True)
    lobby = await alice.create_room(preset="public_chat", visibility="public",
                                    room_alias_name="lobby", name="The Lobby",
                                    topic="chat about anything")
    assert (await alice.ok("GET", "/directory/room/%23lobby:hs.test"))["room_id"] == lobby
    status, err = await bob.call("POST", "/createRoom", {"room_alias_name": "lobby"})
    assert (status, err["errcode"]) == (400, "M_ROOM_IN_USE")
    await bob.ok("POST", "/join/%23lobby:hs.test")
    await bob.ok("PUT", "/directory/room/%23second:hs.test", {"room_id": lobby})
    status, err = await bob.call("PUT", "/directory/room/%23second:hs.test", {"room_id": lobby})
    assert (status, err["errcode"]) == (409, "M_UNKNOWN")
    status, err = await bob.call("PUT", "/directory/room/%23x:other.test", {"room_id": lobby})
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")
    assert (await bob.ok("GET", f"/rooms/{lobby}/aliases"))["aliases"] == [
        "#lobby:hs.test", "#second:hs.test"]
    # Only the creator or an admin deletes an alias.
    status, _ = await alice.call("DELETE", "/directory/room/%23second:hs.test")
    assert status == 403
    await admin.ok("DELETE", "/directory/room/%23second:hs.test")
    assert (await bob.call("GET", "/directory/room/%23second:hs.test"))[0] == 404

    names = [f"room {i}" for i in range(5)]
    for n in names:
        await alice.create_room(preset="public_chat", visibility="public", name=n)
    private = await alice.create_room(name="hidden")
    listing = await bob.ok("GET", "/publicRooms")
    assert listing["total_room_count_estimate"] == 6
    assert listing["chunk"][0]["room_id"] == lobby  # two members: first
    assert listing["chunk"][0]["canonical_alias"] == "#lobby:hs.test"
    assert listing["chunk"][0]["num_joined_members"] == 2
    assert private not in [r["room_id"] for r in listing["chunk"]]
    found = await bob.ok("POST", "/publicRooms", {"filter": {"generic_search_term": "ANYTHING"}})
    assert [r["room_id"] for r in found["chunk"]] == [lobby]
    paged: list[str] = []
    since = None
    for _ in range(10):
        body: dict[str, Any] = {"limit": 4}
        if since:
            body["since"] = since
        page = await bob.ok("POST", "/publicRooms", body)
        paged.extend(r["room_id"] for r in page["chunk"])
        since = page.get("next_batch")
        if not since:
            break
    assert paged == [r["room_id"] for r in listing["chunk"]]
    # Directory visibility: read by anyone, set by who may set the canonical alias.
    assert await bob.ok("GET", f"/directory/list/room/{private}") == {"visibility": "private"}
    status, _ = await bob.call("PUT", f"/directory/list/room/{lobby}", {"visibility": "private"})
    assert status == 403
    await alice.ok("PUT", f"/directory/list/room/{private}", {"visibility": "public"})
    assert (await bob.ok("GET", "/publicRooms"))["total_room_count_estimate"] == 7
    status, _ = await alice.call("PUT", f"/directory/list/room/{private}", {"visibility": "x"})
    assert status == 400
    # Another server's directory goes over federation, never a local answer.
    status, err = await bob.call("GET", "/publicRooms", params={"server": "remote.invalid"})
    assert status >= 400 and "errcode" in err


async def test_profile_updates_member_events(node: Node) -> None:
    alice = await node.user("alice")
    assert await alice.ok("GET", f"/profile/{alice.user_id}") == {"displayname": "alice"}
    rooms = [await alice.create_room() for _ in range(2)]
    await alice.ok("PUT", f"/profile/{alice.user_id}/displayname", {"displayname": "Alice A."})
    await alice.ok("PUT", f"/profile/{alice.user_id}/avatar_url",
                   {"avatar_url": "mxc://hs.test/abc"})
    assert await alice.ok("GET", f"/profile/{alice.user_id}/displayname") == {
        "displayname": "Alice A."}
    for room in rooms:
        member = await alice.ok("GET", f"/rooms/{room}/state/m.room.member/{alice.user_id}")
        assert member == {"membership": "join", "displayname": "Alice A.",
                          "avatar_url": "mxc://hs.test/abc"}
    status, err = await alice.call("GET", "/profile/@nobody:hs.test")
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")


async def test_capabilities_and_default_room_version(tmp_path: Path) -> None:
    clock = FakeClock()
    hs = await HomeServer.start(
        node_config(tmp_path, f"sqlite://{tmp_path / 'hs.db'}", default_room_version="11"),
        clock=clock,
    )
    try:
        async with aiohttp.ClientSession() as session:
            node = Node(hs, clock, session)
            alice = await node.user("alice")
            caps = (await alice.ok("GET", "/capabilities"))["capabilities"]
            assert caps["m.room_versions"] == {
                "default": "11",
                "available": {"10": "stable", "11": "stable", "12": "stable"},
            }
            assert isinstance(caps["m.change_password"]["enabled"], bool)
            room = await alice.create_room()
            create = await alice.ok("GET", f"/rooms/{room}/state/m.room.create")
            assert create["room_version"] == "11"
            assert room.endswith(":hs.test")
            r0 = await alice.ok("GET", "/_matrix/client/r0/joined_rooms")
            assert r0 == {"joined_rooms": [room]}
    finally:
        await hs.stop()
