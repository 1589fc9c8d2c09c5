"""History over federation: a user of node B pages back through a room of
node A with ``/messages``; what B lacks is backfilled on the way (``GET
/backfill``), and every page is in the room's history order, also for
events that reached B late (``get_missing_events`` and gap filling)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Collection
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from federation.clock import FakeClock
from federation.events import Event
from federation.room_versions import ROOM_V10, ROOM_V11, RoomVersion
from homeserver.federation_sender.outbox import OutboxWriter
from homeserver.handlers.event_creation import EventCreationHandler
from storage.database import Transaction
from tests.federation_outbound.nodes import ClientUser, Node, client_pair, settle

ALICE = "@alice:a.test"
BOB = "@bob:b.test"


@dataclass
class Pair:
    a: Node
    b: Node
    bob: ClientUser
    clock: FakeClock


@pytest.fixture
async def pair_factory(tmp_path: Path) -> AsyncIterator[Any]:
    async with AsyncExitStack() as stack:

        async def make(b_database_url: str | None = None) -> Pair:
            p = await stack.enter_async_context(client_pair(tmp_path, b_database_url))
            return Pair(p.a, p.b, await p.login(p.b, BOB, "BOBDEV"), p.clock)

        yield make


async def join_with_history_limit(p: Pair, room: str, limit: int) -> None:
    """Bob joins through the client API, bringing ``limit`` events of history."""
    ops = await p.b.remote_rooms.for_tenant("b.test")
    ops.joiner._backfill_limit = limit  # the join-time share of history
    await p.bob.ok("POST", f"/join/{quote(room)}", {}, params={"server_name": "a.test"})
    await settle([p.a, p.b])


async def page_all(user: ClientUser, room: str, direction: str, limit: int) -> list[dict[str, Any]]:
    """Every event of ``/messages`` in one direction, from its default start."""
    out: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(1000):
        params = {"dir": direction, "limit": str(limit)}
        if token is not None:
            params["from"] = token
        page = await user.ok("GET", f"/rooms/{quote(room)}/messages", params=params)
        out.extend(page["chunk"])
        token = page.get("end")
        if token is None:
            return out
    raise AssertionError("pagination never ended")


async def history_on_a(a: Node, room: str) -> list[str]:
    """A's own timeline of the room (A received every event live, in order)."""
    return [s.event.event_id for s in await a.events.get_stream_events("a.test", 0, 10_000,
                                                                       room_id=room)]


async def negative_streams(node: Node, room: str) -> int:
    return int(await node.hs.database.fetchval(
        "SELECT COUNT(*) FROM events WHERE room_id = $1 AND stream_ordering < 0", room))


def ids(chunk: list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] for e in chunk]


def bodies(chunk: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in chunk if e["type"] == "m.room.message"]


@pytest.mark.parametrize("rv", [ROOM_V11], ids=lambda v: f"v{v.identifier}")
async def test_paginate_back_through_200_messages(
    pair_factory: Any, database_url: str, rv: RoomVersion
) -> None:
    """Node B on each engine. Join-time backfill brings 30 events; paging
    back fetches the rest, in order, with no duplicates and no gaps."""
    p: Pair = await pair_factory(database_url)
    room = await p.a.create_room(ALICE, rv)
    for i in range(200):
        await p.a.say("a.test", room, ALICE, f"m{i}")
    await join_with_history_limit(p, room, 30)
    assert await negative_streams(p.b, room) == 0

    backwards = await page_all(p.bob, room, "b", 25)
    expected = await history_on_a(p.a, room)
    assert len(set(ids(backwards))) == len(backwards)
    assert ids(backwards) == list(reversed(expected))
    assert bodies(backwards) == [f"m{i}" for i in reversed(range(200))]
    assert backwards[-1]["type"] == "m.room.create"
    # Pagination fetched what the join did not, as backfilled history.
    assert await negative_streams(p.b, room) > 150
    assert await p.b.events.get_backward_extremities("b.test", room) == []

    forwards = await page_all(p.bob, room, "f", 40)
    assert ids(forwards) == expected
    # Backfilled history never comes up as new in an incremental sync; an
    # initial sync's prev_batch continues into the same history.
    first = await p.bob.ok("GET", "/sync")
    timeline = first["rooms"]["join"][room]["timeline"]
    assert ids(timeline["events"]) == expected[-10:]
    older = await p.bob.ok("GET", f"/rooms/{quote(room)}/messages",
                           params={"from": timeline["prev_batch"], "limit": "5"})
    assert ids(older["chunk"]) == list(reversed(expected[-15:-10]))
    await p.a.say("a.test", room, ALICE, "new")
    await settle([p.a, p.b])
    inc = await p.bob.ok("GET", "/sync", params={"since": first["next_batch"]})
    assert bodies(inc["rooms"]["join"][room]["timeline"]["events"]) == ["new"]


