"""The GET/POST query endpoints, joins, leaves and invites, against a crafted peer."""

from __future__ import annotations

from typing import Any

import pytest

from federation.redaction import redact
from federation.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, get_room_version
from federation.server_keys import verify_key_of
from federation.signing import verify_json_signature
from homeserver.keys import key_service_for
from storage.stores.federation_inbound import FederationInboundStore
from storage.stores.room_aliases import RoomAliasStore
from storage.stores.room_directory import RoomDirectoryStore
from tests.federation_inbound.conftest import (
    ALICE,
    NODE,
    PEER_USER,
    Setup,
    room_path,
)
from tests.federation_inbound.helpers import VERS, peer_joins

CORPUS_KEYS = {"auth_events", "content", "depth", "origin_server_ts", "prev_events",
               "room_id", "sender", "state_key", "type"}


def node_signed(pdu: dict[str, Any], setup: Setup) -> bool:
    node, _ = setup
    key = key_service_for(node.hs).signing_keys(NODE)[0]
    rv = get_room_version(pdu.get("_rv", "11"))
    obj = redact({k: v for k, v in pdu.items() if k != "_rv"}, rv)
    try:
        verify_json_signature(obj, NODE, verify_key_of(key), key_id="ed25519:n1")
    except Exception:
        return False
    return True


@pytest.mark.parametrize("rv", [ROOM_V10, ROOM_V11, ROOM_V12], ids=["v10", "v11", "v12"])
async def test_make_join_send_join(setup: Setup, rv: Any) -> None:
    node, peer = setup
    room_id, join, resp = await peer_joins(node, peer, rv)
    # The template has the corpus's shape (no `origin`, as Synapse's).
    status, tmpl = await peer.request("GET", room_path("v1/make_join", room_id, PEER_USER),
                                      query=VERS)
    assert status == 200 and tmpl["room_version"] == rv.identifier
    assert set(tmpl["event"]) == CORPUS_KEYS
    assert tmpl["event"]["content"] == {"membership": "join"}
    # send_join: the state before the join, its auth chain, the countersigned event.
    join_id = peer.event_id(join, rv)
    state_types = {(p["type"], p.get("state_key")) for p in resp["state"]}
    assert ("m.room.create", "") in state_types and ("m.room.member", ALICE) in state_types
    assert ("m.room.member", PEER_USER) not in state_types
    assert resp["members_omitted"] is False and resp["servers_in_room"] == [NODE]
    assert {p["type"] for p in resp["auth_chain"]} >= {"m.room.create", "m.room.power_levels"}
    assert NODE in resp["event"]["signatures"] and peer.name in resp["event"]["signatures"]
    assert peer.event_id(resp["event"], rv) == join_id
    assert join_id in await node.events.get_forward_extremities(NODE, room_id)
    # Sending it again is answered the same way and stores nothing new.
    before = await node.events.get_max_stream_ordering(NODE)
    status, again = await peer.request("PUT", room_path("v2/send_join", room_id, join_id), join)
    assert status == 200 and again["event"] == resp["event"]
    assert await node.events.get_max_stream_ordering(NODE) == before


async def test_make_join_refusals(sqlite_setup: Setup) -> None:
    node, peer = sqlite_setup
    room_id = await node.create_room(ROOM_V11)
    status, body = await peer.request("GET", room_path("v1/make_join", room_id, PEER_USER))
    assert status == 400 and body["errcode"] == "M_INCOMPATIBLE_ROOM_VERSION"
    assert body["room_version"] == "11"
    status, body = await peer.request(
        "GET", room_path("v1/make_join", room_id, "@bob:elsewhere.test"), query=VERS)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await peer.request(
        "GET", room_path("v1/make_join", "!unknown:node.test", PEER_USER), query=VERS)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    invite_only = await node.create_room(ROOM_V11, join_rule="invite")
    status, body = await peer.request(
        "GET", room_path("v1/make_join", invite_only, PEER_USER), query=VERS)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


