"""``homeserver discovery`` in a subprocess, against the config's database."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import yaml
from signedjson.key import generate_signing_key, write_signing_keys


def _config(tmp_path: Path, database_url: str) -> Path:
    buf = io.StringIO()
    write_signing_keys(buf, [generate_signing_key("k1")])
    (tmp_path / "signing.key").write_text(buf.getvalue())
    cfg = {
        "server_name": "cli.test",
        "data_dir": str(tmp_path),
        "signing_key_path": str(tmp_path / "signing.key"),
        "database": {"url": database_url},
        "federation": {"trusted_servers": ["cli.test", "peer.test"],
                       # Nothing listens on port 1: refused at once.
                       "destination_overrides": {"peer.test": "http://127.0.0.1:1"}},
        "discovery": {"peers": []},
    }
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "homeserver", "discovery", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_cli_peers_add_remove_crawl(tmp_path: Path, database_url: str) -> None:
    cfg = str(_config(tmp_path, database_url))
    added = _cli("add-peer", "--config", cfg, "rooms.example")
    assert added.returncode == 0, added.stderr
    crawl = _cli("crawl", "--config", cfg, "--json")
    assert crawl.returncode == 0, crawl.stderr
    results = json.loads(crawl.stdout)
    # cli.test is local (no rooms); rooms.example is outside the trust domain.
    assert results["cli.test"] == {"rooms": 0, "expired": 0}
    assert results["rooms.example"] == {"skipped": "outside the trust domain"}
    assert "peer.test" in results  # a literal name of the trust domain, unreachable
    peers = _cli("peers", "--config", cfg, "--json")
    listed = {p["server_name"]: p for p in map(json.loads, peers.stdout.splitlines())}
    assert listed["rooms.example"]["added_by_admin"] is True
    assert listed["rooms.example"]["crawled"] is False
    assert listed["cli.test"]["state"] == "online"
    assert listed["peer.test"]["state"] == "degraded"  # one failed probe of three allowed
    assert listed["peer.test"]["last_crawl_error"]
    assert _cli("remove-peer", "--config", cfg, "rooms.example").returncode == 0
    again = _cli("remove-peer", "--config", cfg, "rooms.example")
    assert again.returncode == 1 and "not added" in again.stderr
    bad = _cli("add-peer", "--config", cfg, "not a server")
    assert bad.returncode == 1 and "not a server name" in bad.stderr
