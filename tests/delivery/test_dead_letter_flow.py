"""Dead letters end to end on a real node: exceed the bound, inspect through
the admin API, the CLI and /metrics, fix the peer, replay, delivered."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from signedjson.key import generate_signing_key, write_signing_keys

from federation.clock import FakeClock
from homeserver.cli import main as cli_main
from homeserver.config import parse_config
from homeserver.federation_sender import FederationSender
from homeserver.keys import key_service_for
from homeserver.server import HomeServer
from tests.delivery.conftest import ScriptedPeer
from tests.federation_outbound.conftest import LocalTenant

BOB = "@bob:b.test"
ADMIN = "/_concord/admin/v1/federation"


class Running:
    def __init__(self, hs: HomeServer, config_path: Path, token: str,
                 session: aiohttp.ClientSession) -> None:
        self.hs = hs
        self.config_path = config_path
        self.token = token
        self.session = session

    @property
    def sender(self) -> FederationSender:
        s = self.hs.federation_sender  # type: ignore[attr-defined]
        assert isinstance(s, FederationSender)
        return s

    async def api(self, method: str, path: str, body: Any = None,
                  token: str | None = None) -> tuple[int, Any]:
        async with self.session.request(
            method, self.hs.base_url("client") + ADMIN + path, json=body,
            headers={"Authorization": f"Bearer {token or self.token}"},
        ) as resp:
            return resp.status, await resp.json()

    async def cli(self, *argv: str) -> tuple[int, str, str]:
        """``homeserver federation ...`` on the node's database (another thread:
        the CLI runs its own event loop)."""
        out, err = io.StringIO(), io.StringIO()

        def run() -> int:
            with redirect_stdout(out), redirect_stderr(err):
                return cli_main(["federation", argv[0], "--config", str(self.config_path),
                                 *argv[1:]])

        code = await asyncio.to_thread(run)
        return code, out.getvalue(), err.getvalue()

    async def metrics(self) -> str:
        async with self.session.get(self.hs.base_url("metrics") + "/metrics") as resp:
            return await resp.text()


@pytest.fixture
async def node(
    tmp_path: Path, database_url: str, peer: ScriptedPeer
) -> AsyncIterator[Running]:
    buf = io.StringIO()
    write_signing_keys(buf, [generate_signing_key("k1")])
    (tmp_path / "signing.key").write_text(buf.getvalue())
    raw = {
        "server_name": "a.test",
        "data_dir": str(tmp_path),
        "signing_key_path": str(tmp_path / "signing.key"),
        "database": {"url": database_url},
        "listeners": [
            {"type": "client", "port": 0, "bind_addresses": ["127.0.0.1"]},
            {"type": "federation", "port": 0, "bind_addresses": ["127.0.0.1"]},
            {"type": "metrics", "port": 0, "bind_addresses": ["127.0.0.1"]},
        ],
        "federation": {"trusted_key_servers": [], "max_delivery_attempts": 2,
                       "destination_overrides": {"b.test": peer.url}},
        "password_hash_rounds": 4,
    }
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump(raw))
    hs = await HomeServer.start(parse_config(raw, base_dir=str(tmp_path)), clock=FakeClock())
    try:
        _, login = await hs.accounts.register(hs.tenants.primary, "admin", "pw", admin=True)
        _, user = await hs.accounts.register(hs.tenants.primary, "user", "pw")
        assert login is not None and user is not None
        async with aiohttp.ClientSession() as session:
            running = Running(hs, path, login.access_token, session)
            running.user_token = user.access_token  # type: ignore[attr-defined]
            yield running
    finally:
        await hs.stop()


async def fail_until(node: Running, peer: ScriptedPeer, dead: int) -> None:
    """Let the queue retry (an hour at a time) until ``dead`` rows are dead letters."""
    assert isinstance(node.hs.clock, FakeClock)
    for _ in range(10):
        await node.sender.wait_until_idle()
        n = await node.hs.database.fetchval("SELECT COUNT(*) FROM federation_dead_letters")
        if n >= dead:
            return
        seen = len(peer.attempts)
        # The retry sleeps on the FakeClock; under load its timer may be set
        # a moment after wait_until_idle returns, and an advance made before
        # that does not wake it. So advance again (a few minutes at a time,
        # far below max_delivery_age) until the attempt arrives, bounded by
        # real time.
        node.hs.clock.advance(3600)
        for _ in range(40):
            try:
                await peer.wait_attempts(seen + 1, within_s=0.5)
                break
            except TimeoutError:
                node.hs.clock.advance(300)
        else:
            raise AssertionError("the peer was never retried")
    raise AssertionError("the bound was never reached")


async def test_dead_letters_inspected_and_replayed(node: Running, peer: ScriptedPeer) -> None:
    hs = node.hs
    assert isinstance(hs.clock, FakeClock)
    tenant = LocalTenant(hs.database, hs.clock)
    key_service_for(hs)  # the node's own sender signs; the peer does not check
    room = await tenant.room_with_remote_members([BOB])
    peer.status = (500, {"errcode": "M_UNKNOWN", "error": "disk full"})
    msgs = [await tenant.say(room, f"m{i}") for i in range(3)]
    await fail_until(node, peer, 3)

    # The admin API: what is dead, why, and the destination's state.
    status, body = await node.api("GET", "/dead_letters?destination=b.test")
    assert status == 200 and body["total"] == 3
    letters = body["dead_letters"]
    assert [d["event_id"] for d in letters] == [m.event_id for m in msgs]
    assert {d["reason"] for d in letters} == {"max_attempts"}
    assert all("HTTP 500 M_UNKNOWN: disk full" in d["last_error"] for d in letters)
    assert all(d["room_id"] == room and d["attempts"] == 2 for d in letters)
    status, one = await node.api("GET", f"/dead_letters/{letters[0]['id']}")
    assert status == 200 and one["event"]["content"]["body"] == "m0"
    status, page = await node.api("GET", "/dead_letters?limit=2")
    assert len(page["dead_letters"]) == 2 and "next_token" in page
    status, rest = await node.api("GET", f"/dead_letters?limit=2&from={page['next_token']}")
    assert [d["id"] for d in page["dead_letters"] + rest["dead_letters"]] == [
        d["id"] for d in letters]
    assert (await node.api("GET", "/dead_letters?room_id=!other:a.test"))[1]["total"] == 0
    assert (await node.api("GET", "/dead_letters?older_than=1d"))[1]["total"] == 0
    assert (await node.api("GET", "/dead_letters?newer_than=1d"))[1]["total"] == 3
    status, bad = await node.api("GET", "/dead_letters?reason=bored")
    assert status == 400 and bad["errcode"] == "M_INVALID_PARAM"
    status, bad = await node.api("POST", "/dead_letters/purge", {})
    assert status == 400 and "all" in bad["error"]
    status, denied = await node.api("GET", "/destinations",
                                    token=node.user_token)  # type: ignore[attr-defined]
    assert status == 403 and denied["errcode"] == "M_FORBIDDEN"
    status, dests = await node.api("GET", "/destinations")
    (dest,) = [d for d in dests["destinations"] if d["destination"] == "b.test"]
    assert dest["state"] == "backing_off" and dest["dead_letters"] == 3
    assert dest["queue_depth"] == 0 and dest["next_retry_ts"] > hs.clock.time_ms()
    assert dest["last_failure_ts"] is not None and "disk full" in dest["last_error"]
    text = await node.metrics()
    assert 'concord_federation_dead_letters{reason="max_attempts"} 3.0' in text
    assert 'concord_federation_transactions_failed_total{reason="http_5xx"}' in text

    # The CLI sees the same.
    code, out, err = await node.cli("dead-letters", "list", "--json", "--destination", "b.test")
    assert code == 0, err
    assert [json.loads(line)["event_id"] for line in out.splitlines()] == [
        m.event_id for m in msgs]
    code, out, _ = await node.cli("destinations", "--json")
    # (The CLI reads the real clock, so the FakeClock's backoff is long over.)
    listed = json.loads(out.splitlines()[0])
    assert code == 0 and listed["destination"] == "b.test" and listed["dead_letters"] == 3
    code, out, _ = await node.cli("dead-letters", "show", letters[1]["id"])
    assert code == 0 and json.loads(out)["event"]["content"]["body"] == "m1"
    code, _, err = await node.cli("dead-letters", "purge")
    assert code == 1 and "--all" in err

    # Fix the peer, replay through the admin API: delivered, in order, once.
    peer.status = None
    status, done = await node.api("POST", "/dead_letters/replay", {"destination": "b.test"})
    assert status == 200 and done == {"replayed": 3}
    await peer.wait_attempts(len(peer.attempts) + 1)
    await node.sender.wait_until_idle()
    assert peer.event_ids() == [m.event_id for m in msgs]
    assert (await node.api("GET", "/dead_letters"))[1]["total"] == 0
    status, dest = await node.api("GET", "/destinations/b.test")
    assert dest["state"] == "idle" and dest["last_success_ts"] is not None

    # A refused transaction replayed through the CLI, picked up by the sweep.
    peer.answers = [(400, {"errcode": "M_BAD_JSON", "error": "no"})]
    late = await tenant.say(room, "late")
    await peer.wait_attempts(len(peer.attempts) + 1)
    await node.sender.wait_until_idle()
    code, out, _ = await node.cli("dead-letters", "replay", "--reason", "rejected")
    assert code == 0 and "replayed 1" in out
    hs.clock.advance(60)  # the node's outbox sweep
    await peer.wait_attempts(len(peer.attempts) + 1)
    await node.sender.wait_until_idle()
    assert peer.event_ids() == [m.event_id for m in msgs] + [late.event_id]

    # A replay window from the CLI with its progress bar; purge by ID.
    code, out, err = await node.cli("replay", "--destination", "b.test", "--since", "1h",
                                    "--room", room, "--progress")
    assert code == 0 and "queued" in out and "queueing [" in err
    code, _, err = await node.cli("replay", "--destination", "b.test", "--since", "yesterday")
    assert code == 1 and "--since" in err
    status, done = await node.api("POST", "/replay", {"destination": "nobody.test",
                                                      "since": 0})
    assert status == 400 and "nothing to replay" in done["error"]


async def backing_off(node: Running, peer: ScriptedPeer, tenant: LocalTenant, room: str,
                      body: str) -> str:
    """Say ``body`` while the peer answers 429 with an hour's ``retry_after_ms``:
    the queue ends asleep in a backoff far longer than the node's sweep."""
    peer.answers = [(429, {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down",
                           "retry_after_ms": 3_600_000})]
    seen = len(peer.attempts)
    ev = await tenant.say(room, body)
    await peer.wait_attempts(seen + 1)
    await node.sender.wait_until_idle()
    assert node.sender.running_queues == 1  # asleep, not finished
    status, dest = await node.api("GET", "/destinations/b.test")
    assert dest["state"] == "backing_off"
    assert dest["next_retry_ts"] >= node.hs.clock.time_ms() + 3_600_000
    return ev.event_id


