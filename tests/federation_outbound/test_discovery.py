"""Server discovery (spec "Resolving server names") against a loopback
``.well-known`` server and a resolver Protocol implemented here."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from signedjson.key import generate_signing_key

from federation.clock import FakeClock
from federation.transport.client import FederationClient, FederationClientError
from federation.transport.discovery import (
    ResolvedServer,
    ServerDiscovery,
    SrvLookupError,
    SrvRecord,
    order_srv_records,
    parse_cache_lifetime_s,
    split_server_name,
)
from tests.loopback import serve


class TableResolver:
    """SRV answers from a dict; counts queries. A value of ``None`` fails."""

    def __init__(self, table: dict[str, list[SrvRecord] | None]) -> None:
        self.table = table
        self.queries: Counter[str] = Counter()

    async def resolve_srv(self, name: str) -> list[SrvRecord]:
        self.queries[name] += 1
        if name in self.table and self.table[name] is None:
            raise SrvLookupError(f"{name}: SERVFAIL")
        return list(self.table.get(name) or [])


class WellKnownServer:
    """``/.well-known/matrix/server`` answers per Host, configurable per test."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, Any, dict[str, str]]] = {}
        self.hits: Counter[str] = Counter()
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        host = request.query["h"]
        self.hits[host] += 1
        status, body, headers = self.answers.get(host, (404, {"errcode": "M_NOT_FOUND"}, {}))
        if isinstance(body, str):
            return web.Response(status=status, text=body, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    def url(self, hostname: str) -> str:
        return f"{self.base}/.well-known/matrix/server?h={hostname}"


@pytest.fixture
async def well_known() -> AsyncIterator[WellKnownServer]:
    wk = WellKnownServer()
    app = web.Application()
    app.router.add_get("/.well-known/matrix/server", wk.handle)
    async with serve(app) as url:
        wk.base = url
        yield wk


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


Make = Callable[..., ServerDiscovery]


@pytest.fixture
def make(
    session: aiohttp.ClientSession, well_known: WellKnownServer
) -> Callable[..., ServerDiscovery]:
    def build(resolver: TableResolver, clock: FakeClock | None = None) -> ServerDiscovery:
        return ServerDiscovery(
            session, clock or FakeClock(), srv_resolver=resolver,
            well_known_url=well_known.url, rng=random.Random(7),
        )

    return build


def test_split_server_name() -> None:
    assert split_server_name("example.org") == ("example.org", None)
    assert split_server_name("example.org:8000") == ("example.org", 8000)
    assert split_server_name("1.2.3.4:5") == ("1.2.3.4", 5)
    assert split_server_name("[::1]") == ("::1", None)
    assert split_server_name("[::1]:80") == ("::1", 80)
    for bad in ("[::1", "a:b", ":80", "[::1]x"):
        with pytest.raises(ValueError):
            split_server_name(bad)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1.2.3.4", ResolvedServer("1.2.3.4", 8448, "1.2.3.4", "1.2.3.4")),
        ("1.2.3.4:99", ResolvedServer("1.2.3.4", 99, "1.2.3.4:99", "1.2.3.4")),
        ("[::1]", ResolvedServer("::1", 8448, "[::1]", "::1")),
        ("[::1]:99", ResolvedServer("::1", 99, "[::1]:99", "::1")),
        ("example.test:99", ResolvedServer("example.test", 99, "example.test:99",
                                           "example.test")),
    ],
)
async def test_ip_literal_and_explicit_port_need_no_lookup(
    make: Make, well_known: WellKnownServer, name: str, expected: ResolvedServer
) -> None:
    resolver = TableResolver({})
    assert await make(resolver).resolve(name) == [expected]
    assert not resolver.queries and not well_known.hits
    assert ResolvedServer("::1", 99, "", "").base_url == "https://[::1]:99"


async def test_well_known_delegation(make: Make, well_known: WellKnownServer) -> None:
    resolver = TableResolver({
        "_matrix-fed._tcp.deleg.test": [SrvRecord("srv-target.test", 7777)],
    })
    well_known.answers = {
        "a.test": (200, {"m.server": "deleg.test:4443"}, {}),
        "b.test": (200, {"m.server": "10.0.0.1"}, {}),
        "c.test": (200, {"m.server": "deleg.test"}, {}),
        "d.test": (200, {"m.server": "nosrv.test"}, {}),
    }
    d = make(resolver)
    # 3.2: delegated with a port: Host and certificate for the delegated name.
    assert await d.resolve("a.test") == [
        ResolvedServer("deleg.test", 4443, "deleg.test:4443", "deleg.test")]
    # 3.1: delegated IP literal, default port.
    assert await d.resolve("b.test") == [ResolvedServer("10.0.0.1", 8448, "10.0.0.1", "10.0.0.1")]
    # 3.3: SRV of the delegated name; Host and certificate still the delegated name.
    assert await d.resolve("c.test") == [
        ResolvedServer("srv-target.test", 7777, "deleg.test", "deleg.test")]
    # 3.5: no SRV at all: the delegated name on 8448.
    assert await d.resolve("d.test") == [
        ResolvedServer("nosrv.test", 8448, "nosrv.test", "nosrv.test")]
    assert resolver.queries["_matrix-fed._tcp.nosrv.test"] == 1
    assert resolver.queries["_matrix._tcp.nosrv.test"] == 1
    # SRV is never looked up for the original name once delegated.
    assert not any(q.endswith(".a.test") or q.endswith("c.test") for q in resolver.queries)


