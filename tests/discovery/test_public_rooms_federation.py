"""Federation ``GET``/``POST /_matrix/federation/v1/publicRooms`` of a real node.

Spec: server-server API "Published Room Directory" (``public_rooms.yaml``),
whose answer is client-server ``public_rooms_response.yaml`` with
``PublishedRoomsChunk`` entries (``public_rooms_chunk.yaml``), and the
``room_types`` filter of MSC3827 (spec v1.4).

The node (``node.test``, client and federation listeners, on both engines)
holds rooms made through its client API, every summary field set by a real
state event; the caller is the signing test peer of
tests/federation_inbound/peer.py (``peer.test``), whose user also joins one
room over federation (make_join/send_join), so remote joins are counted too.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from federation.clock import FakeClock
from federation.room_versions import get_room_version
from storage.stores.room_directory import RoomDirectoryStore
from tests.client.conftest import Client
from tests.discovery.helpers import client_user, start_client_node, walk_both_ways
from tests.federation_inbound.helpers import peer_join
from tests.federation_inbound.peer import NODE, PEER, Peer
from tests.federation_outbound.nodes import Node

P = "/_matrix/federation/v1/publicRooms"


@dataclass
class World:
    node: Node
    peer: Peer
    alice: Client
    bob: Client
    carol: Client
    dave: Client
    #: Published rooms by label: full, space, game, bare.
    rooms: dict[str, str]
    #: Rooms that must never be listed: never published, and unpublished.
    hidden: list[str]


async def _put_state(user: Client, room: str, event_type: str, content: dict[str, Any],
                     state_key: str = "") -> None:
    await user.ok("PUT", f"/rooms/{quote(room)}/state/{event_type}/{quote(state_key)}",
                  content)


async def _join(user: Client, room: str) -> None:
    await user.ok("POST", f"/join/{quote(room)}", {})


@pytest.fixture
async def world(tmp_path: Path, database_url: str) -> AsyncIterator[World]:
    clock = FakeClock()
    node = await start_client_node(tmp_path / "node", NODE, clock, database_url)
    http = aiohttp.ClientSession()
    peer = Peer(PEER, clock, http)
    runner = web.AppRunner(peer.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        peer.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        node.hs.keys.client.destination_overrides[PEER] = peer.url  # type: ignore[union-attr]
        peer.client.destination_overrides[NODE] = node.hs.base_url("federation")
        alice, bob, carol, dave, erin = [
            await client_user(http, node, n) for n in ("alice", "bob", "carol", "dave", "erin")]

        async def create(**body: Any) -> str:
            return str((await alice.ok("POST", "/createRoom", body))["room_id"])

        # Every field, each set after creation (the directory reads current state).
        full = await create(preset="public_chat", visibility="public", name="Stargazing",
                            room_alias_name="astro")
        await _put_state(alice, full, "m.room.name", {"name": "Astronomy club"})
        await _put_state(alice, full, "m.room.topic", {"topic": "Telescopes and star parties"})
        await _put_state(alice, full, "m.room.avatar", {"url": "mxc://node.test/astro"})
        await _put_state(alice, full, "m.room.history_visibility",
                         {"history_visibility": "world_readable"})
        await _put_state(alice, full, "m.room.guest_access", {"guest_access": "can_join"})
        # Joined: alice, bob and the peer's user. Not joined: an invitee, a
        # member who left, a banned member.
        await _join(bob, full)
        await alice.ok("POST", f"/rooms/{quote(full)}/invite", {"user_id": carol.user_id})
        await _join(dave, full)
        await dave.ok("POST", f"/rooms/{quote(full)}/leave", {})
        await _join(erin, full)
        await alice.ok("POST", f"/rooms/{quote(full)}/ban", {"user_id": erin.user_id})
        version = (await node.events.state.get_room_version_id(NODE, full))
        assert version is not None
        await peer_join(peer, full, get_room_version(version))

        space = await create(preset="public_chat", visibility="public", name="Astronomy space",
                             topic="to be removed", creation_content={"type": "m.space"})
        await _put_state(alice, space, "m.room.topic", {"topic": ""})  # spec: unsets it
        await _join(bob, space)
        game = await create(preset="public_chat", visibility="public", name="Gardening game",
                            topic="Compost heaps and allotments",
                            creation_content={"type": "org.example.game"})
        await _put_state(alice, game, "m.room.join_rules", {"join_rule": "knock"})
        bare = await create(preset="public_chat", visibility="public")
        # Not an mxc:// URI: PublishedRoomsChunk's avatar_url cannot carry it.
        await _put_state(alice, bare, "m.room.avatar", {"url": "https://example.org/a.png"})

        private = await create(preset="public_chat", name="Astronomy staff")
        withdrawn = await create(preset="public_chat", visibility="public",
                                 name="Astronomy archive")
        await alice.ok("PUT", f"/directory/list/room/{quote(withdrawn)}",
                       {"visibility": "private"})
        yield World(node, peer, alice, bob, carol, dave,
                    {"full": full, "space": space, "game": game, "bare": bare},
                    [private, withdrawn])
    finally:
        await node.hs.stop()
        await runner.cleanup()
        await http.close()


def _expected(w: World) -> dict[str, dict[str, Any]]:
    r = w.rooms
    return {
        "full": {"room_id": r["full"], "name": "Astronomy club",
                 "topic": "Telescopes and star parties", "canonical_alias": "#astro:node.test",
                 "avatar_url": "mxc://node.test/astro", "num_joined_members": 3,
                 "world_readable": True, "guest_can_join": True, "join_rule": "public"},
        "space": {"room_id": r["space"], "name": "Astronomy space", "num_joined_members": 2,
                  "world_readable": False, "guest_can_join": False, "join_rule": "public",
                  "room_type": "m.space"},
        "game": {"room_id": r["game"], "name": "Gardening game",
                 "topic": "Compost heaps and allotments", "num_joined_members": 1,
                 "world_readable": False, "guest_can_join": False, "join_rule": "knock",
                 "room_type": "org.example.game"},
        "bare": {"room_id": r["bare"], "num_joined_members": 1, "world_readable": False,
                 "guest_can_join": False, "join_rule": "public"},
    }


def _order(w: World, *labels: str) -> list[str]:
    """Room IDs of ``labels`` in directory order: most joined first, then room ID."""
    exp = _expected(w)
    return [exp[k]["room_id"] for k in sorted(
        labels, key=lambda k: (-exp[k]["num_joined_members"], exp[k]["room_id"]))]


async def _ok(peer: Peer, method: str, body: Any = None,
              query: dict[str, Any] | None = None) -> dict[str, Any]:
    status, got = await peer.request(method, P, body, query=query)
    assert status == 200, (method, body, query, got)
    assert isinstance(got, dict)
    return got


def _ids(body: dict[str, Any]) -> list[str]:
    return [str(r["room_id"]) for r in body["chunk"]]


async def test_every_chunk_field_from_real_state(world: World) -> None:
    w = world
    exp = _expected(w)
    for got in (await _ok(w.peer, "GET"), await _ok(w.peer, "POST", {})):
        assert set(got) == {"chunk", "total_room_count_estimate"}  # one page: no tokens
        assert got["total_room_count_estimate"] == 4
        # Exact entries: every field set is there, every field unset is absent.
        assert got["chunk"] == [exp[k] for k in sorted(
            exp, key=lambda k: (-exp[k]["num_joined_members"], exp[k]["room_id"]))]
        for hidden in w.hidden:
            assert hidden not in _ids(got)
    # The counts follow membership: bob leaving the club is one fewer.
    await w.bob.ok("POST", f"/rooms/{quote(w.rooms['full'])}/leave", {})
    got = await _ok(w.peer, "GET")
    club = next(c for c in got["chunk"] if c["room_id"] == w.rooms["full"])
    assert club["num_joined_members"] == 2


async def test_generic_search_term_matches_name_topic_and_alias(world: World) -> None:
    w = world

    async def search(term: str, **extra: Any) -> list[str]:
        got = await _ok(w.peer, "POST", {"filter": {"generic_search_term": term, **extra}})
        assert got["total_room_count_estimate"] == len(got["chunk"])
        return _ids(got)

    assert await search("astronomy") == _order(w, "full", "space")  # names
    assert await search("TELESCOPES") == _order(w, "full")  # topic, any case
    assert await search("compost heaps") == _order(w, "game")  # topic words in order
    assert await search("#astro:") == _order(w, "full")  # canonical alias
    assert await search("zeppelin") == []
    # Only the summary's text is searched, never the room ID: a piece of one
    # (or the server name it may carry) finds nothing.
    assert await search(w.rooms["bare"][1:9]) == []
    # An empty term is no filter.
    assert await search("") == _order(w, "full", "space", "game", "bare")
    # The term combines with room_types.
    assert await search("astronomy", room_types=[None]) == _order(w, "full")


async def test_room_types_filter(world: World) -> None:
    w = world

    async def types(room_types: Any) -> list[str]:
        return _ids(await _ok(w.peer, "POST", {"filter": {"room_types": room_types}}))

    assert await types(["m.space"]) == _order(w, "space")
    # Spec: null stands for rooms without a room type.
    assert await types([None]) == _order(w, "full", "bare")
    assert await types([None, "m.space"]) == _order(w, "full", "space", "bare")
    assert await types(["org.example.game", "m.space"]) == _order(w, "space", "game")
    assert await types(["org.example.unknown"]) == []
    # MSC3827: "If the room_types filter is not specified or the room_types
    # array is empty, the server should return all rooms no matter the type."
    everything = _order(w, "full", "space", "game", "bare")
    assert await types([]) == everything
    assert _ids(await _ok(w.peer, "POST", {"filter": {}})) == everything


async def test_networks_and_third_party_instances(world: World) -> None:
    w = world
    everything = _order(w, "full", "space", "game", "bare")
    # No application services bridge other networks here: all networks are
    # this directory, and any one third-party instance lists nothing.
    assert _ids(await _ok(w.peer, "GET", query={"include_all_networks": "true"})) == everything
    assert _ids(await _ok(w.peer, "GET", query={"include_all_networks": "false"})) == everything
    assert _ids(await _ok(w.peer, "POST", {"include_all_networks": True})) == everything
    for got in (await _ok(w.peer, "GET", query={"third_party_instance_id": "irc"}),
                await _ok(w.peer, "POST", {"third_party_instance_id": "irc",
                                           "include_all_networks": False})):
        assert got == {"chunk": [], "total_room_count_estimate": 0}


def _token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


async def test_bad_input_is_a_clear_error_and_changes_nothing(world: World) -> None:
    w = world
    db = w.node.hs.database
    directory = RoomDirectoryStore(db)

    async def snapshot() -> tuple[Any, ...]:
        return (await _ok(w.peer, "GET"), await directory.public_room_ids(NODE),
                await w.node.events.get_max_stream_ordering(NODE))

    before = await snapshot()
    gets: list[tuple[dict[str, str], str]] = [
        ({"limit": "-1"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"include_all_networks": "yes"}, "include_all_networks"),
        ({"include_all_networks": "true", "third_party_instance_id": "irc"},
         "third_party_instance_id"),
        ({"since": "garbage"}, "since"),
        ({"since": _token('["x", 1, "!a:node.test"]')}, "since"),
        ({"since": _token('["n", true, "!a:node.test"]')}, "since"),
        ({"since": _token('["n", 1, 5]')}, "since"),
        # Nested past any parser's depth: still our 400, not a crash.
        ({"since": _token("[" * 3000)}, "since"),
    ]
    for query, word in gets:
        status, body = await w.peer.request("GET", P, query=query)
        assert (status, body.get("errcode")) == (400, "M_INVALID_PARAM"), (query, body)
        assert word in body["error"], (query, body)
    posts: list[tuple[Any, str]] = [
        ({"limit": -1}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"limit": True}, "limit"),
        ({"since": 5}, "since"),
        ({"since": "garbage"}, "since"),
        ({"filter": ["astronomy"]}, "filter"),
        ({"filter": {"generic_search_term": 5}}, "generic_search_term"),
        ({"filter": {"room_types": "m.space"}}, "room_types"),
        ({"filter": {"room_types": ["m.space", 5]}}, "room_types"),
        ({"include_all_networks": "true"}, "include_all_networks"),
        ({"third_party_instance_id": 5}, "third_party_instance_id"),
        ({"include_all_networks": True, "third_party_instance_id": "irc"},
         "third_party_instance_id"),
    ]
    for body_in, word in posts:
        status, body = await w.peer.request("POST", P, body_in)
        assert (status, body.get("errcode")) == (400, "M_INVALID_PARAM"), (body_in, body)
        assert word in body["error"], (body_in, body)
    status, body = await w.peer.request("POST", P, ["not", "an", "object"])
    assert (status, body.get("errcode")) == (400, "M_BAD_JSON"), body
    assert await snapshot() == before


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_keyset_tokens_walk_both_ways(world: World, limit: int) -> None:
    w = world
    everything = _order(w, "full", "space", "game", "bare")

    async def get(since: str | None) -> dict[str, Any]:
        query: dict[str, Any] = {"limit": limit}
        if since is not None:
            query["since"] = since
        got = await _ok(w.peer, "GET", query=query)
        assert got["total_room_count_estimate"] == 4
        return got

    async def post(since: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"limit": limit, "filter": {"room_types": [None, "m.space"]}}
        if since is not None:
            body["since"] = since
        return await _ok(w.peer, "POST", body)

    pages = await walk_both_ways(get)
    assert [r for p in pages for r in p] == everything
    assert all(len(p) == limit for p in pages[:-1])
    pages = await walk_both_ways(post)
    assert [r for p in pages for r in p] == _order(w, "full", "space", "bare")
    # A token from GET is good for POST too (it is a position, not a query).
    first = await get(None)
    assert _ids(await post(first["next_batch"])) == [
        r for r in _order(w, "full", "space", "bare")
        if r not in _ids(first)][:limit]


async def test_tokens_survive_rooms_published_and_removed_between_pages(world: World) -> None:
    w = world
    directory = RoomDirectoryStore(w.node.hs.database)
    order = _order(w, "full", "space", "game", "bare")
    page1 = await _ok(w.peer, "GET", query={"limit": 2})
    assert _ids(page1) == order[:2]
    # A room of page 1 leaves the directory: page 2 is still the next two
    # rooms (an offset would now skip one).
    await directory.set_visibility(NODE, w.rooms["space"], False, 0)
    page2 = await _ok(w.peer, "GET", query={"limit": 2, "since": page1["next_batch"]})
    assert _ids(page2) == order[2:]
    assert "next_batch" not in page2
    # A room published ahead of the cursor (most members, so first) does not
    # come back on page 2 (an offset would repeat a room); paging back from
    # page 2 finds it.
    late = str((await w.alice.ok("POST", "/createRoom", {
        "preset": "public_chat", "visibility": "public", "name": "Late night"}))["room_id"])
    for user in (w.bob, w.carol, w.dave):
        await _join(user, late)
    again = await _ok(w.peer, "POST", {"limit": 2, "since": page1["next_batch"]})
    assert _ids(again) == order[2:]
    back = await _ok(w.peer, "GET", query={"limit": 2, "since": page2["prev_batch"]})
    assert _ids(back) == [late, w.rooms["full"]]
    assert "prev_batch" not in back and back["next_batch"]
    # A token of ours stays valid after its room is gone (it is a position).
    await directory.set_visibility(NODE, w.rooms["full"], False, 0)
    forward = await _ok(w.peer, "GET", query={"since": back["next_batch"]})
    assert _ids(forward) == order[2:]
