"""State at an event: storage size and read time for a large room.

Builds a room that ``--members`` users join one by one (each join a new state
group), then reads the state after random events with a cold cache and a
warm one, and prints the figures. Usage::

    .venv/bin/python bench/state_at_event.py [--members 10000] [--database URL]

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


async def run(url: str, members: int, reads: int) -> None:
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
    await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--database", help="URL of an empty database (default: a temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite://{tmp}/bench.db"
        asyncio.run(run(url, args.members, args.reads))


if __name__ == "__main__":
    main()
