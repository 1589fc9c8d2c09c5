"""The delivery queue's view of a peer feeds its discovery health, end to end.

Real nodes on loopback sharing one FakeClock; node a reaches b through a
fault proxy (concord_harness/faults.py) that answers b's transactions
(``PUT /_matrix/federation/v1/send/...``) with 500 while forwarding
everything else, so a's probes of b (``/version``, keys) succeed while a's
outbox backs off from b. docs/usage/room_discovery.md, "Peer health".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from concord_harness.faults import FaultProxy
from federation.clock import FakeClock
from federation.transport.client import FederationHttpError
from homeserver.discovery.service import Discovery, discovery_for
from storage.stores.outbox import OutboxStore
from tests.discovery.helpers import make_room, start_nodes
from tests.discovery.waiting import until
from tests.federation_outbound.nodes import Node, link

SEND = "/_matrix/federation/v1/send/"
VERSION = "/_matrix/federation/v1/version"
#: Past the longest first backoff (retry_min_interval 10 s, +20 % jitter).
PAST_FIRST_BACKOFF_S = 15
TYPING = {"room_id": "!r:a.test", "user_id": "@alice:a.test", "typing": True}


@dataclass
class Link:
    clock: FakeClock
    a: Node
    b: Node
    proxy: FaultProxy
    discovery: Discovery


async def _linked(
    tmp_path: Path, database_url: str, a_extra: dict[str, Any] | None = None,
    extra_names: tuple[str, ...] = (),
) -> tuple[FakeClock, Node, Node, FaultProxy]:
    clock = FakeClock()
    a_config: dict[str, Any] = {
        "discovery": {"enabled": False, "peers": ["b.test"], "health_window": "10m"},
        **(a_extra or {}),
    }
    b, a = await start_nodes(tmp_path, ["b.test", "a.test"], clock,
                             extra={"a.test": a_config}, database_urls={"a.test": database_url})
    link([a, b], extra_names={n: a for n in extra_names})
    proxy = FaultProxy("a.test", "b.test", b.hs.base_url("federation"), seed=1)
    await proxy.start()
    a.hs.keys.client.destination_overrides["b.test"] = proxy.url  # type: ignore[union-attr]
    return clock, a, b, proxy


@pytest.fixture
async def ab(tmp_path: Path, database_url: str) -> AsyncIterator[Link]:
    clock, a, b, proxy = await _linked(tmp_path, database_url)
    try:
        yield Link(clock, a, b, proxy, discovery_for(a.hs))
    finally:
        await a.hs.stop()
        await b.hs.stop()
        await proxy.close()


def _versions(proxy: FaultProxy) -> int:
    return sum(1 for _, path, _ in proxy.stats.log if path == VERSION)


def _delivered(proxy: FaultProxy) -> int:
    return sum(1 for _, path, fate in proxy.stats.log
               if path.startswith(SEND) and fate == "forwarded")


async def _health_in_results(d: Discovery) -> list[tuple[str, str]]:
    found = await d.search(tenant="a.test", query="sailing", limit=None, since=None,
                           server=None, sort=None)
    return [(r["server"], r["server_health"]) for r in found["chunk"]]


async def _state(d: Discovery, server: str) -> tuple[str, str | None]:
    peer = await d.store.get_peer(server)
    assert peer is not None
    return peer.state, peer.state_reason


async def test_failing_deliveries_degrade_the_peer_until_they_succeed(ab: Link) -> None:
    d, a, proxy = ab.discovery, ab.a, ab.proxy
    await make_room(ab.b, "@owner:b.test", "Sailing club")
    assert (await d.probe_once())["b.test"] == "online"
    assert (await d.crawl_once())["b.test"] == {"rooms": 1, "expired": 0}
    assert await _health_in_results(d) == [("b.test", "online")]
    probes_before = _versions(proxy)
    probed_at = (await d.store.get_peer("b.test")).last_probe_ts  # type: ignore[union-attr]

    proxy.respond_with(500, paths=(SEND,))
    await a.sender.send_edu("a.test", ["b.test"], "m.typing", TYPING)
    await a.sender.wait_until_idle()  # the queue to b sleeps in its backoff
    backoff = await OutboxStore(a.hs.database).get_destination("b.test")
    assert backoff is not None and backoff.failure_count == 1
    assert backoff.next_retry_ts is not None and backoff.next_retry_ts > ab.clock.time_ms()
    assert proxy.stats["status_500"] == 1

    # The queue's backoff reached discovery at once, without a probe.
    state, reason = await _state(d, "b.test")
    assert state == "degraded"
    assert reason is not None and "outbound deliveries are backing off" in reason
    assert "500" in reason
    assert _versions(proxy) == probes_before
    assert (await d.store.get_peer("b.test")).last_probe_ts == probed_at  # type: ignore[union-attr]
    metrics = a.hs.metrics.exposition().decode()
    assert 'concord_discovery_peers{state="degraded"} 1.0' in metrics
    # A probe meanwhile answers fine, and still says degraded: the probe reads
    # the delivery queue's view too.
    ab.clock.advance(1)
    assert (await d.probe_once())["b.test"] == "degraded"
    assert _versions(proxy) == probes_before + 1
    # Its rooms are still found (only offline peers are dropped), marked degraded.
    assert await _health_in_results(d) == [("b.test", "degraded")]
    assert (await d.describe_peer("b.test"))["dropped_from_results"] is False  # type: ignore[index]
    assert _delivered(proxy) == 0

    # b takes transactions again: the retry after the backoff is delivered,
    # and b is online again, still without a probe.
    proxy.heal()
    ab.clock.advance(PAST_FIRST_BACKOFF_S)

    async def online() -> bool:
        return (await _state(d, "b.test"))[0] == "online"

    await until(online, "the delivered retry made b online again")
    assert _delivered(proxy) == 1
    assert (await OutboxStore(a.hs.database).get_destination("b.test")).failure_count == 0  # type: ignore[union-attr]
    assert _versions(proxy) == probes_before + 1
    peer = await d.describe_peer("b.test")
    assert peer is not None
    history = list(reversed(peer["history"]))
    assert [h["state"] for h in history] == ["online", "degraded", "online"]
    assert "outbound deliveries are backing off" in history[1]["reason"]
    ab.clock.advance(1)
    assert (await d.probe_once())["b.test"] == "online"
    metrics = a.hs.metrics.exposition().decode()
    assert 'concord_discovery_peers{state="degraded"} 0.0' in metrics
    assert await _health_in_results(d) == [("b.test", "online")]


async def test_peer_seen_ends_the_backoff_and_the_degraded_state(ab: Link) -> None:
    """b reaching a (an authenticated request) ends the backoff towards b: the
    queue retries now, so deliveries no longer degrade b."""
    d, a, b, proxy = ab.discovery, ab.a, ab.b, ab.proxy
    assert (await d.probe_once())["b.test"] == "online"
    proxy.respond_with(500, paths=(SEND,))
    await a.sender.send_edu("a.test", ["b.test"], "m.typing", TYPING)
    await a.sender.wait_until_idle()
    assert (await _state(d, "b.test"))[0] == "degraded"
    proxy.heal()
    # b asks a something, signed (straight to a, not through the proxy): a's
    # federation listener has seen b up, which ends the backoff at once. No
    # FakeClock advance: the queue retries because it was woken.
    with pytest.raises(FederationHttpError) as unknown:
        await b.hs.keys.client.get_json(  # type: ignore[union-attr]
            "a.test", "/_matrix/federation/v1/query/profile",
            query={"user_id": "@nobody:a.test"}, origin="b.test",
        )
    assert unknown.value.status == 404
    await until(lambda: _no_failures(a), "the retry was delivered")
    assert (await _state(d, "b.test"))[0] == "online"
    assert _delivered(proxy) == 1


async def _no_failures(a: Node) -> bool:
    state = await OutboxStore(a.hs.database).get_destination("b.test")
    return state is not None and state.failure_count == 0


async def test_a_dedicated_tenants_backoff_counts_too(
    tmp_path: Path, database_url: str, second_database_url: str
) -> None:
    """The tenant t.test keeps its outbox (and its backoff towards b) in its
    own database; the node's discovery reads it there."""
    clock, a, b, proxy = await _linked(
        tmp_path, database_url,
        {"tenants": [{"server_name": "t.test", "mode": "dedicated",
                      "database_url": second_database_url}]},
        extra_names=("t.test",),
    )
    try:
        d = discovery_for(a.hs)
        assert (await d.probe_once())["b.test"] == "online"
        proxy.respond_with(503, paths=(SEND,))
        await a.sender.send_edu("t.test", ["b.test"], "m.typing",
                                {**TYPING, "user_id": "@tom:t.test"})
        await a.sender.wait_until_idle()
        assert await OutboxStore(a.hs.database).get_destination("b.test") is None
        state, reason = await _state(d, "b.test")
        assert state == "degraded" and reason is not None and "503" in reason
        clock.advance(1)
        assert (await d.probe_once())["b.test"] == "degraded"
        proxy.heal()
        clock.advance(PAST_FIRST_BACKOFF_S)

        async def online() -> bool:
            return (await _state(d, "b.test"))[0] == "online"

        await until(online, "t.test's retry was delivered")
    finally:
        await a.hs.stop()
        await b.hs.stop()
        await proxy.close()
