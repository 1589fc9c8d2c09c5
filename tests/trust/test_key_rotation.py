"""Key rotation: the ``homeserver keys`` commands, a running node following
them without a restart, and a rotation in the middle of a busy room."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from federation.clock import FakeClock
from federation.room_versions import ROOM_V11
from federation.server_keys import key_id_of
from homeserver.key_rotation import rotate_signing_key
from homeserver.keys import KEY_REFRESH_INTERVAL_S
from homeserver.signing_key import read_signing_key_file
from storage.stores.outbox import OutboxStore
from tests.federation_outbound.nodes import Node, settle
from tests.trust.conftest import StartFn

ALICE = "@alice:a.test"
BOB = "@bob:b.test"


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "homeserver", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def config_file(node: Node, tmp_path: Path) -> str:
    cfg = node.hs.config
    path = tmp_path / f"{node.name}.yaml"
    path.write_text(yaml.safe_dump({
        "server_name": cfg.server_name,
        "data_dir": cfg.data_dir,
        "signing_key_path": cfg.signing_key_path,
        "database": {"url": cfg.database.url},
    }))
    return str(path)


async def key_response(node: Node) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.get(node.hs.base_url("federation") + "/_matrix/key/v2/server") as r:
            assert r.status == 200
            body: dict[str, Any] = await r.json()
            return body


async def test_keys_commands_on_a_running_node(nodes: StartFn, tmp_path: Path,
                                               clock: FakeClock, database_url: str) -> None:
    a = await nodes("a.test", database_url=database_url)
    config = config_file(a, tmp_path)
    first = key_id_of(a.hs.keys.signing_keys("a.test")[0])  # type: ignore[union-attr]

    code, out, err = await cli("keys", "rotate", "--config", config, "--overlap", "2h")
    assert code == 0, err
    new = out.split("now signing with ", 1)[1].split(";", 1)[0]
    assert new != first and f"{first} published as old until" in out
    assert [key_id_of(k) for k in read_signing_key_file(a.hs.config.signing_key_path)] == [new]

    # The running node notices on its next look (here: the periodic one).
    clock.advance(KEY_REFRESH_INTERVAL_S)
    for _ in range(200):
        if key_id_of(a.hs.keys.signing_keys("a.test")[0]) == new:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.01)
    body = await key_response(a)
    assert list(body["verify_keys"]) == [new]
    assert list(body["old_verify_keys"]) == [first]
    assert body["old_verify_keys"][first]["expired_ts"] > 0
    assert list(body["signatures"]["a.test"]) == [new]
    # New events are signed with the new key, without a restart.
    room = await a.create_room(ALICE, ROOM_V11)
    ev = await a.say("a.test", room, ALICE, "after")
    assert list(ev.pdu["signatures"]["a.test"]) == [new]

    code, out, err = await cli("keys", "list", "--config", config, "--json")
    assert code == 0, err
    states = {j["key_id"]: j["state"] for j in map(json.loads, out.splitlines())}
    assert states == {first: "old", new: "current"}
    code, out, err = await cli("keys", "list", "--config", config)
    assert f"{first}\told, expires" in out and f"{new}\tcurrent" in out

    # Revoking the old key takes it out of publication at once (SIGHUP or poll).
    code, out, err = await cli("keys", "revoke", "--config", config, first)
    assert code == 0 and f"{first} revoked" in out, err
    assert await a.hs.keys.refresh_local() == ["a.test"]  # type: ignore[union-attr]
    body = await key_response(a)
    assert body["old_verify_keys"] == {} and list(body["verify_keys"]) == [new]
    code, out, _ = await cli("keys", "list", "--config", config, "--json")
    assert {j["key_id"]: j["state"] for j in map(json.loads, out.splitlines())}[first] == "revoked"

    # Revoking the current key rotates first; bad input is a clear error.
    code, out, err = await cli("keys", "revoke", "--config", config, new)
    assert code == 0 and f"{new} was current; now signing with" in out, err
    code, _, err = await cli("keys", "revoke", "--config", config, first)
    assert code == 1 and "already revoked" in err
    code, _, err = await cli("keys", "revoke", "--config", config, "ed25519:nope")
    assert code == 1 and "not a key of a.test" in err
    code, _, err = await cli("keys", "rotate", "--config", config, "--overlap", "soon")
    assert code == 1 and "--overlap" in err
    code, _, err = await cli("keys", "rotate", "--config", config, "--tenant", "zz.test")
    assert code == 1 and "no tenant named zz.test" in err
    await a.hs.keys.refresh_local()  # type: ignore[union-attr]
    body = await key_response(a)
    assert new not in body["verify_keys"] and new not in body["old_verify_keys"]


class Gate:
    """A loopback relay from one node to another that can hold requests:
    while closed, what a sends to b waits (in flight, not failed)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.open = asyncio.Event()
        self.open.set()
        self.held = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()

        async def relay(request: web.Request) -> web.Response:
            if not self.open.is_set():
                self.held += 1
                await self.open.wait()
            assert self._session is not None
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() not in ("host", "content-length")}
            async with self._session.request(
                request.method, self.target + request.path_qs, headers=headers,
                data=await request.read(),
            ) as resp:
                return web.Response(status=resp.status, body=await resp.read(),
                                    content_type=resp.content_type)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", relay)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        self.open.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


