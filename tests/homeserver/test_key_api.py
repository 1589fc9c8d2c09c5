"""Key servlets and the keyring against live nodes on loopback.

Each node is a real HomeServer (SQLite file, federation listener on
127.0.0.1 port 0) sharing one FakeClock. Server names are ``*.test``; each
node's federation client maps the names to the other nodes' bound ports
(``destination_overrides``), since a name cannot carry a port chosen by the OS.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from signedjson.key import generate_signing_key, write_signing_keys
from signedjson.sign import sign_json

from federation.clock import FakeClock
from federation.keyring import UnknownKeyError
from federation.server_keys import encode_verify_key, parse_server_key_response, verify_key_of
from homeserver.config import parse_config
from homeserver.http import x_matrix
from homeserver.keys import KeyService, key_service_for
from homeserver.rest import federation_version
from homeserver.rest import keys as keys_rest
from homeserver.server import HomeServer
from tests.loopback import serve

HOUR_MS = 3600_000


class Node:
    def __init__(self, hs: HomeServer, counts: Counter[str], key: Any) -> None:
        self.hs = hs
        self.counts = counts
        self.key = key

    @property
    def name(self) -> str:
        return self.hs.server_name

    @property
    def url(self) -> str:
        return self.hs.base_url("federation")

    @property
    def keys(self) -> KeyService:
        return key_service_for(self.hs)


def counting_registrar(counts: Counter[str]) -> Callable[[web.Application, Any], None]:
    def register(app: web.Application, hs: Any) -> None:
        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            counts[request.path] += 1
            return await handler(request)

        # First, so requests refused by authentication are counted too.
        app.middlewares.insert(0, count)

    return register


NodeFactory = Callable[..., Awaitable[Node]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def nodes(tmp_path: Path, clock: FakeClock) -> AsyncIterator[NodeFactory]:
    started: list[Node] = []

    async def start(
        name: str,
        *,
        key: Any = None,
        trusted: list[dict[str, Any]] | None = None,
        tls: bool = False,
        verify_certificates: bool = False,
        ca_file: str | None = None,
        validity: str = "1h",
        old_signing_keys: list[dict[str, Any]] | None = None,
        default_registrars: bool = False,
    ) -> Node:
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        key = key or generate_signing_key("k1")
        buf = io.StringIO()
        write_signing_keys(buf, [key])
        (d / "signing.key").write_text(buf.getvalue())
        listener: dict[str, Any] = {
            "type": "federation",
            "port": 0,
            "bind_addresses": ["127.0.0.1"],
        }
        if tls:
            from homeserver.cli.generate_config import write_self_signed_certificate

            write_self_signed_certificate("127.0.0.1", str(d / "tls.crt"), str(d / "tls.key"))
            listener.update(
                tls=True,
                tls_certificate_path=str(d / "tls.crt"),
                tls_private_key_path=str(d / "tls.key"),
            )
        raw = {
            "server_name": name,
            "data_dir": str(d),
            "signing_key_path": str(d / "signing.key"),
            "key_validity_period": validity,
            "old_signing_keys": old_signing_keys or [],
            "database": {"url": f"sqlite://{d / 'hs.db'}"},
            "listeners": [listener],
            "federation": {
                "verify_certificates": verify_certificates,
                "trusted_key_servers": trusted or [],
                **({"ca_file": ca_file} if ca_file is not None else {}),
            },
        }
        cfg = parse_config(raw, base_dir=str(d))
        counts: Counter[str] = Counter()
        hs = await HomeServer.start(
            cfg,
            clock=clock,
            registrars=None
            if default_registrars
            else {
                "federation": [
                    counting_registrar(counts),
                    x_matrix.register,
                    keys_rest.register,
                    federation_version.register,
                ]
            },
        )
        node = Node(hs, counts, key)
        # Wire every running node's client to every other's address.
        for other in started:
            if other.name == name:
                continue
            other.keys.client.destination_overrides[name] = node.url
            node.keys.client.destination_overrides[other.name] = other.url
        started.append(node)
        return node

    yield start
    for n in reversed(started):
        await n.keys.close()
        await n.hs.stop()


async def stop(node: Node) -> None:
    await node.keys.close()
    await node.hs.stop()


# -- publishing ----------------------------------------------------------------------


async def test_server_keys_published_self_signed(nodes: NodeFactory, clock: FakeClock) -> None:
    a = await nodes("a.test")
    async with aiohttp.ClientSession() as s:
        async with s.get(a.url + "/_matrix/key/v2/server") as r:
            assert r.status == 200
            body = await r.json()
    parsed = parse_server_key_response(body, "a.test")
    assert body["valid_until_ts"] == clock.time_ms() + HOUR_MS
    assert list(parsed.verify_keys) == ["ed25519:k1"]
    assert body["verify_keys"]["ed25519:k1"]["key"] == encode_verify_key(verify_key_of(a.key))
    assert body["old_verify_keys"] == {}


async def test_direct_fetch_between_live_nodes(nodes: NodeFactory, clock: FakeClock) -> None:
    a = await nodes("a.test")
    b = await nodes("b.test")
    obj = sign_json({"hello": "world"}, "b.test", b.key)
    await a.keys.keyring.verify_json_for_server(obj, "b.test", clock.time_ms())
    assert b.counts["/_matrix/key/v2/server"] == 1
    cached = await a.keys.store.get_server_keys("b.test")
    assert set(cached) == {"ed25519:k1"}


async def test_tls_fetch_and_certificate_verification(nodes: NodeFactory, clock: FakeClock) -> None:
    b = await nodes("b.test", tls=True)
    lax = await nodes("lax.test", verify_certificates=False)
    strict = await nodes("strict.test", verify_certificates=True)
    assert b.url.startswith("https://")
    now = clock.time_ms()
    assert set(await lax.keys.keyring.get_verify_keys("b.test", ["ed25519:k1"], now)) == {
        "ed25519:k1"
    }
    # A self-signed certificate is refused when verification is on.
    assert await strict.keys.keyring.get_verify_keys("b.test", ["ed25519:k1"], now) == {}
    assert b.counts["/_matrix/key/v2/server"] == 1


async def test_ca_file_trusts_a_peers_self_signed_certificate(
    nodes: NodeFactory, clock: FakeClock, tmp_path: Path
) -> None:
    """``federation.ca_file`` on a node that verifies certificates: the peer's
    self-signed certificate, listed there, is trusted; unlisted it is not."""
    b = await nodes("b.test", tls=True)
    other = await nodes("other.test", tls=True)
    ca = str(tmp_path / "b.test" / "tls.crt")
    trusting = await nodes("trusting.test", verify_certificates=True, ca_file=ca)
    now = clock.time_ms()
    assert set(await trusting.keys.keyring.get_verify_keys("b.test", ["ed25519:k1"], now)) == {
        "ed25519:k1"
    }
    assert b.counts["/_matrix/key/v2/server"] == 1
    # The CA file is the only addition: another self-signed peer is still refused.
    assert await trusting.keys.keyring.get_verify_keys("other.test", ["ed25519:k1"], now) == {}
    assert other.counts["/_matrix/key/v2/server"] == 0


async def test_concurrent_lookups_make_one_request(nodes: NodeFactory, clock: FakeClock) -> None:
    a = await nodes("a.test")
    b = await nodes("b.test")
    now = clock.time_ms()
    results = await asyncio.gather(
        *(
            a.keys.keyring.get_verify_keys("b.test", ["ed25519:k1", f"ed25519:x{i % 3}"], now)
            for i in range(20)
        )
    )
    assert all(set(r) == {"ed25519:k1"} for r in results)
    assert b.counts["/_matrix/key/v2/server"] == 1


async def test_expired_keys_are_refetched(nodes: NodeFactory, clock: FakeClock) -> None:
    a = await nodes("a.test")
    b = await nodes("b.test", validity="1h")
    t0 = clock.time_ms()
    obj = sign_json({"n": 1}, "b.test", b.key)
    await a.keys.keyring.verify_json_for_server(obj, "b.test", t0)
    clock.advance(2 * 3600)
    # Still fine for a signature made back then...
    await a.keys.keyring.verify_json_for_server(obj, "b.test", t0)
    assert b.counts["/_matrix/key/v2/server"] == 1
    # ...but now it needs a fresh response, which B rebuilds with a new validity.
    await a.keys.keyring.verify_json_for_server(obj, "b.test", clock.time_ms())
    assert b.counts["/_matrix/key/v2/server"] == 2
    got = await a.keys.store.get_server_keys("b.test")
    assert got["ed25519:k1"].valid_until_ts == clock.time_ms() + HOUR_MS


async def test_key_rotation_on_the_peer(
    nodes: NodeFactory, clock: FakeClock, tmp_path: Path
) -> None:
    a = await nodes("a.test")
    b = await nodes("b.test")
    old_key = b.key
    t0 = clock.time_ms()
    before = sign_json({"n": 1}, "b.test", old_key)
    await a.keys.keyring.verify_json_for_server(before, "b.test", t0)
    clock.advance(600)
    # B restarts with a new key in its key file (same database).
    await stop(b)
    new_key = generate_signing_key("k2")
    b2 = await nodes("b.test", key=new_key)
    t1 = clock.time_ms()
    body = await b2.keys.key_response("b.test")
    assert set(body["verify_keys"]) == {"ed25519:k2"}
    assert body["old_verify_keys"]["ed25519:k1"]["expired_ts"] == t1
    after = sign_json({"n": 2}, "b.test", new_key)
    # Unknown key ID: A refetches and learns k2 (and k1 as old).
    await a.keys.keyring.verify_json_for_server(after, "b.test", t1)
    assert b2.counts["/_matrix/key/v2/server"] == 1
    # Events signed by the old key still verify for earlier timestamps...
    await a.keys.keyring.verify_json_for_server(before, "b.test", t0)
    await a.keys.keyring.verify_json_for_server(before, "b.test", t1 - 1)
    # ...not for later ones, and an old key never authenticates a request.
    with pytest.raises(UnknownKeyError):
        await a.keys.keyring.verify_json_for_server(before, "b.test", t1 + 1)
    with pytest.raises(UnknownKeyError):
        await a.keys.keyring.verify_json_for_server(before, "b.test", t0, allow_old=False)
    # A restart keeps publishing the retired key.
    await stop(b2)
    b3 = await nodes("b.test", key=new_key)
    body = await b3.keys.key_response("b.test")
    assert body["old_verify_keys"]["ed25519:k1"]["expired_ts"] == t1


# -- notaries ------------------------------------------------------------------------


def pin(node_key: Any, name: str, key_id: str = "ed25519:k1") -> dict[str, Any]:
    return {
        "server_name": name,
        "verify_keys": {key_id: encode_verify_key(verify_key_of(node_key))},
    }


@pytest.mark.parametrize("lying", [False, True])
async def test_notary_used_when_origin_is_down(
    nodes: NodeFactory, clock: FakeClock, lying: bool
) -> None:
    c_key = generate_signing_key("k1")
    pinned = generate_signing_key("k1") if lying else c_key  # a lie: C signs with another key
    b = await nodes("b.test")
    c = await nodes("c.test", key=c_key)
    a = await nodes("a.test", trusted=[pin(pinned, "c.test")])
    # C learns B's keys while B is up.
    now = clock.time_ms()
    assert await c.keys.keyring.get_verify_keys("b.test", ["ed25519:k1"], now)
    obj = sign_json({"n": 1}, "b.test", b.key)
    await stop(b)
    if lying:
        with pytest.raises(UnknownKeyError):
            await a.keys.keyring.verify_json_for_server(obj, "b.test", now)
        assert await a.keys.store.get_server_keys("b.test") == {}
    else:
        await a.keys.keyring.verify_json_for_server(obj, "b.test", now)
        stored = await a.keys.store.get_server_keys("b.test")
        assert stored["ed25519:k1"].response_json is not None
        assert set(stored["ed25519:k1"].response_json["signatures"]) == {"b.test", "c.test"}
    assert c.counts["/_matrix/key/v2/query"] == 1


async def test_notary_relaying_a_forged_origin_response_is_ignored(
    nodes: NodeFactory, clock: FakeClock
) -> None:
    """A notary whose own signature is fine but whose relayed response is not
    self-signed by the origin (a forged key) gains nothing."""
    evil_key = generate_signing_key("k1")
    notary = web.Application()

    async def query(request: web.Request) -> web.Response:
        forged = {
            "server_name": "b.test",
            "verify_keys": {"ed25519:k1": {"key": encode_verify_key(verify_key_of(evil_key))}},
            "old_verify_keys": {},
            "valid_until_ts": clock.time_ms() + HOUR_MS,
        }
        forged = sign_json(forged, "b.test", generate_signing_key("k1"))  # not the listed key
        forged = sign_json(forged, "evil.test", evil_key)
        return web.json_response({"server_keys": [forged]})

    notary.router.add_post("/_matrix/key/v2/query", query)
    async with serve(notary) as url:
        a = await nodes("a.test", trusted=[pin(evil_key, "evil.test")])
        a.keys.client.destination_overrides["evil.test"] = url
        got = await a.keys.keyring.get_verify_keys("b.test", ["ed25519:k1"], clock.time_ms())
        assert got == {}


async def test_notary_endpoints(nodes: NodeFactory, clock: FakeClock) -> None:
    b = await nodes("b.test")
    c = await nodes("c.test")
    now = clock.time_ms()
    async with aiohttp.ClientSession() as s:
        async with s.post(
            c.url + "/_matrix/key/v2/query",
            json={
                "server_keys": {
                    "b.test": {"ed25519:k1": {"minimum_valid_until_ts": now}},
                    "c.test": {},
                    "nowhere.test": {},
                }
            },
        ) as r:
            assert r.status == 200
            body = await r.json()
        by_name = {e["server_name"]: e for e in body["server_keys"]}
        assert set(by_name) == {"b.test", "c.test"}
        # Origin self-signature and notary signature both there and valid.
        parse_server_key_response(by_name["b.test"], "b.test")
        from federation.server_keys import verify_notary_signature

        verify_notary_signature(by_name["b.test"], "c.test", {"ed25519:k1": verify_key_of(c.key)})
        parse_server_key_response(by_name["c.test"], "c.test")
        assert b.counts["/_matrix/key/v2/server"] == 1

        # GET form; cached now, so B is not asked again.
        async with s.get(c.url + "/_matrix/key/v2/query/b.test") as r:
            assert r.status == 200
            got = await r.json()
        assert [e["server_name"] for e in got["server_keys"]] == ["b.test"]
        assert b.counts["/_matrix/key/v2/server"] == 1
        # A minimum validity beyond the cached response makes the notary refetch.
        async with s.get(
            c.url + "/_matrix/key/v2/query/b.test",
            params={"minimum_valid_until_ts": str(now + 2 * HOUR_MS)},
        ) as r:
            assert r.status == 200
        assert b.counts["/_matrix/key/v2/server"] == 2

        for payload, errcode in [
            ({"server_keys": []}, "M_BAD_JSON"),
            ({}, "M_BAD_JSON"),
            ({"server_keys": {"b.test": []}}, "M_BAD_JSON"),
            ({"server_keys": {"b.test": {"k": {"minimum_valid_until_ts": "1"}}}}, "M_BAD_JSON"),
            ({"server_keys": {"not a name!": {}}}, "M_BAD_JSON"),
        ]:
            async with s.post(c.url + "/_matrix/key/v2/query", json=payload) as r:
                assert r.status == 400, payload
                assert (await r.json())["errcode"] == errcode
        async with s.get(
            c.url + "/_matrix/key/v2/query/b.test", params={"minimum_valid_until_ts": "soon"}
        ) as r:
            assert r.status == 400
            assert (await r.json())["errcode"] == "M_INVALID_PARAM"
    # Unreachable server and nothing cached: an empty list.
    async with aiohttp.ClientSession() as s:
        async with s.get(c.url + "/_matrix/key/v2/query/gone.test") as r:
            assert (await r.json()) == {"server_keys": []}


async def test_default_wiring(nodes: NodeFactory) -> None:
    """HomeServer.start wires KeyService and the federation routes by default."""
    a = await nodes("a.test", default_registrars=True)
    assert isinstance(a.hs.keys, KeyService)
    async with aiohttp.ClientSession() as s:
        async with s.get(a.url + "/_matrix/key/v2/server") as r:
            assert r.status == 200
        async with s.get(a.url + "/_matrix/federation/v1/version") as r:
            assert r.status == 200  # no security requirement in the spec
        async with s.get(a.url + "/_matrix/federation/v1/query/profile?user_id=@x:a.test") as r:
            assert r.status == 401
            assert (await r.json())["errcode"] == "M_UNAUTHORIZED"