@pytest.mark.parametrize(
    "answer",
    [
        (404, {"errcode": "M_NOT_FOUND"}, {}),
        (200, "not json", {}),
        (200, {"m.server": 5}, {}),
        (200, {"m.server": "bad:name:x"}, {}),
        (200, ["m.server"], {}),
        (500, {}, {}),
    ],
    ids=["404", "not-json", "not-string", "invalid-name", "not-object", "500"],
)
async def test_invalid_well_known_falls_through_to_srv(
    make: Make, well_known: WellKnownServer, answer: tuple[int, Any, dict[str, str]]
) -> None:
    well_known.answers = {"x.test": answer}
    resolver = TableResolver({"_matrix-fed._tcp.x.test": [SrvRecord("t.test", 1234)]})
    assert await make(resolver).resolve("x.test") == [
        ResolvedServer("t.test", 1234, "x.test", "x.test")]


async def test_srv_order_of_services_then_8448(make: Make) -> None:
    legacy = TableResolver({"_matrix._tcp.x.test": [SrvRecord("old.test", 1111)]})
    assert await make(legacy).resolve("x.test") == [
        ResolvedServer("old.test", 1111, "x.test", "x.test")]
    assert list(legacy.queries) == ["_matrix-fed._tcp.x.test", "_matrix._tcp.x.test"]
    both = TableResolver({
        "_matrix-fed._tcp.x.test": [SrvRecord("new.test", 2222)],
        "_matrix._tcp.x.test": [SrvRecord("old.test", 1111)],
    })
    assert (await make(both).resolve("x.test"))[0].host == "new.test"
    assert list(both.queries) == ["_matrix-fed._tcp.x.test"]
    none = TableResolver({})
    assert await make(none).resolve("x.test") == [ResolvedServer("x.test", 8448, "x.test", "x.test")]
    # A DNS failure is not "no record", but the resolution still falls back.
    failing = TableResolver({"_matrix-fed._tcp.x.test": None})
    assert (await make(failing).resolve("x.test"))[0].port == 8448


async def test_srv_priority_and_weight_ordering(make: Make) -> None:
    records = [
        SrvRecord("low-prio.test", 3, priority=20, weight=100),
        SrvRecord("a.test", 1, priority=10, weight=0),
        SrvRecord("b.test", 2, priority=10, weight=60),
        SrvRecord("c.test", 4, priority=10, weight=40),
    ]
    resolver = TableResolver({"_matrix-fed._tcp.x.test": records})
    got = await make(resolver).resolve("x.test")
    assert [s.host for s in got][-1] == "low-prio.test"
    # Within a priority, weight-0 records come after weighted ones.
    assert [s.host for s in got][2] == "a.test"
    assert all(s.host_header == "x.test" and s.tls_name == "x.test" for s in got)
    # Weights bias the first pick: b (60) leads c (40) about 60% of the time.
    rng = random.Random(1)
    firsts = Counter(order_srv_records(records, rng)[0].target for _ in range(2000))
    assert set(firsts) == {"b.test", "c.test"}
    assert 1050 < firsts["b.test"] < 1350
    assert order_srv_records([SrvRecord(".", 0)], rng) == []


async def test_caches_follow_ttls(make: Make, well_known: WellKnownServer) -> None:
    clock = FakeClock()
    well_known.answers = {
        "ttl.test": (200, {"m.server": "d.test"}, {"Cache-Control": "public, max-age=600"}),
        "long.test": (200, {"m.server": "d.test:1"}, {"Cache-Control": "max-age=999999999"}),
        "default.test": (200, {"m.server": "d.test:1"}, {}),
    }
    resolver = TableResolver({"_matrix-fed._tcp.d.test": [SrvRecord("t.test", 5, ttl=300)]})
    d = make(resolver, clock)
    for _ in range(3):
        await d.resolve("ttl.test")
    assert well_known.hits["ttl.test"] == 1 and resolver.queries["_matrix-fed._tcp.d.test"] == 1
    clock.advance(301)  # the SRV answer expired, the .well-known did not
    await d.resolve("ttl.test")
    assert well_known.hits["ttl.test"] == 1 and resolver.queries["_matrix-fed._tcp.d.test"] == 2
    clock.advance(300)
    await d.resolve("ttl.test")
    assert well_known.hits["ttl.test"] == 2

    # max-age is capped at 48 hours; no header means 24 hours.
    await d.resolve("long.test")
    await d.resolve("default.test")
    clock.advance(24 * 3600 - 1)
    await d.resolve("long.test")
    await d.resolve("default.test")
    assert well_known.hits["long.test"] == 1 and well_known.hits["default.test"] == 1
    clock.advance(2)
    await d.resolve("default.test")
    assert well_known.hits["default.test"] == 2
    clock.advance(24 * 3600)
    await d.resolve("long.test")
    assert well_known.hits["long.test"] == 2


