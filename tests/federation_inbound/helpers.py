"""Shared steps of the inbound federation tests."""

from __future__ import annotations

from typing import Any

from federation.room_versions import RoomVersion
from tests.federation_inbound.conftest import PEER_USER, Node, Peer, room_path

VERS = {"ver": ["10", "11", "12"]}


async def peer_joins(node: Node, peer: Peer, rv: RoomVersion, **room_kw: Any
                     ) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Room on the node, joined by the peer's user with make_join/send_join.

    Returns the room ID, the signed join as sent, and the send_join response.
    """
    room_id = await node.create_room(rv, **room_kw)
    join, resp = await peer_join(peer, room_id, rv)
    return room_id, join, resp


async def peer_join(peer: Peer, room_id: str, rv: RoomVersion
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The peer's user joins ``room_id`` with make_join/send_join: the signed
    join as sent, and the send_join response."""
    status, tmpl = await peer.request("GET", room_path("v1/make_join", room_id, PEER_USER),
                                      query=VERS)
    assert status == 200, tmpl
    join = peer.event(rv, **tmpl["event"])
    eid = peer.event_id(join, rv)
    status, resp = await peer.request("PUT", room_path("v2/send_join", room_id, eid), join)
    assert status == 200, resp
    return join, resp


async def send_txn(peer: Peer, txn_id: str, pdus: list[dict[str, Any]],
                   edus: list[dict[str, Any]] | None = None) -> tuple[int, Any]:
    body: dict[str, Any] = {"origin": peer.name, "origin_server_ts": peer.clock.time_ms(),
                            "pdus": pdus}
    if edus is not None:
        body["edus"] = edus
    return await peer.request("PUT", f"/_matrix/federation/v1/send/{txn_id}", body)
