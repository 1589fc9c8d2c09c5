"""A server learns of another server's join late (spec "Joining Rooms").

What made the partition scenario flaky: C joins through A, and A sends C's
join on to B. Before B has it, a user of B joins (a local join: B is in the
room), and B sends that join to the servers *it* knows are in the room, A
alone. If A then builds nothing on it before the test stops sending, C never
hears of it: A does not relay an event it received over /send (its origin
sends it), and no later event leads C to fetch it. Now a server that sees
another server join sends it its forward extremities (B: its user's join),
so the newcomer fetches whatever it missed before anyone speaks again.
"""

from __future__ import annotations

from concord_harness import Federation


async def test_join_sent_before_the_sender_knew_of_a_new_server() -> None:
    async with Federation(nodes=3, seed="late-join") as fed:
        a, b, c = fed.nodes
        alice, bob = await a.register_user("alice"), await b.register_user("bob")
        carol, mallory = await c.register_user("carol"), await b.register_user("mallory")
        room = await fed.create_room(alice, bob)
        await fed.converged(room, timeout=20)

        fed.link(a, b).partition()  # A's relay of carol's join to B waits
        await carol.join(room, via=[a.server_name])
        await mallory.join(room)  # a local join on B, sent to A alone
        fed.heal()

        snaps = await fed.converged(room, timeout=20)
        assert {s.server for s in snaps} == {a.server_name, b.server_name, c.server_name}
        for s in snaps:
            member = s.events[s.state[("m.room.member", mallory.user_id)]]
            assert member["content"]["membership"] == "join", s.server