async def test_well_known_errors_cached_with_backoff(
    make: Make, well_known: WellKnownServer
) -> None:
    clock = FakeClock()
    d = make(TableResolver({}), clock)
    await d.resolve("down.test")
    clock.advance(299)
    await d.resolve("down.test")
    assert well_known.hits["down.test"] == 1
    clock.advance(1)
    await d.resolve("down.test")  # the first failure is kept 5 minutes
    assert well_known.hits["down.test"] == 2
    clock.advance(599)
    await d.resolve("down.test")  # the second one 10 minutes
    assert well_known.hits["down.test"] == 2
    clock.advance(1)
    await d.resolve("down.test")
    assert well_known.hits["down.test"] == 3
    for _ in range(5):
        clock.advance(3600)  # never more than an hour
        await d.resolve("down.test")
    assert well_known.hits["down.test"] == 8
    # Recovery: a good answer is cached normally.
    well_known.answers["down.test"] = (200, {"m.server": "up.test:1"}, {})
    clock.advance(3600)
    assert (await d.resolve("down.test"))[0].host == "up.test"


async def test_well_known_redirect_followed(
    session: aiohttp.ClientSession, well_known: WellKnownServer
) -> None:
    well_known.answers = {"target.test": (200, {"m.server": "moved.test:9"}, {})}
    app = web.Application()

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(well_known.url("target.test"))

    async def loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(str(request.url))

    app.router.add_get("/r", redirect)
    app.router.add_get("/loop", loop)
    async with serve(app) as base:
        d = ServerDiscovery(session, FakeClock(), srv_resolver=TableResolver({}),
                            well_known_url=lambda h: f"{base}/{h}")
        assert (await d.resolve("r"))[0].host == "moved.test"
        # A redirect loop is an error: fall through to 8448.
        assert (await d.resolve("loop"))[0] == ResolvedServer("loop", 8448, "loop", "loop")


def test_parse_cache_lifetime() -> None:
    now = 1_700_000_000_000
    assert parse_cache_lifetime_s({"Cache-Control": "max-age=60"}, now) == 60
    assert parse_cache_lifetime_s({"Cache-Control": "no-store"}, now) == 0
    assert parse_cache_lifetime_s({}, now) is None
    expires = "Tue, 14 Nov 2023 22:15:00 GMT"  # now + 100 s
    assert parse_cache_lifetime_s({"Expires": expires}, now) == pytest.approx(100, abs=1)
    assert parse_cache_lifetime_s({"Expires": "garbage"}, now) == 0
    assert parse_cache_lifetime_s({"Cache-Control": "max-age=5", "Expires": expires}, now) == 5


async def test_client_connects_through_discovery_with_host_header(
    session: aiohttp.ClientSession, well_known: WellKnownServer
) -> None:
    """The client tries SRV targets in order and sends the discovered Host."""
    seen: list[tuple[str, str]] = []
    app = web.Application()

    async def version(request: web.Request) -> web.StreamResponse:
        seen.append((request.headers["Host"], request.headers["Authorization"]))
        return web.json_response({"server": {"name": "peer"}})

    app.router.add_get("/_matrix/federation/v1/version", version)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    # A closed port first (higher priority), then the live one.
    probe = web.TCPSite(runner, "127.0.0.1", 0)
    await probe.start()
    dead_port = runner.addresses[1][1]
    await probe.stop()
    try:
        resolver = TableResolver({"_matrix-fed._tcp.peer.test": [
            SrvRecord("127.0.0.1", dead_port, priority=1),
            SrvRecord("127.0.0.1", port, priority=2),
        ]})
        d = ServerDiscovery(session, FakeClock(), srv_resolver=resolver,
                            well_known_url=well_known.url)
        # Plain HTTP on loopback: swap the scheme of the discovered targets.
        client = FederationClient(
            session, signing_keys={"me.test": generate_signing_key("k")},
            default_origin="me.test", discovery=d,
        )
        real = client._targets

        async def http_targets(dest: str) -> list[tuple[str, str | None, str]]:
            return [(b.replace("https://", "http://"), t, h) for b, t, h in await real(dest)]

        client._targets = http_targets  # type: ignore[method-assign]
        body = await client.get_json("peer.test", "/_matrix/federation/v1/version")
        assert body == {"server": {"name": "peer"}}
        assert seen[0][0] == "peer.test"
        assert 'destination="peer.test"' in seen[0][1] and 'origin="me.test"' in seen[0][1]
        # A name that cannot be a server name is refused without a request.
        with pytest.raises(FederationClientError) as e:
            await client.get_json("bad:name:x", "/x")
        assert not e.value.transient
    finally:
        await runner.cleanup()
