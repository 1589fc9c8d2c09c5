"""Federation scenarios on the harness (issue 9, "Scenario tests built on it").

Three real Concord nodes per test, faults injected between them by the
harness's proxies, and convergence judged by what each server's users see.
Deterministic: every link's fault decisions are seeded, and the only waiting
is through ``fed.converged``'s bounded deadline. Recovery needs no sleeping:
harness nodes retry a failed destination within 2 s (docs/harness.md).

``CONCORD_SCENARIO_MESSAGES`` sets the length of the lossy conversation:
1,000 by default, the issue's figure (about 32 s on an idle two-core machine,
50 s on a loaded one); set it lower for a quick local run.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

from concord_harness import Client, Federation, Node
from concord_harness.convergence import RoomSnapshot

MESSAGES = int(os.environ.get("CONCORD_SCENARIO_MESSAGES", "1000"))


async def power_levels(client: Client, room_id: str, **users: int) -> dict[str, Any]:
    """The room's power levels as ``client`` sees them, with ``users`` changed."""
    content = dict(await client.get_state_event(room_id, "m.room.power_levels"))
    content["users"] = {**content.get("users", {}), **users}
    return content


def state_event(snap: RoomSnapshot, key: tuple[str, str]) -> dict[str, Any]:
    return snap.events[snap.state[key]]


def bodies(snap: RoomSnapshot, prefix: str) -> Counter[str]:
    """How often each message body starting with ``prefix`` is in the timeline."""
    return Counter(
        ev["content"]["body"] for ev in snap.events.values()
        if ev["type"] == "m.room.message" and ev["content"].get("body", "").startswith(prefix)
    ) + Counter(  # an event shown twice is in ``duplicates``, not twice in ``events``
        snap.events[e]["content"]["body"] for e in snap.duplicates
        if snap.events[e]["content"].get("body", "").startswith(prefix)
    )


async def test_servers_joining_at_once_see_each_other() -> None:
    """What the harness first found: B and C join A's room at the same moment.
    A accepts both and sends each join on to the other server (spec "Joining
    Rooms"), possibly while that server is still storing its own join: such a
    PDU used to be refused as for an unknown room and lost for good, and the
    joins and messages of the other branch, once fetched, stayed hidden from
    users whose join was concurrent with them. Now, once A has built on both
    branches, every server shows all three members and every message."""
    async with Federation(nodes=3, seed="joins") as fed:
        a, b, c = fed.nodes
        alice, bob, carol = (await a.register_user("alice"), await b.register_user("bob"),
                             await c.register_user("carol"))
        room = await alice.create_room(preset="public_chat")
        await asyncio.gather(bob.join(room, via=[a.server_name]),
                             carol.join(room, via=[a.server_name]))
        await asyncio.gather(bob.send_message(room, "hello from B"),
                             carol.send_message(room, "hello from C"))

        async def a_has_both() -> bool:
            shown = [ev.get("content", {}).get("body") for ev in await alice.all_events(room)]
            return "hello from B" in shown and "hello from C" in shown

        await fed.wait_for(a_has_both, timeout=20, what="A shows both messages")
        await alice.send_message(room, "welcome, both")  # builds on both branches
        snaps = await fed.converged(room, timeout=20)
        assert {s.server for s in snaps} == {a.server_name, b.server_name, c.server_name}
        for s in snaps:
            for user in (alice, bob, carol):
                joined = state_event(s, ("m.room.member", user.user_id))["content"]
                assert joined["membership"] == "join", (s.server, user.user_id)
            assert bodies(s, "hello from ") == Counter(["hello from B", "hello from C"])