async def test_rotation_in_the_middle_of_a_busy_room(nodes: StartFn, clock: FakeClock) -> None:
    a = await nodes("a.test")
    b = await nodes("b.test")
    room = await a.create_room(ALICE, ROOM_V11)
    await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {})
    await settle([a, b])
    old = key_id_of(a.hs.keys.signing_keys("a.test")[0])  # type: ignore[union-attr]
    gate = Gate(a.hs.keys.client.destination_overrides["b.test"])  # type: ignore[union-attr]
    await gate.start()
    a.hs.keys.client.destination_overrides["b.test"] = gate.url  # type: ignore[union-attr]

    sent: list[tuple[str, str]] = []  # (event_id, signing key ID of a's events or "")
    # The first chatter pauses after ``rotate_at`` iterations, signs one more
    # event of a's with the old key, and waits until the rotation landed.
    paused, resume, signed_old, rotated = (asyncio.Event() for _ in range(4))
    rotate_at = 8

    async def chatter(tag: str, n: int, pause_at: int | None = None) -> None:
        for i in range(n):
            if i == pause_at:
                paused.set()
                await resume.wait()
            ea = await a.say("a.test", room, ALICE, f"{tag} a{i}")
            sent.append((ea.event_id, next(iter(ea.pdu["signatures"]["a.test"]))))
            if i == pause_at:
                # Signed with the old key, held at the gate until after the rotation.
                signed_old.set()
                await rotated.wait()
            eb = await b.say("b.test", room, BOB, f"{tag} b{i}")
            sent.append((eb.event_id, ""))
            await asyncio.sleep(0)

    async def rotate_mid_stream() -> tuple[Any, str]:
        await asyncio.wait_for(paused.wait(), 30)
        gate.open.clear()  # from here a's deliveries to b wait at the gate
        resume.set()
        await asyncio.wait_for(signed_old.wait(), 30)
        held_back, key = sent[-1]
        assert key == old
        rotation = await rotate_signing_key(
            a.hs.database, "a.test", a.hs.config.signing_key_path,
            now_ms=clock.time_ms(), overlap_ms=3_600_000,
        )
        # What SIGHUP / the periodic poll do.
        await a.hs.keys.refresh_local()  # type: ignore[union-attr]
        assert key_id_of(a.hs.keys.signing_keys("a.test")[0]) == rotation.new_key_id  # type: ignore[union-attr]
        # The last old-key event has not reached b: it is delivered after the rotation.
        assert await b.events.get_event("b.test", held_back) is None
        return rotation, held_back

    busy = asyncio.ensure_future(chatter("before", 15, pause_at=rotate_at))
    try:
        rotation, held_back = await rotate_mid_stream()
    finally:
        rotated.set()
        gate.open.set()
        await busy
    await chatter("after", 15)
    await settle([a, b])
    await gate.close()
    assert await b.events.get_event("b.test", held_back) is not None

    new = rotation.new_key_id

    a_keys = [k for _, k in sent if k]
    assert a_keys[0] == old and a_keys[-1] == new
    # Once rotated, never the old key again.
    assert a_keys[a_keys.index(new):] == [new] * (len(a_keys) - a_keys.index(new))
    # Every event reached the other side, accepted (neither rejected nor outlier).
    for event_id, key in sent:
        for node, name in ((a, "a.test"), (b, "b.test")):
            got = await node.events.get_event(name, event_id)
            assert got is not None, (name, event_id)
            assert got.rejected_reason is None and not got.outlier
            if key and node is b:
                # b's keyring verifies a's events signed before and after.
                verified = await b.hs.keys.keyring.verify_pdu(  # type: ignore[union-attr]
                    got.event.pdu, ROOM_V11)
                assert verified.content_hash_ok and verified.event.event_id == event_id
    # No delivery failed, nothing is left queued.
    for node, peer in ((a, "b.test"), (b, "a.test")):
        state = await OutboxStore(node.hs.database).get_destination(peer)
        assert state is None or state.failure_count == 0
        assert await node.hs.database.fetchval("SELECT COUNT(*) FROM federation_outbox") == 0


async def test_rotating_a_tenants_key(nodes: StartFn, tmp_path: Path) -> None:
    a = await nodes("a.test", tenants=[{"server_name": "t2.test"}])
    config = config_file(a, tmp_path)
    keys = a.hs.keys
    assert keys is not None
    node_key = key_id_of(keys.signing_keys("a.test")[0])
    first = key_id_of(keys.signing_keys("t2.test")[0])

    code, out, err = await cli("keys", "rotate", "--config", config, "--tenant", "t2.test")
    assert code == 0, err
    new = out.split("now signing with ", 1)[1].split(";", 1)[0]
    assert new != first and f"{first} published as old until" in out
    assert "t2.test" in await keys.refresh_local()
    # The tenant signs with its new key; the node's own name is untouched.
    assert key_id_of(keys.signing_keys("t2.test")[0]) == new
    assert key_id_of(keys.signing_keys("a.test")[0]) == node_key
    async with aiohttp.ClientSession() as s:
        async with s.get(a.hs.base_url("federation") + "/_matrix/key/v2/server",
                         headers={"Host": "t2.test"}) as r:
            body = await r.json()
    assert body["server_name"] == "t2.test"
    assert list(body["verify_keys"]) == [new] and list(body["old_verify_keys"]) == [first]
    assert list(body["signatures"]["t2.test"]) == [new]
    assert (await key_response(a))["verify_keys"].keys() == {node_key}

    code, out, err = await cli("keys", "list", "--config", config, "--tenant", "t2.test",
                               "--json")
    assert code == 0, err
    assert {j["key_id"]: j["state"] for j in map(json.loads, out.splitlines())} == {
        first: "old", new: "current"}
    code, out, err = await cli("keys", "list", "--config", config, "--json")
    assert {j["key_id"] for j in map(json.loads, out.splitlines())} == {node_key}