async def test_cli_reset_wakes_a_sleeping_queue_at_the_sweep(
    node: Running, peer: ScriptedPeer
) -> None:
    hs = node.hs
    assert isinstance(hs.clock, FakeClock)
    tenant = LocalTenant(hs.database, hs.clock)
    key_service_for(hs)
    room = await tenant.room_with_remote_members([BOB])
    first = await backing_off(node, peer, tenant, room, "m0")
    seen = len(peer.attempts)

    code, out, err = await node.cli("destinations", "--reset", "b.test")
    assert code == 0 and "reset the backoff of b.test" in out, err
    hs.clock.advance(60)  # the node's outbox sweep, an hour before the old retry time
    await peer.wait_attempts(seen + 1)
    await node.sender.wait_until_idle()
    assert peer.event_ids() == [first]

    # A dead letter replayed from the CLI while the queue sleeps is sent at
    # the sweep too, not at the old retry time.
    second = await backing_off(node, peer, tenant, room, "m1")
    peer.answers = [(400, {"errcode": "M_BAD_JSON", "error": "no"})]
    code, _, err = await node.cli("destinations", "--reset", "b.test")
    assert code == 0, err
    hs.clock.advance(60)
    await peer.wait_attempts(len(peer.attempts) + 1)
    await node.sender.wait_until_idle()
    status, body = await node.api("GET", "/dead_letters?reason=rejected")
    assert body["total"] == 1 and body["dead_letters"][0]["event_id"] == second
    third = await backing_off(node, peer, tenant, room, "m2")
    # Only the CLI's replay (which clears the backoff in the database) can wake it now.
    seen = len(peer.attempts)
    hs.clock.advance(60)
    await node.sender.wait_until_idle()
    assert len(peer.attempts) == seen  # a sweep alone leaves the backoff alone
    code, out, _ = await node.cli("dead-letters", "replay", "--reason", "rejected")
    assert code == 0 and "replayed 1" in out
    hs.clock.advance(60)
    await peer.wait_attempts(seen + 1)
    await node.sender.wait_until_idle()
    assert set(peer.event_ids()) == {first, second, third}
    assert (await node.api("GET", "/dead_letters"))[1]["total"] == 0