async def test_send_join_bad_input_stores_nothing(sqlite_setup: Setup) -> None:
    node, peer = sqlite_setup
    rv = ROOM_V11
    room_id = await node.create_room(rv)
    status, tmpl = await peer.request("GET", room_path("v1/make_join", room_id, PEER_USER),
                                      query=VERS)
    before = await node.events.get_max_stream_ordering(NODE)
    good = peer.event(rv, **tmpl["event"])
    good_id = peer.event_id(good, rv)
    cases = [
        (peer.event(rv, **{**tmpl["event"], "content": {"membership": "leave"}}), None),
        (peer.event(rv, **{**tmpl["event"], "sender": "@x:peer.test"}), None),
        ({**good, "signatures": {}}, good_id),
        (good, "$wrongid"),
    ]
    for pdu, eid in cases:
        eid = eid or peer.event_id(pdu, rv)
        status, body = await peer.request("PUT", room_path("v2/send_join", room_id, eid), pdu)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", body
    status, body = await peer.request("PUT", room_path("v2/send_join", room_id, good_id),
                                      ["not", "an", "object"])
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    assert await node.events.get_max_stream_ordering(NODE) == before


async def test_make_leave_send_leave(sqlite_setup: Setup) -> None:
    node, peer = sqlite_setup
    rv = ROOM_V12
    room_id, _, _ = await peer_joins(node, peer, rv)
    status, tmpl = await peer.request("GET", room_path("v1/make_leave", room_id, PEER_USER))
    assert status == 200 and tmpl["room_version"] == "12"
    assert tmpl["event"]["content"] == {"membership": "leave"}
    leave = peer.event(rv, **tmpl["event"])
    status, body = await peer.request(
        "PUT", room_path("v2/send_leave", room_id, peer.event_id(leave, rv)), leave)
    assert status == 200 and body == {}
    state = await node.events.state.get_current_state(NODE, room_id)
    assert state[("m.room.member", PEER_USER)] == peer.event_id(leave, rv)
    # Gone from the room: no more answers about it.
    status, body = await peer.request("GET", room_path("v1/state_ids", room_id),
                                      query={"event_id": peer.event_id(leave, rv)})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


