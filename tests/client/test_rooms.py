"""Rooms over the client API: create, membership, send, state, read; on both engines."""

from __future__ import annotations

from tests.client.conftest import Node


async def test_create_send_read(node: Node) -> None:
    alice = await node.user("alice")
    bob = await node.user("bob")
    room = await alice.create_room(name="Lobby", topic="hi", preset="private_chat")
    ev = await alice.send(room, "hello")
    got = await alice.ok("GET", f"/rooms/{room}/event/{ev}")
    assert got["content"]["body"] == "hello" and got["sender"] == alice.user_id
    assert await alice.ok("GET", f"/rooms/{room}/state/m.room.name") == {"name": "Lobby"}
    # Bob is not in the room.
    status, err = await bob.call("GET", f"/rooms/{room}/event/{ev}")
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
    await alice.ok("POST", f"/rooms/{room}/invite", {"user_id": bob.user_id})
    await bob.ok("POST", f"/join/{room}")
    assert (await bob.ok("GET", "/joined_rooms"))["joined_rooms"] == [room]
    members = await bob.ok("GET", f"/rooms/{room}/joined_members")
    assert set(members["joined"]) == {alice.user_id, bob.user_id}
    # shared history: bob now sees the earlier message
    assert (await bob.ok("GET", f"/rooms/{room}/event/{ev}"))["event_id"] == ev


async def test_same_millisecond_v12_rooms_are_distinct(node: Node) -> None:
    # The FakeClock stands still: same creator, same content, same timestamp.
    alice = await node.user("alice")
    rooms = {await alice.create_room(room_version="12") for _ in range(3)}
    assert len(rooms) == 3
    for room in rooms:
        members = await alice.ok("GET", f"/rooms/{room}/joined_members")
        assert list(members["joined"]) == [alice.user_id]
