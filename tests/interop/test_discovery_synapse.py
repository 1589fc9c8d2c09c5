"""Room discovery crawls a real Synapse's published room directory.

Synapse answers federation ``GET /publicRooms`` (``allow_public_rooms_over_
federation`` is on in tests/interop/synapse.py); a Concord node configured
with it in ``discovery.peers`` probes it (version and keys over TLS) and
indexes exactly its published rooms, with the fields Synapse gives.
"""

from __future__ import annotations

import pytest

from homeserver.discovery.service import discovery_for
from tests.interop.concord import ConcordFactory
from tests.interop.synapse import SynapseClient

pytestmark = pytest.mark.interop


async def test_crawl_of_a_synapse_directory(
    synapse_client: SynapseClient, concord_nodes: ConcordFactory
) -> None:
    synapse_name = synapse_client.server.server_name
    owner = await synapse_client.register()
    public = await synapse_client.create_room(
        owner, name="Interop telescope club", topic="Stars seen from Synapse",
        extra={"visibility": "public"},
    )
    private = await synapse_client.create_room(owner, preset="private_chat", name="Back office")
    hs = await concord_nodes(extra={"discovery": {"enabled": False, "peers": [synapse_name]}})
    d = discovery_for(hs)
    assert (await d.probe_once())[synapse_name] == "online"
    result = (await d.crawl_once())[synapse_name]
    assert "error" not in result, result
    indexed = await d.store.room_ids(synapse_name)
    assert public in indexed and private not in indexed
    found = await d.search(tenant=hs.server_name, query="telescope", limit=10, since=None,
                           server=synapse_name, sort=None)
    (room,) = [r for r in found["chunk"] if r["room_id"] == public]
    assert room["name"] == "Interop telescope club"
    assert room["topic"] == "Stars seen from Synapse"
    assert room["num_joined_members"] == 1 and room["join_rule"] == "public"
    assert room["world_readable"] is False and room["server_health"] == "online"
