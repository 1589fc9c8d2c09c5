"""PUT /send: transactions of PDUs and EDUs from a crafted peer, on both engines."""

from __future__ import annotations

from typing import Any

from federation.room_versions import ROOM_V10, ROOM_V11, RoomVersion
from tests.federation_inbound.conftest import NODE, PEER_USER, Node, Peer, Setup
from tests.federation_inbound.helpers import peer_joins, send_txn


async def head(node: Node, room_id: str) -> tuple[list[str], int]:
    ext = await node.events.get_forward_extremities(NODE, room_id)
    evs = await node.events.get_events(NODE, ext)
    return ext, max(e.depth for e in evs.values())


async def message(node: Node, peer: Peer, rv: RoomVersion, room_id: str, join_id: str,
                  body: str, *, prev: list[str] | None = None, depth: int | None = None,
                  sender: str = PEER_USER) -> dict[str, Any]:
    ext, d = await head(node, room_id)
    state = await node.events.state.get_current_state(NODE, room_id)
    auth = [state[("m.room.power_levels", "")], join_id]
    if not rv.room_id_from_create_event:
        auth.append(state[("m.room.create", "")])
    return peer.event(rv, type="m.room.message", room_id=room_id, sender=sender,
                      prev_events=prev or ext, auth_events=sorted(auth),
                      depth=depth or d + 1, content={"body": body, "msgtype": "m.text"})


async def visible_ids(node: Node, room_id: str) -> list[str]:
    stream = await node.events.get_stream_events(NODE, 0, 1000, room_id=room_id)
    return [s.event.event_id for s in stream]


async def test_valid_pdus_are_persisted_and_visible(setup: Setup) -> None:
    node, peer = setup
    rv = ROOM_V11
    room_id, join, _ = await peer_joins(node, peer, rv)
    join_id = peer.event_id(join, rv)
    m1 = await message(node, peer, rv, room_id, join_id, "one")
    m1_id = peer.event_id(m1, rv)
    m2 = await message(node, peer, rv, room_id, join_id, "two", prev=[m1_id],
                       depth=m1["depth"] + 1)
    m2_id = peer.event_id(m2, rv)
    status, resp = await send_txn(peer, "t1", [m2, m1])  # out of order on purpose
    assert status == 200, resp
    assert resp == {"pdus": {m1_id: {}, m2_id: {}}}
    assert (await visible_ids(node, room_id))[-2:] == [m1_id, m2_id]
    assert await node.events.get_forward_extremities(NODE, room_id) == [m2_id]
    assert peer.counts["get_missing_events"] == 0


