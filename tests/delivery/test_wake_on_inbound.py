"""Any authenticated request from a destination we are backing off from
wakes our queue to it at once (issue 7: "Any inbound request from a
backed-off destination wakes its queue at once"), end to end on two real
nodes with a FakeClock that is never advanced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from federation.clock import FakeClock
from federation.room_versions import ROOM_V11
from federation.transport.client import FederationHttpError
from tests.federation_outbound.nodes import Node, link, settle, start_node

ALICE = "@alice:a.test"
BOB = "@bob:b.test"


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    clock = FakeClock()
    a = await start_node(tmp_path / "a", "a.test", clock)
    b = await start_node(tmp_path / "b", "b.test", clock)
    link([a, b])
    try:
        yield a, b
    finally:
        for n in (b, a):
            await n.hs.stop()


async def until_delivered(a: Node, b: Node, room: str, event_id: str) -> None:
    """Until ``b`` holds the event (no clock advance: only a wake can send it)."""
    async def held() -> None:
        while await b.events.get_event("b.test", event_id) is None:
            await a.sender.wait_until_idle()
            await asyncio.sleep(0.01)  # polling for an outcome, not timing one

    await asyncio.wait_for(held(), 20)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/_matrix/federation/v1/version", None),
        # An authenticated request that fails still proves the peer is up.
        ("/_matrix/federation/v1/query/profile?user_id=@nobody:a.test", 404),
    ],
)
async def test_a_request_from_the_peer_wakes_its_queue(
    nodes: tuple[Node, Node], path: str, status: int | None
) -> None:
    a, b = nodes
    room = await a.create_room(ALICE, ROOM_V11)
    await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {})
    await settle([a, b])

    # b is unreachable from a: the message fails and a backs off.
    client = a.hs.keys.client
    assert client is not None
    route = client.destination_overrides["b.test"]
    client.destination_overrides["b.test"] = "http://127.0.0.1:1"
    msg = await a.say("a.test", room, ALICE, "while b was away")
    await settle([a, b])
    state = await a.sender._store(a.hs.database).get_destination("b.test")
    assert state is not None and state.next_retry_ts is not None
    assert state.next_retry_ts > a.hs.clock.time_ms()
    assert a.sender.running_queues == 1  # asleep in its backoff
    assert await b.events.get_event("b.test", msg.event_id) is None

    # b is back and asks a anything, signed: a retries now.
    client.destination_overrides["b.test"] = route
    b_client = b.hs.keys.client
    assert b_client is not None
    if status is None:
        await b_client.get_json("a.test", path)
    else:
        with pytest.raises(FederationHttpError) as e:
            await b_client.get_json("a.test", path)
        assert e.value.status == status
    await until_delivered(a, b, room, msg.event_id)
    state = await a.sender._store(a.hs.database).get_destination("b.test")
    assert state is not None and state.next_retry_ts is None
