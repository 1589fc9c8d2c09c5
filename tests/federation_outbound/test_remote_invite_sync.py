"""An invite received over federation (``PUT /v2/invite``) in the invitee's
``/sync``: ``rooms.invite`` with the stripped state the inviter sent, on an
initial and an incremental sync, waking a long-poll; gone from
``rooms.invite`` once the user joined or rejected it (the rejection shows
under ``rooms.leave``). Spec: client-server-api "Syncing" (``rooms.invite``,
``invite_state``), server-server-api "Inviting to a room"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from federation.room_versions import ROOM_V11, ROOM_V12, RoomVersion
from tests.federation_outbound.nodes import ClientUser, Node, client_pair, settle

ALICE = "@alice:a.test"
BOB = "@bob:b.test"


@dataclass
class Pair:
    a: Node
    b: Node
    bob: ClientUser


@pytest.fixture
async def pair(tmp_path: Path, database_url: str) -> AsyncIterator[Pair]:
    """Node A (SQLite) and node B (each engine), with bob logged in on B."""
    async with client_pair(tmp_path, database_url) as p:
        yield Pair(p.a, p.b, await p.login(p.b, BOB, "BOBDEV"))


def member_of(events: list[dict[str, Any]], user: str) -> str | None:
    found = [e for e in events if e["type"] == "m.room.member" and e["state_key"] == user]
    return found[-1]["content"]["membership"] if found else None


@pytest.mark.parametrize("rv", [ROOM_V11, ROOM_V12], ids=lambda v: f"v{v.identifier}")
async def test_remote_invite_in_sync_until_joined(pair: Pair, rv: RoomVersion) -> None:
    a, bob = pair.a, pair.bob
    room = await a.create_room(ALICE, rv)
    await a.creation.create_event(
        "a.test", room, event_type="m.room.name", sender=ALICE, state_key="",
        content={"name": "Invited here"},
    )
    first = await bob.sync()
    assert first["rooms"]["invite"] == {}

    # A long-poll that is waiting when the invite arrives wakes up with it
    # (the FakeClock never runs its timeout out).
    poll = asyncio.ensure_future(bob.sync(first["next_batch"], timeout_ms=600_000))
    await asyncio.sleep(0)
    invite_id = await a.remote_rooms.remote_invite("a.test", ALICE, room, BOB, {})
    woken = await asyncio.wait_for(poll, 20)
    assert list(woken["rooms"]["invite"]) == [room]
    assert woken["rooms"]["join"] == {}

    for resp in (woken, await bob.sync()):
        events = resp["rooms"]["invite"][room]["invite_state"]["events"]
        by_type = {e["type"]: e for e in events}
        assert by_type["m.room.create"]["sender"] == ALICE
        assert by_type["m.room.name"]["content"] == {"name": "Invited here"}
        assert member_of(events, ALICE) == "join"
        assert events[-1]["event_id"] == invite_id
        assert events[-1]["state_key"] == BOB and events[-1]["sender"] == ALICE
        assert member_of(events, BOB) == "invite"
        # Stripped state: no event IDs, signatures or hashes but the invite's own.
        assert all("signatures" not in e and "hashes" not in e for e in events)

    # Nothing new since: the invite is not repeated.
    again = await bob.sync(woken["next_batch"])
    assert again["rooms"]["invite"] == {}

    await bob.ok("POST", f"/join/{quote(room)}", {}, params={"server_name": "a.test"})
    await settle([pair.a, pair.b])
    initial = await bob.sync()
    assert initial["rooms"]["invite"] == {}
    assert room in initial["rooms"]["join"]
    inc = await bob.sync(woken["next_batch"])
    assert inc["rooms"]["invite"] == {}
    timeline = inc["rooms"]["join"][room]["timeline"]["events"]
    assert member_of(timeline, BOB) == "join"


async def test_rejected_remote_invite_leaves_sync(pair: Pair) -> None:
    a, bob = pair.a, pair.bob
    room = await a.create_room(ALICE, ROOM_V11)
    await a.remote_rooms.remote_invite("a.test", ALICE, room, BOB, {})
    invited = await bob.sync()
    assert list(invited["rooms"]["invite"]) == [room]

    # Rejected over federation (make_leave/send_leave through A); a waiting
    # long-poll returns with the leave.
    poll = asyncio.ensure_future(bob.sync(invited["next_batch"], timeout_ms=600_000))
    await asyncio.sleep(0)
    await bob.ok("POST", f"/rooms/{quote(room)}/leave", {})
    woken = await asyncio.wait_for(poll, 20)
    assert woken["rooms"]["invite"] == {}
    left = woken["rooms"]["leave"][room]["timeline"]["events"]
    assert member_of(left, BOB) == "leave"
    a_state = await a.events.state.get_current_state("a.test", room)
    assert a_state[("m.room.member", BOB)] == left[-1]["event_id"]

    after = await bob.sync()
    assert after["rooms"]["invite"] == {} and after["rooms"]["leave"] == {}
    assert (await bob.sync(woken["next_batch"]))["rooms"]["leave"] == {}

    # Invited again: the new invite stands again.
    second = await a.remote_rooms.remote_invite("a.test", ALICE, room, BOB, {})
    events = (await bob.sync())["rooms"]["invite"][room]["invite_state"]["events"]
    assert events[-1]["event_id"] == second
