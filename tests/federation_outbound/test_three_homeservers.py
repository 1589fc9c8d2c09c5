"""Three homeservers in one room: two nodes, plus a second tenant on one of
them that federates like any other server (issue 6, "Three Concord
homeservers"). Concurrent messages and conflicting state changes from all
three, then every homeserver holds the same events and the same state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from federation.clock import FakeClock
from federation.room_versions import ROOM_V11, ROOM_V12, RoomVersion
from tests.federation_outbound.nodes import Node, link, settle, start_node

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
CAROL = "@carol:c.test"


async def room_view(node: Node, tenant: str, room: str) -> tuple[dict[object, str], list[str]]:
    state = await node.events.state.get_current_state(tenant, room)
    ext = await node.events.get_forward_extremities(tenant, room)
    return dict(state), sorted(ext)


@pytest.mark.parametrize("rv", [ROOM_V11, ROOM_V12], ids=lambda v: f"v{v.identifier}")
async def test_three_homeservers_converge(
    tmp_path: Path, rv: RoomVersion, database_url: str
) -> None:
    """Node B runs on each engine (``database_url``); node A on SQLite."""
    clock = FakeClock()
    a = await start_node(tmp_path / "a", "a.test", clock,
                         extra={"tenants": [{"server_name": "c.test"}]})
    b = await start_node(tmp_path / "b", "b.test", clock, database_url=database_url)
    try:
        # c.test lives on node A; every node (A included) reaches it over HTTP.
        link([a, b], extra_names={"c.test": a})
        homes = [(a, "a.test", ALICE), (b, "b.test", BOB), (a, "c.test", CAROL)]
        room = await a.create_room(ALICE, rv)
        await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {})
        # Carol joins through B, not the room's creator.
        await a.remote_rooms.remote_join("c.test", CAROL, room, ["b.test"], {})
        await settle([a, b])
        await a.creation.create_event(
            "a.test", room, event_type="m.room.power_levels", sender=ALICE, state_key="",
            content={"users": {BOB: 50, CAROL: 50} | ({} if rv.privileged_room_creators
                                                       else {ALICE: 100}),
                     "state_default": 50, "events_default": 0},
        )
        await settle([a, b])

        async def burst(node: Node, tenant: str, user: str) -> list[str]:
            ids = []
            for i in range(8):
                if i % 3 == 1:
                    ev = await node.creation.create_event(
                        tenant, room, event_type="m.room.name", sender=user, state_key="",
                        content={"name": f"{tenant} {i}"})
                elif i % 3 == 2:
                    ev = await node.creation.create_event(
                        tenant, room, event_type="m.room.topic", sender=user, state_key="",
                        content={"topic": f"{tenant} says {i}"})
                else:
                    ev = await node.say(tenant, room, user, f"{tenant} msg {i}")
                ids.append(ev.event_id)
                await asyncio.sleep(0)  # let deliveries interleave with the burst
            return ids

        sent = await asyncio.gather(*(burst(n, t, u) for n, t, u in homes))
        await settle([a, b])
        # One more round from each, so every server builds on everything it saw.
        sent.append([(await n.say(t, room, u, "last")).event_id for n, t, u in homes])
        await settle([a, b])

        assert a.sender.running_queues == 0 and b.sender.running_queues == 0
        views = [await room_view(n, t, room) for n, t, _ in homes]
        assert views[0] == views[1] == views[2], "current state and extremities differ"
        for n, t, _ in homes:
            stored = await n.events.get_stored_events(t, [i for ids in sent for i in ids])
            assert len(stored) == sum(len(ids) for ids in sent), f"{t} lacks events"
            refused = [s.event.event_id for s in stored.values()
                       if s.rejected_reason or s.soft_failed or s.outlier]
            assert refused == [], f"{t} did not accept {refused}"
        state = views[0][0]
        assert {("m.room.member", u) for _, _, u in homes} <= set(state)
        for n in (a, b):
            assert int(await n.hs.database.fetchval(
                "SELECT COUNT(*) FROM federation_outbox")) == 0
    finally:
        await b.hs.stop()
        await a.hs.stop()
