"""A sending node killed with SIGKILL while it delivers thousands of events,
then restarted: at the receiver every event exists exactly once, none lost.

Node A runs as a subprocess (``python -m homeserver run``) so the kill is
real: nothing is flushed, the transaction in flight is cut. Node B is in
process. Polls the receiver with a deadline (a subprocess cannot share a
FakeClock)."""

from __future__ import annotations

import asyncio
import io
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from signedjson.key import generate_signing_key, write_signing_keys

from concord_harness.nodes import pick_port
from federation.clock import RealClock
from federation.room_versions import ROOM_V11
from homeserver.config import parse_config
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.server import HomeServer
from homeserver.signing_key import read_signing_key_file
from storage.database import Database
from storage.stores.events import EventStore
from storage.stores.state import StateStore
from tests.federation_outbound.nodes import Node, start_node

EVENTS = 2000
ALICE = "@alice:a.test"
BOB = "@bob:b.test"
CLOCK = RealClock()


class SubprocessNode:
    def __init__(self, directory: Path, raw: dict[str, Any], port: int) -> None:
        self.directory = directory
        self.raw = raw
        self.port = port
        self.path = directory / "homeserver.yaml"
        self.path.write_text(yaml.safe_dump(raw))
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        log = open(self.directory / "hs.log", "ab")  # noqa: ASYNC230, SIM115
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "homeserver", "run", "--config", str(self.path),
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
        )
        log.close()
        deadline = CLOCK.monotonic() + 30
        while CLOCK.monotonic() < deadline:
            assert self.proc.returncode is None, self.log_tail()
            try:
                async with session.get(f"http://127.0.0.1:{self.port}/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await CLOCK.sleep(0.05)
        raise AssertionError("node A did not start:\n" + self.log_tail())

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def wait(self) -> None:
        if self.proc is not None:
            await self.proc.wait()

    def log_tail(self) -> str:
        return "\n".join((self.directory / "hs.log").read_text().splitlines()[-20:])


async def received(b: Node, room: str) -> list[str]:
    rows = await b.hs.database.fetch(
        "SELECT event_id FROM events WHERE tenant = 'b.test' AND room_id = $1 "
        "AND type = 'm.room.message' ORDER BY stream_ordering", room)
    return [str(r[0]) for r in rows]


async def until(what: str, cond: Any, budget_s: float = 40.0) -> None:
    deadline = CLOCK.monotonic() + budget_s
    while not await cond():
        assert CLOCK.monotonic() < deadline, f"{what}: not reached in {budget_s:g}s"
        await CLOCK.sleep(0.02)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_sigkill_mid_delivery_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    b = await start_node(tmp_path / "b", "b.test", CLOCK)  # type: ignore[arg-type]
    a_dir = tmp_path / "a"
    a_dir.mkdir()
    buf = io.StringIO()
    write_signing_keys(buf, [generate_signing_key("a1")])
    (a_dir / "signing.key").write_text(buf.getvalue())
    port = pick_port()
    raw = {
        "server_name": "a.test", "data_dir": str(a_dir),
        "signing_key_path": str(a_dir / "signing.key"),
        "database": {"url": f"sqlite://{a_dir / 'a.db'}"},
        "listeners": [{"type": "federation", "port": port, "bind_addresses": ["127.0.0.1"]}],
        "federation": {"trusted_key_servers": [],
                       "destination_overrides": {"b.test": b.hs.base_url("federation")}},
        "logging": {"level": "WARNING"},
        "shutdown_timeout": "1s",
    }
    b.hs.keys.client.destination_overrides["a.test"] = f"http://127.0.0.1:{port}"  # type: ignore[union-attr]
    node_a = SubprocessNode(a_dir, raw, port)
    try:
        # Set-up in process: A's room, joined by B over federation.
        a = await HomeServer.start(parse_config(raw, base_dir=str(a_dir)), clock=CLOCK)
        try:
            events = EventStore(a.database, StateStore(a.database))
            key = read_signing_key_file(str(a_dir / "signing.key"))[0]
            room = await EventCreationHandler(
                a.database, events, CLOCK, lambda _: key).create_room("a.test", ALICE, ROOM_V11)
            await b.remote_rooms.remote_join("b.test", BOB, room, ["a.test"], {})
        finally:
            await a.stop()
        # Thousands of events written while A is down: outbox rows wait for it.
        db = await Database.open(f"sqlite://{a_dir / 'a.db'}")
        try:
            events = EventStore(db, StateStore(db))
            creation = EventCreationHandler(db, events, CLOCK, lambda _: key)
            sent = [(await creation.create_event(
                "a.test", room, event_type="m.room.message", sender=ALICE,
                content={"msgtype": "m.text", "body": f"m{i}"})).event_id
                for i in range(EVENTS)]
            assert await db.fetchval("SELECT COUNT(*) FROM federation_outbox") == EVENTS
        finally:
            await db.close()

        await node_a.start(session)

        async def some_arrived() -> bool:
            return len(await received(b, room)) >= EVENTS // 5

        await until("a fifth delivered", some_arrived)
        node_a.kill()
        await node_a.wait()
        partial = await received(b, room)
        assert len(partial) < EVENTS, "all delivered before the kill: raise EVENTS"

        await node_a.start(session)

        async def all_arrived() -> bool:
            return len(await received(b, room)) >= EVENTS

        await until("everything delivered after the restart", all_arrived)
        got = await received(b, room)
        assert sorted(got) == sorted(sent)  # every event once, none lost
        assert got == sent  # and in the order A created them
        stream = [s.event.event_id for s in await b.events.get_stream_events(
            "b.test", 0, 100_000, room_id=room)]
        assert len(stream) == len(set(stream))

        async def outbox_empty() -> bool:
            db = await Database.open(f"sqlite://{a_dir / 'a.db'}")
            try:
                left = await db.fetchval("SELECT COUNT(*) FROM federation_outbox")
                dead = await db.fetchval("SELECT COUNT(*) FROM federation_dead_letters")
            finally:
                await db.close()
            assert dead == 0
            return int(left) == 0

        await until("A's outbox drained", outbox_empty)
    finally:
        if node_a.proc is not None and node_a.proc.returncode is None:
            node_a.kill()
            await node_a.wait()
        await b.hs.stop()
