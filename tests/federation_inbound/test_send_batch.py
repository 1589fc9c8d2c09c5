"""PUT /send with chains of PDUs: the one-database-transaction path for a
room's PDUs gives the outcomes of processing them one by one, including when
an event in the middle needs the per-event path (rejected, a fork checked
against the current state, a prev event to fetch, a duplicate), on both
engines."""

from __future__ import annotations

from typing import Any

from federation.room_versions import ROOM_V11, ROOM_V12, RoomVersion
from tests.federation_inbound.conftest import NODE, PEER_USER, Node, Peer, Setup
from tests.federation_inbound.helpers import peer_joins, send_txn


async def _auth(node: Node, rv: RoomVersion, room_id: str, join_id: str) -> list[str]:
    state = await node.events.state.get_current_state(NODE, room_id)
    auth = [state[("m.room.power_levels", "")], join_id]
    if not rv.room_id_from_create_event:
        auth.append(state[("m.room.create", "")])
    return sorted(auth)


def _msg(peer: Peer, rv: RoomVersion, room_id: str, auth: list[str], prev: str, depth: int,
         body: str, sender: str = PEER_USER) -> dict[str, Any]:
    return peer.event(rv, type="m.room.message", room_id=room_id, sender=sender,
                      prev_events=[prev], auth_events=auth, depth=depth,
                      content={"body": body, "msgtype": "m.text"})


async def _visible(node: Node, room_id: str) -> list[str]:
    stream = await node.events.get_stream_events(NODE, 0, 1000, room_id=room_id)
    return [s.event.event_id for s in stream]


async def _rejected_and_fork_scenario(
    node: Node, peer: Peer, rv: RoomVersion, *, batched: bool
) -> tuple[dict[int, Any], list[int], list[int], list[int], bool]:
    """A 12-event chain whose event 5 comes from a user who never joined
    (rejected); event 6 builds on it, so the room's extremity (event 4) is not
    among its prev events and it is also checked against the current state.

    Sent in one transaction (plus a duplicate) or one transaction per PDU;
    returns, by chain index: results, visible events, forward extremities,
    soft-failed events, and whether the current state is the last event's.
    """
    room_id, join, _ = await peer_joins(node, peer, rv)
    join_id = peer.event_id(join, rv)
    auth = await _auth(node, rv, room_id, join_id)
    depth = join["depth"]
    pdus: list[dict[str, Any]] = []
    prev = join_id
    for i in range(12):
        sender = "@mallory:peer.test" if i == 5 else PEER_USER
        pdu = _msg(peer, rv, room_id, auth, prev, depth + 1 + i, f"m{i}", sender)
        pdus.append(pdu)
        prev = peer.event_id(pdu, rv)
    ids = [peer.event_id(p, rv) for p in pdus]
    index = {eid: i for i, eid in enumerate(ids)}
    results: dict[int, Any] = {}
    if batched:
        status, resp = await send_txn(peer, f"b{room_id}", [*pdus, pdus[2]])
        assert status == 200, resp
        assert set(resp["pdus"]) == set(ids)
        results = {index[k]: v for k, v in resp["pdus"].items()}
        # A retry answers the same and stores nothing more.
        before = await _visible(node, room_id)
        status, again = await send_txn(peer, f"b{room_id}", [*pdus, pdus[2]])
        assert (status, again) == (200, resp)
        assert await _visible(node, room_id) == before
    else:
        for i, pdu in enumerate(pdus):
            status, resp = await send_txn(peer, f"s{i}{room_id}", [pdu])
            assert status == 200, resp
            results[i] = resp["pdus"][ids[i]]
    # Rejection reasons name the room's own events: keep the outcome only.
    results = {i: {"error": "rejected"} if "rejected" in r.get("error", "") else r
               for i, r in results.items()}
    visible = [index[e] for e in await _visible(node, room_id) if e in index]
    extremities = [index[e] for e in await node.events.get_forward_extremities(NODE, room_id)]
    stored = await node.events.get_stored_events(NODE, ids)
    soft_failed = [i for i, e in enumerate(ids) if stored[e].soft_failed]
    streams = [stored[e].stream_ordering for e in ids]
    assert streams == sorted(streams)
    groups = await node.events.get_state_groups_for_event(NODE, ids[-1])
    assert groups is not None
    current = await node.events.state.get_current_state_group(NODE, room_id) == groups[1]
    return results, visible, extremities, soft_failed, current


async def test_chain_with_rejected_event_and_fork_in_the_middle(setup: Setup) -> None:
    node, peer = setup
    for rv in (ROOM_V11, ROOM_V12):
        batched = await _rejected_and_fork_scenario(node, peer, rv, batched=True)
        one_by_one = await _rejected_and_fork_scenario(node, peer, rv, batched=False)
        assert batched == one_by_one
        results, visible, extremities, soft_failed, current = batched
        assert results[5] == {"error": "rejected"}
        assert all(results[i] == {} for i in range(12) if i != 5)
        assert visible == [i for i in range(12) if i != 5]
        # Event 4's only child is rejected: it stays a forward extremity.
        assert extremities == [11, 4]
        assert soft_failed == []
        # Both extremities have the same state: the current state is that group.
        assert current is True


async def test_chain_with_a_missing_prev_event_in_the_middle(setup: Setup) -> None:
    node, peer = setup
    rv = ROOM_V11
    room_id, join, _ = await peer_joins(node, peer, rv)
    join_id = peer.event_id(join, rv)
    auth = await _auth(node, rv, room_id, join_id)
    depth = join["depth"]
    chain: list[dict[str, Any]] = []
    prev = join_id
    for i in range(8):
        pdu = _msg(peer, rv, room_id, auth, prev, depth + 1 + i, f"m{i}")
        chain.append(pdu)
        prev = peer.event_id(pdu, rv)
    ids = [peer.event_id(p, rv) for p in chain]
    # Event 3 is not sent: the peer serves it through get_missing_events.
    peer.missing_events_answer = [chain[3]]
    status, resp = await send_txn(peer, "t1", chain[:3] + chain[4:])
    assert status == 200, resp
    assert resp == {"pdus": {eid: {} for i, eid in enumerate(ids) if i != 3}}
    assert peer.counts["get_missing_events"] == 1
    assert (await _visible(node, room_id))[-8:] == ids
    assert await node.events.get_forward_extremities(NODE, room_id) == [ids[-1]]
