"""Room discovery across four nodes (docs/usage/room_discovery.md).

Node ``a.test`` crawls; its trust domain is ``b.test`` and ``c.test`` (and
itself); ``d.test`` is outside it although ``discovery.peers`` names it.
Every node has public and private rooms. All timing runs on one FakeClock;
probes and crawls are triggered with ``probe_once``/``crawl_once``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.clock import FakeClock
from homeserver.discovery.service import Discovery, discovery_for
from storage.stores.room_directory import RoomDirectoryStore
from tests.discovery.helpers import SyntheticPeer, make_room, start_nodes
from tests.federation_outbound.nodes import Node, link

NAMES = ("a.test", "b.test", "c.test", "d.test")
TOPICS = {
    "a.test": ("Astronomy nights", "Telescopes and star parties"),
    "b.test": ("Photography club", "Landscape photography and darkroom tips"),
    "c.test": ("Gardening corner", "Tomatoes, compost and allotments"),
    "d.test": ("Chess lounge", "Openings, endgames and blitz"),
}


@dataclass
class World:
    clock: FakeClock
    nodes: dict[str, Node]
    public: dict[str, str]
    private: dict[str, str]
    discovery: Discovery
    engine: str


@pytest.fixture
async def world(tmp_path: Path, database_url: str) -> AsyncIterator[World]:
    clock = FakeClock()
    a_config: dict[str, Any] = {
        "federation": {"verify_certificates": True, "trusted_key_servers": [],
                       "trusted_servers": ["a.test", "b.test", "c.test"]},
        "discovery": {"enabled": False, "peers": ["d.test"], "health_offline_failures": 3,
                      "offline_threshold": "30m", "health_window": "10m"},
        "listeners": [{"type": "federation", "port": 0, "bind_addresses": ["127.0.0.1"]},
                      {"type": "client", "port": 0, "bind_addresses": ["127.0.0.1"]}],
    }
    started = await start_nodes(tmp_path, NAMES, clock, extra={"a.test": a_config},
                                database_urls={"a.test": database_url})
    nodes = {n.name: n for n in started}
    try:
        link(started)
        public, private = {}, {}
        for name, node in nodes.items():
            user = f"@owner:{name}"
            title, topic = TOPICS[name]
            public[name] = await make_room(node, user, title, topic=topic)
            private[name] = await make_room(node, user, f"{title} (staff)", public=False)
        discovery = discovery_for(nodes["a.test"].hs)
        yield World(clock, nodes, public, private, discovery,
                    nodes["a.test"].hs.database.engine)
    finally:
        for n in started:
            await n.hs.stop()


async def _search(d: Discovery, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"tenant": "a.test", "query": None, "limit": None, "since": None,
                            "server": None, "sort": None}
    args.update(kw)
    return await d.search(**args)


async def test_index_holds_exactly_the_public_rooms_of_the_trust_domain(world: World) -> None:
    d = world.discovery
    states = await d.probe_once()
    assert states == {"a.test": "online", "b.test": "online", "c.test": "online",
                      "d.test": "unknown"}
    results = await d.crawl_once()
    assert results["d.test"] == {"skipped": "outside the trust domain"}
    indexed = {s: await d.store.room_ids(s) for s in NAMES}
    assert indexed == {
        "a.test": {world.public["a.test"]}, "b.test": {world.public["b.test"]},
        "c.test": {world.public["c.test"]}, "d.test": set(),
    }
    everything = await _search(d, limit=50)
    assert {(r["server"], r["room_id"]) for r in everything["chunk"]} == {
        (s, world.public[s]) for s in ("a.test", "b.test", "c.test")
    }
    b_room = next(r for r in everything["chunk"] if r["server"] == "b.test")
    assert b_room["name"] == "Photography club" and b_room["server_health"] == "online"
    assert b_room["num_joined_members"] == 1 and b_room["join_rule"] in ("public", "invite")
    peers = {p["server_name"]: p for p in await d.describe_peers()}
    assert peers["d.test"]["crawled"] is False and peers["b.test"]["rooms_indexed"] == 1
    assert peers["b.test"]["last_crawl_ok_ts"] == world.clock.time_ms()
    metrics = world.nodes["a.test"].hs.metrics.exposition().decode()
    assert 'concord_discovery_rooms_indexed{server="b.test"} 1.0' in metrics
    assert 'concord_discovery_peers{state="online"} 3.0' in metrics


async def test_search_by_word_and_by_misspelling(world: World) -> None:
    d = world.discovery
    await d.crawl_once()
    exact = await _search(d, query="compost")
    assert [r["room_id"] for r in exact["chunk"]] == [world.public["c.test"]]
    fuzzy = await _search(d, query="photgraphy")
    if world.engine == "postgres":
        assert await d.store.search_capability() == "fulltext+trigram"
        assert [r["room_id"] for r in fuzzy["chunk"]] == [world.public["b.test"]]
    else:
        assert fuzzy["chunk"] == []  # LIKE has no fuzzy matching
    assert (await _search(d, query="zzzqqq"))["chunk"] == []
    only_c = await _search(d, server="c.test")
    assert [r["server"] for r in only_c["chunk"]] == ["c.test"]


async def test_search_endpoint_over_http(world: World) -> None:
    d = world.discovery
    await d.crawl_once()
    hs = world.nodes["a.test"].hs
    _, login = await hs.accounts.register(hs.tenants.primary, "alice", "alice-pass-1")
    assert login is not None
    url = hs.base_url("client") + "/_concord/client/v1/discovery/rooms"
    headers = {"Authorization": f"Bearer {login.access_token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(url, params={"q": "garden"}, headers=headers) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert [r["room_id"] for r in body["chunk"]] == [world.public["c.test"]]
        assert body["chunk"][0]["server"] == "c.test"
        async with http.get(url, params={"sort": "oldest"}, headers=headers) as resp:
            assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"
        async with http.get(url, params={"since": "garbage"}, headers=headers) as resp:
            assert resp.status == 400 and (await resp.json())["errcode"] == "M_INVALID_PARAM"
        async with http.get(url) as resp:
            assert resp.status == 401


async def test_peer_down_turns_degraded_then_offline_and_leaves_results(world: World) -> None:
    d, clock = world.discovery, world.clock
    await d.probe_once()
    await d.crawl_once()
    await world.nodes["c.test"].hs.stop()
    clock.advance(60)
    assert (await d.probe_once())["c.test"] == "degraded"
    clock.advance(60)
    assert (await d.probe_once())["c.test"] == "degraded"
    clock.advance(60)
    assert (await d.probe_once())["c.test"] == "offline"
    # Offline, but not for long enough: its rooms are still found, marked offline.
    found = await _search(d, query="gardening")
    assert [(r["room_id"], r["server_health"]) for r in found["chunk"]] == [
        (world.public["c.test"], "offline")]
    # An offline peer is not crawled: its rooms stay as they were.
    assert (await d.crawl_once())["c.test"] == {"skipped": "offline"}
    clock.advance(30 * 60)
    assert (await _search(d, query="gardening"))["chunk"] == []
    assert {r["server"] for r in (await _search(d, limit=50))["chunk"]} == {"a.test", "b.test"}
    peer = await d.describe_peer("c.test")
    assert peer is not None and peer["dropped_from_results"] is True
    assert [h["state"] for h in reversed(peer["history"])] == [
        "online", "degraded", "offline"]
    # Still in the trust domain, still probed.
    assert "c.test" in (await d.targets())


async def test_room_made_private_disappears_on_next_crawl(world: World) -> None:
    d = world.discovery
    await d.crawl_once()
    assert await d.store.room_ids("b.test") == {world.public["b.test"]}
    b = world.nodes["b.test"]
    await RoomDirectoryStore(b.hs.database).set_visibility(
        "b.test", world.public["b.test"], False, world.clock.time_ms())
    assert (await d.crawl_once())["b.test"] == {"rooms": 0, "expired": 1}
    assert await d.store.room_ids("b.test") == set()
    assert (await _search(d, query="photography"))["chunk"] == []


async def test_pagination_over_500_rooms_returns_each_once(
    tmp_path: Path, database_url: str
) -> None:
    clock = FakeClock()
    rooms = [
        {"room_id": f"!room{i:03d}:big.test", "num_joined_members": i % 7,
         "world_readable": False, "guest_can_join": False, "name": f"Room {i} of the big hall"}
        for i in range(500)
    ]
    rooms.append({"room_id": "not-a-room", "num_joined_members": 3})  # skipped
    peer = SyntheticPeer("big.test", clock, rooms)
    await peer.start()
    (a,) = await start_nodes(tmp_path, ["a.test"], clock, database_urls={"a.test": database_url},
                             extra={"a.test": {"discovery": {"peers": ["big.test"]}}})
    try:
        a.hs.keys.client.destination_overrides["big.test"] = peer.url  # type: ignore[union-attr]
        d = discovery_for(a.hs)
        assert (await d.crawl_once())["big.test"] == {"rooms": 500, "expired": 0}
        assert peer.requests.count("publicRooms") == 3  # 501 entries, pages of 250
        for sort, query, limit in (("members", None, 37), ("recent", None, 100),
                                   ("relevance", "hall", 64)):
            seen: list[str] = []
            since = None
            while True:
                page = await d.search(tenant="a.test", query=query, limit=limit, since=since,
                                      server=None, sort=sort)
                seen.extend(r["room_id"] for r in page["chunk"])
                assert page["total_room_count_estimate"] == 500
                since = page.get("next_batch")
                if since is None:
                    break
            assert len(seen) == 500 and len(set(seen)) == 500, sort
        members = [r["num_joined_members"] for r in
                   (await d.search(tenant="a.test", query=None, limit=100, since=None,
                                   server="big.test", sort="members"))["chunk"]]
        assert members == sorted(members, reverse=True)
    finally:
        await a.hs.stop()
        await peer.stop()


async def test_admin_api_peers(world: World) -> None:
    hs = world.nodes["a.test"].hs
    _, admin = await hs.accounts.register(hs.tenants.primary, "root", "root-pass-1", admin=True)
    _, user = await hs.accounts.register(hs.tenants.primary, "bob", "bob-pass-1")
    assert admin is not None and user is not None
    base = hs.base_url("client") + "/_concord/admin/v1/discovery"
    as_admin = {"Authorization": f"Bearer {admin.access_token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/crawl", headers=as_admin) as resp:
            assert resp.status == 200
            assert (await resp.json())["results"]["b.test"] == {"rooms": 1, "expired": 0}
        async with http.get(base + "/peers", headers=as_admin) as resp:
            peers = {p["server_name"]: p for p in (await resp.json())["peers"]}
        assert set(peers) == set(NAMES)
        assert peers["c.test"]["state"] == "online" and peers["c.test"]["last_crawl_ts"]
        async with http.put(base + "/peers/e.test", headers=as_admin) as resp:
            assert resp.status == 200 and (await resp.json())["added_by_admin"] is True
        async with http.put(base + "/peers/not%20a%20server", headers=as_admin) as resp:
            assert resp.status == 400
        async with http.delete(base + "/peers/e.test", headers=as_admin) as resp:
            assert resp.status == 200
        async with http.delete(base + "/peers/b.test", headers=as_admin) as resp:
            assert resp.status == 404  # in the trust domain: changed in the config
        async with http.get(base + "/peers/e.test", headers=as_admin) as resp:
            assert resp.status == 404
        async with http.get(base + "/peers",
                            headers={"Authorization": f"Bearer {user.access_token}"}) as resp:
            assert resp.status == 403