async def test_event_state_backfill_shapes(setup: Setup) -> None:
    node, peer = setup
    rv = ROOM_V11
    room_id, join, _ = await peer_joins(node, peer, rv)
    msgs = [await node.send(room_id, "m.room.message", {"body": f"m{i}", "msgtype": "m.text"})
            for i in range(3)]
    last = msgs[-1].event_id

    status, body = await peer.request("GET", room_path("v1/event", last))
    assert status == 200 and body["origin"] == NODE and isinstance(body["origin_server_ts"], int)
    assert [peer.event_id(p, rv) for p in body["pdus"]] == [last]

    status, ids = await peer.request("GET", room_path("v1/state_ids", room_id),
                                     query={"event_id": last})
    assert status == 200 and set(ids) == {"pdu_ids", "auth_chain_ids"}
    state = await node.events.get_state_before(NODE, last)
    assert state is not None and sorted(ids["pdu_ids"]) == sorted(state.values())
    status, full = await peer.request("GET", room_path("v1/state", room_id),
                                      query={"event_id": last})
    assert status == 200 and set(full) == {"pdus", "auth_chain"}
    assert sorted(peer.event_id(p, rv) for p in full["pdus"]) == sorted(ids["pdu_ids"])
    assert sorted(peer.event_id(p, rv) for p in full["auth_chain"]) == sorted(
        ids["auth_chain_ids"])

    status, auth = await peer.request("GET", room_path("v1/event_auth", room_id, last))
    assert status == 200
    assert {peer.event_id(p, rv) for p in auth["auth_chain"]} == set(
        await node.events.get_auth_chain_ids(NODE, [last]))

    status, bf = await peer.request("GET", room_path("v1/backfill", room_id),
                                    query={"v": last, "limit": 3})
    assert status == 200 and set(bf) == {"origin", "origin_server_ts", "pdus"}
    assert [peer.event_id(p, rv) for p in bf["pdus"]] == [m.event_id for m in reversed(msgs)]

    status, gm = await peer.request(
        "POST", room_path("v1/get_missing_events", room_id),
        {"earliest_events": [peer.event_id(join, rv)], "latest_events": [last], "limit": 10})
    assert status == 200
    assert [peer.event_id(p, rv) for p in gm["events"]] == [m.event_id for m in msgs[:-1]]

    # Bad input.
    status, body = await peer.request("GET", room_path("v1/state_ids", room_id))
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    status, body = await peer.request("GET", room_path("v1/backfill", room_id),
                                      query={"v": last, "limit": "x"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await peer.request("POST", room_path("v1/get_missing_events", room_id),
                                      {"earliest_events": "x", "latest_events": []})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await peer.request("GET", room_path("v1/event", "$nope"))
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_servers_without_visibility_get_403(setup: Setup) -> None:
    node, peer = setup
    room_id = await node.create_room(ROOM_V11)
    msg = await node.send(room_id, "m.room.message", {"body": "secret", "msgtype": "m.text"})
    for method, path, query, body in [
        ("GET", room_path("v1/event", msg.event_id), None, None),
        ("GET", room_path("v1/state", room_id), {"event_id": msg.event_id}, None),
        ("GET", room_path("v1/state_ids", room_id), {"event_id": msg.event_id}, None),
        ("GET", room_path("v1/event_auth", room_id, msg.event_id), None, None),
        ("GET", room_path("v1/backfill", room_id), {"v": msg.event_id, "limit": 5}, None),
        ("POST", room_path("v1/get_missing_events", room_id), None,
         {"earliest_events": [], "latest_events": [msg.event_id]}),
        ("GET", room_path("v1/state_ids", "!unknown:node.test"), {"event_id": "$x"}, None),
    ]:
        status, resp = await peer.request(method, path, body, query)
        assert status == 403 and resp["errcode"] == "M_FORBIDDEN", (path, resp)
    # world_readable history opens the room to anyone.
    await node.send(room_id, "m.room.history_visibility",
                    {"history_visibility": "world_readable"}, state_key="")
    status, _ = await peer.request("GET", room_path("v1/event", msg.event_id))
    assert status == 200


async def test_history_before_join_is_redacted_for_joined_visibility(
    setup: Setup,
) -> None:
    node, peer = setup
    rv = ROOM_V11
    room_id = await node.create_room(rv, history_visibility="joined")
    secret = await node.send(room_id, "m.room.message", {"body": "before", "msgtype": "m.text"})
    status, tmpl = await peer.request("GET", room_path("v1/make_join", room_id, PEER_USER),
                                      query=VERS)
    join = peer.event(rv, **tmpl["event"])
    status, _ = await peer.request(
        "PUT", room_path("v2/send_join", room_id, peer.event_id(join, rv)), join)
    assert status == 200
    status, body = await peer.request("GET", room_path("v1/event", secret.event_id))
    assert status == 200 and body["pdus"][0]["content"] == {}
    after = await node.send(room_id, "m.room.message", {"body": "after", "msgtype": "m.text"})
    status, body = await peer.request("GET", room_path("v1/event", after.event_id))
    assert body["pdus"][0]["content"]["body"] == "after"


@pytest.mark.parametrize("rv", [ROOM_V10, ROOM_V12], ids=["v10", "v12"])
async def test_invite(setup: Setup, rv: Any) -> None:
    node, peer = setup
    # The peer's room, which the node has never seen.
    create = peer.event(rv, type="m.room.create", sender=PEER_USER, state_key="",
                        content={"room_version": rv.identifier,
                                 **({} if rv.implicit_room_creator else {"creator": PEER_USER})},
                        prev_events=[], auth_events=[], depth=1,
                        **({} if rv.room_id_from_create_event else
                           {"room_id": "!peerroom:peer.test"}))
    create_id = peer.event_id(create, rv)
    room_id = "!" + create_id[1:] if rv.room_id_from_create_event else "!peerroom:peer.test"
    invitee = "@alice:node.test"
    invite = peer.event(rv, type="m.room.member", room_id=room_id, sender=PEER_USER,
                        state_key=invitee, content={"membership": "invite"},
                        prev_events=[create_id], auth_events=[] if
                        rv.room_id_from_create_event else [create_id], depth=2)
    eid = peer.event_id(invite, rv)
    body = {"room_version": rv.identifier, "event": invite, "invite_room_state": [create]}
    status, resp = await peer.request("PUT", room_path("v2/invite", room_id, eid), body)
    assert status == 200, resp
    signed = resp["event"]
    assert set(signed["signatures"]) == {peer.name, NODE}
    assert peer.event_id(signed, rv) == eid
    assert {k: v for k, v in signed.items() if k != "signatures"} == {
        k: v for k, v in invite.items() if k != "signatures"}
    invites = await FederationInboundStore(node.hs.database).get_invites_for_user(
        NODE, invitee)
    assert [i.event_id for i in invites] == [eid]
    assert invites[0].invite_room_state[0]["type"] == "m.room.create"
    stored = await node.events.get_event(NODE, eid)
    assert stored is not None and stored.outlier


async def test_invite_refusals(sqlite_setup: Setup) -> None:
    node, peer = sqlite_setup
    rv = ROOM_V11
    room_id = "!r:peer.test"

    def invite(**over: Any) -> dict[str, Any]:
        fields: dict[str, Any] = dict(type="m.room.member", room_id=room_id, sender=PEER_USER,
                                      state_key="@alice:node.test",
                                      content={"membership": "invite"},
                                      prev_events=[], auth_events=[], depth=2)
        fields.update(over)
        return peer.event(rv, **fields)

    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"room_version": "11", "event": invite(state_key="@bob:other.test")}, 400,
         "M_INVALID_PARAM"),
        ({"room_version": "11", "event": invite(content={"membership": "join"})}, 400,
         "M_INVALID_PARAM"),
        ({"room_version": "11", "event": invite(sender="@x:other.test")}, 400,
         "M_INVALID_PARAM"),
        ({"room_version": "11", "event": {**invite(), "signatures": {}}}, 400,
         "M_INVALID_PARAM"),
        ({"room_version": "5", "event": invite()}, 400, "M_INCOMPATIBLE_ROOM_VERSION"),
        ({"event": invite()}, 400, "M_MISSING_PARAM"),
    ]
    for body, code, errcode in cases:
        eid = peer.event_id(body["event"], rv)
        status, resp = await peer.request("PUT", room_path("v2/invite", room_id, eid), body)
        assert (status, resp["errcode"]) == (code, errcode), resp
    assert await FederationInboundStore(node.hs.database).get_invites_for_user(
        NODE, "@alice:node.test") == []
    assert await node.events.get_max_stream_ordering(NODE) == 0


