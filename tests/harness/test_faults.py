"""FaultProxy against a loopback upstream that records what reaches it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from concord_harness.faults import FaultProxy
from federation.clock import FakeClock


class Upstream:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request.raw_path)
        assert request.headers["Host"] == "dest.test"
        return web.json_response({"path": request.raw_path, "body": await request.text()})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    u = Upstream()
    await u.start()
    yield u
    assert u.runner is not None
    await u.runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Host": "dest.test"}) as s:
        yield s


async def make_proxy(upstream: Upstream, seed: int | str = 0) -> FaultProxy:
    p = FaultProxy("src.test", "dest.test", upstream.url, seed=seed)
    await p.start()
    return p


async def get(session: aiohttp.ClientSession, proxy: FaultProxy, path: str) -> int | str:
    """The status, or "cut" when the connection was closed without an answer.

    POST: aiohttp retries an idempotent request (PUT, GET) once when its
    connection is cut, which would blur what each test counts.
    """
    try:
        async with session.post(proxy.url + path, data=b'{"x": 1}') as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientError:
        return "cut"


async def test_forwards_method_path_body_and_host(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(upstream)
    try:
        url = URL(proxy.url + "/_matrix/x?a=b%2Fc", encoded=True)
        async with session.put(url, data=b'{"x": 1}') as resp:
            assert resp.status == 200
            assert await resp.json() == {"path": "/_matrix/x?a=b%2Fc", "body": '{"x": 1}'}
        assert proxy.stats["forwarded"] == 1
    finally:
        await proxy.close()


async def test_partition_refuses_and_heal_restores(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(upstream)
    try:
        proxy.partition()
        assert await get(session, proxy, "/a") == "cut"
        assert upstream.seen == []
        proxy.heal()
        assert await get(session, proxy, "/b") == 200
        assert upstream.seen == ["/b"]
        assert proxy.stats["partitioned"] >= 1
    finally:
        await proxy.close()


async def fates(upstream: Upstream, session: aiohttp.ClientSession, seed: int) -> list[str]:
    proxy = await make_proxy(upstream, seed=seed)
    try:
        proxy.drop(0.3)
        for i in range(60):
            await get(session, proxy, f"/r{i}")
        return [fate for _, _, fate in proxy.stats.log]
    finally:
        await proxy.close()


async def test_drop_fraction_is_deterministic_per_seed(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    first = await fates(upstream, session, seed=7)
    again = await fates(upstream, session, seed=7)
    other = await fates(upstream, session, seed=8)
    assert first == again
    assert first != other
    dropped = first.count("dropped")
    # 30 % of 60 with seed 7: some but not all; exact count fixed by the seed.
    assert 5 <= dropped <= 35
    assert first.count("forwarded") == 60 - dropped
    assert len(upstream.seen) == 3 * 60 - dropped - again.count("dropped") - other.count("dropped")


async def test_duplicate_sends_twice_answers_once(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(upstream)
    try:
        proxy.duplicate(1.0)
        assert await get(session, proxy, "/send/txn1") == 200
        assert upstream.seen == ["/send/txn1", "/send/txn1"]
        assert proxy.stats["duplicated"] == 1
    finally:
        await proxy.close()


async def test_respond_with_status_does_not_forward(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(upstream)
    try:
        proxy.respond_with(503)
        assert await get(session, proxy, "/x") == 503
        assert upstream.seen == []
        proxy.heal()
        assert await get(session, proxy, "/x") == 200
    finally:
        await proxy.close()


async def test_respond_with_status_only_on_chosen_paths(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(upstream)
    try:
        proxy.respond_with(500, paths=("/_matrix/federation/v1/send/",))
        assert await get(session, proxy, "/_matrix/federation/v1/send/t1") == 500
        assert await get(session, proxy, "/_matrix/federation/v1/version") == 200
        assert await get(session, proxy, "/_matrix/key/v2/server") == 200
        assert upstream.seen == ["/_matrix/federation/v1/version", "/_matrix/key/v2/server"]
        assert proxy.stats["status_500"] == 1 and proxy.stats["forwarded"] == 2
        proxy.heal()
        assert await get(session, proxy, "/_matrix/federation/v1/send/t1") == 200
    finally:
        await proxy.close()


async def test_dropped_response_reached_the_destination(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(upstream)
    try:
        proxy.drop_responses(1.0)
        assert await get(session, proxy, "/x") == "cut"
        assert upstream.seen == ["/x"]
    finally:
        await proxy.close()


async def test_reorder_releases_every_held_request(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(upstream, seed=3)
    try:
        proxy.reorder(5, max_hold_s=5.0).delay(0.0, 0.01)
        results = await asyncio.gather(*(get(session, proxy, f"/r{i}") for i in range(5)))
        assert results == [200] * 5
        assert sorted(upstream.seen) == [f"/r{i}" for i in range(5)]
        # A partial window is released after max_hold_s, not held forever.
        proxy.reorder(5, max_hold_s=0.05)
        assert await get(session, proxy, "/alone") == 200
    finally:
        await proxy.close()


async def _yield_until(condition: Callable[[], bool], *, within_s: float = 30.0) -> None:
    """Let the loop run (no fake-clock time passes) until ``condition`` holds.

    Bounded by real time, not by a number of loop turns: the requests travel
    over real loopback sockets, and on a loaded machine a fixed turn count
    can run out before a request arrives."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"the condition never held within {within_s:g}s")
        await asyncio.sleep(0)