async def test_bad_pdus_fail_alone(setup: Setup) -> None:
    node, peer = setup
    rv = ROOM_V10
    room_id, join, _ = await peer_joins(node, peer, rv)
    join_id = peer.event_id(join, rv)
    good = await message(node, peer, rv, room_id, join_id, "good")
    bad_sig = await message(node, peer, rv, room_id, join_id, "forged")
    sig = bad_sig["signatures"][peer.name]["ed25519:p1"]
    bad_sig["signatures"][peer.name]["ed25519:p1"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    bad_hash = await message(node, peer, rv, room_id, join_id, "original")
    bad_hash["content"] = {"body": "tampered", "msgtype": "m.text"}  # hash no longer matches
    intruder = await message(node, peer, rv, room_id, join_id, "let me in",
                             sender="@mallory:peer.test")
    status, resp = await send_txn(peer, "t1", [good, bad_sig, bad_hash, intruder])
    assert status == 200, resp
    ids = {k: peer.event_id(p, rv) for k, p in
           (("good", good), ("sig", bad_sig), ("hash", bad_hash), ("intruder", intruder))}
    results = resp["pdus"]
    assert results[ids["good"]] == {}
    assert "signature" in results[ids["sig"]]["error"].lower()
    assert "rejected" in results[ids["intruder"]]["error"]
    # The hash mismatch is not an error: the event is kept, redacted (step 3).
    assert results[ids["hash"]] == {}
    stored = await node.events.get_event(NODE, ids["hash"])
    assert stored is not None and stored.event.content == {}
    assert await node.events.get_event(NODE, ids["sig"]) is None
    rejected = await node.events.get_event(NODE, ids["intruder"])
    assert rejected is not None and rejected.rejected_reason is not None
    visible = await visible_ids(node, room_id)
    assert ids["good"] in visible and ids["intruder"] not in visible


async def test_replayed_transaction_and_duplicates_change_nothing(setup: Setup) -> None:
    node, peer = setup
    rv = ROOM_V11
    room_id, join, _ = await peer_joins(node, peer, rv)
    join_id = peer.event_id(join, rv)
    m1 = await message(node, peer, rv, room_id, join_id, "once")
    status, first = await send_txn(peer, "t1", [m1, m1])
    assert status == 200
    before = await node.events.get_max_stream_ordering(NODE)
    status, again = await send_txn(peer, "t1", [m1, m1])  # a retry: answered as before
    assert status == 200 and again == first
    # The same txnId with other content is refused (docs/usage/delivery.md).
    status, other = await send_txn(peer, "t1", [m1])
    assert status == 400 and other["errcode"] == "M_INVALID_PARAM", other
    assert "different content" in other["error"]
    status, dup = await send_txn(peer, "t2", [m1])  # new txnId, known PDU
    assert status == 200 and dup == first
    assert await node.events.get_max_stream_ordering(NODE) == before
    assert (await visible_ids(node, room_id)).count(peer.event_id(m1, rv)) == 1


async def test_missing_prev_events_fetched_with_get_missing_events(setup: Setup) -> None:
    node, peer = setup
    rv = ROOM_V11
    room_id, join, _ = await peer_joins(node, peer, rv)
    join_id = peer.event_id(join, rv)
    chain: list[dict[str, Any]] = []
    prev: list[str] | None = None
    depth = None
    for n in range(4):
        m = await message(node, peer, rv, room_id, join_id, f"m{n}", prev=prev, depth=depth)
        chain.append(m)
        prev, depth = [peer.event_id(m, rv)], m["depth"] + 1
    peer.missing_events_answer = chain[:3]
    status, resp = await send_txn(peer, "t1", [chain[3]])
    assert status == 200 and resp["pdus"] == {peer.event_id(chain[3], rv): {}}
    assert peer.counts["get_missing_events"] == 1
    asked = peer.last_missing_request
    ext_ids, ext_depth = [peer.event_id(join, rv)], join["depth"]
    assert asked["earliest_events"] == ext_ids and asked["latest_events"] == [
        peer.event_id(chain[3], rv)]
    assert asked["limit"] == 10 and asked["min_depth"] == ext_depth
    assert (await visible_ids(node, room_id))[-4:] == [peer.event_id(m, rv) for m in chain]


async def test_large_gap_filled_from_state_ids(setup: Setup) -> None:
    node, peer = setup
    rv = ROOM_V11
    room_id, join, _ = await peer_joins(node, peer, rv)
    join_id = peer.event_id(join, rv)
    state = await node.events.state.get_current_state(NODE, room_id)
    # The peer's history the node never saw: a topic change and a message.
    ext, d = await head(node, room_id)
    auth = sorted([state[("m.room.power_levels", "")], join_id,
                   state[("m.room.create", "")]])
    gap_a = peer.event(rv, type="m.room.message", room_id=room_id, sender=PEER_USER,
                       prev_events=ext, auth_events=auth, depth=d + 1,
                       content={"body": "unseen"})
    gap_b = peer.event(rv, type="m.room.message", room_id=room_id, sender=PEER_USER,
                       prev_events=[peer.event_id(gap_a, rv)], auth_events=auth, depth=d + 2,
                       content={"body": "unseen too"})
    b_id = peer.event_id(gap_b, rv)
    new = peer.event(rv, type="m.room.message", room_id=room_id, sender=PEER_USER,
                     prev_events=[b_id], auth_events=auth, depth=d + 3,
                     content={"body": "latest"})
    peer.serve(rv, gap_b)
    # get_missing_events returns nothing useful: the gap is "too large".
    peer.missing_events_answer = []
    peer.state_ids[b_id] = (sorted(state.values()), sorted(state.values()))
    status, resp = await send_txn(peer, "t1", [new])
    assert status == 200 and resp["pdus"] == {peer.event_id(new, rv): {}}, resp
    assert peer.counts["state_ids"] == 1 and peer.counts["event"] >= 1
    # The join stays an extremity: nothing we hold refers to it yet.
    assert peer.event_id(new, rv) in await node.events.get_forward_extremities(NODE, room_id)
    filled = await node.events.get_event(NODE, b_id)
    assert filled is not None and not filled.outlier and filled.rejected_reason is None
    assert await node.events.get_state_before(NODE, b_id) == state
    assert await node.events.get_event(NODE, peer.event_id(gap_a, rv)) is None


async def test_unknown_room_and_limits(setup: Setup) -> None:
    node, peer = setup
    rv = ROOM_V11
    room_id, join, _ = await peer_joins(node, peer, rv)
    stray = peer.event(rv, type="m.room.message", room_id="!nowhere:peer.test",
                       sender=PEER_USER, prev_events=[], auth_events=[], depth=5,
                       content={"body": "x"})
    status, resp = await send_txn(peer, "t1", [stray])
    assert status == 200
    (result,) = resp["pdus"].values()
    assert "unknown room" in result["error"]
    before = await node.events.get_max_stream_ordering(NODE)
    status, resp = await send_txn(peer, "t2", [stray] * 51)
    assert status == 400 and resp["errcode"] == "M_TOO_LARGE"
    status, resp = await send_txn(peer, "t3", [], edus=[{"edu_type": "m.presence",
                                                       "content": {}}] * 101)
    assert status == 400
    status, resp = await peer.request("PUT", "/_matrix/federation/v1/send/t4",
                                      {"origin": peer.name, "pdus": "nope"})
    assert status == 400 and resp["errcode"] == "M_BAD_JSON"
    assert await node.events.get_max_stream_ordering(NODE) == before
    # A refused transaction was not recorded: the same txnId may come again.
    status, resp = await send_txn(peer, "t2", [])
    assert status == 200 and resp == {"pdus": {}}


async def test_edus_accepted(setup: Setup) -> None:
    node, peer = setup
    rv = ROOM_V11
    room_id, join, _ = await peer_joins(node, peer, rv)
    edus = [
        {"edu_type": "m.typing", "content": {"room_id": room_id, "user_id": PEER_USER,
                                             "typing": True}},
        {"edu_type": "m.receipt", "content": {room_id: {"m.read": {PEER_USER: {
            "event_ids": [peer.event_id(join, rv)], "data": {"ts": 1}}}}}},
        {"edu_type": "m.presence", "content": {"push": []}},
        {"edu_type": "m.device_list_update", "content": {"user_id": PEER_USER}},
        {"edu_type": "m.typing", "content": "garbage"},
    ]
    status, resp = await send_txn(peer, "t1", [], edus=edus)
    assert status == 200 and resp == {"pdus": {}}
    rows = await node.hs.database.fetch(
        "SELECT user_id, event_id FROM receipts WHERE tenant = $1 AND room_id = $2",
        NODE, room_id,
    )
    assert [(r[0], r[1]) for r in rows] == [(PEER_USER, peer.event_id(join, rv))]
