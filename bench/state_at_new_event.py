"""State at a new event in a 10,000-member room, on real storage.

The second figure of the "Rooms" issue (the first is ``bench/state_res.py``).
Creates a room with ``EventCreationHandler``, joins ``--members`` users to it
(persisted in batches of 1,000, each join its own state group), then forks it:
one branch has the creator kick a member and change the power levels, the
other has that member change their display name, so the two tips conflict on
the member's state and one branch changes a power event. Then times

* the state after both fork tips together (``state_after_events_txn``: load
  both 10,000-entry states and resolve them), with cold stores (fresh caches)
  and warm ones;
* ``EventCreationHandler.create_event`` of a message on top of the fork (its
  prev_events are both tips), with cold stores, then warm.

Runs on SQLite (a temporary file) and on PostgreSQL (a throwaway database
created on the server and dropped afterwards). Usage::

    .venv/bin/python bench/state_at_new_event.py [--members 10000] [--runs 5]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from signedjson.key import generate_signing_key  # noqa: E402

from federation.auth_rules import auth_types_for_event  # noqa: E402
from federation.clock import FakeClock  # noqa: E402
from federation.events import Event  # noqa: E402
from federation.room_versions import ROOM_V11, RoomVersion  # noqa: E402
from homeserver.handlers.event_creation import EventCreationHandler  # noqa: E402
from homeserver.handlers.room_state import (  # noqa: E402
    state_after_events_txn,
    update_current_state_txn,
)
from storage.database import Database  # noqa: E402
from storage.migrations import apply_migrations  # noqa: E402
from storage.stores.events import EventStore, NewEvent  # noqa: E402
from storage.stores.state import StateStore  # noqa: E402

TENANT = "bench.test"
CREATOR = "@creator:bench.test"
BATCH = 1000


class Room:
    """Builds events of one room, choosing auth_events from its running state."""

    def __init__(self, rv: RoomVersion, room_id: str, state: dict[tuple[str, str], str],
                 head: Event) -> None:
        self.rv = rv
        self.room_id = room_id
        self.state = dict(state)
        self.head = head
        self.n = 0

    def make(self, type: str, sender: str, state_key: str, content: dict[str, Any],
             prev: Event, state: dict[tuple[str, str], str]) -> Event:
        self.n += 1
        pdu: dict[str, Any] = {
            "type": type, "room_id": self.room_id, "sender": sender, "state_key": state_key,
            "content": content, "prev_events": [prev.event_id], "depth": prev.depth + 1,
            "origin_server_ts": 1_700_000_000_000 + self.n, "auth_events": [],
        }
        wanted = auth_types_for_event(pdu, self.rv)
        pdu["auth_events"] = sorted(state[k] for k in wanted if k in state)
        ev = Event(pdu, f"$bench{self.n}-{secrets.token_hex(4)}", self.rv)
        state[(type, state_key)] = ev.event_id
        return ev


async def build(db: Database, members: int) -> tuple[str, list[str], float]:
    """The room, its two fork tips and the time taken to store the joins."""
    keys = {TENANT: generate_signing_key("k1")}
    events = EventStore(db, StateStore(db))
    handler = EventCreationHandler(db, events, FakeClock(), keys.__getitem__)
    rv = ROOM_V11
    room_id = await handler.create_room(TENANT, CREATOR, rv)
    state = dict(await events.state.get_current_state(TENANT, room_id))
    (head_id,) = await events.get_forward_extremities(TENANT, room_id)
    head = (await events.get_events(TENANT, [head_id]))[head_id]
    room = Room(rv, room_id, state, head)

    joins: list[Event] = []
    prev = head
    for i in range(members):
        user = f"@user{i:05d}:bench.test"
        prev = room.make("m.room.member", user, user, {"membership": "join"}, prev, room.state)
        joins.append(prev)
    started = time.perf_counter()
    for start in range(0, len(joins), BATCH):
        async with db.transaction("bench_joins") as txn:
            await events.persist_events_txn(txn, TENANT, [NewEvent(e) for e in joins[start:start + BATCH]])
    async with db.transaction("bench_current") as txn:
        await update_current_state_txn(txn, events, TENANT, room_id, rv)
    persist_s = time.perf_counter() - started

    # The fork: both branches start from the last join.
    victim = "@user00003:bench.test"
    state_a, state_b = dict(room.state), dict(room.state)
    kick = room.make("m.room.member", CREATOR, victim, {"membership": "leave"}, prev, state_a)
    pl_content = {"users": {CREATOR: 100, "@user00001:bench.test": 50}}
    pl = room.make("m.room.power_levels", CREATOR, "", pl_content, kick, state_a)
    rename = room.make("m.room.member", victim, victim,
                       {"membership": "join", "displayname": "renamed"}, prev, state_b)
    for branch in ([kick, pl], [rename]):
        async with db.transaction("bench_fork") as txn:
            await events.persist_events_txn(txn, TENANT, [NewEvent(e) for e in branch])
            await update_current_state_txn(txn, events, TENANT, room_id, rv)
    tips = sorted(await events.get_forward_extremities(TENANT, room_id))
    assert sorted(tips) == sorted([pl.event_id, rename.event_id]), tips
    return room_id, tips, persist_s


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await fn()
    return time.perf_counter() - started


async def measure(url: str, members: int, runs: int) -> None:
    db = await Database.open(url)
    try:
        await apply_migrations(db)
        room_id, tips, persist_s = await build(db, members)
        print(f"engine {db.engine}: {members} joins stored in {persist_s:.1f} s; "
              f"fork tips {len(tips)}")

        async def resolve(events: EventStore) -> None:
            async with db.transaction("bench_resolve") as txn:
                state = await state_after_events_txn(txn, events, TENANT, ROOM_V11, tips)
            assert state is not None and len(state.state) >= members

        cold = [await timed(lambda: resolve(EventStore(db, StateStore(db))))
                for _ in range(runs)]
        warm_store = EventStore(db, StateStore(db))
        await resolve(warm_store)
        warm = [await timed(lambda: resolve(warm_store)) for _ in range(runs)]
        print(f"  state after both fork tips (resolved), cold stores: median "
              f"{statistics.median(cold) * 1000:.0f} ms, best {min(cold) * 1000:.0f} ms")
        print(f"  state after both fork tips (resolved), warm stores: median "
              f"{statistics.median(warm) * 1000:.0f} ms, best {min(warm) * 1000:.0f} ms")

        keys = {TENANT: generate_signing_key("k2")}
        events = EventStore(db, StateStore(db))
        handler = EventCreationHandler(db, events, FakeClock(), keys.__getitem__)

        async def send(i: int) -> None:
            ev = await handler.create_event(
                TENANT, room_id, event_type="m.room.message", sender=CREATOR,
                content={"msgtype": "m.text", "body": f"hello {i}"},
            )
            if i == 0:
                assert sorted(ev.prev_event_ids) == tips

        first = await timed(lambda: send(0))
        later = [await timed(lambda i=i: send(i)) for i in range(1, runs + 1)]
        print(f"  create_event on the fork (prev_events = both tips), cold stores: "
              f"{first * 1000:.0f} ms; next messages, warm: median "
              f"{statistics.median(later) * 1000:.0f} ms")
    finally:
        await db.close()


async def with_postgres(server_url: str, members: int, runs: int) -> None:
    dbname = f"concord_bench_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await admin.close()
    try:
        await measure(server_url.rsplit("/", 1)[0] + "/" + dbname, members, runs)
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        finally:
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", default=os.environ.get(
        "CONCORD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server URL (a throwaway database is created on it and dropped)")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(measure(f"sqlite://{tmp}/bench.db", args.members, args.runs))
    if not args.no_postgres:
        asyncio.run(with_postgres(args.postgres, args.members, args.runs))


if __name__ == "__main__":
    main()
