"""The harness with an external peer (issue 9, "External peers"): two
Concord nodes the harness starts and a Synapse it did not, in one room.

Our nodes reach Synapse through the harness's proxies; Synapse reaches them
by name. ``Federation.converged`` reads Synapse's view through a harness
``Client`` on its client API.
"""

from __future__ import annotations

import aiohttp

from concord_harness import Client, ExternalPeer, Federation
from tests.interop.synapse import SynapseClient, SynapseServer


async def test_a_room_across_two_nodes_and_synapse(
    synapse: SynapseServer, synapse_client: SynapseClient
) -> None:
    peer = ExternalPeer(synapse.server_name, synapse.base_url, client_url=synapse.base_url)
    user = await synapse_client.register()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=synapse.ssl_context())
    ) as session, Federation(nodes=2, external=[peer], seed="external") as fed:
        sam = peer.add_client(Client(session, synapse.base_url, user_id=user.user_id,
                                     access_token=user.access_token))
        a, b = fed.nodes
        alice, bob = await a.register_user("alice"), await b.register_user("bob")
        room = await fed.create_room(alice, bob, sam)
        await sam.send_message(room, "hello from Synapse")
        await bob.send_message(room, "hello from B")
        await alice.send_message(room, "hello from A")
        snaps = await fed.converged(room, timeout=60)
        assert {s.server for s in snaps} == {a.server_name, b.server_name, synapse.server_name}
        for s in snaps:
            shown = {ev["content"].get("body") for ev in s.events.values()
                     if ev["type"] == "m.room.message"}
            assert shown == {"hello from Synapse", "hello from B", "hello from A"}, s.server
        # Our nodes' requests to Synapse went through the harness's proxies.
        assert fed.link(a, peer).stats.counts["forwarded"] > 0