class _NoOutbox(OutboxWriter):
    """Keeps events on node A (as if A's deliveries to B were lost)."""

    async def write_event_txn(
        self, txn: Transaction, tenant: str, event: Event, *, exclude: Collection[str] = ()
    ) -> set[str]:
        return set()


async def push(p: Pair, events: list[Event]) -> dict[str, Any]:
    """A sends ``events`` to B in one signed transaction."""
    client = p.a.hs.keys.client  # type: ignore[union-attr]
    resp = await client.put_json(
        "b.test", f"/_matrix/federation/v1/send/{secrets.token_hex(6)}",
        {"origin": "a.test", "origin_server_ts": p.clock.time_ms(),
         "pdus": [dict(e.pdu) for e in events]},
        origin="a.test",
    )
    assert isinstance(resp, dict)
    return resp


async def test_late_events_take_their_place_in_history(pair_factory: Any) -> None:
    p: Pair = await pair_factory()
    room = await p.a.create_room(ALICE, ROOM_V10)
    for i in range(5):
        await p.a.say("a.test", room, ALICE, f"early {i}")
    await join_with_history_limit(p, room, 300)
    a = p.a
    keys = a.hs.keys
    assert keys is not None
    silent = EventCreationHandler(a.hs.database, a.events, p.clock,
                                  lambda n: keys.signing_keys(n)[0],
                                  outbox=_NoOutbox(a.hs.database, a.events, p.clock))

    async def quietly(body: str) -> Event:
        return await silent.create_event("a.test", room, event_type="m.room.message",
                                         sender=ALICE, content={"msgtype": "m.text",
                                                                "body": body})

    # Twenty events B never received; then the last reaches it. B fetches the
    # ten before it (get_missing_events) and fills the gap below them from
    # the state at it: history now has a hole of eight events (x1..x8).
    xs = [await quietly(f"x{i}") for i in range(1, 21)]
    resp = await push(p, [xs[-1]])
    assert resp["pdus"] == {xs[-1].event_id: {}}
    b_has = await p.b.events.have_events("b.test", [x.event_id for x in xs])
    assert b_has == {x.event_id for x in xs[8:]}
    # The hole's events arrive late, after the events that follow them.
    await push(p, xs[:8])
    later = await p.b.events.get_stored_events("b.test", [xs[0].event_id, xs[-1].event_id])
    assert later[xs[0].event_id].stream_ordering > later[xs[-1].event_id].stream_ordering
    expected = await history_on_a(p.a, room)
    assert ids(await page_all(p.bob, room, "b", 7)) == list(reversed(expected))
    assert ids(await page_all(p.bob, room, "f", 7)) == expected

    # The same again, but the hole is never delivered: paging back over it
    # fetches it with /backfill (a gap in the middle of a page).
    ys = [await quietly(f"y{i}") for i in range(1, 21)]
    backfilled_before = await negative_streams(p.b, room)
    await push(p, [ys[-1]])
    assert len(await p.b.events.get_backward_extremities("b.test", room)) == 1
    page = await p.bob.ok("GET", f"/rooms/{quote(room)}/messages",
                          params={"dir": "b", "limit": "30"})
    expected = await history_on_a(p.a, room)
    assert ids(page["chunk"]) == list(reversed(expected))[:30]
    assert bodies(page["chunk"])[:20] == [f"y{i}" for i in range(20, 0, -1)]
    assert await negative_streams(p.b, room) == backfilled_before + 8
    assert await p.b.events.get_backward_extremities("b.test", room) == []
    assert ids(await page_all(p.bob, room, "b", 9)) == list(reversed(expected))


async def on_branch(a: Node, room: str, prevs: list[str], body: str) -> Event:
    """A message on A whose prev_events are exactly ``prevs`` (as if A's view
    of the room ended there: how concurrent senders fork the graph)."""
    ends = await a.events.get_forward_extremities("a.test", room)
    async with a.hs.database.transaction("fork") as txn:
        await a.events.set_forward_extremities_txn(txn, "a.test", room, prevs)
    ev = await a.say("a.test", room, ALICE, body)
    # The other open ends stay open, as when the senders' views merge.
    async with a.hs.database.transaction("fork") as txn:
        await a.events.set_forward_extremities_txn(
            txn, "a.test", room, [e for e in ends if e not in prevs] + [ev.event_id])
    return ev


