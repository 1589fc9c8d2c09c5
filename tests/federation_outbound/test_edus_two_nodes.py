"""Typing and read receipts between two real Concord nodes, client to client.

Alice's ``PUT /typing`` and ``POST /receipt`` on node A go out as ``m.typing``
and ``m.receipt`` EDUs (server-server-api "Typing Notifications",
"Receipts") and show in Bob's ``/sync`` on node B under ``ephemeral``
(client-server-api "Typing Notifications", "Receipts"). A typing EDU for a
user who is not joined to the room is dropped. Node A runs on SQLite, node B
once per storage engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from federation.room_versions import ROOM_V11
from tests.federation_outbound.nodes import ClientUser, Node, client_pair, settle

ALICE = "@alice:a.test"
CAROL = "@carol:a.test"
BOB = "@bob:b.test"


@dataclass
class Pair:
    a: Node
    b: Node
    alice: ClientUser
    bob: ClientUser
    room_id: str


@pytest.fixture
async def pair(tmp_path: Path, database_url: str) -> AsyncIterator[Pair]:
    """Alice on node A (SQLite) and Bob on node B (each engine) in Alice's room."""
    async with client_pair(tmp_path, database_url) as p:
        alice = await p.login(p.a, ALICE)
        bob = await p.login(p.b, BOB)
        room = await p.a.create_room(ALICE, ROOM_V11)
        await p.b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {})
        await settle([p.a, p.b])
        yield Pair(p.a, p.b, alice, bob, room)


def ephemeral(resp: dict[str, Any], room_id: str, event_type: str) -> list[dict[str, Any]]:
    joined = resp["rooms"]["join"].get(room_id, {})
    return [e for e in joined.get("ephemeral", {}).get("events", [])
            if e["type"] == event_type]


async def test_typing_reaches_the_other_nodes_sync(pair: Pair) -> None:
    a, b, room = pair.a, pair.b, pair.room_id
    since = (await pair.bob.sync())["next_batch"]

    path = f"/rooms/{quote(room)}/typing/{quote(ALICE)}"
    await pair.alice.ok("PUT", path, {"typing": True, "timeout": 30_000})
    await settle([a, b])
    got = await pair.bob.sync(since)
    assert ephemeral(got, room, "m.typing") == [
        {"type": "m.typing", "content": {"user_ids": [ALICE]}}
    ]

    await pair.alice.ok("PUT", path, {"typing": False})
    await settle([a, b])
    stopped = await pair.bob.sync(got["next_batch"])
    assert ephemeral(stopped, room, "m.typing") == [
        {"type": "m.typing", "content": {"user_ids": []}}
    ]


async def test_typing_edu_for_a_non_member_is_ignored(pair: Pair) -> None:
    """Carol (a.test) never joined: A's signed EDU claiming she types is
    dropped by B; Alice's, queued after it on the same destination, is kept."""
    a, b, room = pair.a, pair.b, pair.room_id
    since = (await pair.bob.sync())["next_batch"]
    await a.sender.send_edu("a.test", ["b.test"], "m.typing",
                            {"room_id": room, "user_id": CAROL, "typing": True})
    await a.sender.send_edu("a.test", ["b.test"], "m.typing",
                            {"room_id": room, "user_id": ALICE, "typing": True})
    await settle([a, b])
    got = await pair.bob.sync(since)
    assert ephemeral(got, room, "m.typing") == [
        {"type": "m.typing", "content": {"user_ids": [ALICE]}}
    ]
    assert b.hs.client_api.typing.typing_users("b.test", room) == [ALICE]  # type: ignore[attr-defined]


async def test_read_receipt_reaches_the_other_nodes_sync(pair: Pair) -> None:
    a, b, room = pair.a, pair.b, pair.room_id
    msg = await a.say("a.test", room, ALICE, "read me")
    await settle([a, b])
    since = (await pair.bob.sync())["next_batch"]

    await pair.alice.ok("POST", f"/rooms/{quote(room)}/receipt/m.read/{quote(msg.event_id)}",
                        {})
    await settle([a, b])
    got = await pair.bob.sync(since)
    receipts = ephemeral(got, room, "m.receipt")
    assert len(receipts) == 1, got["rooms"]["join"].get(room)
    by_user = receipts[0]["content"][msg.event_id]["m.read"]
    assert list(by_user) == [ALICE] and isinstance(by_user[ALICE]["ts"], int)
