"""An admin removes a peer while its crawl is under way: the crawl's rooms
must not stay in the index (remove_peer does not wait for the crawl round)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from federation.clock import FakeClock
from homeserver.discovery.service import discovery_for
from tests.discovery.helpers import SyntheticPeer, start_nodes

# The crawl travels over real loopback HTTP: waiting on it is bounded in
# real time, generously, never by counting loop turns.
REAL_TIME_BOUND_S = 30.0


async def test_rooms_of_a_peer_removed_mid_crawl_leave_the_index(
    tmp_path: Path, database_url: str
) -> None:
    clock = FakeClock()
    rooms = [{"room_id": f"!r{i}:late.test", "num_joined_members": i,
              "world_readable": False, "guest_can_join": False} for i in range(3)]
    peer = SyntheticPeer("late.test", clock, rooms)
    await peer.start()
    (a,) = await start_nodes(tmp_path, ["a.test"], clock, database_urls={"a.test": database_url},
                             extra={"a.test": {"discovery": {"enabled": False}}})
    try:
        a.hs.keys.client.destination_overrides["late.test"] = peer.url  # type: ignore[union-attr]
        d = discovery_for(a.hs)
        await d.add_peer("late.test")
        assert (await d.probe_once())["late.test"] == "online"
        peer.hold_directory = asyncio.Event()
        crawl = asyncio.create_task(d.crawl_once())
        await asyncio.wait_for(peer.directory_asked.wait(), REAL_TIME_BOUND_S)
        assert await d.remove_peer("late.test") is True
        assert await d.store.get_peer("late.test") is None
        peer.hold_directory.set()
        results = await asyncio.wait_for(crawl, REAL_TIME_BOUND_S)
        # The crawl finished after the peer was forgotten: it wrote its rooms.
        assert results["late.test"] == {"rooms": 3, "expired": 0}
        # The next round drops them, and nothing of the peer is left.
        assert "late.test" not in await d.probe_once()
        assert await d.store.room_ids("late.test") == set()
        assert "late.test" not in await d.store.count_rooms()
        assert await d.store.get_peer("late.test") is None
        metrics = a.hs.metrics.exposition().decode()
        assert 'server="late.test"' not in metrics
    finally:
        await a.hs.stop()
        await peer.stop()
