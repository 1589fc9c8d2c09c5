"""federation/transport/client.py against a real aiohttp server on loopback:
signing, query strings, error mapping, response size limit, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from signedjson.key import generate_signing_key

from federation.server_keys import verify_key_of
from federation.transport.client import (
    FederationClient,
    FederationClientError,
    FederationHttpError,
    base_url_for,
)
from federation.transport.wire import parse_authorization_header, verify_request
from tests.loopback import serve

KEY = generate_signing_key("k1")


@pytest.fixture
async def peer() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    release = asyncio.Event()

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        auth = parse_authorization_header(request.headers.get("Authorization"))
        content = await request.json() if body else None
        verify_request(
            auth, request.method, request.raw_path, "peer.test", content, verify_key_of(KEY)
        )
        seen.append({"uri": request.raw_path, "host": request.headers["Host"], "content": content})
        return web.json_response({"ok": True, "uri": request.raw_path})

    async def big(request: web.Request) -> web.Response:
        return web.json_response({"x": "a" * 5000})

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(10):
            await resp.write(b" " * 1000)
        await resp.write(b"{}")
        await resp.write_eof()
        return resp

    async def error(request: web.Request) -> web.Response:
        return web.json_response({"errcode": "M_FORBIDDEN", "error": "no"}, status=403)

    async def busy(request: web.Request) -> web.Response:
        return web.Response(text="oops", status=502)

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>", status=200)

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/_matrix/echo/{tail:.*}", echo)
    app.router.add_get("/big", big)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/error", error)
    app.router.add_get("/busy", busy)
    app.router.add_get("/html", html)
    app.router.add_get("/slow", slow)
    async with serve(app) as url:
        yield url, seen
        release.set()


async def make_client(url: str, **kw: Any) -> tuple[aiohttp.ClientSession, FederationClient]:
    session = aiohttp.ClientSession()
    client = FederationClient(
        session,
        signing_keys={"me.test": KEY},
        default_origin="me.test",
        destination_overrides={"peer.test": url},
        **kw,
    )
    return session, client


async def test_signed_requests_verify_on_the_peer(peer: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = peer
    session, client = await make_client(url)
    async with session:
        got = await client.get_json("peer.test", "/_matrix/echo/a%2Fb", query={"ver": ["10", "11"]})
        assert got["uri"] == "/_matrix/echo/a%2Fb?ver=10&ver=11"
        await client.post_json("peer.test", "/_matrix/echo/x", {"k": "ü"})
        await client.put_json("peer.test", "/_matrix/echo/y", {})
    assert [s["uri"] for s in seen] == [
        "/_matrix/echo/a%2Fb?ver=10&ver=11",
        "/_matrix/echo/x",
        "/_matrix/echo/y",
    ]
    assert seen[1]["content"] == {"k": "ü"}
    assert {s["host"] for s in seen} == {"peer.test"}


async def test_errors(peer: tuple[str, list[dict[str, Any]]]) -> None:
    url, _ = peer
    session, client = await make_client(url, max_response_size=4096, timeout_s=0.5)
    async with session:
        with pytest.raises(FederationHttpError) as e:
            await client.get_json("peer.test", "/error")
        assert (e.value.status, e.value.errcode, e.value.transient) == (403, "M_FORBIDDEN", False)
        with pytest.raises(FederationHttpError) as e:
            await client.get_json("peer.test", "/busy")
        assert e.value.transient and e.value.body is None
        with pytest.raises(FederationClientError, match="not JSON"):
            await client.get_json("peer.test", "/html")
        with pytest.raises(FederationClientError, match="4096-byte limit"):
            await client.get_json("peer.test", "/big")
        with pytest.raises(FederationClientError, match="4096-byte limit"):
            await client.get_json("peer.test", "/chunked")
        with pytest.raises(FederationClientError, match="timed out"):
            await client.get_json("peer.test", "/slow")
        client.destination_overrides["down.test"] = "http://127.0.0.1:1"
        with pytest.raises(FederationClientError, match="failed") as e2:
            await client.get_json("down.test", "/x")
        assert e2.value.transient
        with pytest.raises(ValueError, match="do not host"):
            await client.get_json("peer.test", "/x", origin="other.test")


def test_base_url_for() -> None:
    assert base_url_for("example.org") == "https://example.org:8448"
    assert base_url_for("example.org:1234") == "https://example.org:1234"
    assert base_url_for("1.2.3.4") == "https://1.2.3.4:8448"
    assert base_url_for("[::1]") == "https://[::1]:8448"
    assert base_url_for("[::1]:99") == "https://[::1]:99"


# A success body with the same key twice: a JSON parser that keeps the last
# value and one that keeps the first would see different keys or events.
DUPLICATE_KEY_BODIES = {
    "/_matrix/key/v2/server": (
        b'{"server_name": "peer.test", "verify_keys": {"ed25519:a": {"key": "AAAA"}},'
        b' "verify_keys": {"ed25519:b": {"key": "BBBB"}}, "valid_until_ts": 1}'
    ),
    "/_matrix/federation/v1/event/$e": (
        b'{"origin": "peer.test", "pdus": [{"type": "m.room.message",'
        b' "content": {"body": "one", "body": "two"}}]}'
    ),
}


@pytest.fixture
async def lying_peer() -> AsyncIterator[str]:
    async def duplicate(request: web.Request) -> web.Response:
        return web.Response(
            body=DUPLICATE_KEY_BODIES[request.path], content_type="application/json"
        )

    async def float_body(request: web.Request) -> web.Response:
        return web.Response(body=b'{"depth": 1.5}', content_type="application/json")

    async def error_with_duplicates(request: web.Request) -> web.Response:
        return web.Response(
            body=b'{"errcode": "M_NOT_FOUND", "errcode": "M_NOT_FOUND", "error": "gone"}',
            status=404,
            content_type="application/json",
        )

    app = web.Application()
    for path in DUPLICATE_KEY_BODIES:
        app.router.add_get(path, duplicate)
    app.router.add_get("/float", float_body)
    app.router.add_get("/missing", error_with_duplicates)
    async with serve(app) as url:
        yield url


@pytest.mark.parametrize("path", list(DUPLICATE_KEY_BODIES))
async def test_success_body_with_duplicate_keys_is_refused(lying_peer: str, path: str) -> None:
    session, client = await make_client(lying_peer)
    async with session:
        with pytest.raises(FederationClientError) as e:
            await client.get_json("peer.test", path.replace("$", "%24"))
    assert not e.value.transient
    assert "not valid Matrix JSON" in e.value.reason
    assert "duplicate" in e.value.reason


async def test_success_body_is_parsed_strictly(lying_peer: str) -> None:
    session, client = await make_client(lying_peer)
    async with session:
        with pytest.raises(FederationClientError, match="not valid Matrix JSON") as e:
            await client.get_json("peer.test", "/float")
        assert not e.value.transient
        # Error bodies are only read for errcode and message.
        with pytest.raises(FederationHttpError) as http:
            await client.get_json("peer.test", "/missing")
        assert (http.value.status, http.value.errcode) == (404, "M_NOT_FOUND")
