"""The event graph store on both engines: events, edges, extremities, state at events.

Events here are unsigned hand-made PDUs: the store neither checks nor needs
signatures, and hand-made IDs make the graphs readable.
"""

from __future__ import annotations

from typing import Any

import pytest

from federation.events import Event
from federation.room_versions import ROOM_V10, RoomVersion
from storage.database import Database
from storage.stores.events import EventStore, NewEvent, StoredEvent, StoreStateResolutionView
from storage.stores.state import ResolvedState, StateStore

ROOM = "!room:a.test"
ALICE = "@alice:a.test"
TENANT = "a.test"


def make_event(
    event_id: str,
    type: str,
    *,
    prev: list[str],
    auth: list[str] | None = None,
    depth: int = 1,
    state_key: str | None = None,
    sender: str = ALICE,
    content: dict[str, Any] | None = None,
    room_id: str = ROOM,
    rv: RoomVersion = ROOM_V10,
) -> Event:
    pdu: dict[str, Any] = {
        "type": type,
        "room_id": room_id,
        "sender": sender,
        "content": content or {},
        "prev_events": prev,
        "auth_events": auth or [],
        "depth": depth,
        "origin_server_ts": 1_700_000_000_000 + depth,
        "hashes": {"sha256": "x"},
        "signatures": {},
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    return Event(pdu, event_id, rv)


def stores(db: Database) -> EventStore:
    return EventStore(db, StateStore(db))


async def persist(
    db: Database, store: EventStore, *items: NewEvent, tenant: str = TENANT
) -> None:
    async with db.transaction("test_persist") as txn:
        await store.persist_events_txn(txn, tenant, list(items))


def linear_room() -> list[Event]:
    """create <- alice join <- power levels <- message."""
    create = make_event("$create", "m.room.create", prev=[], depth=1, state_key="",
                        content={"creator": ALICE, "room_version": "10"})
    join = make_event("$join", "m.room.member", prev=["$create"], auth=["$create"], depth=2,
                      state_key=ALICE, content={"membership": "join"})
    pl = make_event("$pl", "m.room.power_levels", prev=["$join"], auth=["$create", "$join"],
                    depth=3, state_key="", content={"users": {ALICE: 100}})
    msg = make_event("$msg", "m.room.message", prev=["$pl"], auth=["$create", "$join", "$pl"],
                     depth=4, content={"body": "hi", "msgtype": "m.text"})
    return [create, join, pl, msg]


def fields(s: StoredEvent) -> tuple[Any, ...]:
    return (
        dict(s.event.pdu), s.stream_ordering, s.rejected_reason, s.soft_failed, s.outlier,
        s.state_group_before, s.state_group_after,
    )


async def table_counts(db: Database) -> dict[str, int]:
    tables = [
        "events", "event_edges", "event_auth_edges", "event_forward_extremities",
        "state_groups", "state_group_entries", "event_graph_counters",
    ]
    out = {}
    for t in tables:
        out[t] = int(await db.fetchval(f"SELECT COUNT(*) FROM {t}"))
    out["counter_sum"] = int(await db.fetchval("SELECT SUM(value) FROM event_graph_counters"))
    return out


async def test_persist_and_load_roundtrip(database: Database) -> None:
    store = stores(database)
    events = linear_room()
    # The JSON keeps what it was given, non-ASCII and large integers included.
    events[3].pdu["content"]["body"] = "héllo 😀 \u2028"  # type: ignore[index]
    events[3].pdu["content"]["n"] = 9007199254740991  # type: ignore[index]
    await persist(database, store, *(NewEvent(e) for e in events))

    loaded = await store.get_stored_events(TENANT, [e.event_id for e in events] + ["$nope"])
    assert set(loaded) == {e.event_id for e in events}
    for e in events:
        got = loaded[e.event_id]
        assert got.event.pdu == e.pdu
        assert got.event.room_version is ROOM_V10
        assert got.event.rejected_reason is None
        assert not got.outlier and not got.soft_failed
    orders = [loaded[e.event_id].stream_ordering for e in events]
    assert orders == sorted(orders) and len(set(orders)) == 4
    assert await store.get_max_stream_ordering(TENANT) == orders[-1]

    stream = await store.get_stream_events(TENANT, orders[0], 10, room_id=ROOM)
    assert [s.event.event_id for s in stream] == ["$join", "$pl", "$msg"]

    # The state before and after each event.
    assert await store.get_state_before(TENANT, "$create") == {}
    assert await store.get_state_after(TENANT, "$create") == {("m.room.create", ""): "$create"}
    after_pl = {
        ("m.room.create", ""): "$create",
        ("m.room.member", ALICE): "$join",
        ("m.room.power_levels", ""): "$pl",
    }
    assert await store.get_state_after(TENANT, "$pl") == after_pl
    assert await store.get_state_before(TENANT, "$msg") == after_pl
    assert await store.get_state_after(TENANT, "$msg") == after_pl
    # A message event shares its state group with its prev event.
    groups = await store.get_state_groups_for_event(TENANT, "$msg")
    assert groups is not None and groups[0] == groups[1]
    assert groups[0] == (await store.get_state_groups_for_event(TENANT, "$pl"))[1]  # type: ignore[index]


async def test_edges_and_auth_chain(database: Database) -> None:
    store = stores(database)
    await persist(database, store, *(NewEvent(e) for e in linear_room()))
    assert await store.get_prev_event_ids(TENANT, "$pl") == {"$join"}
    assert await store.get_auth_event_ids(TENANT, "$msg") == {"$create", "$join", "$pl"}
    assert await store.get_child_event_ids(TENANT, "$join") == {"$pl"}
    assert await store.get_auth_chain_ids(TENANT, ["$pl"]) == {"$create", "$join"}
    assert await store.get_auth_chain_ids(TENANT, ["$msg"], include_given=True) == {
        "$create", "$join", "$pl", "$msg",
    }
    assert await store.get_auth_chain_ids(TENANT, ["$create"]) == set()

    view = StoreStateResolutionView(store, TENANT)
    got = await view.get_events(["$pl", "$unknown"])
    assert set(got) == {"$pl"}
    assert await view.get_auth_chain_difference([{"$pl"}, {"$join"}]) == {"$pl"}
    assert await view.get_auth_chain_difference([{"$msg"}, {"$create"}]) == {
        "$join", "$pl", "$msg",
    }


async def test_forward_extremities(database: Database) -> None:
    store = stores(database)
    create, join, pl, msg = linear_room()
    await persist(database, store, NewEvent(create), NewEvent(join), NewEvent(pl))
    assert await store.get_forward_extremities(TENANT, ROOM) == ["$pl"]

    # A fork: two children of $pl.
    a = make_event("$a", "m.room.message", prev=["$pl"], depth=4)
    b = make_event("$b", "m.room.message", prev=["$pl"], depth=4)
    await persist(database, store, NewEvent(a), NewEvent(b))
    assert await store.get_forward_extremities(TENANT, ROOM) == ["$a", "$b"]

    # A merge, needing its state passed in: takes both away.
    state = await store.get_state_after(TENANT, "$pl")
    assert state is not None
    merge = make_event("$m", "m.room.message", prev=["$a", "$b"], depth=5)
    with pytest.raises(ValueError, match="state_before"):
        await persist(database, store, NewEvent(merge))
    await persist(database, store, NewEvent(merge, state_before=ResolvedState(state, group=None,
                                                                    predecessor=None)))
    assert await store.get_forward_extremities(TENANT, ROOM) == ["$m"]

    # Rejected and soft-failed events neither become extremities nor replace them.
    rej = make_event("$rej", "m.room.message", prev=["$m"], depth=6)
    soft = make_event("$soft", "m.room.message", prev=["$m"], depth=6)
    await persist(database, store, NewEvent(rej, rejected_reason="auth"), NewEvent(soft, soft_failed=True))
    assert await store.get_forward_extremities(TENANT, ROOM) == ["$m"]
    stored = await store.get_stored_events(TENANT, ["$rej", "$soft"])
    assert stored["$rej"].rejected_reason == "auth"
    assert stored["$rej"].event.rejected_reason == "auth"
    assert stored["$soft"].soft_failed
    # Neither is shown to clients.
    assert [s.event.event_id for s in await store.get_stream_events(TENANT, 0, 100)][-1] == "$m"

    # An event arriving after its child (the child already follows it) is no extremity.
    late_child = make_event("$child", "m.room.message", prev=["$late"], depth=8)
    late = make_event("$late", "m.room.message", prev=["$m"], depth=7)
    state_m = await store.get_state_after(TENANT, "$m")
    assert state_m is not None
    m_groups = await store.get_state_groups_for_event(TENANT, "$m")
    assert m_groups is not None
    await persist(database, store, NewEvent(late_child, state_before=ResolvedState(state_m, m_groups[1])))
    assert await store.get_forward_extremities(TENANT, ROOM) == ["$child", "$m"]
    await persist(database, store, NewEvent(late))
    assert await store.get_forward_extremities(TENANT, ROOM) == ["$child"]

    async with database.transaction("set_extremities") as txn:
        await store.set_forward_extremities_txn(txn, TENANT, ROOM, ["$a", "$b"])
    assert await store.get_forward_extremities(TENANT, ROOM) == ["$a", "$b"]


async def test_rejected_state_event_does_not_change_state(database: Database) -> None:
    store = stores(database)
    create, join, pl, _ = linear_room()
    await persist(database, store, NewEvent(create), NewEvent(join))
    await persist(database, store, NewEvent(pl, rejected_reason="not allowed"))
    before = await store.get_state_before(TENANT, "$pl")
    assert await store.get_state_after(TENANT, "$pl") == before
    assert before is not None and ("m.room.power_levels", "") not in before


async def test_persisting_again_changes_nothing(database: Database) -> None:
    store = stores(database)
    events = linear_room()
    await persist(database, store, *(NewEvent(e) for e in events))
    counts = await table_counts(database)
    first = await store.get_stored_events(TENANT, [e.event_id for e in events])
    # Again, alone, in a batch, and with different markers: the first write stands.
    await persist(database, store, *(NewEvent(e) for e in events))
    await persist(database, store, NewEvent(events[2], rejected_reason="x"), NewEvent(events[2]))
    assert await table_counts(database) == counts
    again = await store.get_stored_events(TENANT, [e.event_id for e in events])
    assert {k: fields(v) for k, v in again.items()} == {k: fields(v) for k, v in first.items()}
    async with database.transaction("again") as txn:
        res = await store.persist_event_txn(txn, TENANT, NewEvent(events[1]))
    assert not res.newly_persisted
    assert res.stream_ordering == first["$join"].stream_ordering


async def test_outlier_then_with_state(database: Database) -> None:
    store = stores(database)
    create, join, pl, msg = linear_room()
    await persist(database, store, NewEvent(pl, outlier=True))
    assert await store.get_state_after(TENANT, "$pl") is None
    assert await store.get_forward_extremities(TENANT, ROOM) == []
    await persist(database, store, NewEvent(create), NewEvent(join), NewEvent(pl), NewEvent(msg))
    stored = await store.get_stored_events(TENANT, ["$pl", "$msg"])
    assert not stored["$pl"].outlier
    assert stored["$pl"].stream_ordering < stored["$msg"].stream_ordering
    after = await store.get_state_after(TENANT, "$pl")
    assert after is not None and after[("m.room.power_levels", "")] == "$pl"
    assert await store.get_forward_extremities(TENANT, ROOM) == ["$msg"]
    assert int(await database.fetchval("SELECT COUNT(*) FROM events")) == 4


async def test_tenants_hold_separate_copies(database: Database) -> None:
    store = stores(database)
    create, join, pl, msg = linear_room()
    await persist(database, store, NewEvent(create), NewEvent(join), NewEvent(pl), tenant="a.test")
    await persist(database, store, NewEvent(create), NewEvent(join), NewEvent(pl, rejected_reason="no"),
                  tenant="b.test")
    await persist(database, store, NewEvent(msg), tenant="a.test")

    assert await store.get_forward_extremities("a.test", ROOM) == ["$msg"]
    assert await store.get_forward_extremities("b.test", ROOM) == ["$join"]
    a = await store.get_stored_events("a.test", ["$pl", "$msg"])
    b = await store.get_stored_events("b.test", ["$pl", "$msg"])
    assert set(a) == {"$pl", "$msg"} and set(b) == {"$pl"}
    assert a["$pl"].rejected_reason is None and b["$pl"].rejected_reason == "no"
    after_a = await store.get_state_after("a.test", "$pl")
    after_b = await store.get_state_after("b.test", "$pl")
    assert after_a is not None and ("m.room.power_levels", "") in after_a
    assert after_b is not None and ("m.room.power_levels", "") not in after_b
    # Each tenant's stream counts its own events from 1.
    assert await store.get_max_stream_ordering("a.test") == 4
    assert await store.get_max_stream_ordering("b.test") == 3
    assert await store.get_auth_chain_ids("c.test", ["$pl"]) == set()

    async with database.transaction("current") as txn:
        groups = await store.get_state_groups_for_event("a.test", "$msg", txn=txn)
        assert groups is not None
        await store.state.set_current_state_group_txn(txn, "a.test", ROOM, "10", groups[1])
    assert await store.state.get_current_state("a.test", ROOM) == after_a
    assert await store.state.get_current_state("b.test", ROOM) == {}
    assert await store.state.get_room_version_id("a.test", ROOM) == "10"
