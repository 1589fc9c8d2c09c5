"""m.room.server_acl on every inbound path, and the per-origin rate limits.

Spec: server-server-api.md "Server Access Control Lists (ACLs)" (403
M_FORBIDDEN on the protected endpoints; in /send, an error per PDU and
m.typing/m.receipt ignored) and client-server "Rate limiting" (429
M_LIMIT_EXCEEDED with retry_after_ms).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from federation.room_versions import ROOM_V11
from homeserver.handlers.event_receipt import EventReceiptHandler
from homeserver.handlers.federation_receiver import TransactionHandler
from homeserver.handlers.missing_events import MissingEventsFetcher
from homeserver.keys import key_service_for
from storage.stores.federation_inbound import FederationInboundStore
from storage.stores.receipts import ReceiptStore
from storage.stores.room_aliases import RoomAliasStore
from tests.federation_inbound.conftest import ALICE, NODE, PEER, PEER_USER, Setup, room_path
from tests.federation_inbound.helpers import VERS, peer_joins, send_txn
from tests.federation_inbound.test_send import message

DENY_PEER = {"allow": ["*"], "deny": ["PEER.test"]}  # case-insensitive


async def counts(setup: Setup, room_id: str) -> tuple[int, int]:
    node, _ = setup
    receipts = await ReceiptStore(node.hs.database).get_receipts(NODE, [room_id])
    return await node.events.get_max_stream_ordering(NODE), len(receipts)


async def test_acl_denies_every_room_scoped_endpoint(setup: Setup) -> None:
    node, peer = setup
    rv = ROOM_V11
    room_id, join, _ = await peer_joins(node, peer, rv)
    join_id = peer.event_id(join, rv)
    await RoomAliasStore(node.hs.database).create_alias(NODE, "#acl:node.test", room_id, ALICE, 0)
    # Allowed before the ACL: the same requests answer 200.
    status, _ = await peer.request("GET", room_path("v1/state_ids", room_id),
                                   query={"event_id": join_id})
    assert status == 200
    acl = await node.send(room_id, "m.room.server_acl", DENY_PEER, state_key="")
    before = await counts(setup, room_id)

    msg = await message(node, peer, rv, room_id, join_id, "after the ACL")
    leave = peer.event(rv, type="m.room.member", room_id=room_id, sender=PEER_USER,
                       state_key=PEER_USER, content={"membership": "leave"},
                       prev_events=[acl.event_id], auth_events=[join_id], depth=acl.depth + 1)
    leave_id = peer.event_id(leave, rv)
    invite = peer.event(rv, type="m.room.member", room_id=room_id, sender=PEER_USER,
                        state_key="@bob:node.test", content={"membership": "invite"},
                        prev_events=[acl.event_id], auth_events=[join_id], depth=acl.depth + 1)
    invite_id = peer.event_id(invite, rv)
    requests: list[tuple[str, str, Any, dict[str, Any] | None]] = [
        ("GET", room_path("v1/make_join", room_id, PEER_USER), None, VERS),
        ("PUT", room_path("v2/send_join", room_id, join_id), join, None),
        ("GET", room_path("v1/make_leave", room_id, PEER_USER), None, None),
        ("PUT", room_path("v2/send_leave", room_id, leave_id), leave, None),
        ("PUT", room_path("v2/invite", room_id, invite_id),
         {"room_version": "11", "event": invite, "invite_room_state": []}, None),
        ("GET", room_path("v1/state", room_id), None, {"event_id": join_id}),
        ("GET", room_path("v1/state_ids", room_id), None, {"event_id": join_id}),
        ("GET", room_path("v1/event", join_id), None, None),
        ("GET", room_path("v1/event_auth", room_id, join_id), None, None),
        ("GET", room_path("v1/backfill", room_id), None, {"v": join_id, "limit": "10"}),
        ("POST", room_path("v1/get_missing_events", room_id),
         {"earliest_events": [], "latest_events": [join_id]}, None),
        ("GET", "/_matrix/federation/v1/query/directory", None,
         {"room_alias": "#acl:node.test"}),
    ]
    for method, path, body, query in requests:
        status, resp = await peer.request(method, path, body, query=query)
        assert (status, resp["errcode"]) == (403, "M_FORBIDDEN"), (path, resp)
        assert "server ACL" in resp["error"]

    # /send answers 200 with an error for the PDU, and ignores its receipt.
    receipt = {"edu_type": "m.receipt", "content": {room_id: {"m.read": {PEER_USER: {
        "event_ids": [join_id], "data": {"ts": 1}}}}}}
    refused_before = node.hs.metrics.registry.get_sample_value(
        "concord_federation_inbound_pdus_total", {"result": "refused"}) or 0
    status, resp = await send_txn(peer, "acl1", [msg], edus=[receipt])
    assert status == 200
    assert node.hs.metrics.registry.get_sample_value(
        "concord_federation_inbound_pdus_total", {"result": "refused"}) == refused_before + 1
    assert resp == {"pdus": {peer.event_id(msg, rv): {
        "error": f"{PEER} is denied by the server ACL of {room_id}"}}}
    assert await counts(setup, room_id) == before
    assert await node.events.get_event(NODE, peer.event_id(msg, rv)) is None
    assert await FederationInboundStore(node.hs.database).get_invites_for_user(
        NODE, "@bob:node.test") == []

    # Once the ACL is lifted, the peer's events and receipts are taken again.
    await node.send(room_id, "m.room.server_acl", {"allow": ["*"]}, state_key="")
    msg2 = await message(node, peer, rv, room_id, join_id, "after the lift")
    status, resp = await send_txn(peer, "acl2", [msg2], edus=[receipt])
    assert status == 200 and resp == {"pdus": {peer.event_id(msg2, rv): {}}}
    assert len(await ReceiptStore(node.hs.database).get_receipts(NODE, [room_id])) == 1


async def test_acl_filters_room_scoped_edus(sqlite_setup: Setup) -> None:
    node, peer = sqlite_setup
    rv = ROOM_V11
    denied, _, _ = await peer_joins(node, peer, rv)
    allowed, join2, _ = await peer_joins(node, peer, rv)
    await node.send(denied, "m.room.server_acl", {"allow": ["other.test"]}, state_key="")
    hs = node.hs
    keys = key_service_for(hs)
    receipt = EventReceiptHandler(hs.database, node.events)
    handler = TransactionHandler(
        node.events, FederationInboundStore(hs.database), keys.keyring,
        MissingEventsFetcher(hs.database, node.events, receipt, keys.keyring, keys.client),
        hs.clock,
    )
    join2_id = peer.event_id(join2, rv)
    edus = [
        {"edu_type": "m.typing", "content": {"room_id": r, "user_id": PEER_USER,
                                             "typing": True}}
        for r in (denied, allowed)
    ] + [{"edu_type": "m.receipt", "content": {
        r: {"m.read": {PEER_USER: {"event_ids": [join2_id]}}} for r in (denied, allowed)}}]
    assert await handler.on_send(NODE, PEER, "edus", {"edus": edus}) == {"pdus": {}}
    assert handler.typing == {(NODE, allowed, PEER_USER): True}
    assert list(handler.receipts) == [(NODE, allowed, "m.read", PEER_USER)]


Factory = Callable[..., Awaitable[Setup]]


async def test_rate_limits_per_origin(
    setup_factory: Factory, tmp_path: Path
) -> None:
    node, peer = await setup_factory(f"sqlite://{tmp_path / 'node.db'}", {"ratelimiting": {
        "federation_send_per_second": 1, "federation_send_burst": 2,
        "federation_join_per_second": 0.5, "federation_join_burst": 1,
        "federation_query_per_second": 0.25, "federation_query_burst": 1,
    }})
    clock = peer.clock
    before = await node.events.get_max_stream_ordering(NODE)
    for txn in ("r1", "r2"):
        assert (await send_txn(peer, txn, []))[0] == 200
    status, resp = await send_txn(peer, "r3", [])
    assert status == 429 and resp["errcode"] == "M_LIMIT_EXCEEDED"
    assert resp["retry_after_ms"] == 1000
    # Limited requests are not recorded: the same txnId goes through later.
    clock.advance(1.0)
    assert await send_txn(peer, "r3", []) == (200, {"pdus": {}})

    room_id = await node.create_room(ROOM_V11)
    status, _ = await peer.request("GET", room_path("v1/make_join", room_id, PEER_USER),
                                   query=VERS)
    assert status == 200
    status, resp = await peer.request("GET", room_path("v1/make_leave", room_id, PEER_USER))
    assert (status, resp["errcode"], resp["retry_after_ms"]) == (429, "M_LIMIT_EXCEEDED", 2000)

    query = {"user_id": ALICE}
    assert (await peer.request("GET", "/_matrix/federation/v1/query/profile",
                               query=query))[0] == 404
    status, resp = await peer.request("GET", "/_matrix/federation/v1/publicRooms")
    assert (status, resp["retry_after_ms"]) == (429, 4000)
    clock.advance(4.0)
    assert (await peer.request("GET", "/_matrix/federation/v1/publicRooms"))[0] == 200
    # Nothing was stored on the way but the room the node made itself.
    stream = await node.events.get_stream_events(NODE, before, 1000)
    assert {s.event.room_id for s in stream} == {room_id}
