"""Fault injection at the HTTP level: one proxy per directed federation link.

Node A's outbound federation requests to node B go to the listener of the
proxy for the link A→B (A's config routes B's server name there through
``federation.destination_overrides``), which forwards them to B's federation
listener. Both nodes run their real code; only the network between them
misbehaves, and only in the direction chosen. B's answers travel back over
the same link, so faults on A→B also cover B's responses to A.

Per link, for each request, in this order:

1. **partition**: the connection is cut before anything is forwarded (the
   sender sees a network error, as when the peer is unreachable);
2. **status**: a fraction of requests (optionally only those whose path
   starts with one of given prefixes, e.g. only ``/send``) is answered with
   a chosen HTTP status and a Matrix error body, without reaching the
   destination;
3. **drop**: a fraction of requests is lost (connection cut, not forwarded);
4. **delay**: each request waits a uniformly random time in ``[min, max]``
   before it is forwarded, so concurrent requests overtake one another;
5. **reorder**: requests are held until ``window`` of them are waiting (or
   ``max_hold_s`` passes) and then forwarded in a shuffled order;
6. **forward**, and **duplicate** a fraction (the same request is sent again
   once the first copy is answered, like a retry whose response was lost);
7. **drop_response**: a fraction of requests is forwarded but the response
   is lost (the destination acted on it; the sender sees a network error).

Random decisions come from one ``random.Random`` per link, seeded from the
federation's seed and the link's names, so a run that sends the same
requests in the same order makes the same decisions. Concurrent requests
may arrive in a different order from run to run; their decisions then
follow the arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from federation.clock import Clock, RealClock

__all__ = ["FaultProxy", "LinkFaults", "LinkStats", "describe"]

logger = logging.getLogger(__name__)

#: Headers that describe one hop, not the request (RFC 9110 section 7.6.1).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
    }
)


def _check_fraction(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return float(value)


@dataclass
class LinkFaults:
    """What the link currently does wrong. Mutate through :class:`FaultProxy`."""

    partitioned: bool = False
    drop_fraction: float = 0.0
    drop_response_fraction: float = 0.0
    duplicate_fraction: float = 0.0
    delay_s: tuple[float, float] = (0.0, 0.0)
    reorder_window: int = 1
    reorder_max_hold_s: float = 0.5
    status: int | None = None
    status_fraction: float = 0.0
    #: Path prefixes the status fault applies to; empty: every request.
    status_paths: tuple[str, ...] = ()

    def clear(self) -> None:
        """Back to a perfect link."""
        for f in type(self).__dataclass_fields__:
            setattr(self, f, getattr(type(self)(), f))


@dataclass
class LinkStats:
    """Counts per fate (``forwarded``, ``dropped``, ``partitioned``, ...)."""

    counts: Counter[str] = field(default_factory=Counter)
    #: ``(method, path, fate)`` per request, in arrival order.
    log: list[tuple[str, str, str]] = field(default_factory=list)

    def record(self, method: str, path: str, fate: str) -> None:
        self.counts[fate] += 1
        self.log.append((method, path, fate))

    def __getitem__(self, fate: str) -> int:
        return self.counts[fate]


class _Cut(Exception):
    """Close the client's connection without an answer."""


