"""State resolution v2 building blocks that need no auth rules.

Spec: ``rooms/fragments/v2-state-res.md`` "Definitions", ``rooms/v12.md``
"Conflicted state subgraph".
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from federation.events import Event
from federation.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from federation.state_res import InMemoryStateResStore
from federation.state_res._loop import Ticker
from federation.state_res.graph import (
    auth_chain_difference,
    conflicted_subgraph,
    lexicographical_topological_sort,
    separate,
)
from federation.state_res.ordering import (
    auth_events_by_key,
    is_power_event,
    mainline_order,
    reverse_topological_power_order,
    sender_power_level,
)
from federation.state_res.store import EventCache

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CAROL = "@carol:example.com"


def ev(
    eid: str,
    *,
    type: str = "m.room.member",
    sender: str = ALICE,
    state_key: str | None = "",
    content: Mapping[str, Any] | None = None,
    auth: Iterable[str] = (),
    ts: int = 0,
    rv: RoomVersion = ROOM_V11,
    room_id: str | None = "!room:example.com",
) -> Event:
    pdu: dict[str, Any] = {
        "type": type,
        "sender": sender,
        "content": dict(content or {}),
        "auth_events": list(auth),
        "prev_events": [],
        "origin_server_ts": ts,
        "depth": 1,
    }
    if room_id is not None:
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    return Event(pdu, eid, rv)


def cache_of(*events: Event) -> EventCache:
    return EventCache(InMemoryStateResStore(events))


async def fetched(*events: Event) -> EventCache:
    cache = cache_of(*events)
    await cache.fetch(e.event_id for e in events)
    return cache


def test_separate_splits_by_key_and_value() -> None:
    s1 = {("a", ""): "$1", ("b", ""): "$2", ("c", ""): "$3"}
    s2 = {("a", ""): "$1", ("b", ""): "$9"}
    unconflicted, conflicted = separate([s1, s2])
    assert unconflicted == {("a", ""): "$1"}
    # A key missing from one set is conflicted, holding the values present.
    assert conflicted == {("b", ""): {"$2", "$9"}, ("c", ""): {"$3"}}


def test_separate_identical_sets_have_no_conflict() -> None:
    s = {("a", ""): "$1", ("b", "x"): "$2"}
    assert separate([s, dict(s), dict(s)]) == (s, {})


async def test_auth_difference_counts_the_sets_own_events() -> None:
    # A <- B <- C (C cites B, B cites A). Sets {A, B} and {C}: the chain of
    # {C} is {C, B, A}, of {A, B} is {A, B}; the difference is {C}.
    a = ev("$A")
    b = ev("$B", auth=["$A"])
    c = ev("$C", auth=["$B"])
    diff = await auth_chain_difference(cache_of(a, b, c), [{"$A", "$B"}, {"$C"}], Ticker(100))
    assert diff == {"$C"}


async def test_auth_difference_two_forks() -> None:
    # Root R; fork 1: X1 <- Y1; fork 2: X2. Shared event S in both sets.
    r = ev("$R")
    s = ev("$S", auth=["$R"])
    x1 = ev("$X1", auth=["$R"])
    y1 = ev("$Y1", auth=["$X1"])
    x2 = ev("$X2", auth=["$S"])
    cache = cache_of(r, s, x1, y1, x2)
    diff = await auth_chain_difference(cache, [{"$S", "$Y1"}, {"$S", "$X2"}], Ticker(1))
    assert diff == {"$X1", "$Y1", "$X2"}
    assert await auth_chain_difference(cache, [{"$S", "$Y1"}], Ticker(1)) == set()


async def test_auth_difference_walks_past_unknown_auth_events() -> None:
    # An unknown auth event is still in the chain (the edge names it); it
    # cannot be walked further. The resolution drops unknown IDs later.
    a = ev("$A", auth=["$MISSING"])
    diff = await auth_chain_difference(cache_of(a), [{"$A"}, set()], Ticker(100))
    assert diff == {"$A", "$MISSING"}


async def test_conflicted_subgraph_picks_up_intermediate_events() -> None:
    # C1 <- M <- C2 <- TOP, with a side branch SIDE that only C2 cites.
    # M lies on the path C2 -> M -> C1, SIDE and ROOT (below C1) do not.
    root = ev("$ROOT")
    c1 = ev("$C1", auth=["$ROOT"])
    m = ev("$M", auth=["$C1"])
    side = ev("$SIDE", auth=["$ROOT"])
    c2 = ev("$C2", auth=["$M", "$SIDE"])
    cache = cache_of(root, c1, m, side, c2)
    sub = await conflicted_subgraph(cache, {"$C1", "$C2"}, Ticker(100))
    assert sub == {"$C1", "$M", "$C2"}


async def test_conflicted_subgraph_of_unrelated_events_is_just_them() -> None:
    root = ev("$ROOT")
    c1 = ev("$C1", auth=["$ROOT"])
    c2 = ev("$C2", auth=["$ROOT"])
    sub = await conflicted_subgraph(cache_of(root, c1, c2), {"$C1", "$C2"}, Ticker(100))
    assert sub == {"$C1", "$C2"}


def test_lexicographical_topological_sort() -> None:
    # Edges point at what must come first (auth events).
    graph = {"l": {"o"}, "m": {"n", "o"}, "n": {"o"}, "o": set(), "p": {"o"}}
    assert lexicographical_topological_sort(graph, key=lambda x: x) == ["o", "l", "n", "m", "p"]
    # Reversed key: still topological, ties go the other way.
    inverse = {k: -ord(k) for k in graph}
    assert lexicographical_topological_sort(graph, key=inverse.__getitem__) == [
        "o",
        "p",
        "n",
        "m",
        "l",
    ]


def test_power_events() -> None:
    assert is_power_event(ev("$1", type="m.room.power_levels"))
    assert is_power_event(ev("$2", type="m.room.join_rules"))
    assert is_power_event(ev("$3", state_key=BOB, content={"membership": "ban"}))
    assert is_power_event(ev("$4", state_key=BOB, content={"membership": "leave"}))
    # Leaving by yourself is not a power event; nor is joining or a topic.
    assert not is_power_event(ev("$5", sender=BOB, state_key=BOB, content={"membership": "leave"}))
    assert not is_power_event(ev("$6", state_key=BOB, content={"membership": "invite"}))
    assert not is_power_event(ev("$7", type="m.room.topic"))
    assert not is_power_event(ev("$8", type="m.room.create"))


async def test_sender_power_level_from_auth_events() -> None:
    create = ev("$C", type="m.room.create", content={})
    pl = ev(
        "$PL",
        type="m.room.power_levels",
        content={"users": {ALICE: 100, BOB: 50}, "users_default": 7},
        auth=["$C"],
    )
    cache = await fetched(create, pl)
    for sender, level in ((ALICE, 100), (BOB, 50), (CAROL, 7)):
        e = ev("$E" + sender, type="m.room.topic", sender=sender, auth=["$C", "$PL"])
        assert sender_power_level(e, auth_events_by_key(e, cache)) == level
    # No power levels: the creator has 100, others 0 (v11: creator = sender).
    for sender, level in ((ALICE, 100), (BOB, 0)):
        e = ev("$N" + sender, type="m.room.topic", sender=sender, auth=["$C"])
        assert sender_power_level(e, auth_events_by_key(e, cache)) == level


async def test_sender_power_level_v10_reads_creator_key() -> None:
    create = ev("$C", type="m.room.create", sender=BOB, content={"creator": ALICE}, rv=ROOM_V10)
    e = ev("$E", type="m.room.topic", auth=["$C"], rv=ROOM_V10)
    assert sender_power_level(e, auth_events_by_key(e, await fetched(create))) == 100
    e2 = ev("$E2", type="m.room.topic", sender=BOB, auth=["$C"], rv=ROOM_V10)
    assert sender_power_level(e2, auth_events_by_key(e2, await fetched(create))) == 0


async def test_sender_power_level_v12_creators_are_infinite() -> None:
    # v12: the create event is named by the room ID, not listed in auth_events.
    create = ev(
        "$CREATE",
        type="m.room.create",
        content={"additional_creators": [BOB]},
        rv=ROOM_V12,
        room_id=None,
    )
    pl = ev(
        "$PL",
        type="m.room.power_levels",
        content={"users": {CAROL: 100}},
        rv=ROOM_V12,
        room_id="!CREATE",
    )
    cache = await fetched(create, pl)
    levels = {}
    for sender in (ALICE, BOB, CAROL):
        e = ev("$E" + sender, sender=sender, auth=["$PL"], rv=ROOM_V12, room_id="!CREATE")
        levels[sender] = sender_power_level(e, auth_events_by_key(e, cache))
    assert levels == {ALICE: math.inf, BOB: math.inf, CAROL: 100}


async def test_reverse_topological_power_order_tie_breaks() -> None:
    create = ev("$C", type="m.room.create")
    pl = ev("$PL", type="m.room.power_levels", content={"users": {ALICE: 100, BOB: 50}})
    # Three power events all citing PL: Bob's (lower power) sorts after both
    # of Alice's whatever its timestamp; Alice's two by timestamp, then ID.
    a2 = ev("$A2", type="m.room.join_rules", auth=["$C", "$PL"], ts=5)
    a1 = ev("$A1", type="m.room.join_rules", auth=["$C", "$PL"], ts=5)
    a0 = ev("$A0z", type="m.room.join_rules", auth=["$C", "$PL"], ts=9)
    b = ev("$B", type="m.room.join_rules", sender=BOB, auth=["$C", "$PL"], ts=1)
    # And one that depends on b: must come after it.
    after_b = ev("$AB", type="m.room.power_levels", auth=["$C", "$PL", "$B"], ts=0)
    cache = cache_of(create, pl, a2, a1, a0, b, after_b)
    full = {"$A2", "$A1", "$A0z", "$B", "$AB"}
    await cache.fetch(["$C", "$PL", *full])
    order = await reverse_topological_power_order(full, full, cache, Ticker(2))
    assert order == ["$A1", "$A2", "$A0z", "$B", "$AB"]


async def test_mainline_order() -> None:
    # Mainline P2 -> P1 -> P0 (P2 resolved). Events cite various PLs.
    create = ev("$C", type="m.room.create")
    p0 = ev("$P0", type="m.room.power_levels", auth=["$C"])
    p1 = ev("$P1", type="m.room.power_levels", auth=["$C", "$P0"])
    p2 = ev("$P2", type="m.room.power_levels", auth=["$C", "$P1"])
    off = ev("$OFF", type="m.room.power_levels", auth=["$C", "$P0"])  # forks from P0
    t_none = ev("$TN", type="m.room.topic", auth=["$C"], ts=50)  # position ∞
    t_p0 = ev("$T0", type="m.room.topic", auth=["$C", "$P0"], ts=40)
    t_off = ev("$TOFF", type="m.room.topic", auth=["$C", "$OFF"], ts=10)  # reaches P0
    t_p1 = ev("$T1", type="m.room.topic", auth=["$C", "$P1"], ts=30)
    t_p2a = ev("$T2b", type="m.room.topic", auth=["$C", "$P2"], ts=20)
    t_p2b = ev("$T2a", type="m.room.topic", auth=["$C", "$P2"], ts=20)
    cache = cache_of(create, p0, p1, p2, off, t_none, t_p0, t_off, t_p1, t_p2a, t_p2b)
    ids = ["$T2a", "$T1", "$TOFF", "$T2b", "$TN", "$T0"]
    await cache.fetch(ids)
    order = await mainline_order(ids, "$P2", cache, Ticker(1))
    assert order == ["$TN", "$TOFF", "$T0", "$T1", "$T2a", "$T2b"]
    # With no resolved power levels every position is ∞: timestamp order.
    order = await mainline_order(ids, None, cache, Ticker(1))
    assert order == ["$TOFF", "$T2a", "$T2b", "$T1", "$T0", "$TN"]


async def test_ticker_yields_to_the_loop() -> None:
    ran: list[int] = []

    async def other() -> None:
        ran.append(1)

    task = asyncio.get_running_loop().create_task(other())
    ticker = Ticker(2)
    await ticker.tick()
    assert ran == []  # no yield after one tick
    await ticker.tick()
    assert ran == [1]  # the second tick let the other task run
    await task


def test_ticker_rejects_nonpositive() -> None:
    with pytest.raises(ValueError):
        Ticker(0)
