"""Inbound federation: PDUs per second persisted and ``PUT /send`` latency, as
a peer sees them, and the node's RSS after the run.

The node is what an operator runs: ``python -m homeserver run`` in a
subprocess (client and federation listeners on loopback), on SQLite or on a
throwaway PostgreSQL database that this script creates and drops. The peer is
test-side code built from the protocol library (as
``tests/federation_inbound/peer.py``): it publishes its key, joins a room of
the node's user ``@alice`` with ``make_join``/``send_join``, and then pushes a
chain of N signed ``m.room.message`` PDUs (each one's only prev event is the
one before), in 50-PDU transactions. Each transaction is sent once the
previous one is visible to clients: after its ``200``, alice's ``/sync``
(long-polled from the previous ``next_batch``, timeline limit 1) must show
the transaction's last PDU in the room's timeline before the next ``PUT``.

The PDUs are signed before the clock starts (a real peer signs on its own
CPU); everything else -- X-Matrix signing of each request, the node's checks
and storage, the client's ``/sync`` -- runs on this machine's cores and is
counted. Figures: PDUs/s (N over the wall time from the first ``PUT`` to the
last PDU seen by ``/sync``), ``/send`` latency p50/p99 (request sent to
response read), and VmRSS of the node process at the end.

    .venv/bin/python bench/inbound.py [--pdus 10000] [--engine sqlite|postgres|both]
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
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from aiohttp import web  # noqa: E402
from signedjson.key import generate_signing_key  # noqa: E402

from concord_harness.client import Client, register  # noqa: E402
from concord_harness.nodes import (  # noqa: E402
    create_postgres_database,
    drop_postgres_database,
    pick_port,
)
from federation.hashes import compute_event_id  # noqa: E402
from federation.room_versions import RoomVersion, get_room_version  # noqa: E402
from federation.server_keys import build_server_key_response  # noqa: E402
from federation.signing import add_hashes_and_signatures  # noqa: E402
from federation.transport.client import FederationClient  # noqa: E402
from homeserver.signing_key import generate_signing_key_file  # noqa: E402

NODE = "node.bench"
PEER = "peer.bench"
PEER_USER = "@pat:peer.bench"
TXN_SIZE = 50


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class BenchPeer:
    """The remote server: publishes its key, signs PDUs and requests."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.key = generate_signing_key("b1")
        self.client = FederationClient(session, signing_keys={PEER: self.key},
                                       default_origin=PEER)
        self.url = ""
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()

        async def key(_: web.Request) -> web.Response:
            return web.json_response(build_server_key_response(
                PEER, [self.key], [], now_ms=int(time.time() * 1000),
                validity_ms=86_400_000))

        async def send(_: web.Request) -> web.Response:
            return web.json_response({"pdus": {}})

        app.router.add_get("/_matrix/key/v2/server", key)
        app.router.add_put("/_matrix/federation/v1/send/{txn_id}", send)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def sign(self, rv: RoomVersion, pdu: dict[str, Any]) -> dict[str, Any]:
        return add_hashes_and_signatures(pdu, rv, PEER, self.key)

    async def request(self, method: str, path: str, body: Any = None,
                      query: dict[str, Any] | None = None) -> Any:
        return await self.client.request_json(method, NODE, path, body=body, query=query)


