"""The bounds on backfill and get_missing_events: a peer asking for more is
answered with at most ``MAX_BACKFILL`` / ``MAX_MISSING_EVENTS`` events, and
no walk loads more than ``MAX_WALK_VISITS`` events, whatever ``limit`` says.

Spec: server-server-api.md "Backfilling and retrieving missing events" (the
server may return fewer events than ``limit``).
"""

from __future__ import annotations

import pytest

from federation.room_versions import ROOM_V11
from homeserver.handlers import federation_server
from homeserver.handlers.federation_server import MAX_BACKFILL, MAX_MISSING_EVENTS
from tests.federation_inbound.conftest import Setup, room_path
from tests.federation_inbound.helpers import peer_joins

#: More events than either clamp.
MESSAGES = MAX_BACKFILL + 20


async def test_backfill_and_missing_events_are_clamped(setup: Setup) -> None:
    node, peer = setup
    rv = ROOM_V11
    room_id, join, _ = await peer_joins(node, peer, rv)
    msgs = [await node.send(room_id, "m.room.message", {"body": f"m{i}", "msgtype": "m.text"})
            for i in range(MESSAGES)]
    last = msgs[-1].event_id

    status, bf = await peer.request("GET", room_path("v1/backfill", room_id),
                                    query={"v": last, "limit": "1000"})
    assert status == 200
    got = [peer.event_id(p, rv) for p in bf["pdus"]]
    assert len(got) == MAX_BACKFILL  # the room holds more, so exactly the clamp
    assert got == [m.event_id for m in reversed(msgs)][:MAX_BACKFILL]

    status, gm = await peer.request(
        "POST", room_path("v1/get_missing_events", room_id),
        {"earliest_events": [peer.event_id(join, rv)], "latest_events": [last], "limit": 500})
    assert status == 200
    got = [peer.event_id(p, rv) for p in gm["events"]]
    assert len(got) == MAX_MISSING_EVENTS
    # The newest MAX_MISSING_EVENTS before ``last``, oldest first.
    assert got == [m.event_id for m in msgs[-1 - MAX_MISSING_EVENTS:-1]]


async def test_the_walk_stops_at_max_walk_visits(
    sqlite_setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    node, peer = sqlite_setup
    rv = ROOM_V11
    room_id, join, _ = await peer_joins(node, peer, rv)
    msgs = [await node.send(room_id, "m.room.message", {"body": f"m{i}", "msgtype": "m.text"})
            for i in range(12)]
    last = msgs[-1].event_id
    # A bound below both limits: the walk, not ``limit``, ends the answer.
    monkeypatch.setattr(federation_server, "MAX_WALK_VISITS", 5)

    status, bf = await peer.request("GET", room_path("v1/backfill", room_id),
                                    query={"v": last, "limit": "50"})
    assert status == 200
    assert [peer.event_id(p, rv) for p in bf["pdus"]] == [
        m.event_id for m in reversed(msgs)][:5]

    status, gm = await peer.request(
        "POST", room_path("v1/get_missing_events", room_id),
        {"earliest_events": [peer.event_id(join, rv)], "latest_events": [last], "limit": 50})
    assert status == 200
    assert [peer.event_id(p, rv) for p in gm["events"]] == [m.event_id for m in msgs[-6:-1]]

    # Unpatched, the same requests walk on to the limits.
    monkeypatch.undo()
    status, bf = await peer.request("GET", room_path("v1/backfill", room_id),
                                    query={"v": last, "limit": "50"})
    assert len(bf["pdus"]) > 12