async def test_admin_reset_purge_and_replay_window(node: Running, peer: ScriptedPeer) -> None:
    hs = node.hs
    assert isinstance(hs.clock, FakeClock)
    tenant = LocalTenant(hs.database, hs.clock)
    key_service_for(hs)
    room = await tenant.room_with_remote_members([BOB])
    other = await tenant.room_with_remote_members([BOB])

    # Reset through the admin API: retried at once, no clock advance.
    first = await backing_off(node, peer, tenant, room, "m0")
    seen = len(peer.attempts)
    status, body = await node.api("POST", "/destinations/b.test/reset")
    assert status == 200, body
    await peer.wait_attempts(seen + 1)
    await node.sender.wait_until_idle()
    assert peer.event_ids() == [first]
    status, dest = await node.api("GET", "/destinations/b.test")
    assert dest["state"] == "idle" and dest["next_retry_ts"] is None

    # Two refused transactions, one per room: purge one by filter, one by ID.
    peer.status = (400, {"errcode": "M_BAD_JSON", "error": "no"})
    refused = []
    for r in (room, other):
        seen = len(peer.attempts)
        refused.append((await tenant.say(r, "refused")).event_id)
        await peer.wait_attempts(seen + 1)
        await node.sender.wait_until_idle()
    peer.status = None
    assert (await node.api("GET", "/dead_letters"))[1]["total"] == 2
    assert 'concord_federation_dead_letters{reason="rejected"} 2.0' in await node.metrics()
    status, done = await node.api("POST", "/dead_letters/purge",
                                  {"room_id": other, "reason": "rejected"})
    assert status == 200 and done == {"purged": 1}
    status, body = await node.api("GET", "/dead_letters")
    assert body["total"] == 1 and body["dead_letters"][0]["event_id"] == refused[0]
    assert 'concord_federation_dead_letters{reason="rejected"} 1.0' in await node.metrics()
    status, done = await node.api("DELETE", f"/dead_letters/{body['dead_letters'][0]['id']}")
    assert status == 200 and done == {"purged": 1}
    assert (await node.api("GET", "/dead_letters"))[1]["total"] == 0
    assert 'concord_federation_dead_letters{reason="rejected"} 0.0' in await node.metrics()
    status, gone = await node.api("DELETE", f"/dead_letters/{body['dead_letters'][0]['id']}")
    assert status == 404, gone

    # A replay window through the admin API: every message of the room sent
    # again, delivered at once.
    since = hs.clock.time_ms() - 3_600_000
    seen = len(peer.attempts)
    status, done = await node.api("POST", "/replay", {"destination": "b.test",
                                                      "since": since, "room_id": room})
    assert status == 200 and done["since"] == since
    assert done["queued"] >= 2  # m0 and the purged refusal (and the room's own events)
    await peer.wait_attempts(seen + 1)
    await node.sender.wait_until_idle()
    resent = peer.event_ids()[1:]
    assert first in resent and refused[0] in resent and refused[1] not in resent
    assert len(resent) == done["queued"]
