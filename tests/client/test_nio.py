"""matrix-nio as a real client: create a room, invite, join, both send and sync.

The issue's headline test, on both storage engines. nio validates every
response against its JSON schemas, so a malformed /sync, /createRoom or
/send answer fails here.
"""

from __future__ import annotations

from nio import (
    AsyncClient,
    JoinResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from tests.client.conftest import Node


def _nio(node: Node, user_id: str, token: str, device_id: str) -> AsyncClient:
    client = AsyncClient(node.base, user_id)
    client.restore_login(user_id, device_id, token)
    return client


def _bodies(sync: SyncResponse, room_id: str) -> list[str]:
    room = sync.rooms.join.get(room_id)
    if room is None:
        return []
    return [e.body for e in room.timeline.events if isinstance(e, RoomMessageText)]


async def test_nio_create_invite_send_sync(node: Node) -> None:
    alice_u = await node.user("alice")
    bob_u = await node.user("bob")
    alice = _nio(node, alice_u.user_id, alice_u.token, "DEVALICE")
    bob = _nio(node, bob_u.user_id, bob_u.token, "DEVBOB")
    try:
        created = await alice.room_create(name="nio room", topic="testing")
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        invited = await alice.room_invite(room_id, bob_u.user_id)
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
        assert set(bob.rooms[room_id].users) == {alice_u.user_id, bob_u.user_id}
        # An empty incremental sync moves on without news.
        again = await alice.sync(timeout=0)
        assert isinstance(again, SyncResponse) and room_id not in again.rooms.join
    finally:
        await alice.close()
        await bob.close()
