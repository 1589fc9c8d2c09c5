"""The background task: started with the client listener, one per node,
crawling on the FakeClock's schedule (interval plus jitter)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path

from federation.clock import FakeClock
from homeserver.discovery.service import discovery_for
from storage.stores.room_directory import RoomDirectoryStore
from tests.discovery.helpers import make_room, start_nodes
from tests.discovery.waiting import REAL_TIME_BOUND_S, until
from tests.federation_outbound.nodes import link


async def test_background_task_crawls_on_schedule(tmp_path: Path) -> None:
    clock = FakeClock()
    start_ms = clock.time_ms()
    (b,) = await start_nodes(tmp_path, ["b.test"], clock)
    room = await make_room(b, "@owner:b.test", "Sailing")
    a_config = {
        "federation": {"verify_certificates": True, "trusted_key_servers": [],
                       "destination_overrides": {"b.test": b.hs.base_url("federation")}},
        "discovery": {"peers": ["b.test"], "crawl_interval": "10m", "crawl_jitter": "1m",
                      "health_probe_interval": "1m"},
        "listeners": [{"type": "federation", "port": 0, "bind_addresses": ["127.0.0.1"]},
                      {"type": "client", "port": 0, "bind_addresses": ["127.0.0.1"]}],
    }
    (a,) = await start_nodes(tmp_path, ["a.test"], clock, extra={"a.test": a_config})
    try:
        link([a, b])
        d = discovery_for(a.hs)
        assert d is discovery_for(a.hs)  # one per node

        async def indexed() -> set[str]:
            return await d.store.room_ids("b.test")

        await until(lambda: _eq(indexed(), {room}), "the first crawl indexed b's room")
        await RoomDirectoryStore(b.hs.database).set_visibility("b.test", room, False,
                                                               clock.time_ms())
        # Before the interval has passed nothing is crawled again...
        for _ in range(5):
            clock.advance(60)
            await asyncio.sleep(0.05)
        assert await indexed() == {room}
        # ...after interval plus the largest jitter, it is (advancing a tick at a
        # time until the task has run: it may lag behind the clock under load).
        deadline = time.monotonic() + REAL_TIME_BOUND_S
        while await indexed():
            assert time.monotonic() < deadline, "the second crawl never ran"
            clock.advance(60)
            await asyncio.sleep(0.02)
        assert await indexed() == set()
        peer = await d.store.get_peer("b.test")
        assert peer is not None and peer.last_crawl_ts is not None
        assert peer.last_crawl_ts - start_ms >= 600_000
    finally:
        await a.hs.stop()
        await b.hs.stop()


async def _eq(value: Awaitable[set[str]], expected: set[str]) -> bool:
    return await value == expected
