"""Each tenant's users search the discovery index as if their tenant were a
server of its own (docs/usage/room_discovery.md, "Who sees what").

One node hosts ``n.test`` (its own name) and the tenants ``x.test`` and
``y.test``; ``p.test`` and ``q.test`` are remote (synthetic peers). Trust
domains:

==========  =================================  ==========================
hosted      trusts                             sees the rooms of
==========  =================================  ==========================
``n.test``  n, x, p, q (node-wide)             n, x, p, q
``x.test``  p, n                               x (itself), p, n
``y.test``  q, x                               y (itself), q
==========  =================================  ==========================

``y.test`` trusts ``x.test``, but ``x.test`` does not trust ``y.test``: as
two separate servers neither would read the other's directory (x never sends
to y; x's federation listener refuses y's request), so neither sees the
other's rooms. Every user asks over HTTP with their own access token, at
their tenant's Host.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.clock import FakeClock
from homeserver.discovery.service import discovery_for
from tests.discovery.helpers import SyntheticPeer, make_room, start_nodes
from tests.federation_outbound.nodes import Node

PATH = "/_concord/client/v1/discovery/rooms"
HOSTED = ("n.test", "x.test", "y.test")
REMOTE = ("p.test", "q.test")


@dataclass
class Tenants:
    node: Node
    http: aiohttp.ClientSession
    tokens: dict[str, str]
    rooms: dict[str, str]

    async def search(self, tenant: str, token_of: str | None = None,
                     **params: str) -> tuple[int, Any]:
        headers = {"Host": tenant,
                   "Authorization": f"Bearer {self.tokens[token_of or tenant]}"}
        async with self.http.get(self.node.hs.base_url("client") + PATH, params=params,
                                 headers=headers) as resp:
            return resp.status, await resp.json()

    async def seen(self, tenant: str, **params: str) -> dict[str, str]:
        """Server of each room the tenant's user finds, by room ID."""
        status, body = await self.search(tenant, limit="100", **params)
        assert status == 200, body
        return {r["room_id"]: r["server"] for r in body["chunk"]}

    def of(self, *servers: str) -> dict[str, str]:
        return {self.rooms[s]: s for s in servers}


@pytest.fixture
async def tenants(tmp_path: Path, database_url: str) -> AsyncIterator[Tenants]:
    clock = FakeClock()
    peers = [SyntheticPeer(name, clock, [{"room_id": f"!lounge:{name}",
                                          "num_joined_members": 5,
                                          "name": f"Lounge of {name}"}])
             for name in REMOTE]
    for p in peers:
        await p.start()
    config = {
        "listeners": [{"type": "federation", "port": 0, "bind_addresses": ["127.0.0.1"]},
                      {"type": "client", "port": 0, "bind_addresses": ["127.0.0.1"]}],
        "password_hash_rounds": 4,
        "federation": {"trusted_servers": ["n.test", "x.test", "p.test", "q.test"]},
        "tenants": [{"server_name": "x.test", "trusted_servers": ["p.test", "n.test"]},
                    {"server_name": "y.test", "trusted_servers": ["q.test", "x.test"]}],
        "discovery": {"enabled": False},
    }
    (n,) = await start_nodes(tmp_path, ["n.test"], clock, extra={"n.test": config},
                             database_urls={"n.test": database_url})
    try:
        overrides = n.hs.keys.client.destination_overrides  # type: ignore[union-attr]
        overrides.update({p.server_name: p.url for p in peers})
        rooms = {p.server_name: f"!lounge:{p.server_name}" for p in peers}
        tokens = {}
        for name in HOSTED:
            rooms[name] = await make_room(n, f"@owner:{name}", f"Lounge of {name}",
                                          tenant=name)
            tenant = n.hs.tenants.get(name)
            assert tenant is not None
            _, login = await n.hs.accounts.register(tenant, "alice", "alice-pass-1")
            assert login is not None
            tokens[name] = login.access_token
        results = await discovery_for(n.hs).crawl_once()
        assert {s: r.get("rooms") for s, r in results.items()} == dict.fromkeys(
            HOSTED + REMOTE, 1)
        async with aiohttp.ClientSession() as http:
            yield Tenants(n, http, tokens, rooms)
    finally:
        await n.hs.stop()
        for p in peers:
            await p.stop()


async def test_each_tenant_sees_its_own_trust_domain(tenants: Tenants) -> None:
    t = tenants
    assert await t.seen("n.test") == t.of("n.test", "x.test", "p.test", "q.test")
    assert await t.seen("x.test") == t.of("x.test", "p.test", "n.test")
    assert await t.seen("y.test") == t.of("y.test", "q.test")
    # A word every room name has: the same answer, by relevance.
    assert await t.seen("y.test", q="lounge") == t.of("y.test", "q.test")
    assert await t.seen("x.test", q="lounge", sort="recent") == t.of(
        "x.test", "p.test", "n.test")
    # Asking for a server outside the domain by name finds nothing at all.
    for tenant, hidden in (("y.test", "x.test"), ("y.test", "p.test"), ("x.test", "y.test"),
                           ("x.test", "q.test"), ("n.test", "y.test")):
        status, body = await t.search(tenant, server=hidden)
        assert status == 200 and body["chunk"] == [], (tenant, hidden)
        assert body["total_room_count_estimate"] == 0
    status, body = await t.search("y.test", server="q.test")
    assert [r["room_id"] for r in body["chunk"]] == [t.rooms["q.test"]]
    assert body["chunk"][0]["server_health"] == "online"
    # The counts do not betray the hidden rooms either.
    status, body = await t.search("y.test", limit="1")
    assert body["total_room_count_estimate"] == 2
    assert "next_batch" in body
    status, page2 = await t.search("y.test", limit="1", since=body["next_batch"])
    assert "next_batch" not in page2
    assert {body["chunk"][0]["room_id"], page2["chunk"][0]["room_id"]} == set(
        t.of("y.test", "q.test"))


async def test_a_token_is_good_only_at_its_own_tenant(tenants: Tenants) -> None:
    status, body = await tenants.search("y.test", token_of="x.test")
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, body = await tenants.search("x.test", token_of="n.test")
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")


async def test_trusting_each_other_at_run_time_shows_each_others_rooms(
    tenants: Tenants,
) -> None:
    t = tenants
    trust: Any = t.node.hs.trust
    # x now trusts y too, and y trusted x already: they see each other.
    await trust.set_override("x.test", ["p.test", "n.test", "y.test"])
    assert await t.seen("x.test") == t.of("x.test", "p.test", "n.test", "y.test")
    assert await t.seen("y.test") == t.of("y.test", "q.test", "x.test")
    # y stops trusting x: x no longer sees y (y would refuse it), nor y x.
    await trust.set_override("y.test", ["q.test"])
    assert await t.seen("x.test") == t.of("x.test", "p.test", "n.test")
    assert await t.seen("y.test") == t.of("y.test", "q.test")
    # A tenant that trusts nobody still finds its own rooms.
    await trust.set_override("x.test", [])
    assert await t.seen("x.test") == t.of("x.test")
