"""Filling gaps stays bounded whatever a hostile peer answers, on both engines.

A peer that pushes an event with unknown prev events makes the node ask it
for what is missing (Server-Server API "Retrieving missing events",
``get_missing_events`` with ``limit``; then ``state_ids`` at each missing prev
and ``GET /event`` for the events it lists). The bounds of
:mod:`homeserver.handlers.missing_events` hold: at most
``MISSING_EVENTS_LIMIT * 2`` events taken from one ``get_missing_events``
answer, at most ``MAX_GAP_PREVS`` prevs filled per event, and no gap that
would need more than ``MAX_EVENTS_PER_GAP`` fetches is fetched at all.
"""

from __future__ import annotations

from typing import Any

from federation.room_versions import ROOM_V11
from homeserver.handlers.missing_events import (
    MAX_EVENTS_PER_GAP,
    MAX_GAP_PREVS,
    MISSING_EVENTS_LIMIT,
)
from tests.federation_inbound.conftest import NODE, PEER_USER, Setup
from tests.federation_inbound.helpers import peer_joins, send_txn
from tests.federation_inbound.test_send import head, message

RV = ROOM_V11


async def stored_ids(setup: Setup, ids: list[str]) -> set[str]:
    node, _ = setup
    return await node.events.have_events(NODE, ids)


async def test_get_missing_events_answer_beyond_the_limit_is_cut(setup: Setup) -> None:
    node, peer = setup
    room_id, join, _ = await peer_joins(node, peer, RV)
    join_id = peer.event_id(join, RV)
    chain: list[dict[str, Any]] = []
    prev: list[str] | None = None
    depth = None
    for n in range(30):
        m = await message(node, peer, RV, room_id, join_id, f"m{n}", prev=prev, depth=depth)
        chain.append(m)
        prev, depth = [peer.event_id(m, RV)], m["depth"] + 1
    ids = [peer.event_id(m, RV) for m in chain]
    # Asked for 10, the peer answers with all 29 events before the last.
    peer.missing_events_answer = chain[:29]
    status, resp = await send_txn(peer, "big-answer", [chain[29]])
    assert status == 200, resp
    assert peer.counts["get_missing_events"] == 1
    assert peer.last_missing_request["limit"] == MISSING_EVENTS_LIMIT
    taken = MISSING_EVENTS_LIMIT * 2
    # The first `taken` events of the answer are kept, not one more.
    assert await stored_ids(setup, ids[:29]) == set(ids[:taken])
    # The pushed event still misses its prev (m28): its state is asked for
    # once, the peer has none, and the event fails alone.
    assert peer.counts["state_ids"] == 1
    assert "error" in resp["pdus"][ids[29]]
    assert await stored_ids(setup, [ids[29]]) == set()


async def test_more_missing_prevs_than_max_gap_prevs(setup: Setup) -> None:
    node, peer = setup
    room_id, join, _ = await peer_joins(node, peer, RV)
    join_id = peer.event_id(join, RV)
    ext, d = await head(node, room_id)
    state = await node.events.state.get_current_state(NODE, room_id)
    auth = sorted([state[("m.room.power_levels", "")], join_id, state[("m.room.create", "")]])
    # MAX_GAP_PREVS + 5 forks the node never saw, each a valid event the peer serves.
    forks = [
        peer.event(RV, type="m.room.message", room_id=room_id, sender=PEER_USER,
                   prev_events=ext, auth_events=auth, depth=d + 1,
                   content={"body": f"fork {n}"})
        for n in range(MAX_GAP_PREVS + 5)
    ]
    fork_ids = sorted(peer.event_id(f, RV) for f in forks)
    peer.serve(RV, *forks)
    new = peer.event(RV, type="m.room.message", room_id=room_id, sender=PEER_USER,
                     prev_events=fork_ids, auth_events=auth, depth=d + 2,
                     content={"body": "on many forks"})
    new_id = peer.event_id(new, RV)
    peer.missing_events_answer = []
    status, resp = await send_txn(peer, "many-prevs", [new])
    assert status == 200, resp
    assert peer.counts["get_missing_events"] == 1
    # One state_ids request per prev filled, and no more than the bound.
    assert peer.counts["state_ids"] == MAX_GAP_PREVS
    assert "error" in resp["pdus"][new_id]
    assert await stored_ids(setup, [new_id]) == set()


async def test_gap_needing_more_than_max_events_is_not_fetched(setup: Setup) -> None:
    node, peer = setup
    room_id, join, _ = await peer_joins(node, peer, RV)
    join_id = peer.event_id(join, RV)
    ext, d = await head(node, room_id)
    state = await node.events.state.get_current_state(NODE, room_id)
    auth = sorted([state[("m.room.power_levels", "")], join_id, state[("m.room.create", "")]])
    gap = peer.event(RV, type="m.room.message", room_id=room_id, sender=PEER_USER,
                     prev_events=ext, auth_events=auth, depth=d + 1, content={"body": "gap"})
    gap_id = peer.event_id(gap, RV)
    new = peer.event(RV, type="m.room.message", room_id=room_id, sender=PEER_USER,
                     prev_events=[gap_id], auth_events=auth, depth=d + 2,
                     content={"body": "after the gap"})
    new_id = peer.event_id(new, RV)
    peer.serve(RV, gap)
    peer.missing_events_answer = []
    # The state at the gap names one more unknown event than the bound allows.
    unknown = [f"$unknown{n:05d}" for n in range(MAX_EVENTS_PER_GAP + 1)]
    peer.state_ids[gap_id] = (sorted(state.values()) + unknown, sorted(state.values()))
    status, resp = await send_txn(peer, "huge-gap", [new])
    assert status == 200, resp
    assert peer.counts["state_ids"] == 1
    # Only the gap's prev itself was fetched, none of the events it would need.
    assert peer.counts["event"] == 1
    assert "error" in resp["pdus"][new_id]
    assert await stored_ids(setup, [gap_id, new_id]) == set()
