"""scripts/with-postgres.sh: the throwaway cluster it starts when no server answers."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "with-postgres.sh"

# Connects to the URL the script exported and proves it is a live server.
CONNECT = """
import asyncio, os, asyncpg
async def main():
    url = os.environ["CONCORD_TEST_POSTGRES_URL"]
    conn = await asyncpg.connect(url, timeout=10)
    try:
        print("answer", await conn.fetchval("SELECT 6 * 7"), url)
    finally:
        await conn.close()
asyncio.run(main())
"""


def closed_port() -> int:
    # Bound then closed: nothing listens there while the test runs.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_fallback_cluster_serves_the_command_and_is_removed() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONCORD_TEST_POSTGRES_URL"}
    env["CONCORD_PG_PROBE_PORT"] = str(closed_port())
    r = subprocess.run(
        ["bash", str(SCRIPT), sys.executable, "-c", CONNECT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    m = re.search(r"throwaway cluster in (\S+) on port (\d+)", r.stderr)
    assert m, r.stderr
    tmp, port = m.group(1), m.group(2)
    assert f"answer 42 postgresql://postgres@127.0.0.1:{port}/postgres" in r.stdout
    assert not Path(tmp).exists(), f"{tmp} left behind"


@pytest.mark.slow
def test_fallback_passes_on_the_command_exit_status() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONCORD_TEST_POSTGRES_URL"}
    env["CONCORD_PG_PROBE_PORT"] = str(closed_port())
    r = subprocess.run(
        ["bash", str(SCRIPT), "sh", "-c", "exit 3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 3, r.stderr
    m = re.search(r"throwaway cluster in (\S+)", r.stderr)
    assert m, r.stderr
    assert not Path(m.group(1)).exists()
