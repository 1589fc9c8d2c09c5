"""State resolution v2 / v2.1 scenarios, resolved end to end with the real auth rules.

Spec: ``rooms/fragments/v2-state-res.md`` (v10, v11) and ``rooms/v12.md``
"State resolution" (v12). The scenarios are the well-known hard cases (their
names follow Synapse's ``tests/state/test_v2.py``); each builds a small event
DAG, computes the state before every event by resolving the states after its
``prev_events``, and checks the state at ``END``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation.auth_rules import auth_types_for_event
from federation.events import Event
from federation.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from federation.state_res import (
    InMemoryStateResStore,
    StateResolutionError,
    resolve_state,
)
from federation.state_res._loop import Ticker
from federation.state_res.graph import (
    StateKey,
    auth_chain_difference,
    lexicographical_topological_sort,
)
from federation.state_res.resolve import full_conflicted_set
from federation.state_res.store import EventCache

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
EVELYN = "@evelyn:example.org"
ZARA = "@zara:example.com"

JOIN = {"membership": "join"}
BAN = {"membership": "ban"}
LEAVE = {"membership": "leave"}

TOPIC: StateKey = ("m.room.topic", "")
PL: StateKey = ("m.room.power_levels", "")
JR: StateKey = ("m.room.join_rules", "")

ALL_VERSIONS = [ROOM_V10, ROOM_V11, ROOM_V12]
PRE_V12 = [ROOM_V10, ROOM_V11]


def _ids(versions: Sequence[RoomVersion]) -> list[str]:
    return [f"v{rv.identifier}" for rv in versions]


class FakeEvent:
    """A node of a scenario: what an event says, before its auth/prev events are known."""

    def __init__(
        self,
        node: str,
        sender: str,
        type: str,
        state_key: str | None = None,
        content: Mapping[str, Any] | None = None,
    ) -> None:
        self.node = node
        self.sender = sender
        self.type = type
        self.state_key = state_key
        self.content = dict(content or {})


def member(node: str, sender: str, target: str, content: Mapping[str, Any]) -> FakeEvent:
    return FakeEvent(node, sender, "m.room.member", target, content)


def power(node: str, sender: str, users: Mapping[str, int], **extra: Any) -> FakeEvent:
    return FakeEvent(node, sender, "m.room.power_levels", "", {"users": dict(users), **extra})


def topic(node: str, sender: str) -> FakeEvent:
    return FakeEvent(node, sender, "m.room.topic", "", {"topic": node})


INITIAL_EVENTS = [
    FakeEvent("CREATE", ALICE, "m.room.create", "", {}),
    member("IMA", ALICE, ALICE, JOIN),
    power("IPOWER", ALICE, {ALICE: 100}),
    FakeEvent("IJR", ALICE, "m.room.join_rules", "", {"join_rule": "public"}),
    member("IMB", BOB, BOB, JOIN),
    member("IMC", CHARLIE, CHARLIE, JOIN),
    member("IMZ", ZARA, ZARA, JOIN),
    FakeEvent("START", ZARA, "m.room.message", None, {"body": "start"}),
    FakeEvent("END", ZARA, "m.room.message", None, {"body": "end"}),
]
INITIAL_EDGES = ["START", "IMZ", "IMC", "IMB", "IJR", "IPOWER", "IMA", "CREATE"]


class Scenario:
    """Builds the DAG of ``INITIAL_EVENTS`` plus ``events``; edges point at prev events."""

    def __init__(self, rv: RoomVersion) -> None:
        self.rv = rv
        self.room_id = "!CREATE" if rv.room_id_from_create_event else "!room:example.com"
        self.events: dict[str, Event] = {}
        self.state_after: dict[str, dict[StateKey, str]] = {}
        self.ts = 0

    def event_id(self, node: str) -> str:
        return "$" + node

    def _content(self, fake: FakeEvent) -> dict[str, Any]:
        content = dict(fake.content)
        if fake.type == "m.room.create":
            content["room_version"] = self.rv.identifier
            if not self.rv.implicit_room_creator:
                content["creator"] = fake.sender
        if fake.type == "m.room.power_levels" and self.rv.privileged_room_creators:
            # v12 rule 10.4: creators may not appear in `users`.
            content["users"] = {u: v for u, v in content["users"].items() if u != ALICE}
        return content

    async def build(self, events: Iterable[FakeEvent], edges: Iterable[Sequence[str]]) -> None:
        fakes = {f.node: f for f in [*INITIAL_EVENTS, *events]}
        prevs: dict[str, set[str]] = {node: set() for node in fakes}
        for chain in [INITIAL_EDGES, *edges]:
            for a, b in zip(chain, chain[1:], strict=False):
                prevs[a].add(b)
        order = lexicographical_topological_sort(prevs, key=lambda n: n)
        for node in order:
            fake = fakes[node]
            prev_nodes = sorted(prevs[node])
            if not prev_nodes:
                before: dict[StateKey, str] = {}
            elif len(prev_nodes) == 1:
                before = dict(self.state_after[prev_nodes[0]])
            else:
                before = await resolve_state(
                    self.rv,
                    [self.state_after[p] for p in prev_nodes],
                    InMemoryStateResStore(self.events),
                )
            pdu: dict[str, Any] = {
                "type": fake.type,
                "sender": fake.sender,
                "content": self._content(fake),
                "prev_events": [self.event_id(p) for p in prev_nodes],
                "origin_server_ts": self.ts,
                "depth": 1 + len(self.events),
            }
            self.ts += 1
            if fake.state_key is not None:
                pdu["state_key"] = fake.state_key
            if not (self.rv.room_id_from_create_event and fake.type == "m.room.create"):
                pdu["room_id"] = self.room_id
            types = auth_types_for_event(pdu, self.rv) if fake.type != "m.room.create" else set()
            pdu["auth_events"] = sorted(before[k] for k in types if k in before)
            eid = self.event_id(node)
            self.events[eid] = Event(pdu, eid, self.rv)
            after = dict(before)
            if fake.state_key is not None:
                after[(fake.type, fake.state_key)] = eid
            self.state_after[node] = after

    def changed_at_end(self, keep: Iterable[StateKey] = ()) -> dict[StateKey, str]:
        start, end = self.state_after["START"], self.state_after["END"]
        keep = set(keep)
        return {k: v for k, v in end.items() if k in keep or start.get(k) != v}

    def expect(self, *nodes: str) -> dict[StateKey, str]:
        out: dict[StateKey, str] = {}
        for node in nodes:
            ev = self.events[self.event_id(node)]
            out[ev.state_tuple] = ev.event_id
        return out


async def do_check(
    rv: RoomVersion,
    events: list[FakeEvent],
    edges: list[list[str]],
    expected: Sequence[str],
) -> Scenario:
    sc = Scenario(rv)
    await sc.build(events, edges)
    want = sc.expect(*expected)
    assert sc.changed_at_end(keep=want) == want
    return sc


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=_ids(ALL_VERSIONS))
async def test_ban_vs_pl(rv: RoomVersion) -> None:
    # Alice bans Bob while Bob, concurrently, re-sends the power levels. The
    # ban is ordered first (Alice has more power), so Bob's event fails.
    events = [
        power("PA", ALICE, {ALICE: 100, BOB: 50}),
        member("MA", ALICE, ALICE, JOIN),
        member("MB", ALICE, BOB, BAN),
        power("PB", BOB, {ALICE: 100, BOB: 50}),
    ]
    edges = [["END", "MB", "MA", "PA", "START"], ["END", "PB", "PA"]]
    await do_check(rv, events, edges, ["PA", "MA", "MB"])


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=_ids(ALL_VERSIONS))
async def test_join_rule_evasion(rv: RoomVersion) -> None:
    # Evelyn joins a public room while Alice makes it invite-only: the join
    # rules change is a power event, applied first, and the join then fails.
    events = [
        FakeEvent("JR", ALICE, "m.room.join_rules", "", {"join_rule": "invite"}),
        member("ME", EVELYN, EVELYN, JOIN),
    ]
    edges = [["END", "JR", "START"], ["END", "ME", "START"]]
    sc = await do_check(rv, events, edges, ["JR"])
    assert ("m.room.member", EVELYN) not in sc.state_after["END"]


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=_ids(ALL_VERSIONS))
async def test_offtopic_pl(rv: RoomVersion) -> None:
    events = [
        power("PA", ALICE, {ALICE: 100, BOB: 50}),
        power("PB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 50}),
        power("PC", CHARLIE, {ALICE: 100, BOB: 50, CHARLIE: 0}),
    ]
    edges = [["END", "PC", "PB", "PA", "START"], ["END", "PA"]]
    await do_check(rv, events, edges, ["PC"])


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=_ids(ALL_VERSIONS))
async def test_topic_basic(rv: RoomVersion) -> None:
    events = [
        topic("T1", ALICE),
        power("PA1", ALICE, {ALICE: 100, BOB: 50}),
        topic("T2", ALICE),
        power("PA2", ALICE, {ALICE: 100, BOB: 0}),
        power("PB", BOB, {ALICE: 100, BOB: 50}),
        topic("T3", BOB),
    ]
    edges = [["END", "PA2", "T2", "PA1", "T1", "START"], ["END", "T3", "PB", "PA1"]]
    await do_check(rv, events, edges, ["PA2", "T2"])


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=_ids(ALL_VERSIONS))
async def test_topic_reset(rv: RoomVersion) -> None:
    # Bob's topic loses when Bob is banned: the topic resets to Alice's.
    events = [
        topic("T1", ALICE),
        power("PA", ALICE, {ALICE: 100, BOB: 50}),
        topic("T2", BOB),
        member("MB", ALICE, BOB, BAN),
    ]
    edges = [["END", "MB", "T2", "PA", "T1", "START"], ["END", "T1"]]
    await do_check(rv, events, edges, ["T1", "MB", "PA"])


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=_ids(ALL_VERSIONS))
async def test_topic(rv: RoomVersion) -> None:
    events = [
        topic("T1", ALICE),
        power("PA1", ALICE, {ALICE: 100, BOB: 50}),
        topic("T2", ALICE),
        power("PA2", ALICE, {ALICE: 100, BOB: 0}),
        power("PB", BOB, {ALICE: 100, BOB: 50}),
        topic("T3", BOB),
        FakeEvent("MZ1", ZARA, "m.room.message", None, {"body": "hi"}),
        topic("T4", ALICE),
    ]
    edges = [
        ["END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"],
        ["END", "MZ1", "T3", "PB", "PA1"],
    ]
    await do_check(rv, events, edges, ["T4", "PA2"])


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=_ids(ALL_VERSIONS))
async def test_mainline_sort(rv: RoomVersion) -> None:
    # T3 wins although T4 is later: T3 cites a later power levels event on
    # the mainline of the resolved power levels (PA2) than T4 does (PA1).
    events = [
        topic("T1", ALICE),
        power("PA1", ALICE, {ALICE: 100, BOB: 50}),
        topic("T2", ALICE),
        power("PA2", ALICE, {ALICE: 100, BOB: 50}, events={"m.room.power_levels": 100}),
        power("PB", BOB, {ALICE: 100, BOB: 50}),
        topic("T3", BOB),
        topic("T4", ALICE),
    ]
    edges = [
        ["END", "T3", "PA2", "T2", "PA1", "T1", "START"],
        ["END", "T4", "PB", "PA1"],
    ]
    await do_check(rv, events, edges, ["T3", "PA2"])


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=_ids(ALL_VERSIONS))
async def test_concurrent_joins_and_leaves(rv: RoomVersion) -> None:
    # Independent membership changes on two branches all survive.
    events = [
        member("ME", EVELYN, EVELYN, JOIN),
        member("LB", BOB, BOB, LEAVE),
        member("KC", ALICE, CHARLIE, LEAVE),  # a kick: a power event
    ]
    edges = [["END", "ME", "START"], ["END", "LB", "START"], ["END", "KC", "START"]]
    await do_check(rv, events, edges, ["ME", "LB", "KC"])


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=_ids(ALL_VERSIONS))
async def test_concurrent_join_and_kick_of_same_user(rv: RoomVersion) -> None:
    # Zara leaves and rejoins while Alice kicks her: the kick (a power
    # event) is applied first; the rejoin is then allowed again (public room).
    events = [
        member("LZ", ZARA, ZARA, LEAVE),
        member("JZ", ZARA, ZARA, JOIN),
        member("KZ", ALICE, ZARA, LEAVE),
    ]
    edges = [["END", "JZ", "LZ", "START"], ["END", "KZ", "START"]]
    await do_check(rv, events, edges, ["JZ"])


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=_ids(ALL_VERSIONS))
async def test_power_level_fork_lower_power_loses(rv: RoomVersion) -> None:
    # Alice and Bob both change the power levels at once. Alice's (more
    # power) is applied first; Bob's then fails because it removes Charlie,
    # whose level equals Bob's.
    events = [
        power("PA", ALICE, {ALICE: 100, BOB: 50}),
        power("PA2", ALICE, {ALICE: 100, BOB: 50, CHARLIE: 50}),
        power("PB2", BOB, {ALICE: 100, BOB: 50, ZARA: 10}),
    ]
    edges = [["END", "PA2", "PA", "START"], ["END", "PB2", "PA"]]
    await do_check(rv, events, edges, ["PA2"])


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=_ids(ALL_VERSIONS))
async def test_power_level_fork_later_allowed_change_wins(rv: RoomVersion) -> None:
    # Same fork, but Bob's change is allowed on top of Alice's: being ordered
    # after it, it is the one left in the state.
    events = [
        power("PA", ALICE, {ALICE: 100, BOB: 50}),
        power("PA2", ALICE, {ALICE: 100, BOB: 50, ZARA: 5}),
        power("PB2", BOB, {ALICE: 100, BOB: 50, CHARLIE: 10}),
    ]
    edges = [["END", "PA2", "PA", "START"], ["END", "PB2", "PA"]]
    await do_check(rv, events, edges, ["PB2"])


async def test_v12_creator_power_orders_first() -> None:
    # Bob has 100, Alice is the creator. Alice demotes Bob; concurrently and
    # *earlier*, Bob makes the room invite-only. With finite equal power the
    # earlier event would go first; in v12 the creator's infinite power puts
    # the demotion first, and Bob's join rules change then fails.
    events = [
        power("PA", ALICE, {ALICE: 100, BOB: 100}),
        FakeEvent("JRB", BOB, "m.room.join_rules", "", {"join_rule": "invite"}),
        power("PDEMOTE", ALICE, {ALICE: 100, BOB: 0}),
    ]
    edges = [["END", "JRB", "PA", "START"], ["END", "PDEMOTE", "PA"]]
    sc = await do_check(ROOM_V12, events, edges, ["PDEMOTE"])
    assert sc.state_after["END"][JR] == "$IJR"


async def test_v12_conflicted_subgraph_picks_up_intermediate_event() -> None:
    # Bob's membership is conflicted between MB1 and MB2, and MB2 cites PB,
    # which cites MB1: PB lies on the path between two conflicted events. PB
    # is in both states (so not in the auth difference); only v12 adds it.
    events = [
        power("PA", ALICE, {ALICE: 100, BOB: 50}),
        member("MB1", BOB, BOB, {"membership": "join", "displayname": "b1"}),
        power("PB", BOB, {ALICE: 100, BOB: 50, CHARLIE: 1}),
        member("MB2", BOB, BOB, {"membership": "join", "displayname": "b2"}),
    ]
    edges = [["END", "MB2", "PB", "MB1", "PA", "START"], ["END", "PB"]]
    for rv, expect_pb in ((ROOM_V11, False), (ROOM_V12, True)):
        sc = Scenario(rv)
        await sc.build(events, edges)
        # The two states merged at END: after MB2, and after PB.
        sets = [sc.state_after["MB2"], sc.state_after["PB"]]
        cache = EventCache(InMemoryStateResStore(sc.events))
        fcs = await full_conflicted_set(
            rv, sets, cache, InMemoryStateResStore(sc.events), Ticker(100)
        )
        assert {"$MB1", "$MB2"} <= fcs
        assert ("$PB" in fcs) is expect_pb
        assert sc.changed_at_end(keep=[PL]) == sc.expect("PB", "MB2")


async def test_v12_starts_from_empty_state() -> None:
    # v12 replays the conflicted events from nothing; their own auth events
    # stand in for the unconflicted state. The outcome here is the same in
    # both algorithms, and a resolution never loses unconflicted entries.
    events = [
        power("PA", ALICE, {ALICE: 100, BOB: 50}),
        topic("T1", BOB),
        topic("T2", ALICE),
    ]
    edges = [["END", "T1", "PA", "START"], ["END", "T2", "PA"]]
    for rv in (ROOM_V11, ROOM_V12):
        sc = await do_check(rv, events, edges, ["PA", "T2"])
        start = sc.state_after["START"]
        assert set(start) <= set(sc.state_after["END"])


# --- Properties -----------------------------------------------------------

_PROPERTY_EVENTS = [
    topic("T1", ALICE),
    power("PA1", ALICE, {ALICE: 100, BOB: 50}),
    topic("T2", ALICE),
    power("PA2", ALICE, {ALICE: 100, BOB: 0}),
    power("PB", BOB, {ALICE: 100, BOB: 50}),
    topic("T3", BOB),
    member("MB", ALICE, BOB, BAN),
    member("LZ", ZARA, ZARA, LEAVE),
    FakeEvent("JR", ALICE, "m.room.join_rules", "", {"join_rule": "invite"}),
    member("ME", EVELYN, EVELYN, JOIN),
]
_PROPERTY_EDGES = [
    ["END", "PA2", "T2", "PA1", "T1", "START"],
    ["END", "T3", "PB", "PA1"],
    ["END", "MB", "PA1"],
    ["END", "LZ", "T1"],
    ["END", "ME", "START"],
    ["END", "JR", "START"],
]
_BRANCH_TIPS = ["PA2", "T3", "MB", "LZ", "ME", "JR", "START", "T1"]
_scenarios: dict[str, Scenario] = {}


async def _property_scenario(rv: RoomVersion) -> Scenario:
    if rv.identifier not in _scenarios:
        sc = Scenario(rv)
        await sc.build(_PROPERTY_EVENTS, _PROPERTY_EDGES)
        _scenarios[rv.identifier] = sc
    return _scenarios[rv.identifier]


class ShufflingStore(InMemoryStateResStore):
    """Returns events in an arbitrary (seeded) order, to catch order dependence."""

    def __init__(self, events: Mapping[str, Event], seed: int) -> None:
        super().__init__(events)
        self._rng = random.Random(seed)

    async def get_events(self, event_ids: Iterable[str]) -> Mapping[str, Event]:
        got = list((await super().get_events(event_ids)).items())
        self._rng.shuffle(got)
        return dict(got)


class DifferenceStore(InMemoryStateResStore):
    """A store that supplies the auth difference itself (the optional fast path)."""

    def __init__(self, events: Mapping[str, Event]) -> None:
        super().__init__(events)
        self.calls = 0

    async def get_auth_chain_difference(self, state_sets: Sequence[Any]) -> set[str]:
        self.calls += 1
        cache = EventCache(InMemoryStateResStore(self._events))
        return await auth_chain_difference(cache, state_sets, Ticker(100))


_settings = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_settings
@given(
    rv=st.sampled_from(ALL_VERSIONS),
    tips=st.lists(st.sampled_from(_BRANCH_TIPS), min_size=2, max_size=4),
    seed=st.integers(0, 2**32 - 1),
    yield_every=st.integers(1, 5),
)
async def test_result_independent_of_input_order(
    rv: RoomVersion, tips: list[str], seed: int, yield_every: int
) -> None:
    sc = await _property_scenario(rv)
    sets = [sc.state_after[t] for t in tips]
    expected = await resolve_state(rv, sets, InMemoryStateResStore(sc.events))
    rng = random.Random(seed)
    shuffled_sets = [dict(rng.sample(list(s.items()), len(s))) for s in sets]
    rng.shuffle(shuffled_sets)
    got = await resolve_state(
        rv, shuffled_sets, ShufflingStore(sc.events, seed), yield_every=yield_every
    )
    assert got == expected
    via_store_diff = await resolve_state(rv, sets, DifferenceStore(sc.events))
    assert via_store_diff == expected


@_settings
@given(rv=st.sampled_from(ALL_VERSIONS), tip=st.sampled_from(_BRANCH_TIPS), n=st.integers(1, 4))
async def test_identical_sets_resolve_to_themselves(rv: RoomVersion, tip: str, n: int) -> None:
    sc = await _property_scenario(rv)
    state = sc.state_after[tip]
    # An empty store: with nothing conflicted, no event is even read.
    assert await resolve_state(rv, [state] * n, InMemoryStateResStore()) == state


async def test_no_state_sets() -> None:
    assert await resolve_state(ROOM_V11, [], InMemoryStateResStore()) == {}


async def test_store_fast_path_is_used() -> None:
    sc = await _property_scenario(ROOM_V11)
    store = DifferenceStore(sc.events)
    await resolve_state(ROOM_V11, [sc.state_after["T3"], sc.state_after["PA2"]], store)
    assert store.calls == 1


async def test_unknown_conflicted_event_is_an_error() -> None:
    sc = await _property_scenario(ROOM_V11)
    state = dict(sc.state_after["START"])
    other = {**state, TOPIC: "$NOPE"}
    with pytest.raises(StateResolutionError, match=r"\$NOPE"):
        await resolve_state(ROOM_V11, [state, other], InMemoryStateResStore(sc.events))


async def test_event_from_another_room_is_an_error() -> None:
    sc = await _property_scenario(ROOM_V11)
    alien_pdu = dict(sc.events["$T1"].pdu)
    alien_pdu["room_id"] = "!elsewhere:example.com"
    events = {**sc.events, "$ALIEN": Event(alien_pdu, "$ALIEN", ROOM_V11)}
    state = sc.state_after["START"]
    with pytest.raises(StateResolutionError, match="several rooms"):
        await resolve_state(
            ROOM_V11, [state, {**state, TOPIC: "$ALIEN"}], InMemoryStateResStore(events)
        )


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=_ids(ALL_VERSIONS))
async def test_rejected_event_is_not_admitted(rv: RoomVersion) -> None:
    # Two topics by Alice; T2 is sent later and so would win, unless it was
    # rejected: then it is left out and T1 stays.
    events = [topic("T1", ALICE), topic("T2", ALICE)]
    edges = [["END", "T1", "START"], ["END", "T2", "START"]]
    sc = Scenario(rv)
    await sc.build(events, edges)
    sets = [sc.state_after["T1"], sc.state_after["T2"]]
    assert (await resolve_state(rv, sets, InMemoryStateResStore(sc.events)))[TOPIC] == "$T2"
    t2 = sc.events["$T2"]
    with_rejected = {**sc.events, "$T2": Event(t2.pdu, "$T2", rv, rejected_reason="auth")}
    got = await resolve_state(rv, sets, InMemoryStateResStore(with_rejected))
    assert got[TOPIC] == "$T1"


@pytest.mark.parametrize("rv", ALL_VERSIONS, ids=_ids(ALL_VERSIONS))
async def test_rejected_auth_event_is_not_used(rv: RoomVersion) -> None:
    # Bob's topic T1 is allowed by PA (Bob at 50), which is also in the
    # other fork's state, so only T1 is conflicted. If PA was rejected it
    # cannot authorise T1: v2 reads PA from the unconflicted state and v12
    # from T1's auth events, and both refuse a rejected event there.
    events = [power("PA", ALICE, {ALICE: 100, BOB: 50}), topic("T1", BOB)]
    edges = [["END", "T1", "PA", "START"], ["END", "PA"]]
    sc = Scenario(rv)
    await sc.build(events, edges)
    sets = [sc.state_after["T1"], sc.state_after["PA"]]
    assert (await resolve_state(rv, sets, InMemoryStateResStore(sc.events)))[TOPIC] == "$T1"
    pa = sc.events["$PA"]
    with_rejected = {**sc.events, "$PA": Event(pa.pdu, "$PA", rv, rejected_reason="auth")}
    got = await resolve_state(rv, sets, InMemoryStateResStore(with_rejected))
    assert TOPIC not in got


async def test_resolution_yields_to_the_event_loop() -> None:
    sc = await _property_scenario(ROOM_V12)
    sets = [sc.state_after[t] for t in _BRANCH_TIPS]
    turns = 0
    done = False

    async def other() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.get_running_loop().create_task(other())
    await resolve_state(ROOM_V12, sets, InMemoryStateResStore(sc.events), yield_every=1)
    done = True
    await task
    # The in-memory store never awaits anything real, so only the
    # resolution's own yields let the other task run.
    assert turns > 10