async def _start_in_order(
    session: aiohttp.ClientSession, proxy: FaultProxy, clock: FakeClock, n: int, prefix: str
) -> list[asyncio.Task[int | str]]:
    """``n`` concurrent requests, each sent once the previous one is waiting
    in the proxy (asleep on ``clock``), so the send order is known."""
    tasks: list[asyncio.Task[int | str]] = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(get(session, proxy, f"/{prefix}{i}")))
        # Until the proxy holds it (or has released the whole window).
        await _yield_until(lambda n=i + 1: clock.pending_sleepers() >= n  # type: ignore[misc]
                           or len(proxy._held) >= n or tasks[-1].done())
    return tasks


async def test_delay_reorders_concurrent_requests(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    """Each request waits its own random delay: sent in one order, they
    arrive in the order of their delays (fixed seed: not the send order)."""
    clock = FakeClock()
    proxy = FaultProxy("src.test", "dest.test", upstream.url, seed=7, clock=clock)
    await proxy.start()
    try:
        proxy.delay(0.0, 1.0)
        tasks = await _start_in_order(session, proxy, clock, 5, "d")
        while clock.pending_sleepers():
            clock.advance(0.001)
            released = 5 - clock.pending_sleepers()
            # One at a time, in delay order.
            await _yield_until(lambda n=released: len(upstream.seen) >= n)  # type: ignore[misc]
        assert await asyncio.gather(*tasks) == [200] * 5
        sent = [f"/d{i}" for i in range(5)]
        assert sorted(upstream.seen) == sent and upstream.seen != sent, upstream.seen
    finally:
        await proxy.close()


async def test_reorder_shuffles_a_window(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    """reorder(5): five requests held, then released in a seeded shuffle, so
    they reach the destination in another order than they were sent."""
    clock = FakeClock()
    proxy = FaultProxy("src.test", "dest.test", upstream.url, seed=3, clock=clock)
    await proxy.start()
    try:
        proxy.reorder(5, max_hold_s=60.0)
        tasks = await _start_in_order(session, proxy, clock, 5, "r")
        assert await asyncio.gather(*tasks) == [200] * 5
        sent = [f"/r{i}" for i in range(5)]
        assert sorted(upstream.seen) == sent and upstream.seen != sent, upstream.seen
    finally:
        await proxy.close()


def test_fault_arguments_are_checked() -> None:
    proxy = FaultProxy("a", "b", "http://127.0.0.1:1")
    with pytest.raises(ValueError, match="between 0 and 1"):
        proxy.drop(1.5)
    with pytest.raises(ValueError, match="HTTP status"):
        proxy.respond_with(42)
    with pytest.raises(ValueError, match="start with"):
        proxy.respond_with(500, paths=("send",))
    with pytest.raises(ValueError, match="min <= max"):
        proxy.delay(2, 1)
