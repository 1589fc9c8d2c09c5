"""The discovery metrics (docs/usage/room_discovery.md, "Metrics") as crawls
succeed and fail, peers change state and a peer is forgotten.

Node a crawls synthetic peers over loopback: ``good.test`` and
``flaky.test`` (literal names of its trust domain), ``rooms.extra.test``
(allowed by ``*.extra.test``, added through the admin API, later removed) and
``outside.test`` (``discovery.peers`` names it, the trust domain does not).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from federation.clock import FakeClock
from homeserver.discovery.service import Discovery, discovery_for
from tests.discovery.helpers import SyntheticPeer, start_nodes
from tests.federation_outbound.nodes import Node

ROOMS = {"good.test": 3, "flaky.test": 2, "rooms.extra.test": 1}


def _rooms(server: str, n: int) -> list[dict[str, Any]]:
    return [{"room_id": f"!r{i}:{server}", "num_joined_members": i + 1,
             "name": f"Room {i} of {server}"} for i in range(n)]


@dataclass
class Setup:
    clock: FakeClock
    node: Node
    peers: dict[str, SyntheticPeer]
    discovery: Discovery

    def sample(self, name: str, **labels: str) -> float | None:
        value = self.node.hs.metrics.registry.get_sample_value(name, labels)
        return None if value is None else float(value)

    def durations(self, server: str) -> float | None:
        return self.sample("concord_discovery_crawl_duration_seconds_count", server=server)

    def failures(self, server: str) -> float | None:
        return self.sample("concord_discovery_crawl_failures_total", server=server)

    def indexed(self, server: str) -> float | None:
        return self.sample("concord_discovery_rooms_indexed", server=server)

    def states(self) -> dict[str, float | None]:
        return {s: self.sample("concord_discovery_peers", state=s)
                for s in ("unknown", "online", "degraded", "offline")}


@pytest.fixture
async def setup(tmp_path: Path, database_url: str) -> AsyncIterator[Setup]:
    clock = FakeClock()
    peers = {name: SyntheticPeer(name, clock, _rooms(name, n)) for name, n in ROOMS.items()}
    peers["outside.test"] = SyntheticPeer("outside.test", clock, _rooms("outside.test", 1))
    for p in peers.values():
        await p.start()
    config = {
        "federation": {"trusted_servers": ["a.test", "good.test", "flaky.test",
                                           "*.extra.test"]},
        "discovery": {"enabled": False, "peers": ["outside.test"],
                      "health_offline_failures": 3, "health_window": "10m"},
    }
    (a,) = await start_nodes(tmp_path, ["a.test"], clock, extra={"a.test": config},
                             database_urls={"a.test": database_url})
    try:
        overrides = a.hs.keys.client.destination_overrides  # type: ignore[union-attr]
        overrides.update({name: p.url for name, p in peers.items()})
        yield Setup(clock, a, peers, discovery_for(a.hs))
    finally:
        await a.hs.stop()
        for p in peers.values():
            await p.stop()


async def test_crawl_duration_and_failures_per_server(setup: Setup) -> None:
    d, flaky = setup.discovery, setup.peers["flaky.test"]
    results = await d.crawl_once()
    assert results["good.test"] == {"rooms": 3, "expired": 0}
    assert results["outside.test"] == {"skipped": "outside the trust domain"}
    for server in ("a.test", "good.test", "flaky.test"):
        assert setup.durations(server) == 1.0, server
        assert setup.failures(server) is None, server  # a success counts no failure
    assert setup.durations("outside.test") is None  # never crawled
    assert setup.indexed("good.test") == 3.0 and setup.indexed("flaky.test") == 2.0

    flaky.failing.add("publicRooms")
    setup.clock.advance(1)
    assert "error" in (await d.crawl_once())["flaky.test"]
    assert setup.failures("flaky.test") == 1.0
    assert setup.durations("flaky.test") == 2.0  # a failed crawl is timed too
    assert setup.failures("good.test") is None and setup.durations("good.test") == 2.0
    assert setup.indexed("flaky.test") == 2.0  # the previous crawl's rooms stay
    setup.clock.advance(1)
    await d.crawl_once()
    assert setup.failures("flaky.test") == 2.0 and setup.durations("flaky.test") == 3.0

    flaky.failing.clear()
    setup.clock.advance(1)
    assert (await d.crawl_once())["flaky.test"] == {"rooms": 2, "expired": 0}
    assert setup.failures("flaky.test") == 2.0 and setup.durations("flaky.test") == 4.0
    text = setup.node.hs.metrics.exposition().decode()
    assert 'concord_discovery_crawl_failures_total{server="flaky.test"} 2.0' in text
    assert 'concord_discovery_crawl_duration_seconds_count{server="good.test"} 4.0' in text


async def test_peers_per_state_follow_the_states(setup: Setup) -> None:
    d, flaky = setup.discovery, setup.peers["flaky.test"]
    await d.probe_once()
    # a.test is hosted (online); outside.test is outside the trust domain.
    assert setup.states() == {"unknown": 1.0, "online": 3.0, "degraded": 0.0, "offline": 0.0}
    flaky.failing.add("version")
    for expected in ("degraded", "degraded", "offline"):
        setup.clock.advance(60)
        assert (await d.probe_once())["flaky.test"] == expected
        assert setup.states()[expected] == 1.0
        assert setup.states()["online"] == 2.0
    assert setup.states() == {"unknown": 1.0, "online": 2.0, "degraded": 0.0, "offline": 1.0}
    # An offline peer is not crawled: neither timed nor counted as failed.
    before = setup.durations("flaky.test")
    assert (await d.crawl_once())["flaky.test"] == {"skipped": "offline"}
    assert setup.durations("flaky.test") == before and setup.failures("flaky.test") is None
    flaky.failing.clear()
    setup.clock.advance(60)
    assert (await d.probe_once())["flaky.test"] == "degraded"  # failures still in the window
    assert setup.states() == {"unknown": 1.0, "online": 2.0, "degraded": 1.0, "offline": 0.0}
    setup.clock.advance(11 * 60)
    assert (await d.probe_once())["flaky.test"] == "online"
    assert setup.states() == {"unknown": 1.0, "online": 3.0, "degraded": 0.0, "offline": 0.0}


async def test_a_forgotten_peer_leaves_the_metrics(setup: Setup) -> None:
    d = setup.discovery
    await d.add_peer("rooms.extra.test")
    await d.crawl_once()
    assert setup.indexed("rooms.extra.test") == 1.0
    assert setup.durations("rooms.extra.test") == 1.0
    setup.peers["rooms.extra.test"].failing.add("publicRooms")
    setup.clock.advance(1)
    await d.crawl_once()
    assert setup.failures("rooms.extra.test") == 1.0
    assert setup.states()["online"] == 4.0

    assert await d.remove_peer("rooms.extra.test")
    # At once, not at the next round: its series are gone, the others stay.
    assert setup.indexed("rooms.extra.test") is None
    assert setup.durations("rooms.extra.test") is None
    assert setup.failures("rooms.extra.test") is None
    assert setup.states()["online"] == 3.0
    assert setup.indexed("good.test") == 3.0 and setup.durations("good.test") == 2.0
    text = setup.node.hs.metrics.exposition().decode()
    assert "rooms.extra.test" not in text
    assert await d.store.room_ids("rooms.extra.test") == set()
