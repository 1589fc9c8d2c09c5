"""Crawl scheduling: each peer's next crawl is ``crawl_interval`` plus a random
delay in ``[0, crawl_jitter]``, drawn from the Discovery's ``rng``; seeded,
the schedule is the same every run. All on a FakeClock: nothing sleeps."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from federation.clock import FakeClock
from homeserver.discovery.service import Discovery, build_discovery
from tests.discovery.helpers import SyntheticPeer, start_nodes
from tests.federation_outbound.nodes import Node

INTERVAL_MS = 600_000
JITTER_MS = 60_000
PEERS = [f"p{i}.test" for i in range(1, 6)]
SERVERS = ["a.test", *PEERS]  # the hosted name is crawled (and scheduled) too


@dataclass
class Setup:
    clock: FakeClock
    node: Node
    peers: dict[str, SyntheticPeer]

    def discovery(self, seed: int, jitter_ms: int = JITTER_MS) -> Discovery:
        config = dataclasses.replace(self.node.hs.config.discovery, crawl_jitter=jitter_ms)
        return build_discovery(self.node.hs, config=config, rng=random.Random(seed))

    async def offsets(self, d: Discovery) -> dict[str, int]:
        """Each server's next crawl time minus its last crawl time."""
        out = {}
        for server in SERVERS:
            peer = await d.store.get_peer(server)
            assert peer is not None and peer.next_crawl_ts is not None
            assert peer.last_crawl_ts is not None
            out[server] = peer.next_crawl_ts - peer.last_crawl_ts
        return out

    def crawls(self) -> dict[str, int]:
        return {name: p.requests.count("publicRooms") for name, p in self.peers.items()}


@pytest.fixture
async def setup(tmp_path: Path, database_url: str) -> AsyncIterator[Setup]:
    clock = FakeClock()
    peers = {name: SyntheticPeer(name, clock, [{"room_id": f"!r:{name}",
                                                "num_joined_members": 1}])
             for name in PEERS}
    for p in peers.values():
        await p.start()
    config = {"discovery": {"enabled": False, "peers": PEERS, "crawl_interval": "10m",
                            "crawl_jitter": "1m"}}
    (a,) = await start_nodes(tmp_path, ["a.test"], clock, extra={"a.test": config},
                             database_urls={"a.test": database_url})
    try:
        overrides = a.hs.keys.client.destination_overrides  # type: ignore[union-attr]
        overrides.update({name: p.url for name, p in peers.items()})
        yield Setup(clock, a, peers)
    finally:
        await a.hs.stop()
        for p in peers.values():
            await p.stop()


async def test_seeded_jitter_is_deterministic_bounded_and_spread(setup: Setup) -> None:
    assert setup.node.hs.config.discovery.crawl_interval == INTERVAL_MS
    first = setup.discovery(seed=1234)
    await first.crawl_once()
    offsets = await setup.offsets(first)
    assert all(INTERVAL_MS <= o <= INTERVAL_MS + JITTER_MS for o in offsets.values()), offsets
    # Spread: no two servers are due at the same time.
    assert len(set(offsets.values())) == len(SERVERS), offsets

    # The same seed crawling the same servers draws the same delays.
    setup.clock.advance(7)
    again = setup.discovery(seed=1234)
    await again.crawl_once()
    assert await setup.offsets(again) == offsets
    # Another seed, another schedule (still within the bounds).
    setup.clock.advance(7)
    other = setup.discovery(seed=99)
    await other.crawl_once()
    other_offsets = await setup.offsets(other)
    assert other_offsets != offsets
    assert all(INTERVAL_MS <= o <= INTERVAL_MS + JITTER_MS for o in other_offsets.values())


async def test_peers_are_crawled_when_each_is_due(setup: Setup) -> None:
    d = setup.discovery(seed=7)
    await d.crawl_once()
    assert setup.crawls() == dict.fromkeys(PEERS, 1)
    due = {s: (await d.store.get_peer(s)).next_crawl_ts for s in SERVERS}  # type: ignore[union-attr]
    order = sorted(SERVERS, key=lambda s: due[s])
    # Just before the first is due, a scheduled round crawls nothing.
    setup.clock.advance((due[order[0]] - setup.clock.time_ms() - 1) / 1000)
    assert await d.crawl_once(force=False) == {}
    # Then one server at a time, each at its own time.
    for server in order:
        setup.clock.advance((due[server] - setup.clock.time_ms()) / 1000)
        assert setup.clock.time_ms() == due[server]
        assert list(await d.crawl_once(force=False)) == [server]
    assert setup.crawls() == dict.fromkeys(PEERS, 2)


async def test_no_jitter_gives_exactly_the_interval(setup: Setup) -> None:
    for seed in (1, 2):
        d = setup.discovery(seed=seed, jitter_ms=0)
        await d.crawl_once()
        assert await setup.offsets(d) == dict.fromkeys(SERVERS, INTERVAL_MS)
        setup.clock.advance(1)
