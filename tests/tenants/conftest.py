"""Fixtures for the tenant, account and security tests: real nodes on port 0.

``node(**config)`` starts a HomeServer (FakeClock, bcrypt cost 4, a shared
secret) on the parametrised ``database_url`` engine; ``Api`` talks to its
client listener as one Host (tenant), so a test can address several tenants
of one node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.clock import FakeClock
from homeserver.config import HomeserverConfig, parse_config
from homeserver.rest.admin.register import compute_mac
from homeserver.server import HomeServer
from homeserver.signing_key import generate_signing_key_file
from tests.conftest import postgres_database

SECRET = "s3cret-for-tests"
PRIMARY = "hs.test"


def node_config(tmp_path: Path, database_url: str, **extra: Any) -> HomeserverConfig:
    key_path = tmp_path / "signing.key"
    if not key_path.exists():
        generate_signing_key_file(str(key_path), "p1")
    raw: dict[str, Any] = {
        "server_name": PRIMARY,
        "data_dir": str(tmp_path),
        "database": {"url": database_url},
        "listeners": [{"type": "client", "port": 0}, {"type": "federation", "port": 0}],
        "password_hash_rounds": 4,
        "registration_shared_secret": SECRET,
    }
    raw.update(extra)
    return parse_config(raw, base_dir=str(tmp_path), env={})


class Api:
    """A client of one node, speaking to it as ``host``."""

    def __init__(self, session: aiohttp.ClientSession, hs: HomeServer, host: str | None) -> None:
        self.session = session
        self.hs = hs
        self.host = host
        self.base = hs.base_url("client")

    def as_host(self, host: str | None) -> Api:
        return Api(self.session, self.hs, host)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        h = dict(headers or {})
        if self.host is not None:
            h["Host"] = self.host
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        kw: dict[str, Any] = {"headers": h}
        if raw is not None:
            kw["data"] = raw
        elif body is not None:
            kw["json"] = body
        async with self.session.request(method, self.base + path, **kw) as r:
            return r.status, await r.json()

    async def admin_register(
        self, username: str, password: str, *, admin: bool = False
    ) -> dict[str, Any]:
        """Register through the shared-secret flow; returns the login body."""
        status, body = await self.call("GET", "/_synapse/admin/v1/register")
        assert status == 200, body
        nonce = body["nonce"]
        status, body = await self.call(
            "POST",
            "/_synapse/admin/v1/register",
            {
                "nonce": nonce,
                "username": username,
                "password": password,
                "admin": admin,
                "mac": compute_mac(SECRET, nonce, username, password, admin),
            },
        )
        assert status == 200, body
        return body  # type: ignore[no-any-return]

    async def login(self, user: str, password: str, **extra: Any) -> tuple[int, Any]:
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
            **extra,
        }
        return await self.call("POST", "/_matrix/client/v3/login", body)


NodeFn = Callable[..., Awaitable[HomeServer]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def node(tmp_path: Path, database_url: str, clock: FakeClock) -> AsyncIterator[NodeFn]:
    started: list[HomeServer] = []

    async def start(**extra: Any) -> HomeServer:
        hs = await HomeServer.start(node_config(tmp_path, database_url, **extra), clock=clock)
        started.append(hs)
        return hs

    yield start
    for hs in reversed(started):
        await hs.stop()


@pytest.fixture
def api_for(session: aiohttp.ClientSession) -> Callable[[HomeServer, str | None], Api]:
    def make(hs: HomeServer, host: str | None = None) -> Api:
        return Api(session, hs, host)

    return make


@pytest.fixture
async def second_database_url(database_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """Another empty database on the same engine (a dedicated tenant's)."""
    if database_url.startswith("sqlite"):
        yield f"sqlite://{tmp_path / 'dedicated.db'}"
        return
    async with postgres_database() as url:
        yield url
