"""/sync: initial and incremental, long-poll woken by a send (no sleeps) or
ended by the FakeClock, typing expiry, receipts, invites and leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.client.conftest import Client, Node


async def eventually(cond: Callable[[], bool], what: str) -> None:
    """Wait until ``cond()`` holds: the server under test runs on this loop
    and the request crosses a real socket, so yield until it got there."""
    for _ in range(2000):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def timeline(sync: dict[str, Any], room: str) -> list[Any]:
    return [e.get("content", {}).get("body") for e in
            sync["rooms"]["join"].get(room, {}).get("timeline", {}).get("events", [])
            if e["type"] == "m.room.message"]


async def test_initial_and_incremental(node: Node) -> None:
    alice = await node.user("alice")
    bob = await node.user("bob")
    room = await alice.create_room(name="r", invite=[bob.user_id])
    for i in range(12):
        await alice.send(room, f"m{i}")
    first = await alice.ok("GET", "/sync")
    joined = first["rooms"]["join"][room]
    assert joined["timeline"]["limited"] is True
    assert timeline(first, room) == [f"m{i}" for i in range(2, 12)]
    state_types = {e["type"] for e in joined["state"]["events"]}
    assert {"m.room.create", "m.room.name", "m.room.member"} <= state_types
    # prev_batch continues backwards in /messages.
    older = await alice.ok("GET", f"/rooms/{room}/messages",
                           params={"from": joined["timeline"]["prev_batch"], "limit": "2"})
    assert [e["content"]["body"] for e in older["chunk"]] == ["m1", "m0"]

    bob_first = await bob.ok("GET", "/sync")
    invite = bob_first["rooms"]["invite"][room]["invite_state"]["events"]
    assert {e["type"] for e in invite} >= {"m.room.create", "m.room.name", "m.room.member"}
    since = first["next_batch"]
    await alice.send(room, "after")
    await bob.ok("POST", f"/join/{room}")
    inc = await alice.ok("GET", "/sync", params={"since": since})
    assert timeline(inc, room) == ["after"]
    assert inc["rooms"]["join"][room]["timeline"]["events"][-1]["state_key"] == bob.user_id
    assert inc["rooms"]["join"][room]["timeline"]["limited"] is False
    assert inc["rooms"]["join"][room]["state"]["events"] == []
    # Bob joined since his token: full state for the room.
    bob_inc = await bob.ok("GET", "/sync", params={"since": bob_first["next_batch"]})
    assert room in bob_inc["rooms"]["join"]
    assert any(e["type"] == "m.room.create"
               for e in bob_inc["rooms"]["join"][room]["state"]["events"])
    # A limit from a filter, by ID.
    fid = (await alice.ok("POST", f"/user/{alice.user_id}/filter",
                          {"room": {"timeline": {"limit": 2}}}))["filter_id"]
    small = await alice.ok("GET", "/sync", params={"filter": fid})
    events = small["rooms"]["join"][room]["timeline"]["events"]
    assert [e["type"] for e in events] == ["m.room.message", "m.room.member"]
    assert events[1]["content"]["membership"] == "join"
    # Leaving shows up under "leave" for the next sync.
    await bob.ok("POST", f"/rooms/{room}/leave")
    bob_left = await bob.ok("GET", "/sync", params={"since": bob_inc["next_batch"]})
    assert room in bob_left["rooms"]["leave"] and room not in bob_left["rooms"]["join"]


async def _start_long_poll(node: Node, client: Client, since: str) -> asyncio.Task[Any]:
    before = node.hs.notifier.listener_count()
    sleepers = node.clock.pending_sleepers()
    task = asyncio.create_task(
        client.ok("GET", "/sync", params={"since": since, "timeout": "30000"}))
    # Waiting, with its timeout on the clock: a test may move the clock now.
    await eventually(lambda: node.hs.notifier.listener_count() > before
                     and node.clock.pending_sleepers() > sleepers, "sync is waiting")
    assert not task.done()
    return task


async def test_long_poll_woken_by_send(node: Node) -> None:
    alice = await node.user("alice")
    bob = await node.user("bob")
    room = await alice.create_room(preset="public_chat")
    await bob.ok("POST", f"/join/{room}")
    since = (await bob.ok("GET", "/sync"))["next_batch"]
    waiting = await _start_long_poll(node, bob, since)
    await alice.send(room, "wake up")
    got = await asyncio.wait_for(waiting, 10)
    assert timeline(got, room) == ["wake up"]
    # An invite wakes the invitee, who is not in the room yet.
    carol = await node.user("carol")
    since = (await carol.ok("GET", "/sync"))["next_batch"]
    waiting = await _start_long_poll(node, carol, since)
    await alice.ok("POST", f"/rooms/{room}/invite", {"user_id": carol.user_id})
    got = await asyncio.wait_for(waiting, 10)
    assert room in got["rooms"]["invite"]


async def test_long_poll_times_out_on_the_clock(node: Node) -> None:
    alice = await node.user("alice")
    await alice.create_room()
    since = (await alice.ok("GET", "/sync"))["next_batch"]
    waiting = await _start_long_poll(node, alice, since)
    node.clock.advance(29)
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    node.clock.advance(1)
    got = await asyncio.wait_for(waiting, 10)
    assert got["rooms"]["join"] == {} and got["next_batch"] == since
    assert node.hs.notifier.listener_count() == 0


async def test_typing_expires_with_the_clock_and_receipts(node: Node) -> None:
    alice = await node.user("alice")
    bob = await node.user("bob")
    room = await alice.create_room(preset="public_chat")
    await bob.ok("POST", f"/join/{room}")
    first = await bob.ok("GET", "/sync")
    await alice.ok("PUT", f"/rooms/{room}/typing/{alice.user_id}",
                   {"typing": True, "timeout": 10_000})

    def ephemeral(sync: dict[str, Any], etype: str) -> list[Any]:
        evs = sync["rooms"]["join"].get(room, {}).get("ephemeral", {}).get("events", [])
        return [e["content"] for e in evs if e["type"] == etype]

    typing = await bob.ok("GET", "/sync", params={"since": first["next_batch"]})
    assert ephemeral(typing, "m.typing") == [{"user_ids": [alice.user_id]}]
    api = node.hs.client_api  # type: ignore[attr-defined]
    node.clock.advance(9.9)
    await asyncio.sleep(0)
    assert api.typing.typing_users("hs.test", room) == [alice.user_id]
    node.clock.advance(0.1)
    await eventually(lambda: api.typing.typing_users("hs.test", room) == [], "typing expired")
    stopped = await bob.ok("GET", "/sync", params={"since": typing["next_batch"]})
    assert ephemeral(stopped, "m.typing") == [{"user_ids": []}]

    ev = await alice.send(room, "read me")
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{ev}", {})
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read.private/{ev}", {})
    await bob.ok("POST", f"/rooms/{room}/read_markers", {"m.fully_read": ev})
    seen = await alice.ok("GET", "/sync", params={"since": stopped["next_batch"]})
    receipts = ephemeral(seen, "m.receipt")
    assert receipts == [{ev: {"m.read": {bob.user_id: {"ts": node.clock.time_ms()}}}}]
    own = await bob.ok("GET", "/sync", params={"since": stopped["next_batch"]})
    own_types = set(ephemeral(own, "m.receipt")[0][ev])
    assert own_types == {"m.read", "m.read.private"}
    fully = own["rooms"]["join"][room]["account_data"]["events"]
    assert fully == [{"type": "m.fully_read", "content": {"event_id": ev}}]
