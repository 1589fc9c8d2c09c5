"""Delivery-guarantee tests: a scripted peer on loopback that answers
``PUT /send`` as told (statuses, hangs, per-PDU errors) and records what it
acknowledged, so "arrived exactly once, in order" is checked at the receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from federation.hashes import compute_event_id
from federation.room_versions import ROOM_V11, RoomVersion

# The outbound tests' fixtures, for this directory too.
from tests.federation_outbound.conftest import clock, tenant  # noqa: F401
from tests.loopback import serve


class ScriptedPeer:
    """A peer's ``/send``: ``answers`` are used once each, in order; then
    ``status`` (None: 200), or a hang while ``hang`` is set."""

    def __init__(self, rv: RoomVersion = ROOM_V11) -> None:
        self.rv = rv
        self.url = ""
        self.attempts: list[tuple[str, dict[str, Any]]] = []
        #: txnId -> body of each transaction answered 200 (first time).
        self.acked: dict[str, dict[str, Any]] = {}
        self.acked_order: list[str] = []
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.status: tuple[int, dict[str, Any]] | None = None
        self.hang = False
        #: event ID -> error answered for it in a 200.
        self.reject: dict[str, str] = {}
        self._release = asyncio.Event()
        self._cond = asyncio.Condition()

    async def send(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        txn_id = request.match_info["txn_id"]
        async with self._cond:
            self.attempts.append((txn_id, body))
            self._cond.notify_all()
        if self.answers:
            status, err = self.answers.pop(0)
            return web.json_response(err, status=status)
        if self.hang:
            await self._release.wait()
            return web.json_response({}, status=503)
        if self.status is not None:
            return web.json_response(self.status[1], status=self.status[0])
        if txn_id in self.acked:
            # What a real receiver does: the same txnId must carry the same body.
            assert self.acked[txn_id] == body, f"txn {txn_id} resent with other content"
        else:
            self.acked[txn_id] = body
            self.acked_order.append(txn_id)
        results = {}
        for pdu in body["pdus"]:
            eid = compute_event_id(pdu, self.rv)
            results[eid] = {"error": self.reject[eid]} if eid in self.reject else {}
        return web.json_response({"pdus": results})

    def event_ids(self) -> list[str]:
        """PDUs of acknowledged transactions, in delivery order (duplicates kept)."""
        return [compute_event_id(p, self.rv) for t in self.acked_order
                for p in self.acked[t]["pdus"]]

    async def wait_attempts(self, n: int, within_s: float = 20) -> None:
        async def reached() -> None:
            async with self._cond:
                await self._cond.wait_for(lambda: len(self.attempts) >= n)

        await asyncio.wait_for(reached(), within_s)

    def release(self) -> None:
        self._release.set()


@pytest.fixture
async def peer() -> AsyncIterator[ScriptedPeer]:
    p = ScriptedPeer()
    app = web.Application()
    app.router.add_put("/_matrix/federation/v1/send/{txn_id}", p.send)
    async with serve(app) as url:
        p.url = url
        try:
            yield p
        finally:
            p.release()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
