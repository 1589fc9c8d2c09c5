"""State resolution agrees with Synapse on a fork.

A room shared by a Synapse user (alice, power 100) and a Concord user (carol,
power 50). Concord's outbound queue to Synapse is held closed while carol
sets the topic and the name and alice, concurrently, demotes carol to 0; so
each side makes its change without seeing the other's and the room forks.
Then the queue opens, each side receives the other branch, and both must end
with the same state (spec: server-server-api "Room State Resolution"): the
demotion is a power event, ordered first, so carol's topic and name fail the
iterative auth checks and the earlier values win.

Deterministic: carol's events stay in Concord's outbox until Concord has
received alice's demotion (Concord's ``/sync`` shows it), so neither branch
can refer to the other. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from homeserver.federation_sender import sender as sender_module
from homeserver.server import HomeServer
from tests.interop.concord import ConcordFactory
from tests.interop.synapse import MatrixClient, SynapseClient, SynapseUser
from tests.interop.test_federation_with_synapse import is_member, wait_for_event

pytestmark = pytest.mark.interop

TIMEOUT_S = 30.0


@pytest.fixture
async def concord(concord_nodes: ConcordFactory) -> AsyncIterator[tuple[HomeServer, MatrixClient]]:
    hs = await concord_nodes(extra={"enable_registration": True})
    async with aiohttp.ClientSession() as session:
        yield hs, MatrixClient(hs.base_url("client"), session)


def state_map(events: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    return {(e["type"], e["state_key"]): e["event_id"] for e in events}


async def converged(
    a: MatrixClient, a_user: SynapseUser, b: MatrixClient, b_user: SynapseUser, room_id: str,
) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """Both /state answers once they agree, or at the deadline (polled: the
    held branch reaches Synapse asynchronously)."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while True:
        sa = state_map(await a.state(a_user, room_id))
        sb = state_map(await b.state(b_user, room_id))
        if sa == sb or asyncio.get_running_loop().time() > deadline:
            return sa, sb
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("room_version", ["11", "12"])
async def test_power_level_fork_resolves_like_synapse(
    synapse_client: SynapseClient,
    concord: tuple[HomeServer, MatrixClient],
    room_version: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hs, client = concord
    alice = await synapse_client.register()
    room_id = await synapse_client.create_room(alice, room_version=room_version, name="Before")
    await synapse_client.send_state(alice, room_id, "m.room.topic", {"topic": "before"})
    carol = await client.register_open()
    await client.join(carol, room_id, via=[synapse_client.server.server_name])
    await wait_for_event(synapse_client, alice, room_id, is_member(carol.user_id, "join"))

    levels = await synapse_client.state_event(alice, room_id, "m.room.power_levels")
    levels.setdefault("users", {})[carol.user_id] = 50
    await synapse_client.send_state(alice, room_id, "m.room.power_levels", levels)
    await wait_for_event(
        client, carol, room_id,
        lambda e: e.get("type") == "m.room.power_levels"
        and e["content"].get("users", {}).get(carol.user_id) == 50,
    )

    # Hold every transaction from Concord to Synapse until the gate opens.
    gate = asyncio.Event()
    real_send = sender_module._Queue._send

    async def held_send(self: Any, txn: Any, log_prefix: str) -> None:
        if self.destination == synapse_client.server.server_name:
            await asyncio.wait_for(gate.wait(), TIMEOUT_S)
        await real_send(self, txn, log_prefix)

    monkeypatch.setattr(sender_module._Queue, "_send", held_send)

    topic_id = await client.send_state(carol, room_id, "m.room.topic", {"topic": "by carol"})
    name_id = await client.send_state(carol, room_id, "m.room.name", {"name": "By carol"})
    demoted = dict(levels)
    demoted["users"] = dict(levels["users"], **{carol.user_id: 0})
    demote_id = await synapse_client.send_state(alice, room_id, "m.room.power_levels", demoted)
    # Concord has alice's branch; Synapse cannot have carol's yet.
    await wait_for_event(
        client, carol, room_id,
        lambda e: e.get("event_id") == demote_id,
        timeout_s=TIMEOUT_S,
    )
    theirs = state_map(await synapse_client.state(alice, room_id))
    assert theirs[("m.room.topic", "")] != topic_id
    gate.set()

    # Synapse receives carol's branch (soft-failed or not: it must not win).
    ours, theirs = await converged(client, carol, synapse_client, alice, room_id)
    assert ours == theirs
    assert ours[("m.room.power_levels", "")] == demote_id
    assert ours[("m.room.topic", "")] != topic_id
    assert ours[("m.room.name", "")] != name_id
    assert await client.state_event(carol, room_id, "m.room.topic") == {"topic": "before"}
    assert await synapse_client.state_event(alice, room_id, "m.room.name") == {"name": "Before"}
