"""PUT /send: an unexpected failure while processing one PDU is that PDU's error.

Server-Server API "Transactions": the response lists a result per PDU, and a
PDU that fails never fails the others. A bug hit by one PDU (here injected
into our own code: the keyring's checks, or the auth rules the receipt path
runs, for the PDU whose body is ``boom``) must answer ``{"error": ...}`` for
that PDU, with the traceback logged, and 200 for the transaction; the other
PDUs are persisted. Both engines.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from federation.events import Event
from federation.keyring import Keyring
from federation.room_versions import ROOM_V11, RoomVersion
from homeserver.handlers import event_receipt
from tests.federation_inbound.conftest import NODE, Setup
from tests.federation_inbound.helpers import peer_joins, send_txn
from tests.federation_inbound.test_send import message, visible_ids


def is_boom(body: Any) -> bool:
    return isinstance(body, dict) and body.get("body") == "boom"


async def three_messages(setup: Setup) -> tuple[str, list[dict[str, Any]], list[str]]:
    """Room joined by the peer, and three sibling messages: ok1, boom, ok2."""
    node, peer = setup
    rv = ROOM_V11
    room_id, join, _ = await peer_joins(node, peer, rv)
    join_id = peer.event_id(join, rv)
    pdus = [await message(node, peer, rv, room_id, join_id, body)
            for body in ("ok1", "boom", "ok2")]
    return room_id, pdus, [peer.event_id(p, rv) for p in pdus]


def assert_isolated(resp: Any, ids: list[str]) -> None:
    ok1, boom, ok2 = ids
    assert resp["pdus"][ok1] == {} and resp["pdus"][ok2] == {}, resp
    assert resp["pdus"][boom] == {"error": "internal error while processing this PDU"}


def logged_traceback(caplog: pytest.LogCaptureFixture, event_id: str) -> bool:
    return any(
        r.exc_info is not None and event_id in r.getMessage() and r.levelno >= logging.ERROR
        for r in caplog.records
    )


async def test_failure_in_signature_checks_fails_that_pdu_only(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    node, peer = setup
    room_id, pdus, ids = await three_messages(setup)
    real = Keyring.verify_pdu

    async def broken(self: Keyring, pdu: Any, rv: RoomVersion) -> Any:
        if is_boom(pdu.get("content")):
            raise RuntimeError("injected failure")
        return await real(self, pdu, rv)

    monkeypatch.setattr(Keyring, "verify_pdu", broken)
    status, resp = await send_txn(peer, "iso1", pdus)
    assert status == 200, resp
    assert_isolated(resp, ids)
    visible = await visible_ids(node, room_id)
    assert ids[0] in visible and ids[2] in visible and ids[1] not in visible
    assert await node.events.get_event(NODE, ids[1]) is None
    assert logged_traceback(caplog, ids[1])


async def test_failure_in_receipt_checks_fails_that_pdu_only(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The auth rules raise for one event: in the batch (one database
    transaction for the run, which keeps nothing) and again on the per-event
    path, where it is that event's error alone."""
    node, peer = setup
    room_id, pdus, ids = await three_messages(setup)
    real = event_receipt.check_auth
    calls: list[str] = []

    def broken(event: Event, auth_events: Any) -> None:
        if is_boom(event.content):
            calls.append(event.event_id)
            raise RuntimeError("injected failure")
        real(event, auth_events)

    monkeypatch.setattr(event_receipt, "check_auth", broken)
    status, resp = await send_txn(peer, "iso2", pdus)
    assert status == 200, resp
    assert_isolated(resp, ids)
    assert calls and set(calls) == {ids[1]}
    visible = await visible_ids(node, room_id)
    assert ids[0] in visible and ids[2] in visible and ids[1] not in visible
    assert await node.events.get_event(NODE, ids[1]) is None
    assert logged_traceback(caplog, ids[1])

    # Nothing is left broken: the same event, sent again once the bug is
    # gone, is accepted.
    monkeypatch.setattr(event_receipt, "check_auth", real)
    status, resp = await send_txn(peer, "iso3", [pdus[1]])
    assert status == 200 and resp["pdus"] == {ids[1]: {}}, resp
    assert ids[1] in await visible_ids(node, room_id)
