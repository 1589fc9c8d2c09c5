"""State at an event: storage size and read time for a large room.

Builds a room that ``--members`` users join one by one (each join a new state
group), then reads the state after random events with a cold cache and a
warm one, and prints the figures. ``--messages N`` then adds N messages on
top (``--messages 90000`` makes the issue's room of 10,000 members and
100,000 events) and prints the database size before and after. Usage::

    .venv/bin/python bench/state_at_event.py [--members 10000] [--messages 0] [--database URL]

The default database is a fresh SQLite file in a temporary directory;
``--database`` must name an empty, throwaway database (the benchmark fills it).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from federation.events import Event  # noqa: E402
from federation.room_versions import ROOM_V10  # noqa: E402
from storage.database import Database  # noqa: E402
from storage.migrations import apply_migrations  # noqa: E402
from storage.stores.events import EventStore, NewEvent  # noqa: E402
from storage.stores.state import StateStore  # noqa: E402

TENANT = "bench.test"
ROOM = "!bench:bench.test"


def message_event(i: int, sender: int, prev: str) -> Event:
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "room_id": ROOM,
        "sender": f"@user{sender}:bench.test",
        "content": {"msgtype": "m.text", "body": f"message {i}"},
        "prev_events": [prev],
        "auth_events": [],
        "depth": i + 1,
        "origin_server_ts": 1_700_000_000_000 + i,
    }
    return Event(pdu, f"$msg{i}", ROOM_V10)


async def database_size(db: Database) -> int:
    if db.engine == "sqlite":
        pages = int(await db.fetchval("PRAGMA page_count"))
        return pages * int(await db.fetchval("PRAGMA page_size"))
    return int(await db.fetchval("SELECT pg_database_size(current_database())"))


def member_event(i: int, prev: str | None) -> Event:
    user = f"@user{i}:bench.test"
    pdu: dict[str, Any] = {
        "type": "m.room.member" if prev else "m.room.create",
        "room_id": ROOM,
        "sender": user,
        "state_key": user if prev else "",
        "content": {"membership": "join"} if prev else {"creator": user, "room_version": "10"},
        "prev_events": [prev] if prev else [],
        "auth_events": [],
        "depth": i + 1,
        "origin_server_ts": 1_700_000_000_000 + i,
    }
    return Event(pdu, f"$ev{i}", ROOM_V10)


async def run(url: str, members: int, reads: int, messages: int) -> None:
    db = await Database.open(url)
    if not await apply_migrations(db):
        await db.close()
        raise SystemExit("refusing to write into an existing Concord database; give an empty one")
    store = EventStore(db, StateStore(db))
    evs = [member_event(0, None)]
    for i in range(1, members + 1):
        evs.append(member_event(i, evs[-1].event_id))
    started = time.perf_counter()
    for start in range(0, len(evs), 1000):
        async with db.transaction("bench_persist") as txn:
            await store.persist_events_txn(txn, TENANT, [NewEvent(e) for e in evs[start:start + 1000]])
    persist_s = time.perf_counter() - started
    stats = await store.state.stats(TENANT, ROOM)
    print(f"engine {db.engine}: {len(evs)} events persisted in {persist_s:.2f} s "
          f"({len(evs) / persist_s:,.0f} events/s)")
    print(f"state groups {stats.groups}, snapshots {stats.snapshots}, delta rows "
          f"{stats.entries} ({stats.entries / stats.groups:.1f}/group), chain bound "
          f"{stats.chain_bound}; a full copy per event would be "
          f"{(members + 1) * (members + 2) // 2:,} rows")
    rng = random.Random(1)
    picks = [rng.choice(evs).event_id for _ in range(reads)]
    for label, cache in (("cold", 0), ("warm", 200_000)):
        reader = EventStore(db, StateStore(db, cache_max_entries=cache))
        if cache:
            # Warm: the same events were read once before.
            for eid in picks:
                await reader.get_state_after(TENANT, eid)
        started = time.perf_counter()
        for eid in picks:
            await reader.get_state_after(TENANT, eid)
        elapsed = time.perf_counter() - started
        print(f"state after a random event, {label} cache: {elapsed / reads * 1000:.2f} ms/read "
              f"({reads} reads)")
    if messages:
        # Messages change no state: they share their room's last state group.
        size = await database_size(db)
        rng = random.Random(2)
        prev = evs[-1].event_id
        started = time.perf_counter()
        for start in range(0, messages, 1000):
            batch = []
            for i in range(start, min(start + 1000, messages)):
                ev = message_event(len(evs) + i, rng.randrange(1, members + 1), prev)
                batch.append(NewEvent(ev))
                prev = ev.event_id
            async with db.transaction("bench_messages") as txn:
                await store.persist_events_txn(txn, TENANT, batch)
        elapsed = time.perf_counter() - started
        total = len(evs) + messages
        stats = await store.state.stats(TENANT, ROOM)
        print(f"{messages} messages persisted in {elapsed:.1f} s; database "
              f"{size / 1e6:.1f} MB with {len(evs)} events, {await database_size(db) / 1e6:.1f} MB "
              f"with {total:,} events; state groups {stats.groups}, delta rows {stats.entries}")
    await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--messages", type=int, default=0,
                        help="messages to add afterwards (90000: a room of 100,000 events)")
    parser.add_argument("--database", help="URL of an empty database (default: a temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite://{tmp}/bench.db"
        asyncio.run(run(url, args.members, args.reads, args.messages))


if __name__ == "__main__":
    main()
