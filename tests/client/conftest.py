"""Client API fixtures: an in-process node on 127.0.0.1 port 0 with a FakeClock,
on both storage engines, and users with access tokens.

Users are created through the tenants engineer's UserStore (the same rows
``POST /register`` writes) so these tests do not depend on registration.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.clock import FakeClock
from homeserver.config import parse_config
from homeserver.server import HomeServer
from homeserver.signing_key import generate_signing_key_file

SERVER = "hs.test"


def node_config(tmp_path: Path, database_url: str, **extra: Any) -> Any:
    key_path = tmp_path / "signing.key"
    if not key_path.exists():
        generate_signing_key_file(str(key_path), "t1")
    raw: dict[str, Any] = {
        "server_name": SERVER,
        "data_dir": str(tmp_path),
        "database": {"url": database_url},
        "listeners": [{"type": "client", "port": 0}],
        "password_hash_rounds": 4,
    }
    raw.update(extra)
    return parse_config(raw, base_dir=str(tmp_path), env={})


class Client:
    """A logged-in user talking JSON to the node."""

    def __init__(self, session: aiohttp.ClientSession, base: str, user_id: str,
                 token: str) -> None:
        self.session = session
        self.base = base
        self.user_id = user_id
        self.token = token

    async def call(self, method: str, path: str, body: Any = None, *,
                   params: dict[str, str] | None = None, raw: bytes | None = None,
                   token: str | None = None) -> tuple[int, Any]:
        if not path.startswith("/_matrix"):
            path = "/_matrix/client/v3" + path
        headers = {"Authorization": f"Bearer {token or self.token}"}
        kw: dict[str, Any] = {"headers": headers, "params": params}
        if raw is not None:
            kw["data"] = raw
        elif body is not None:
            kw["json"] = body
        async with self.session.request(method, self.base + path, **kw) as r:
            return r.status, await r.json()

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, got = await self.call(method, path, body, **kw)
        assert status == 200, (method, path, status, got)
        return got

    async def create_room(self, **body: Any) -> str:
        return str((await self.ok("POST", "/createRoom", body))["room_id"])

    async def send(self, room_id: str, body: str, txn: str | None = None) -> str:
        txn = txn or secrets.token_hex(6)
        got = await self.ok("PUT", f"/rooms/{room_id}/send/m.room.message/{txn}",
                            {"msgtype": "m.text", "body": body})
        return str(got["event_id"])


class Node:
    def __init__(self, hs: HomeServer, clock: FakeClock, session: aiohttp.ClientSession) -> None:
        self.hs = hs
        self.clock = clock
        self.session = session
        self.base = hs.base_url("client")

    async def user(self, localpart: str, *, admin: bool = False) -> Client:
        user_id = f"@{localpart}:{SERVER}"
        tenant = self.hs.tenants.primary
        store = await tenant.user_store()
        await store.create_user(user_id, None, admin=admin, now_ms=self.clock.time_ms())
        token = secrets.token_urlsafe(24)
        await store.login(user_id, "DEV" + localpart.upper(), token,
                          now_ms=self.clock.time_ms())
        return Client(self.session, self.base, user_id, token)

    async def count(self, table: str) -> int:
        return int(await self.hs.database.fetchval(f"SELECT COUNT(*) FROM {table}"))


@asynccontextmanager
async def start_node(tmp_path: Path, database_url: str, **extra: Any) -> AsyncIterator[Node]:
    clock = FakeClock()
    hs = await HomeServer.start(node_config(tmp_path, database_url, **extra), clock=clock)
    try:
        async with aiohttp.ClientSession() as session:
            yield Node(hs, clock, session)
    finally:
        await hs.stop()


@pytest.fixture
async def node(tmp_path: Path, database_url: str) -> AsyncIterator[Node]:
    async with start_node(tmp_path, database_url) as n:
        yield n
