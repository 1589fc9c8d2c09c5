"""Outbound delivery: events per second to 1 and to 10 peers, and latency at
a steady 100 events per second.

The sending side is the real thing: events created through
``EventCreationHandler`` (outbox rows written in the event's transaction),
one :class:`~homeserver.federation_sender.FederationSender` with its signed
``FederationClient``, on SQLite (or ``--database``). The peers are loopback
HTTP sinks that answer ``PUT /send`` at once (200, every PDU accepted), so
the figures are the sender's, not a receiver's event checks.

* throughput: ``--events`` events queued while the sender is stopped, then
  timed from its start until every destination acknowledged every event;
* latency: one peer, an event every 10 ms for ``--seconds`` seconds; latency
  is from ``create_event`` returning (committed with its outbox row) to the
  peer receiving the transaction carrying it. Seed target: p99 < 50 ms.

    .venv/bin/python bench/delivery.py [--events 2000] [--seconds 10]
        [--database postgresql://.../EMPTY_DB]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from federation.clock import RealClock  # noqa: E402
from federation.hashes import compute_event_id  # noqa: E402
from federation.room_versions import ROOM_V11  # noqa: E402
from federation.transport.client import FederationClient  # noqa: E402
from homeserver.federation_sender import FederationSender  # noqa: E402
from storage.database import Database  # noqa: E402
from storage.migrations import apply_migrations  # noqa: E402
from tests.federation_outbound.conftest import LOCAL, LocalTenant  # noqa: E402


class Sink:
    """A peer's ``/send`` that accepts everything and notes arrival times."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def send(self, request: web.Request) -> web.Response:
        now = time.perf_counter()
        body = json.loads(await request.read())
        results = {}
        for pdu in body["pdus"]:
            eid = compute_event_id(pdu, ROOM_V11)
            self.arrived.setdefault(eid, now)
            results[eid] = {}
        return web.json_response({"pdus": results})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/_matrix/federation/v1/send/{txn_id}", self.send)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"


async def open_db(url: str | None, tmp: Path, name: str) -> Database:
    db = await Database.open(url or f"sqlite://{tmp / name}")
    if await apply_migrations(db) == []:
        await db.close()
        raise SystemExit(f"{url} is already migrated: give an empty database")
    return db


async def setup(db: Database, peers: int) -> tuple[LocalTenant, str, list[Sink]]:
    tenant = LocalTenant(db, RealClock())  # type: ignore[arg-type]
    users = [f"@u:p{i}.test" for i in range(peers)]
    room = await tenant.room_with_remote_members(users)
    sinks = [Sink() for _ in range(peers)]
    for s in sinks:
        await s.start()
    return tenant, room, sinks


def make_sender(
    tenant: LocalTenant, session: aiohttp.ClientSession, sinks: list[Sink]
) -> FederationSender:
    client = FederationClient(
        session, signing_keys={LOCAL: tenant.key}, default_origin=LOCAL,
        destination_overrides={f"p{i}.test": s.url for i, s in enumerate(sinks)},
    )

    async def database_for(_: str) -> Database:
        return tenant.db

    return FederationSender(client, RealClock(), database_for)


async def throughput(db: Database, peers: int, events: int) -> tuple[float, float]:
    tenant, room, sinks = await setup(db, peers)
    for i in range(events):
        await tenant.say(room, f"m{i}")
    async with aiohttp.ClientSession() as session:
        sender = make_sender(tenant, session, sinks)
        sender.attach(tenant.creation.outbox)
        start = time.perf_counter()
        await sender.start()
        while True:
            await sender.wait_until_idle()
            if sender.running_queues == 0:
                break
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - start
        await sender.stop()
    left = await db.fetchval("SELECT COUNT(*) FROM federation_outbox")
    assert left == 0, f"{left} rows not delivered"
    assert all(len(s.arrived) >= events for s in sinks)
    for s in sinks:
        assert s.runner is not None
        await s.runner.cleanup()
    return events / elapsed, events * peers / elapsed


async def latency(db: Database, seconds: float, rate: float) -> list[float]:
    tenant, room, sinks = await setup(db, 1)
    created: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        sender = make_sender(tenant, session, sinks)
        sender.attach(tenant.creation.outbox)
        await sender.start()
        interval = 1 / rate
        start = time.perf_counter()
        n = int(seconds * rate)
        for i in range(n):
            target = start + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            ev = await tenant.say(room, f"m{i}")
            created[ev.event_id] = time.perf_counter()
        while True:
            await sender.wait_until_idle()
            if sender.running_queues == 0 and len(sinks[0].arrived) >= len(created):
                break
            await asyncio.sleep(0.001)
        await sender.stop()
    await sinks[0].runner.cleanup()  # type: ignore[union-attr]
    return [(sinks[0].arrived[e] - t) * 1000 for e, t in created.items()]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--database", help="an EMPTY PostgreSQL database per run (default SQLite)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for peers in (1, 10):
            if args.database and peers == 10:
                print("(one --database URL: 10-peer run skipped; run again on a fresh one)")
                continue
            db = await open_db(args.database, tmp, f"t{peers}.db")
            try:
                evs, pdus = await throughput(db, peers, args.events)
            finally:
                await db.close()
            print(f"throughput, {peers:2d} peer(s): {evs:8.0f} events/s "
                  f"({pdus:.0f} PDUs delivered/s, {args.events} events)")
        if not args.database:
            db = await open_db(None, tmp, "lat.db")
            try:
                lat = await latency(db, args.seconds, args.rate)
            finally:
                await db.close()
            q = statistics.quantiles(lat, n=100)
            print(f"latency at {args.rate:.0f} events/s for {args.seconds:g} s "
                  f"({len(lat)} events): p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, "
                  f"max {max(lat):.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
