"""send_join as the resident server, on both engines: the join and the outbox
rows that relay it to the rest of the room commit together or not at all,
and the answer carries the stored events exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from federation.errors import MatrixError
from federation.room_versions import ROOM_V11, ROOM_V12, RoomVersion
from homeserver.keys import key_service_for
from homeserver.rest.federation.context import InboundContext
from storage.database import Transaction
from storage.stores.outbox import OutboxStore
from tests.federation_inbound.conftest import NODE, PEER, PEER_USER, Node, Peer, Setup, room_path
from tests.federation_inbound.helpers import VERS

OTHER = "other.test"
OTHER_USER = "@olga:other.test"


@pytest.fixture
async def other(setup: Setup) -> AsyncIterator[Peer]:
    """A second crafted server, ``other.test``, that the node can reach."""
    node, peer = setup
    session = aiohttp.ClientSession()
    other = Peer(OTHER, peer.clock, session)
    runner = web.AppRunner(other.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    other.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    key_service_for(node.hs).client.destination_overrides[OTHER] = other.url
    other.client.destination_overrides[NODE] = node.url
    try:
        yield other
    finally:
        await runner.cleanup()
        await session.close()


async def _signed_join(node: Node, peer: Peer, room_id: str, user: str,
                       rv: RoomVersion) -> tuple[str, dict[str, Any]]:
    status, tmpl = await peer.request("GET", room_path("v1/make_join", room_id, user),
                                      query=VERS)
    assert status == 200, tmpl
    join = peer.event(rv, **tmpl["event"])
    return peer.event_id(join, rv), join


@pytest.mark.parametrize("rv", [ROOM_V11, ROOM_V12], ids=["v11", "v12"])
async def test_join_and_its_relay_commit_together(setup: Setup, other: Peer,
                                                  rv: RoomVersion) -> None:
    node, peer = setup
    room_id = await node.create_room(rv)
    # other.test joins first, over HTTP: the room now has a server to relay to.
    olga_id, olga_join = await _signed_join(node, other, room_id, OTHER_USER, rv)
    status, resp = await other.request("PUT", room_path("v2/send_join", room_id, olga_id),
                                       olga_join)
    assert status == 200, resp
    assert await node.events.state.get_joined_servers(NODE, room_id) == sorted([NODE, OTHER])

    # The same handlers the servlets use, with a hook that fails after the
    # outbox hook has queued the join: nothing of it may stay.
    server = (await InboundContext.for_homeserver(node.hs).handlers(NODE)).server

    class Broken(Exception):
        pass

    async def fail(txn: Transaction, tenant: str, event: Any) -> None:
        raise Broken

    join_id, join = await _signed_join(node, peer, room_id, PEER_USER, rv)
    outbox = OutboxStore(node.hs.database)
    server.on_event_accepted_txn.append(fail)
    with pytest.raises(Broken):
        await server.send_join(NODE, PEER, room_id, join_id, join)
    assert await node.events.get_event(NODE, join_id) is None
    assert join_id not in await outbox.queued_event_ids(NODE, OTHER)
    assert not await node.events.state.is_server_joined(NODE, room_id, PEER)
    assert await node.events.state.get_current_membership(NODE, room_id, PEER_USER) is None

    # Without the failure the same join is accepted, and relayed to other.test
    # (never back to peer.test, whose server sent it).
    server.on_event_accepted_txn.remove(fail)
    answer = await server.send_join(NODE, PEER, room_id, join_id, join)
    assert answer["servers_in_room"] == sorted([NODE, OTHER])
    stored = await node.events.get_event(NODE, join_id)
    assert stored is not None and stored.rejected_reason is None
    assert await node.events.state.get_joined_servers(NODE, room_id) == sorted(
        [NODE, OTHER, PEER])
    assert join_id not in await outbox.queued_event_ids(NODE, PEER)

    # Queued before the commit, the sender delivers it (once) over loopback.
    await node.hs.federation_sender.wait_until_idle()
    relayed = [p for t in other.received for p in t.get("pdus", [])
               if other.event_id(p, rv) == join_id]
    assert len(relayed) == 1 and NODE in relayed[0]["signatures"]
    assert join_id not in await outbox.queued_event_ids(NODE, OTHER)
    with pytest.raises(MatrixError):
        # A refused join stores nothing and queues nothing either.
        await server.send_join(NODE, PEER, room_id, "$" + "A" * 43, join)


async def test_send_join_answer_is_the_stored_state(setup: Setup) -> None:
    node, peer = setup
    rv = ROOM_V12
    room_id = await node.create_room(rv)
    for i in range(30):
        await node.send(room_id, "m.room.member", {"membership": "join"},
                        state_key=f"@m{i}:{NODE}", sender=f"@m{i}:{NODE}")
    join_id, join = await _signed_join(node, peer, room_id, PEER_USER, rv)
    status, resp = await peer.request("PUT", room_path("v2/send_join", room_id, join_id), join)
    assert status == 200, resp
    before = await node.events.get_state_before(NODE, join_id)
    assert before is not None and len(before) == 35
    state_ids = sorted(before.values())
    stored = await node.events.get_events(NODE, state_ids)
    assert resp["state"] == [dict(stored[i].pdu) for i in state_ids]
    chain = await node.events.get_auth_chain_ids(NODE, [*state_ids, join_id])
    chain_ids = [peer.event_id(p, rv) for p in resp["auth_chain"]]
    # v12: the create event is in every chain without being listed.
    assert set(chain_ids) == chain | {"$" + room_id[1:]}
    assert chain_ids == sorted(chain_ids)
    assert resp["members_omitted"] is False
    assert resp["servers_in_room"] == [NODE]
    assert peer.event_id(resp["event"], rv) == join_id
    # Asked to omit members, the answer may still be the full state (the spec
    # allows it), and then says so; servers_in_room is there either way.
    status, again = await peer.request("PUT", room_path("v2/send_join", room_id, join_id), join,
                                       query={"omit_members": "true"})
    assert status == 200, again
    assert again["members_omitted"] is False and again["state"] == resp["state"]
    assert NODE in again["servers_in_room"]
