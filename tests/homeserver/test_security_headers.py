"""Security headers on every Client-Server API answer: successes, errors, preflights."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from signedjson.key import generate_signing_key, write_signing_keys

from federation.clock import FakeClock
from homeserver.config import parse_config
from homeserver.http.security_headers import JSON_CSP
from homeserver.server import HomeServer

EXPECTED = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@pytest.fixture
async def hs(tmp_path: Path) -> AsyncIterator[HomeServer]:
    buf = io.StringIO()
    write_signing_keys(buf, [generate_signing_key("t1")])
    (tmp_path / "signing.key").write_text(buf.getvalue())
    cfg = parse_config({
        "server_name": "hs.test",
        "data_dir": str(tmp_path),
        "database": {"url": f"sqlite://{tmp_path / 'hs.db'}"},
        "listeners": [{"type": "client", "port": 0}, {"type": "federation", "port": 0}],
        "max_request_size": "2K",
    }, base_dir=str(tmp_path), env={})
    server = await HomeServer.start(cfg, clock=FakeClock())
    yield server
    await server.stop()


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "json"),
    [
        ("GET", "/_matrix/client/versions", {}, 200, True),
        ("GET", "/_matrix/client/v3/account/whoami", {}, 401, True),
        ("GET", "/_matrix/client/v3/no/such/endpoint", {}, 404, True),
        ("POST", "/_matrix/client/v3/login", {"data": b"x" * 4000}, 413, True),
        ("POST", "/_matrix/client/v3/login", {"data": b"{not json"}, 400, True),
        ("OPTIONS", "/_matrix/client/v3/login",
         {"headers": {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}},
         200, True),
        ("GET", "/health", {}, 200, False),
    ],
    ids=["ok", "401", "404", "413", "400", "preflight", "health-text"],
)
async def test_client_api_answers_carry_security_headers(
    hs: HomeServer, method: str, path: str, kwargs: dict[str, Any], status: int, json: bool
) -> None:
    async with aiohttp.ClientSession() as session, session.request(
        method, hs.base_url("client") + path, **kwargs
    ) as r:
        assert r.status == status
        for name, value in EXPECTED.items():
            assert r.headers.get(name) == value, name
        if json:
            assert r.content_type == "application/json"
            assert r.headers["Content-Security-Policy"] == JSON_CSP
            assert "default-src 'none'" in JSON_CSP and "frame-ancestors 'none'" in JSON_CSP
        else:
            # Not JSON: the JSON policy is not imposed on it.
            assert "Content-Security-Policy" not in r.headers
        # CORS still applies alongside.
        assert r.headers.get("Access-Control-Allow-Origin") == "*"
