"""State groups on both engines: delta chains, snapshots, caches, and a large room."""

from __future__ import annotations

import random

from federation.room_versions import ROOM_V10
from storage.database import Database
from storage.stores.events import EventStore, NewEvent
from storage.stores.state import ResolvedState, StateKey, StateStore
from tests.storage.test_event_graph import ALICE, ROOM, TENANT, make_event


async def test_delta_chains_resolve_exactly(database: Database) -> None:
    """A random tree of states, with removals and forced snapshots, reads back
    exactly, cold and warm."""
    rng = random.Random(20240501)
    store = StateStore(database)
    model: dict[int | None, dict[StateKey, str]] = {None: {}}
    groups: list[int] = []
    async with database.transaction("build_groups") as txn:
        for step in range(400):
            pred = rng.choice(groups) if groups and rng.random() < 0.3 else (
                groups[-1] if groups else None
            )
            state = dict(model[pred])
            if step % 97 == 96:
                # Nothing in common with the predecessor: stored as a snapshot.
                state = {("m.room.member", f"@new{step}_{i}:x"): f"$n{step}_{i}" for i in range(5)}
            else:
                for _ in range(rng.randint(1, 3)):
                    key = ("m.room.member", f"@u{rng.randint(0, 60)}:x")
                    if key in state and rng.random() < 0.2:
                        del state[key]
                    else:
                        state[key] = f"$e{step}_{rng.randint(0, 9)}"
            group = await store.store_state_txn(
                txn, TENANT, ROOM, ResolvedState(state, predecessor=pred)
            )
            assert group is not None
            # Readable inside the transaction that wrote it.
            assert dict(await store.get_state_group(TENANT, group, txn=txn)) == state
            model[group] = state
            groups.append(group)

    cold = StateStore(database)
    for group in groups:
        assert dict(await cold.get_state_group(TENANT, group)) == model[group]
        assert dict(await store.get_state_group(TENANT, group)) == model[group]
    stats = await store.stats(TENANT, ROOM)
    print(f"\n400 random states: {stats}")
    assert stats.groups == 400
    # The root, the forced snapshots, and nothing forces more than ~log2 reads.
    assert stats.snapshots >= 1 + 4
    assert stats.chain_bound <= 10  # seq < 512
    # Deltas, not copies: far fewer rows than the sum of the states' sizes.
    assert stats.entries < sum(len(model[g]) for g in groups) / 3


async def test_rolled_back_group_never_reaches_the_cache(database: Database) -> None:
    store = StateStore(database)
    first = {("m.room.create", ""): "$create"}

    class Abort(Exception):
        pass

    try:
        async with database.transaction("rolled_back") as txn:
            group = await store.store_state_txn(txn, TENANT, ROOM, ResolvedState(first))
            assert group is not None
            assert dict(await store.get_state_group(TENANT, group, txn=txn)) == first
            raise Abort
    except Abort:
        pass
    second = {("m.room.create", ""): "$other"}
    async with database.transaction("committed") as txn:
        again = await store.store_state_txn(txn, TENANT, ROOM, ResolvedState(second))
    # The ID was handed out again; the cache must not answer with the old state.
    assert again == group
    assert dict(await store.get_state_group(TENANT, again)) == second


async def test_cache_is_bounded_by_entries(database: Database) -> None:
    store = StateStore(database, cache_max_entries=50)
    ids = []
    async with database.transaction("many") as txn:
        pred = None
        for i in range(40):
            state = {("k", str(j)): f"$e{j}" for j in range(i + 1)}
            pred = await store.store_state_txn(
                txn, TENANT, ROOM, ResolvedState(state, predecessor=pred)
            )
            assert pred is not None
            ids.append(pred)
    for n, g in enumerate(ids):
        assert len(await store.get_state_group(TENANT, g)) == n + 1
    assert store._full_cache.size <= 50
    assert store._delta_cache.size <= 50


async def _database_size(db: Database) -> int:
    if db.engine == "sqlite":
        pages = int(await db.fetchval("PRAGMA page_count"))
        return pages * int(await db.fetchval("PRAGMA page_size"))
    return int(await db.fetchval("SELECT pg_database_size(current_database())"))


async def test_room_of_ten_thousand_members(database: Database) -> None:
    """A room that 10,000 users join, persisted in batches; figures are printed."""
    members = 10_000
    batch = 1_000
    store = EventStore(database, StateStore(database))
    create = make_event("$create", "m.room.create", prev=[], depth=1, state_key="",
                        content={"creator": ALICE, "room_version": "10"})
    events = [create]
    for i in range(members):
        user = f"@user{i}:b.test"
        events.append(make_event(
            f"$join{i}", "m.room.member", prev=[events[-1].event_id], auth=["$create"],
            depth=i + 2, state_key=user, sender=user, content={"membership": "join"},
        ))
    for start in range(0, len(events), batch):
        async with database.transaction("persist_joins") as txn:
            await store.persist_events_txn(
                txn, TENANT, [NewEvent(e) for e in events[start : start + batch]]
            )

    last = events[-1].event_id
    state = await store.get_state_after(TENANT, last)
    assert state is not None and len(state) == members + 1
    assert state[("m.room.member", "@user9999:b.test")] == last
    cold = EventStore(database, StateStore(database))
    middle = await cold.get_state_after(TENANT, "$join4999")
    assert middle is not None and len(middle) == 5_001
    assert ("m.room.member", "@user5000:b.test") not in middle
    assert await store.get_forward_extremities(TENANT, ROOM) == [last]

    stats = await store.state.stats(TENANT, ROOM)
    size = await _database_size(database)
    print(
        f"\n[{database.engine}] room of {members} members, {len(events)} events: "
        f"database {size / 1e6:.1f} MB; state groups {stats.groups}, snapshots "
        f"{stats.snapshots}, state rows {stats.entries} "
        f"({stats.entries / stats.groups:.1f} per group, vs "
        f"{(members + 1) * (members + 2) // 2} for a full copy per event), "
        f"chain bound {stats.chain_bound}"
    )
    assert stats.groups == len(events)
    assert ROOM_V10.identifier == "10"