class SubprocessNode:
    def __init__(self, directory: Path, db_url: str, peer_url: str,
                 profile: str | None = None) -> None:
        self.directory = directory
        self.profile = profile
        self.client_port = pick_port()
        self.federation_port = pick_port({self.client_port})
        generate_signing_key_file(str(directory / "signing.key"))
        raw = {
            "server_name": NODE, "data_dir": str(directory),
            "signing_key_path": str(directory / "signing.key"),
            "database": {"url": db_url},
            "listeners": [
                {"type": "client", "port": self.client_port, "bind_addresses": ["127.0.0.1"]},
                {"type": "federation", "port": self.federation_port,
                 "bind_addresses": ["127.0.0.1"]},
            ],
            "federation": {"trusted_key_servers": [], "destination_overrides": {PEER: peer_url}},
            "enable_registration": True,
            "password_hash_rounds": 4,
            "shutdown_timeout": "2s",
        }
        self.config = directory / "homeserver.yaml"
        self.config.write_text(yaml.safe_dump(raw))
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def federation_url(self) -> str:
        return f"http://127.0.0.1:{self.federation_port}"

    async def start(self, session: aiohttp.ClientSession) -> None:
        log = open(self.directory / "hs.log", "ab")  # noqa: ASYNC230, SIM115
        prefix = ["-m", "cProfile", "-o", self.profile] if self.profile else []
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *prefix, "-m", "homeserver", "run", "--config", str(self.config),
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError("node exited:\n" + self.log_tail())
            try:
                async with session.get(self.client_url + "/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError("node did not start:\n" + self.log_tail())

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()

    def log_tail(self) -> str:
        return "\n".join((self.directory / "hs.log").read_text().splitlines()[-30:])


def room_path(endpoint: str, *parts: str) -> str:
    return "/_matrix/federation/" + endpoint + "".join("/" + quote(p, safe="") for p in parts)


async def run_engine(engine: str, n_pdus: int, tmp: Path,
                     profile: str | None = None) -> dict[str, Any]:
    db_url = (await create_postgres_database() if engine == "postgres"
              else f"sqlite://{tmp / 'node.db'}")
    async with aiohttp.ClientSession() as session:
        peer = BenchPeer(session)
        await peer.start()
        node = SubprocessNode(tmp, db_url, peer.url,
                              f"{profile}.{engine}" if profile else None)
        peer.client.destination_overrides[NODE] = node.federation_url
        try:
            await node.start(session)
            assert node.proc is not None
            rss_start = rss_mib(node.proc.pid)
            return await push_chain(session, node, peer, n_pdus) | {"rss_start": rss_start}
        finally:
            await node.stop()
            assert peer.runner is not None
            await peer.runner.cleanup()
            if engine == "postgres":
                await drop_postgres_database(db_url)


async def push_chain(session: aiohttp.ClientSession, node: SubprocessNode, peer: BenchPeer,
                     n_pdus: int) -> dict[str, Any]:
    alice: Client = await register(session, node.client_url, "alice", password="bench-pass")
    room_id = await alice.create_room(preset="public_chat")
    tmpl = await peer.request("GET", room_path("v1/make_join", room_id, PEER_USER),
                              query={"ver": ["10", "11", "12"]})
    rv = get_room_version(tmpl["room_version"])
    join = peer.sign(rv, {**tmpl["event"], "origin_server_ts": int(time.time() * 1000)})
    join_id = compute_event_id(join, rv)
    await peer.request("PUT", room_path("v2/send_join", room_id, join_id), join)
    state = {(e["type"], e["state_key"]): e["event_id"] for e in await alice.get_state(room_id)}
    auth = [state[("m.room.power_levels", "")], join_id]
    if not rv.room_id_from_create_event:
        auth.append(state[("m.room.create", "")])
    sync_filter = json.dumps({"room": {"rooms": [room_id], "timeline": {"limit": 1}},
                              "presence": {"types": []}, "account_data": {"types": []}})
    since = (await alice.sync(filter=sync_filter))["next_batch"]

    # The chain, signed up front: a real peer pays for its signatures itself.
    prev, depth = join_id, int(join["depth"])
    now = int(time.time() * 1000)
    chain: list[dict[str, Any]] = []
    for i in range(n_pdus):
        depth += 1
        pdu = peer.sign(rv, {
            "type": "m.room.message", "room_id": room_id, "sender": PEER_USER,
            "prev_events": [prev], "auth_events": sorted(auth), "depth": depth,
            "origin_server_ts": now + i, "content": {"msgtype": "m.text", "body": f"m{i}"},
        })
        prev = compute_event_id(pdu, rv)
        chain.append(pdu)

    latencies: list[float] = []
    start = time.perf_counter()
    for n in range(0, n_pdus, TXN_SIZE):
        batch = chain[n:n + TXN_SIZE]
        last = compute_event_id(batch[-1], rv)
        body = {"origin": PEER, "origin_server_ts": int(time.time() * 1000), "pdus": batch}
        t0 = time.perf_counter()
        resp = await peer.request("PUT", f"/_matrix/federation/v1/send/b{n}", body)
        latencies.append((time.perf_counter() - t0) * 1000)
        failed = {k: v for k, v in resp["pdus"].items() if v}
        if failed:
            raise RuntimeError(f"PDUs refused: {failed}")
        while True:  # visible to the client before the next transaction
            got = await alice.sync(since=since, timeout_ms=30_000, filter=sync_filter)
            since = got["next_batch"]
            timeline = got.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {})
            if any(e["event_id"] == last for e in timeline.get("events", [])):
                break
    elapsed = time.perf_counter() - start
    assert node.proc is not None
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"pdus_per_s": n_pdus / elapsed, "elapsed": elapsed, "p50": q[49], "p99": q[98],
            "txns": len(latencies), "rss_end": rss_mib(node.proc.pid), "rv": rv.identifier}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pdus", type=int, default=10_000)
    ap.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--profile", metavar="PREFIX",
                    help="run the node under cProfile, writing PREFIX.<engine>")
    args = ap.parse_args()
    engines = ["sqlite", "postgres"] if args.engine == "both" else [args.engine]
    for engine in engines:
        with tempfile.TemporaryDirectory() as d:
            r = await run_engine(engine, args.pdus, Path(d), args.profile)
        print(f"{engine:8s} v{r['rv']}: {args.pdus} PDUs in {r['txns']} txns, "
              f"{r['elapsed']:.1f} s: {r['pdus_per_s']:.0f} PDUs/s; /send p50 "
              f"{r['p50']:.1f} ms, p99 {r['p99']:.1f} ms; node RSS {r['rss_start']:.1f} MiB "
              f"at start, {r['rss_end']:.1f} MiB after", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
