"""Changing the trust domain without a restart: SIGHUP on ``homeserver run``
and the admin API (persisted, surviving a restart, DELETE back to config)."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from signedjson.key import generate_signing_key, write_signing_keys

from federation.transport.client import FederationHttpError
from homeserver.rest.admin.register import compute_mac
from tests.trust.conftest import StartFn

SECRET = "trust-secret"
JUNK = 'X-Matrix origin="{o}",destination="s.test",key="ed25519:x",sig="bm9uc2Vuc2U"'


async def status_from(session: aiohttp.ClientSession, base: str, origin: str) -> int:
    async with session.get(base + "/_matrix/federation/v1/version",
                           headers={"Authorization": JUNK.format(o=origin)}) as r:
        return r.status


async def test_sighup_applies_a_new_whitelist(tmp_path: Path) -> None:
    buf = io.StringIO()
    write_signing_keys(buf, [generate_signing_key("s1")])
    (tmp_path / "signing.key").write_text(buf.getvalue())
    raw: dict[str, Any] = {
        "server_name": "s.test",
        "data_dir": str(tmp_path),
        "listeners": [{"type": "federation", "port": 0}],
        "federation": {
            "trusted_servers": ["c.test"],
            # Key lookups for the junk signature fail fast instead of resolving.
            "destination_overrides": {"c.test": "http://127.0.0.1:1",
                                      "b.test": "http://127.0.0.1:1"},
        },
    }
    cfg = tmp_path / "homeserver.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "homeserver", "run", "--config", str(cfg),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    try:
        base = ""
        deadline = time.monotonic() + 60
        while not base:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line and time.monotonic() < deadline, "node did not start"
            m = re.search(r"Listening on (http://\S+) \(federation\)", line)
            if m:
                base = m.group(1)
        async with aiohttp.ClientSession() as s:
            # c.test is trusted: past the trust check to X-Matrix (401).
            assert await status_from(s, base, "c.test") == 401
            assert await status_from(s, base, "b.test") == 403
            raw["federation"]["trusted_servers"] = ["b.test"]
            raw["max_request_size"] = "20M"  # needs a restart: logged, not applied
            cfg.write_text(yaml.safe_dump(raw))
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while await status_from(s, base, "c.test") != 403:
                assert time.monotonic() < deadline, "the new whitelist never applied"
                await asyncio.sleep(0.05)
            assert await status_from(s, base, "b.test") == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    log = err.decode()
    assert "Reloaded federation.trusted_servers: [c.test] -> [b.test]" in log
    assert "max_request_size changed" in log and "next restart" in log
    assert proc.returncode == 0


async def admin_token(session: aiohttp.ClientSession, base: str) -> str:
    async with session.get(base + "/_synapse/admin/v1/register") as r:
        nonce = (await r.json())["nonce"]
    body = {"nonce": nonce, "username": "root", "password": "pw", "admin": True,
            "mac": compute_mac(SECRET, nonce, "root", "pw", True)}
    async with session.post(base + "/_synapse/admin/v1/register", json=body) as r:
        assert r.status == 200, await r.text()
        token: str = (await r.json())["access_token"]
        return token


@pytest.mark.parametrize("scope", ["node", "tenant"])
async def test_admin_api_changes_the_domain_at_run_time(nodes: StartFn, scope: str) -> None:
    extra: dict[str, Any] = {
        "listeners": [{"type": "federation", "port": 0}, {"type": "client", "port": 0}],
        "registration_shared_secret": SECRET, "password_hash_rounds": 4,
    }
    a = await nodes("a.test", trusted=["b.test", "c.test"], **extra)
    b = await nodes("b.test")
    c = await nodes("c.test")
    path = ("/_concord/admin/v1/federation/trusted_servers" if scope == "node"
            else "/_concord/admin/v1/tenants/a.test/trusted_servers")
    url = a.hs.base_url("client") + path
    async with aiohttp.ClientSession() as s:
        token = await admin_token(s, a.hs.base_url("client"))
        auth = {"Authorization": f"Bearer {token}"}
        async with s.get(url, headers=auth) as r:
            got = await r.json()
            assert r.status == 200 and got["trusted_servers"] == ["b.test", "c.test"]
        async with s.get(url) as r:
            assert r.status == 401
        async with s.put(url, headers=auth, json={"trusted_servers": ["b.test", "a*b"]}) as r:
            assert r.status == 400 and (await r.json())["errcode"] == "M_INVALID_PARAM"
        async with s.put(url, headers=auth, json={"trusted_servers": "b.test"}) as r:
            assert r.status == 400
        await c.hs.keys.client.get_json("a.test", "/_matrix/federation/v1/version")  # type: ignore[union-attr]
        async with s.put(url, headers=auth, json={"trusted_servers": ["b.test"]}) as r:
            got = await r.json()
            assert r.status == 200 and got["trusted_servers"] == ["b.test"]
            assert "admin API" in got["source"]
        with pytest.raises(FederationHttpError) as e:
            await c.hs.keys.client.get_json("a.test", "/_matrix/federation/v1/version")  # type: ignore[union-attr]
        assert e.value.status == 403 and "admin API" in e.value.body["error"]
        await b.hs.keys.client.get_json("a.test", "/_matrix/federation/v1/version")  # type: ignore[union-attr]
    # Persisted: the row is there for the next start (read back as the node does).
    from storage.stores.trust import TrustOverrideStore

    rows = await TrustOverrideStore(a.hs.database).get_all()
    assert rows[{"node": "", "tenant": "a.test"}[scope]].patterns == ("b.test",)
    async with aiohttp.ClientSession() as s:
        async with s.delete(url, headers=auth) as r:
            assert r.status == 200 and (await r.json())["trusted_servers"] == ["b.test", "c.test"]
    await c.hs.keys.client.get_json("a.test", "/_matrix/federation/v1/version")  # type: ignore[union-attr]


async def test_admin_override_survives_a_restart(nodes: StartFn, tmp_path: Path,
                                                 database_url: str) -> None:
    a = await nodes("a.test", trusted=["b.test"], database_url=database_url)
    assert a.hs.trust is not None
    await a.hs.trust.set_override("", ["c.test"])
    config = a.hs.config
    await a.hs.stop()
    from federation.clock import FakeClock
    from homeserver.server import HomeServer

    hs = await HomeServer.start(config, clock=FakeClock())
    try:
        assert hs.trust is not None
        assert hs.trust.allows("a.test", "c.test") and not hs.trust.allows("a.test", "b.test")
        assert await hs.trust.clear_override("")
        assert hs.trust.allows("a.test", "b.test")
    finally:
        await hs.stop()