async def forked_room(a: Node, rv: RoomVersion) -> str:
    """A room on A whose history forks, then merges, several ways:

    * two long branches from one event, written interleaved (so stream
      order zigzags between them), of different lengths, merged;
    * a layer of 15 events on the same prev event (same depth, more than
      the 10 prev_events an event may name), closed by messages that each
      refer to up to 10 of the open ends until one is left;
    * a second two-branch fork whose branches end at different depths.
    """
    room = await a.create_room(ALICE, rv)
    root = await a.say("a.test", room, ALICE, "root")
    left, right = root.event_id, root.event_id
    for i in range(40):
        left = (await on_branch(a, room, [left], f"left {i}")).event_id
        if i < 25:
            right = (await on_branch(a, room, [right], f"right {i}")).event_id
    merge = await on_branch(a, room, [left, right], "merge")
    for i in range(15):
        await on_branch(a, room, [merge.event_id], f"wide {i}")
    await close_forks(a, room, "closing")
    tip = (await a.say("a.test", room, ALICE, "second fork")).event_id
    up, down = tip, tip
    for i in range(12):
        up = (await on_branch(a, room, [up], f"up {i}")).event_id
        if i % 2 == 0:
            down = (await on_branch(a, room, [down], f"down {i}")).event_id
    await on_branch(a, room, [up, down], "merged again")
    # As Synapse under concurrent sends: layers of 5 events made at once on
    # the same view (its 10 deepest open ends), 60 events in all.
    for layer in range(12):
        view = (await a.events.get_forward_extremities("a.test", room))[:10]
        for i in range(5):
            await on_branch(a, room, view, f"layer {layer}.{i}")
    return room


async def close_forks(a: Node, room: str, tag: str) -> None:
    """Messages (each naming up to 10 open ends) until A's graph has one end."""
    for i in range(20):
        if len(await a.events.get_forward_extremities("a.test", room)) == 1:
            return
        await a.say("a.test", room, ALICE, f"{tag} {i}")
    raise AssertionError("the forks never closed")


def assert_history_order(backwards: list[dict[str, Any]], pdus: dict[str, Event]) -> None:
    """Newest first, and never an event after (older than) one it refers to."""
    position = {eid: n for n, eid in enumerate(ids(backwards))}
    for eid, n in position.items():
        for prev in pdus[eid].prev_event_ids:
            assert position.get(prev, len(position)) > n, (eid, prev)
    depths = [pdus[eid].depth for eid in ids(backwards)]
    assert depths == sorted(depths, reverse=True)


@pytest.mark.parametrize("join_history", [0, 30, 300])
@pytest.mark.parametrize("page", [7, 25])
async def test_paginate_back_through_a_forked_history(
    pair_factory: Any, join_history: int, page: int
) -> None:
    """B's user pages back through every event of A's forked room exactly
    once, each after the events it refers to, whether the join brought none,
    part or all of the history."""
    p: Pair = await pair_factory()
    room = await forked_room(p.a, ROOM_V11)
    await close_forks(p.a, room, "closing before the join")
    await join_with_history_limit(p, room, join_history)
    expected = await history_on_a(p.a, room)

    backwards = await page_all(p.bob, room, "b", page)
    got = ids(backwards)
    assert len(got) == len(set(got))
    assert set(got) - set(expected) == set()
    missing = set(expected) - set(got)
    assert not missing, sorted(e.content.get("body", e.type) for e in (await p.a.events.get_events("a.test", missing)).values())
    assert_history_order(backwards, await p.a.events.get_events("a.test", got))
    assert await p.b.events.get_backward_extremities("b.test", room) == []
    forwards = await page_all(p.bob, room, "f", page)
    assert ids(forwards) == list(reversed(got))


async def test_open_ends_at_the_join_come_with_the_events_naming_them(
    pair_factory: Any,
) -> None:
    """A join names at most 10 prev events: with more open ends in the room,
    some of its newest events are not before the join, and no backfill from
    it can find them. They reach B once A's later events name them (missing
    events fetched on receipt), and take their place in B's history."""
    p: Pair = await pair_factory()
    room = await forked_room(p.a, ROOM_V11)
    view = await p.a.events.get_forward_extremities("a.test", room)
    for i in range(15):
        await on_branch(p.a, room, view, f"open {i}")
    open_ends = await p.a.events.get_forward_extremities("a.test", room)
    assert len(open_ends) > 10
    await join_with_history_limit(p, room, 30)
    await close_forks(p.a, room, "closing after the join")
    await settle([p.a, p.b])
    expected = await history_on_a(p.a, room)

    backwards = await page_all(p.bob, room, "b", 7)
    got = ids(backwards)
    assert len(got) == len(set(got))
    missing = set(expected) - set(got)
    assert not missing, sorted(e.content.get("body", e.type) for e in (
        await p.a.events.get_events("a.test", missing)).values())
    assert set(got) == set(expected)
    assert_history_order(backwards, await p.a.events.get_events("a.test", got))
