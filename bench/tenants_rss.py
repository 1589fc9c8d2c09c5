"""Memory per idle tenant: RSS of a started node with 1,000 tenants vs. one.

Creates 1,000 run-time tenants (shared mode, SQLite, each with its own
signing key file) through :class:`homeserver.tenants.TenantRegistry`, then
starts a full node (``HomeServer.start``: registry, every tenant's key
published through the KeyService, client and federation listeners) in a
fresh subprocess, once on that database and once on a database with no extra
tenant, and prints the RSS difference per tenant. Target: at most 0.5 MiB
per idle tenant. Nothing per tenant is started until it is used (no pools,
caches or tasks), so the cost is its registry entry, its key and its rows.

    .venv/bin/python bench/tenants_rss.py [--tenants 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from signedjson.key import generate_signing_key, write_signing_keys  # noqa: E402

from federation.clock import FakeClock  # noqa: E402
from homeserver.config import HomeserverConfig, parse_config  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def make_config(data_dir: Path) -> HomeserverConfig:
    key = data_dir / "signing.key"
    if not key.exists():
        buf = io.StringIO()
        write_signing_keys(buf, [generate_signing_key("b1")])
        key.write_text(buf.getvalue())
    raw = {
        "server_name": "node.bench",
        "data_dir": str(data_dir),
        "database": {"url": f"sqlite://{data_dir / 'hs.db'}"},
        "listeners": [{"type": "client", "port": 0}, {"type": "federation", "port": 0}],
        "password_hash_rounds": 4,
    }
    return parse_config(raw, base_dir=str(data_dir), env={})


async def create_tenants(data_dir: Path, n: int) -> float:
    from homeserver.tenants import TenantRegistry
    from storage.database import Database
    from storage.migrations import apply_migrations

    config = make_config(data_dir)
    db = await Database.open(config.database.url)
    await apply_migrations(db)
    registry = await TenantRegistry.load(config=config, database=db, clock=FakeClock())
    start = time.perf_counter()
    for i in range(n):
        await registry.create(f"t{i:05d}.bench")
    elapsed = time.perf_counter() - start
    await registry.close()
    await db.close()
    return elapsed


async def measure_started(data_dir: Path) -> dict[str, int]:
    """Run in a subprocess: RSS before and after starting the node."""
    from homeserver.server import HomeServer

    config = make_config(data_dir)
    gc.collect()
    before = rss_bytes()
    hs = await HomeServer.start(config, clock=FakeClock())
    gc.collect()
    after = rss_bytes()
    tenants = len(hs.tenants)
    await hs.stop()
    return {"before": before, "after": after, "tenants": tenants}


def run_child(data_dir: Path) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--measure", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(measure_started(Path(args.measure)))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        empty, full = Path(tmp, "empty"), Path(tmp, "full")
        empty.mkdir()
        full.mkdir()
        asyncio.run(create_tenants(empty, 0))
        took = asyncio.run(create_tenants(full, args.tenants))
        base = run_child(empty)
        loaded = run_child(full)
    per = (loaded["after"] - base["after"]) / args.tenants
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(
        f"created {args.tenants} tenants in {took:.1f} s ({took / args.tenants * 1000:.1f} ms each)"
    )
    print(f"started node, 1 tenant:      RSS {base['after'] / 2**20:7.1f} MiB")
    print(f"started node, {loaded['tenants']} tenants: RSS {loaded['after'] / 2**20:7.1f} MiB")
    print(f"per idle tenant: {per / 1024:.1f} KiB (target <= 512 KiB)")


if __name__ == "__main__":
    main()