async def test_partition_during_concurrent_state_changes() -> None:
    """A is cut off from B and C; both sides change power levels, ban someone,
    rename and retopic the room and let a new user join. After the partition
    heals every server holds the same events and resolves the same state,
    which keeps the bans and joins of both sides."""
    async with Federation(nodes=3, seed="partition", engine=["sqlite", "postgres", "sqlite"]) as fed:
        a, b, c = fed.nodes
        # The first user of each server reads its view: they stay members throughout.
        alice, eve = await a.register_user("alice"), await a.register_user("eve")
        bob, mallory = await b.register_user("bob"), await b.register_user("mallory")
        carol = await c.register_user("carol")
        room = await fed.create_room(alice, bob, carol, eve, mallory)
        await alice.send_state(room, "m.room.power_levels",
                               await power_levels(alice, room, **{bob.user_id: 100,
                                                                  carol.user_id: 100}))
        await fed.converged(room, timeout=20)

        fed.partition(a, b)
        fed.partition(a, c)
        dan = await a.register_user("dan")
        erin = await c.register_user("erin")

        async def side_a() -> None:
            await alice.send_state(room, "m.room.power_levels",
                                   await power_levels(alice, room, **{dan.user_id: 10}))
            await alice.ban(room, mallory.user_id)
            await dan.join(room)
            await alice.send_state(room, "m.room.topic", {"topic": "from A's side"})
            await dan.send_message(room, "dan on A during the partition")

        async def side_bc() -> None:
            levels = await power_levels(bob, room, **{erin.user_id: 20})
            levels["events"] = {**levels.get("events", {}), "m.room.name": 100}
            await bob.send_state(room, "m.room.power_levels", levels)
            await bob.ban(room, eve.user_id)
            await erin.join(room)
            await carol.send_state(room, "m.room.name", {"name": "from B and C's side"})
            await erin.send_message(room, "erin on C during the partition")
            await bob.send_message(room, "bob on B during the partition")

        await asyncio.gather(side_a(), side_bc())
        # Each side converged on its own while cut off from the other.
        await fed.converged(room, servers=[b, c], timeout=20)
        assert fed.link(a, b).stats["partitioned"] + fed.link(b, a).stats["partitioned"] > 0

        fed.heal()
        snaps = await fed.converged(room, timeout=30)
        assert {s.server for s in snaps} == {a.server_name, b.server_name, c.server_name}
        s = snaps[0]
        membership = {u.user_id: state_event(s, ("m.room.member", u.user_id))["content"]
                      ["membership"] for u in (alice, bob, carol, dan, erin, eve, mallory)}
        assert membership == {
            alice.user_id: "join", bob.user_id: "join", carol.user_id: "join",
            dan.user_id: "join", erin.user_id: "join", eve.user_id: "ban",
            mallory.user_id: "ban",
        }
        assert state_event(s, ("m.room.topic", ""))["content"]["topic"] == "from A's side"
        assert state_event(s, ("m.room.name", ""))["content"]["name"] == "from B and C's side"
        # One of the two concurrent power levels won, the same one everywhere
        # (converged compares state event IDs); it is one of the two sent.
        levels = state_event(s, ("m.room.power_levels", ""))
        assert levels["sender"] in (alice.user_id, bob.user_id)
        for body in ("dan on A", "erin on C", "bob on B"):
            assert all(sum(bodies(x, body).values()) == 1 for x in snaps), body


async def test_lossy_conversation_arrives_exactly_once() -> None:
    """30 % of federation requests dropped and 10 % duplicated on every link
    while three servers talk: each ends with every message exactly once."""
    async with Federation(nodes=3, seed="lossy") as fed:
        a, b, c = fed.nodes
        users = [await n.register_user(name)
                 for n, name in zip(fed.nodes, ("alice", "bob", "carol"), strict=True)]
        room = await fed.create_room(*users)
        await fed.converged(room, timeout=20)

        for link in fed.links():
            link.drop(0.3).duplicate(0.1)
        for i in range(MESSAGES):
            await users[i % 3].send_message(room, f"msg {i}")
        fed.heal()

        snaps = await fed.converged(room, timeout=30 + MESSAGES * 0.05)
        expected = Counter(f"msg {i}" for i in range(MESSAGES))
        for s in snaps:
            assert bodies(s, "msg ") == expected, s.server
        stats = Counter[str]()
        for link in fed.links():
            stats.update(link.stats.counts)
        # The faults did happen: requests were lost and repeated, and recovered from.
        assert stats["dropped"] > 0 and stats["duplicated"] > 0, stats


async def test_node_killed_and_restarted_mid_conversation() -> None:
    """B (a subprocess on PostgreSQL) is SIGKILLed just after sending, misses
    part of the conversation, and restarts: everyone converges, B's unsent
    message included."""
    async with Federation(nodes=3, seed="kill", mode=["inprocess", "subprocess", "inprocess"],
                          engine=["sqlite", "postgres", "sqlite"]) as fed:
        a, b, c = fed.nodes
        alice, bob, carol = (await a.register_user("alice"), await b.register_user("bob"),
                             await c.register_user("carol"))
        room = await fed.create_room(alice, bob, carol)
        await fed.converged(room, timeout=20)
        speakers: list[tuple[Node, Client]] = [(a, alice), (b, bob), (c, carol)]

        sent: list[str] = []
        for i in range(30):
            node, user = speakers[i % 3]
            if node is b and not b.running:
                continue
            await user.send_message(room, f"talk {i}")
            sent.append(f"talk {i}")
            if i == 10:  # bob just spoke: his message may still be in B's outbox
                await b.kill()
                assert b.process is None and not b.running
            if i == 20:
                await b.start()

        snaps = await fed.converged(room, timeout=30)
        assert {s.server for s in snaps} == {a.server_name, b.server_name, c.server_name}
        for s in snaps:
            assert bodies(s, "talk ") == Counter(sent), s.server
        assert "talk 10" in sent and "talk 13" not in sent
