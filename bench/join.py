"""A peer's join into a 2,000-member room on PostgreSQL: ``make_join`` +
``send_join`` as the joining server sees them.

The resident is a real :class:`~homeserver.server.HomeServer` (federation
listener on loopback, in this process, on a throwaway PostgreSQL database
that this script creates and drops, or SQLite with ``--engine sqlite``). Its
room has ``--members`` joined members (the creator and users of the node
itself: the state and auth chain a joiner receives are the same whichever
servers the members belong to, and no outbound delivery runs during the
timing). The peer is test-side code from ``tests/federation_inbound/peer.py``:
for each of ``--joins`` users of its own it times ``GET /make_join`` (with
``ver=10&11&12``), signing the template, and ``PUT /v2/send_join`` until the
response (the room's full state and auth chain, ``members_omitted: false``)
is read and parsed. Each join adds a member, so the room grows by one per
join. Besides wall time it prints the CPU time of this process per join
(node and peer together; PostgreSQL's own work is not in it), which depends
less on what else the machine runs.

    .venv/bin/python bench/join.py [--members 2000] [--joins 10] [--engine postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from concord_harness.nodes import (  # noqa: E402
    create_postgres_database,
    drop_postgres_database,
)
from federation.clock import FakeClock  # noqa: E402
from federation.room_versions import get_room_version  # noqa: E402
from tests.federation_inbound.peer import ALICE, NODE, NodeAndPeer, room_path  # noqa: E402

VERS = {"ver": ["10", "11", "12"]}


async def run(engine: str, members: int, joins: int, tmp: Path,
              profile: str | None = None) -> None:
    db_url = (await create_postgres_database() if engine == "postgres"
              else f"sqlite://{tmp / 'node.db'}")
    nodes = NodeAndPeer(tmp, FakeClock())
    try:
        node, peer = await nodes.start(db_url, {"logging": {"level": "WARNING"}})
        rv = get_room_version("12")
        t0 = time.perf_counter()
        room_id = await node.create_room(rv)
        users = [f"@member{i}:{NODE}" for i in range(members - 1)]
        for n in range(0, len(users), 200):
            async with node.hs.database.transaction("bench_members") as txn:
                for user in users[n:n + 200]:
                    await node.creation.create_event_txn(
                        txn, NODE, room_id, event_type="m.room.member", sender=user,
                        state_key=user, content={"membership": "join"},
                    )
        state = await node.events.state.get_current_state(NODE, room_id)
        joined = sum(1 for (t, _) in state if t == "m.room.member")
        print(f"{engine}: room {room_id} with {joined} members (incl. {ALICE}) built in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)

        times, cpu_ms, make_ms, send_ms, sizes = [], [], [], [], []
        profiler = None
        if profile:
            from pyinstrument import Profiler  # not a dependency: pip install it to profile

            profiler = Profiler(async_mode="disabled", interval=0.0005)
            profiler.start()
        for j in range(joins):
            user = f"@joiner{j}:{peer.name}"
            start, cpu_start = time.perf_counter(), time.process_time()
            status, tmpl = await peer.request(
                "GET", room_path("v1/make_join", room_id, user), query=VERS)
            assert status == 200, tmpl
            mid = time.perf_counter()
            join = peer.event(get_room_version(tmpl["room_version"]), **tmpl["event"])
            eid = peer.event_id(join, rv)
            status, resp = await peer.request(
                "PUT", room_path("v2/send_join", room_id, eid), join)
            end, cpu_end = time.perf_counter(), time.process_time()
            assert status == 200, resp
            times.append(end - start)
            cpu_ms.append((cpu_end - cpu_start) * 1000)
            make_ms.append((mid - start) * 1000)
            send_ms.append((end - mid) * 1000)
            sizes.append((len(resp["state"]), len(resp["auth_chain"]),
                          len(json.dumps(resp)) / 1e6))
        if profiler is not None:
            profiler.stop()
            assert profile is not None
            Path(profile).write_text(profiler.output_text(unicode=False))  # noqa: ASYNC240
        print(f"{engine}: {joins} joins into a {members}-member room: make_join+send_join "
              f"median {statistics.median(times) * 1000:.0f} ms, best "
              f"{min(times) * 1000:.0f} ms, worst {max(times) * 1000:.0f} ms "
              f"(make_join median {statistics.median(make_ms):.1f} ms, send_join median "
              f"{statistics.median(send_ms):.0f} ms); response: {sizes[-1][0]} state events, "
              f"{sizes[-1][1]} auth chain events, {sizes[-1][2]:.1f} MB", flush=True)
        print(f"{engine}: CPU time of this process (node and peer) per join: median "
              f"{statistics.median(cpu_ms):.0f} ms, best {min(cpu_ms):.0f} ms; load average "
              f"{os.getloadavg()[0]:.2f} at the end", flush=True)
        print("per join (ms): " + ", ".join(f"{t * 1000:.0f}" for t in times))
    finally:
        await nodes.close()
        if engine == "postgres":
            await drop_postgres_database(db_url)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=2000)
    ap.add_argument("--joins", type=int, default=10)
    ap.add_argument("--engine", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--profile", metavar="FILE",
                    help="profile the joins with pyinstrument (installed separately) into FILE")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        await run(args.engine, args.members, args.joins, Path(d), args.profile)


if __name__ == "__main__":
    asyncio.run(main())
