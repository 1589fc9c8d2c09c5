"""matrix-nio as a real client: create a room, invite, join, both send and sync.

The issue's headline test, on both storage engines. nio validates every
response against its JSON schemas, so a malformed /sync, /createRoom or
/send answer fails here.
"""

from __future__ import annotations

from pathlib import Path

from nio import (
    AsyncClient,
    JoinResponse,
    LoginResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from tests.client.conftest import Node, start_node


def _bodies(sync: SyncResponse, room_id: str) -> list[str]:
    room = sync.rooms.join.get(room_id)
    if room is None:
        return []
    return [e.body for e in room.timeline.events if isinstance(e, RoomMessageText)]


async def test_nio_create_invite_send_sync(tmp_path: Path, database_url: str) -> None:
    async with start_node(tmp_path, database_url, enable_registration=True) as node:
        await _scenario(node)


async def _scenario(node: Node) -> None:
    # Alice registers through nio (m.login.dummy); Bob registers too, then
    # logs in again from a second nio client, as a user returning would.
    alice = AsyncClient(node.base, "alice")
    registered = await alice.register("alice", "alice-password-1", "nio alice")
    assert isinstance(registered, RegisterResponse), registered
    signup = AsyncClient(node.base, "bob")
    assert isinstance(await signup.register("bob", "bob-password-1"), RegisterResponse)
    await signup.close()
    bob = AsyncClient(node.base, "@bob:hs.test")
    logged_in = await bob.login("bob-password-1", device_name="nio bob")
    assert isinstance(logged_in, LoginResponse), logged_in
    alice_u_id, bob_u_id = alice.user_id, bob.user_id
    assert (alice_u_id, bob_u_id) == ("@alice:hs.test", "@bob:hs.test")
    try:
        created = await alice.room_create(name="nio room", topic="testing")
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        invited = await alice.room_invite(room_id, bob_u_id)
        assert isinstance(invited, RoomInviteResponse), invited

        first = await alice.sync(timeout=0, full_state=True)
        assert isinstance(first, SyncResponse), first
        assert room_id in first.rooms.join
        assert alice.rooms[room_id].name == "nio room"

        bob_first = await bob.sync(timeout=0)
        assert isinstance(bob_first, SyncResponse), bob_first
        assert room_id in bob_first.rooms.invite

        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined
        assert joined.room_id == room_id

        sent_a = await alice.room_send(room_id, "m.room.message",
                                       {"msgtype": "m.text", "body": "hi bob"})
        assert isinstance(sent_a, RoomSendResponse), sent_a
        sent_b = await bob.room_send(room_id, "m.room.message",
                                     {"msgtype": "m.text", "body": "hi alice"})
        assert isinstance(sent_b, RoomSendResponse), sent_b

        a_sync = await alice.sync(timeout=0)
        assert isinstance(a_sync, SyncResponse), a_sync
        assert _bodies(a_sync, room_id) == ["hi bob", "hi alice"]
        b_sync = await bob.sync(timeout=0)
        assert isinstance(b_sync, SyncResponse), b_sync
        assert "hi bob" in _bodies(b_sync, room_id) and "hi alice" in _bodies(b_sync, room_id)
        assert set(bob.rooms[room_id].users) == {alice_u_id, bob_u_id}
        # An empty incremental sync moves on without news.
        again = await alice.sync(timeout=0)
        assert isinstance(again, SyncResponse) and room_id not in again.rooms.join
    finally:
        await alice.close()
        await bob.close()
