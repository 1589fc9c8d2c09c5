"""Client ``GET``/``POST /_matrix/client/v3/publicRooms`` with ``server`` a
remote server: asked live over federation.

Spec: client-server API "Published room directory" (``list_public_rooms.yaml``:
``server`` is "the server to fetch the published room directory from"),
answered through the server-server API "Published Room Directory".

``a.test`` (the client's server) trusts ``a.test``, ``b.test``,
``old.test`` and ``gone.test``. ``b.test`` is a real node (on both engines)
whose users made its rooms through its client API; ``old.test`` is a
synthetic peer that serves ``GET /publicRooms`` only; ``gone.test`` no longer
answers; ``c.test``, outside the trust domain, is a synthetic peer that
records any request that reaches it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from federation.clock import FakeClock
from tests.client.conftest import Client
from tests.discovery.helpers import (
    SyntheticPeer,
    client_user,
    start_client_node,
    walk_both_ways,
)
from tests.federation_outbound.nodes import Node, link

B = "b.test"


@dataclass
class World:
    a: Node
    b: Node
    #: A user of a.test, asking for other servers' directories.
    alice: Client
    #: b.test's room owner, and a user of b.test asking its own directory.
    owner: Client
    bob: Client
    rooms: dict[str, str]
    old: SyntheticPeer
    untrusted: SyntheticPeer


@pytest.fixture
async def world(tmp_path: Path, database_url: str) -> AsyncIterator[World]:
    clock = FakeClock()
    fed = {"verify_certificates": True, "trusted_key_servers": []}
    a = await start_client_node(tmp_path / "a", "a.test", clock, extra={"federation": {
        **fed, "trusted_servers": ["a.test", B, "old.test", "gone.test"]}})
    b = await start_client_node(tmp_path / "b", B, clock, database_url)
    old = SyntheticPeer("old.test", clock, [
        {"room_id": "!old:old.test", "num_joined_members": 7, "world_readable": False,
         "guest_can_join": False, "name": "Old timers"}])
    untrusted = SyntheticPeer("c.test", clock, [])
    gone = SyntheticPeer("gone.test", clock, [])
    http = aiohttp.ClientSession()
    try:
        for peer in (old, untrusted, gone):
            await peer.start()
        await gone.stop()  # its port now refuses connections
        link([a, b])
        a.hs.keys.client.destination_overrides.update(  # type: ignore[union-attr]
            {p.server_name: p.url for p in (old, untrusted, gone)})
        alice = await client_user(http, a, "alice")
        owner, bob, u1, u2 = [await client_user(http, b, n)
                              for n in ("owner", "bob", "u1", "u2")]

        async def create(*joiners: Client, **body: Any) -> str:
            room = str((await owner.ok("POST", "/createRoom", {
                "preset": "public_chat", "visibility": "public", **body}))["room_id"])
            for user in joiners:
                await user.ok("POST", f"/join/{quote(room)}", {})
            return room

        rooms = {
            "club": await create(u1, u2, name="Sailing club", topic="Dinghies and keelboats",
                                 room_alias_name="sail"),
            "fleet": await create(u1, name="Sailing fleet",
                                  creation_content={"type": "m.space"}),
            "rowing": await create(name="Rowing"),
            "knit": await create(name="Knitting circle", topic="Wool and needles"),
            "chess": await create(name="Chess clubs", creation_content={"type": "m.space"}),
        }
        await owner.ok("POST", "/createRoom", {"preset": "public_chat", "name": "Sailing staff"})
        yield World(a, b, alice, owner, bob, rooms, old, untrusted)
    finally:
        await http.close()
        for peer in (old, untrusted):
            await peer.stop()
        await a.hs.stop()
        await b.hs.stop()


def _ids(body: dict[str, Any]) -> list[str]:
    return [str(r["room_id"]) for r in body["chunk"]]


async def test_remote_directory_is_the_remote_servers_own_answer(world: World) -> None:
    w = world
    remote = {"server": B}
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({}, set(w.rooms)),
        ({"filter": {"generic_search_term": "SAILING"}}, {"club", "fleet"}),
        ({"filter": {"generic_search_term": "needles"}}, {"knit"}),
        ({"filter": {"generic_search_term": "#sail:"}}, {"club"}),
        ({"filter": {"room_types": ["m.space"]}}, {"fleet", "chess"}),
        ({"filter": {"room_types": [None]}}, {"club", "rowing", "knit"}),
        ({"filter": {"generic_search_term": "sail", "room_types": [None]}}, {"club"}),
        ({"filter": {"room_types": []}}, set(w.rooms)),
        ({"filter": {"generic_search_term": "zeppelin"}}, set()),
        ({"include_all_networks": True}, set(w.rooms)),
        ({"third_party_instance_id": "irc"}, set()),
    ]
    for body, labels in cases:
        # What a user of b.test sees of its own directory, a user of a.test
        # sees through b.test's federation API: the same entries, same order.
        own = await w.bob.ok("POST", "/publicRooms", body)
        seen = await w.alice.ok("POST", "/publicRooms", body, params=remote)
        assert seen == own, body
        assert set(_ids(seen)) == {w.rooms[k] for k in labels}, body
    own = await w.bob.ok("GET", "/publicRooms")
    assert await w.alice.ok("GET", "/publicRooms", params=remote) == own
    members = [r["num_joined_members"] for r in own["chunk"]]
    assert members == [3, 2, 1, 1, 1] and own["total_room_count_estimate"] == 5
    club = own["chunk"][0]
    assert (club["room_id"], club["name"], club["canonical_alias"], club["topic"]) == (
        w.rooms["club"], "Sailing club", "#sail:b.test", "Dinghies and keelboats")
    assert {r["room_id"]: r.get("room_type") for r in own["chunk"]}[w.rooms["fleet"]] == (
        "m.space")
    # Live, not from an index: a rename on b.test shows at once.
    await w.owner.ok("PUT", f"/rooms/{quote(w.rooms['rowing'])}/state/m.room.name/",
                     {"name": "Rowing eights"})
    found = await w.alice.ok("POST", "/publicRooms",
                             {"filter": {"generic_search_term": "eights"}}, params=remote)
    assert [(r["room_id"], r["name"]) for r in found["chunk"]] == [
        (w.rooms["rowing"], "Rowing eights")]


@pytest.mark.parametrize("limit", [2, 3])
async def test_remote_directory_pages_each_room_once(world: World, limit: int) -> None:
    w = world

    async def get(since: str | None) -> dict[str, Any]:
        params = {"server": B, "limit": str(limit)}
        if since is not None:
            params["since"] = since
        got: dict[str, Any] = await w.alice.ok("GET", "/publicRooms", params=params)
        assert got["total_room_count_estimate"] == 5
        return got

    def post(flt: dict[str, Any]) -> Any:
        async def fetch(since: str | None) -> dict[str, Any]:
            body: dict[str, Any] = {"limit": limit, "filter": flt}
            if since is not None:
                body["since"] = since
            got: dict[str, Any] = await w.alice.ok("POST", "/publicRooms", body,
                                                   params={"server": B})
            return got
        return fetch

    everything = _ids(await w.bob.ok("GET", "/publicRooms"))
    pages = await walk_both_ways(get)
    assert [r for p in pages for r in p] == everything
    assert [len(p) for p in pages[:-1]] == [limit] * (len(pages) - 1)
    pages = await walk_both_ways(post({"generic_search_term": "s"}))  # all but "Rowing"
    assert [r for p in pages for r in p] == [r for r in everything if r != w.rooms["rowing"]]
    pages = await walk_both_ways(post({"room_types": [None, "m.space"]}))
    assert [r for p in pages for r in p] == everything


async def test_remote_failures_are_clear_matrix_errors(world: World) -> None:
    w = world

    async def refused(method: str, server: str, body: Any = None,
                      **params: str) -> tuple[int, str, str]:
        status, got = await w.alice.call(method, "/publicRooms",
                                         {} if body is None and method == "POST" else body,
                                         params={"server": server, **params})
        assert set(got) == {"errcode", "error"}, got
        return status, got["errcode"], got["error"]

    # Outside the trust domain: refused before anything is sent.
    for method in ("GET", "POST"):
        status, errcode, error = await refused(method, "c.test")
        assert (status, errcode) == (403, "M_FORBIDDEN")
        assert "c.test is not in the trust domain of a.test" in error
    assert w.untrusted.requests == []
    # A server that does not answer.
    for method in ("GET", "POST"):
        status, errcode, error = await refused(method, "gone.test")
        assert (status, errcode) == (502, "M_UNKNOWN")
        assert error.startswith("Cannot list the public rooms of gone.test: ")
    # A server that fails the request (old.test has no POST publicRooms).
    assert _ids(await w.alice.ok("GET", "/publicRooms", params={"server": "old.test"})) == [
        "!old:old.test"]
    status, errcode, error = await refused(
        "POST", "old.test", {"filter": {"generic_search_term": "old"}})
    assert (status, errcode) == (502, "M_UNKNOWN")
    assert error.startswith("Cannot list the public rooms of old.test: ")
    # The remote server's own 4xx comes back as it is: a token it never made.
    status, errcode, error = await refused("GET", B, since="garbage")
    assert (status, errcode) == (400, "M_INVALID_PARAM")
    assert error.startswith("Cannot list the public rooms of b.test: ") and "since" in error
    # Bad input is refused here, before any request leaves.
    asked = list(w.old.requests)
    for body, word in (
        ({"limit": -1}, "limit"),
        ({"limit": "5"}, "limit"),
        ({"since": 5}, "since"),
        ({"filter": "sailing"}, "filter"),
        ({"filter": {"generic_search_term": ["sailing"]}}, "generic_search_term"),
        ({"filter": {"room_types": "m.space"}}, "room_types"),
        ({"filter": {"room_types": [1]}}, "room_types"),
        ({"include_all_networks": "yes"}, "include_all_networks"),
        ({"third_party_instance_id": 1}, "third_party_instance_id"),
        ({"include_all_networks": True, "third_party_instance_id": "irc"},
         "third_party_instance_id"),
    ):
        status, errcode, error = await refused("POST", "old.test", body)
        assert (status, errcode) == (400, "M_INVALID_PARAM"), body
        assert word in error, (body, error)
    status, errcode, error = await refused("GET", "old.test", limit="-1")
    assert (status, errcode) == (400, "M_INVALID_PARAM") and "limit" in error
    status, errcode, error = await refused("GET", "not a server name!")
    assert (status, errcode) == (400, "M_INVALID_PARAM") and "server" in error.lower()
    assert w.old.requests == asked