class FaultProxy:
    """A reverse proxy for one directed link ``source → destination``.

    ``upstream`` is the destination's federation base URL. Certificates are
    not checked (the harness's nodes use self-signed ones); the destination
    still checks every X-Matrix signature, which the proxy forwards untouched.
    """

    def __init__(
        self,
        source: str,
        destination: str,
        upstream: str,
        *,
        seed: int | str = 0,
        clock: Clock | None = None,
    ) -> None:
        self.source = source
        self.destination = destination
        self.upstream = upstream.rstrip("/")
        self.faults = LinkFaults()
        self.stats = LinkStats()
        self._rng = random.Random(f"{seed}:{source}->{destination}")
        self._clock: Clock = clock or RealClock()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._held: list[asyncio.Future[None]] = []
        self._hold_task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Where the source node sends its requests for the destination."""
        return f"http://127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        return f"<FaultProxy {self.source} -> {self.destination} at {self.url}>"

    async def start(self) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx),
            auto_decompress=False,
            # Requests that the proxy holds or that the node takes long to
            # answer are the sender's business: it has its own timeout.
            timeout=aiohttp.ClientTimeout(total=None),
        )
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through it
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for fut in self._held:
            if not fut.done():
                fut.set_result(None)
        if self._hold_task is not None:
            self._hold_task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # Fault controls. Each returns self so calls chain: link.drop(0.3).delay(0.1)

    def partition(self) -> FaultProxy:
        self.faults.partitioned = True
        return self

    def heal(self) -> FaultProxy:
        """Remove every fault from this link."""
        self.faults.clear()
        self._release_held()
        return self

    def drop(self, fraction: float) -> FaultProxy:
        self.faults.drop_fraction = _check_fraction("drop", fraction)
        return self

    def drop_responses(self, fraction: float) -> FaultProxy:
        self.faults.drop_response_fraction = _check_fraction("drop_responses", fraction)
        return self

    def duplicate(self, fraction: float) -> FaultProxy:
        self.faults.duplicate_fraction = _check_fraction("duplicate", fraction)
        return self

    def delay(self, min_s: float, max_s: float | None = None) -> FaultProxy:
        hi = min_s if max_s is None else max_s
        if not 0 <= min_s <= hi:
            raise ValueError(f"delay needs 0 <= min <= max, got {min_s}, {hi}")
        self.faults.delay_s = (min_s, hi)
        return self

    def reorder(self, window: int, *, max_hold_s: float = 0.5) -> FaultProxy:
        if window < 1:
            raise ValueError(f"reorder window must be at least 1, got {window}")
        self.faults.reorder_window = window
        self.faults.reorder_max_hold_s = max_hold_s
        return self

    def respond_with(
        self, status: int, fraction: float = 1.0, *, paths: tuple[str, ...] = ()
    ) -> FaultProxy:
        """Answer ``status`` instead of forwarding, for ``fraction`` of the
        requests whose path starts with one of ``paths`` (empty: all), so a
        peer can refuse transactions (``/_matrix/federation/v1/send/``) while
        answering everything else."""
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        if any(not p.startswith("/") for p in paths):
            raise ValueError(f"path prefixes must start with '/', got {paths}")
        self.faults.status = status
        self.faults.status_fraction = _check_fraction("respond_with fraction", fraction)
        self.faults.status_paths = tuple(paths)
        return self

    # The proxy itself.

    def _chance(self, fraction: float) -> bool:
        # Draw only when the fault is on, so turning one fault on does not
        # shift the decisions of another.
        return fraction > 0 and self._rng.random() < fraction

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method, path = request.method, request.path_qs
        f = self.faults
        try:
            if f.partitioned:
                self.stats.record(method, path, "partitioned")
                raise _Cut
            if (f.status is not None
                    and (not f.status_paths or request.path.startswith(f.status_paths))
                    and self._chance(f.status_fraction)):
                self.stats.record(method, path, f"status_{f.status}")
                return web.json_response(
                    {"errcode": "M_UNKNOWN", "error": "injected by concord_harness"},
                    status=f.status,
                )
            if self._chance(f.drop_fraction):
                self.stats.record(method, path, "dropped")
                raise _Cut
            lo, hi = f.delay_s
            if hi > 0:
                await self._clock.sleep(lo + (hi - lo) * self._rng.random())
            if f.reorder_window > 1:
                await self._hold()
            if self.faults.partitioned:  # partitioned while it waited
                self.stats.record(method, path, "partitioned")
                raise _Cut
            body = await request.read()
            status, headers, payload = await self._forward(request, body)
            if self._chance(f.duplicate_fraction):
                self.stats.record(method, path, "duplicated")
                try:
                    await self._forward(request, body)
                except aiohttp.ClientError:
                    pass  # the copy is best effort, like a real duplicate
            if self._chance(f.drop_response_fraction):
                self.stats.record(method, path, "response_dropped")
                raise _Cut
        except _Cut:
            return self._cut(request)
        except (TimeoutError, aiohttp.ClientError) as e:
            # The destination itself is down: the source sees what it would
            # see without the proxy, a failed connection.
            self.stats.record(method, path, "upstream_unreachable")
            logger.debug("%r: upstream %s: %s", self, self.upstream, e)
            return self._cut(request)
        self.stats.record(method, path, "forwarded")
        return web.Response(status=status, headers=headers, body=payload)

    def _cut(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()
        # Nothing reaches the client; aiohttp discards this on a closed transport.
        return web.Response(status=502)

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method,
            # encoded=True: the path and query go out byte for byte as
            # signed in X-Matrix (yarl would otherwise re-normalise them).
            URL(self.upstream + request.raw_path, encoded=True),
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
        ) as resp:
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_BY_HOP}
            return resp.status, out, payload

    async def _hold(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held.append(fut)
        if len(self._held) >= self.faults.reorder_window:
            self._release_held()
        elif self._hold_task is None or self._hold_task.done():
            self._hold_task = asyncio.ensure_future(self._release_later())
        await fut

    async def _release_later(self) -> None:
        await self._clock.sleep(self.faults.reorder_max_hold_s)
        self._release_held()

    def _release_held(self) -> None:
        # The timer belongs to the batch being released; the next batch starts its own.
        timer, self._hold_task = self._hold_task, None
        if timer is not None and not timer.done() and timer is not _current_task():
            timer.cancel()
        held, self._held = self._held, []
        self._rng.shuffle(held)
        for fut in held:
            if not fut.done():
                fut.set_result(None)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # called outside the event loop (heal() from sync code)
        return None


def describe(stats: LinkStats) -> str:
    """One line: ``forwarded=10 dropped=3 ...`` (for failure messages)."""
    return " ".join(f"{k}={v}" for k, v in sorted(stats.counts.items())) or "no requests"

