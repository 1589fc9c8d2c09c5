"""Real nodes on loopback (port 0, one FakeClock) for the trust-domain tests,
plus a recording peer: an HTTP server that counts every request it gets, so
a test can show that nothing was sent to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from federation.clock import FakeClock
from tests.federation_outbound.nodes import Node, link, start_node

StartFn = Callable[..., Awaitable[Node]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def nodes(tmp_path: Path, clock: FakeClock) -> AsyncIterator[StartFn]:
    """``await nodes("a.test", trusted=[...], database_url=None, **extra_config)``:
    start a node (on SQLite in its directory unless ``database_url`` is given);
    every node started is linked to every other."""
    started: list[Node] = []

    async def start(name: str, *, trusted: list[str] | None = None,
                    database_url: str | None = None, **extra: Any) -> Node:
        fed = {"verify_certificates": True, "trusted_key_servers": []}
        fed.update(extra.pop("federation", {}))
        if trusted is not None:
            fed["trusted_servers"] = trusted
        node = await start_node(tmp_path / name, name, clock, database_url,
                                extra={"federation": fed, **extra})
        started.append(node)
        link(started)
        return node

    yield start
    for n in reversed(started):
        await n.hs.stop()


class RecordingPeer:
    """Answers 200 ``{}`` to everything and remembers what it was asked."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.requests.append((request.method, request.path))
            return web.json_response({})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
async def peer() -> AsyncIterator[RecordingPeer]:
    p = RecordingPeer()
    await p.start()
    yield p
    assert p.runner is not None
    await p.runner.cleanup()
