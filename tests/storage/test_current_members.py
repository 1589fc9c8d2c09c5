"""The current members index (``room_current_members``) on both engines: it
follows every move of a room's current state, whatever the states' shapes,
and rolls back with the transaction that moved it."""

from __future__ import annotations

import random
from typing import Any

import pytest

from storage.database import Database
from storage.stores.events import EventStore, NewEvent
from storage.stores.state import ResolvedState, StateKey, StateMap, StateStore
from tests.storage.test_event_graph import ROOM, TENANT, make_event

MEMBER = "m.room.member"
SERVERS = ("a.test", "b.test", "c.test", "d.test")
MEMBERSHIPS: tuple[Any, ...] = ("join", "join", "join", "leave", "invite", "ban", 5)


def expected_rows(state: StateMap, memberships: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {
        (user, user.split(":", 1)[1], m if isinstance(m := memberships[eid], str) else None, eid)
        for (typ, user), eid in state.items()
        if typ == MEMBER
    }


async def table_rows(db: Database, txn: Any = None) -> set[tuple[Any, ...]]:
    rows = await (txn or db).fetch(
        "SELECT user_id, server, membership, event_id FROM room_current_members "
        "WHERE tenant = $1 AND room_id = $2",
        TENANT, ROOM,
    )
    return {tuple(r) for r in rows}


async def check_reads(state: StateStore, model: StateMap, memberships: dict[str, Any],
                      txn: Any = None) -> None:
    joined = sorted(user for (typ, user), eid in model.items()
                    if typ == MEMBER and memberships[eid] == "join")
    servers = sorted({u.split(":", 1)[1] for u in joined})
    assert await state.get_joined_servers(TENANT, ROOM, txn=txn) == servers
    assert await state.get_joined_users(TENANT, ROOM, txn=txn) == joined
    for server in SERVERS:
        assert await state.is_server_joined(TENANT, ROOM, server, txn=txn) == (server in servers)
        assert await state.get_joined_users(TENANT, ROOM, server=server, txn=txn) == [
            u for u in joined if u.endswith(":" + server)
        ]
    for (typ, user), eid in model.items():
        if typ == MEMBER:
            m = memberships[eid]
            assert await state.get_current_membership(TENANT, ROOM, user, txn=txn) == (
                m if isinstance(m, str) else None
            )


@pytest.mark.parametrize("pass_state", [True, False], ids=["state_given", "state_resolved"])
async def test_index_follows_current_state(database: Database, pass_state: bool) -> None:
    """A random walk of current states (one member changed, several at once,
    members removed, jumps back to an older group as a state resolution can
    make): after every move the rows are exactly the member entries of the
    new current state, inside the transaction and after it."""
    rng = random.Random(20261207)
    state = StateStore(database)
    events = EventStore(database, state)
    memberships: dict[str, Any] = {}
    users = [f"@u{i}:{SERVERS[i % len(SERVERS)]}" for i in range(40)]
    n = 0

    async def member_event(txn: Any, user: str) -> str:
        nonlocal n
        n += 1
        m = rng.choice(MEMBERSHIPS)
        ev = make_event(f"$m{n}", MEMBER, prev=[], state_key=user, sender=user,
                        content={"membership": m})
        await events.persist_events_txn(txn, TENANT, [NewEvent(ev, outlier=True)])
        memberships[ev.event_id] = m
        return ev.event_id

    groups: list[tuple[int | None, dict[StateKey, str]]] = []
    current: tuple[int | None, dict[StateKey, str]] = (None, {})
    async with database.transaction("walk") as txn:
        await state.set_current_state_group_txn(txn, TENANT, ROOM, "10", None)
        for step in range(60):
            if groups and rng.random() < 0.2:
                target = rng.choice(groups)  # back to an earlier state
            else:
                new = dict(current[1])
                new[("m.room.create", "")] = "$create"
                for _ in range(rng.choice((1, 1, 1, 5))):
                    key = (MEMBER, rng.choice(users))
                    if key in new and rng.random() < 0.25:
                        del new[key]
                    else:
                        new[key] = await member_event(txn, key[1])
                group = await state.store_state_txn(
                    txn, TENANT, ROOM, ResolvedState(new, predecessor=current[0]))
                target = (group, new)
                groups.append(target)
            await state.set_current_state_group_txn(
                txn, TENANT, ROOM, "10", target[0],
                state=target[1] if pass_state else None)
            current = target
            assert await table_rows(database, txn) == expected_rows(current[1], memberships)
            if step % 10 == 0:
                await check_reads(state, current[1], memberships, txn)
        # Setting the same group again changes nothing.
        await state.set_current_state_group_txn(txn, TENANT, ROOM, "10", current[0])
    assert await table_rows(database) == expected_rows(current[1], memberships)
    await check_reads(StateStore(database), current[1], memberships)


async def test_index_rolls_back_with_its_transaction(database: Database) -> None:
    state = StateStore(database)
    events = EventStore(database, state)
    memberships = {"$j": "join", "$l": "leave"}
    async with database.transaction("setup") as txn:
        for eid, user in (("$j", "@x:b.test"), ("$l", "@y:c.test")):
            ev = make_event(eid, MEMBER, prev=[], state_key=user, sender=user,
                            content={"membership": memberships[eid]})
            await events.persist_events_txn(txn, TENANT, [NewEvent(ev, outlier=True)])
        first = {(MEMBER, "@x:b.test"): "$j"}
        g1 = await state.store_state_txn(txn, TENANT, ROOM, ResolvedState(first))
        await state.set_current_state_group_txn(txn, TENANT, ROOM, "10", g1)
    assert await state.get_joined_servers(TENANT, ROOM) == ["b.test"]

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with database.transaction("moved_then_failed") as txn:
            second = {(MEMBER, "@y:c.test"): "$l"}
            g2 = await state.store_state_txn(
                txn, TENANT, ROOM, ResolvedState(second, predecessor=g1))
            await state.set_current_state_group_txn(txn, TENANT, ROOM, "10", g2)
            assert await state.get_joined_servers(TENANT, ROOM, txn=txn) == []
            raise Boom
    assert await state.get_current_state_group(TENANT, ROOM) == g1
    assert await table_rows(database) == expected_rows(first, memberships)
    assert await state.get_joined_users(TENANT, ROOM) == ["@x:b.test"]
    assert await state.get_current_membership(TENANT, ROOM, "@y:c.test") is None