async def test_queries_and_public_rooms(sqlite_setup: Setup) -> None:
    node, peer = sqlite_setup
    db = node.hs.database
    room_id = await node.create_room(ROOM_V11)
    await node.send(room_id, "m.room.name", {"name": "Lobby"}, state_key="")
    other = await node.create_room(ROOM_V11)
    await RoomAliasStore(db).create_alias(NODE, "#lobby:node.test", room_id, ALICE, 0)
    await RoomDirectoryStore(db).set_visibility(NODE, room_id, True, 0)
    await RoomDirectoryStore(db).set_visibility(NODE, other, True, 0)
    await db.execute("INSERT INTO profiles (tenant, user_id, displayname, avatar_url) "
                     "VALUES ($1, $2, $3, $4)", NODE, ALICE, "Alice", "mxc://node.test/a")

    status, body = await peer.request("GET", "/_matrix/federation/v1/query/directory",
                                      query={"room_alias": "#lobby:node.test"})
    assert status == 200 and body == {"room_id": room_id, "servers": [NODE]}
    status, body = await peer.request("GET", "/_matrix/federation/v1/query/directory",
                                      query={"room_alias": "#nope:node.test"})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await peer.request("GET", "/_matrix/federation/v1/query/directory")
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"

    q = "/_matrix/federation/v1/query/profile"
    status, body = await peer.request("GET", q, query={"user_id": ALICE})
    assert status == 200 and body == {"displayname": "Alice", "avatar_url": "mxc://node.test/a"}
    status, body = await peer.request("GET", q, query={"user_id": ALICE, "field": "displayname"})
    assert body == {"displayname": "Alice"}
    status, body = await peer.request("GET", q, query={"user_id": ALICE, "field": "age"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await peer.request("GET", q, query={"user_id": "@ghost:node.test"})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"

    p = "/_matrix/federation/v1/publicRooms"
    status, body = await peer.request("GET", p)
    assert status == 200 and body["total_room_count_estimate"] == 2
    lobby = next(c for c in body["chunk"] if c["room_id"] == room_id)
    assert lobby["name"] == "Lobby" and lobby["num_joined_members"] == 1
    assert lobby["world_readable"] is False and lobby["guest_can_join"] is False
    status, page = await peer.request("GET", p, query={"limit": 1})
    assert len(page["chunk"]) == 1 and isinstance(page["next_batch"], str)
    status, page2 = await peer.request("GET", p, query={"limit": 1, "since": page["next_batch"]})
    assert len(page2["chunk"]) == 1 and page2["chunk"] != page["chunk"]
    status, found = await peer.request("POST", p, {"filter": {"generic_search_term": "lobb"}})
    assert status == 200 and [c["room_id"] for c in found["chunk"]] == [room_id]
    status, body = await peer.request("POST", p, {"limit": "many"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
