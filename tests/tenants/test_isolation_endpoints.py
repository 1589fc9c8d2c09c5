"""Tenant isolation, endpoint by endpoint (issue 5, "A tenant isolation suite").

Tenant A (the primary, hs.test) has a private room with an alias and a
message, a public room and a profile. Tenant B's user, B's admin, and A's own
token sent to B's Host then try every client servlet of
homeserver/rest/client/{rooms,directory,profile,sync}.py and every admin
servlet: each gets the exact error, or only what any remote server sees
through federation (A's published directory, A's alias, A's profile), and
every row of A's is unchanged afterwards. Both engines.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from typing import Any

from homeserver.server import HomeServer
from storage.database import Database
from storage.stores.profiles import ProfileStore
from storage.stores.room_aliases import RoomAliasStore
from tests.tenants.conftest import PRIMARY, Api, NodeFn

B = "b.test"
V = "/_matrix/client/v3"
ADMIN = "/_concord/admin/v1"
ApiFor = Callable[[HomeServer, str | None], Api]
q = urllib.parse.quote

#: Every table whose rows belong to a tenant (a ``tenant`` column).
TENANT_TABLES = (
    "access_tokens", "account_data", "client_txns", "devices", "event_auth_edges",
    "event_backward_extremities", "event_edges", "event_forward_extremities",
    "event_graph_counters", "events", "federation_received_invites", "profiles", "receipts",
    "room_aliases", "room_current_members", "room_current_state", "room_directory",
    "room_forgotten", "state_group_entries", "state_groups", "user_filters", "users",
)


async def snapshot(db: Database, tenant: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for table in TENANT_TABLES:
        rows = await db.fetch(f"SELECT * FROM {table} WHERE tenant = $1", tenant)
        out[table] = sorted(json.dumps([str(v) for v in tuple(r)]) for r in rows)
    return out


async def test_other_tenant_cannot_reach_a(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node(tenants=[{"server_name": B, "enable_registration": True}],
                    client_hostnames=["matrix.hs.test"])
    fed = hs.base_url("federation")
    hs.keys.client.destination_overrides.update({B: fed, PRIMARY: fed})  # type: ignore[union-attr]
    a, b = api_for(hs, PRIMARY), api_for(hs, B)
    alice = (await a.admin_register("alice", "pw-alice-1"))["access_token"]
    await a.admin_register("root", "pw-root-1", admin=True)
    bob = (await b.admin_register("bob", "pw-bob-1"))["access_token"]
    boss = (await b.admin_register("boss", "pw-boss-1", admin=True))["access_token"]

    async def ok(api: Api, method: str, path: str, body: Any, token: str) -> Any:
        status, got = await api.call(method, path, body, token=token)
        assert status == 200, (path, got)
        return got

    room = (await ok(a, "POST", f"{V}/createRoom",
                     {"room_alias_name": "priv", "name": "Secret room"}, alice))["room_id"]
    public = (await ok(a, "POST", f"{V}/createRoom",
                       {"preset": "public_chat", "visibility": "public", "name": "Pub A",
                        "room_alias_name": "puba"}, alice))["room_id"]
    event = (await ok(a, "PUT", f"{V}/rooms/{room}/send/m.room.message/t1",
                      {"msgtype": "m.text", "body": "the secret"}, alice))["event_id"]
    await ok(a, "PUT", f"{V}/profile/@alice:hs.test/displayname",
             {"displayname": "Alice A"}, alice)
    await ok(a, "POST", f"{V}/user/@alice:hs.test/filter", {"room": {}}, alice)
    await ok(a, "PUT", f"{V}/user/@alice:hs.test/account_data/m.direct", {"x": 1}, alice)
    before = await snapshot(hs.database, PRIMARY)

    # (method, path, body, status, errcode); {me} is the caller's own user ID.
    not_in = (403, "M_FORBIDDEN")
    client_calls: list[tuple[str, str, Any, int, str | None]] = [
        ("GET", f"{V}/rooms/{room}/state", None, *not_in),
        ("GET", f"{V}/rooms/{room}/state/m.room.name", None, *not_in),
        ("GET", f"{V}/rooms/{room}/state/m.room.name/", None, *not_in),
        ("GET", f"{V}/rooms/{room}/messages", None, *not_in),
        ("GET", f"{V}/rooms/{room}/event/{event}", None, *not_in),
        ("GET", f"{V}/rooms/{room}/context/{event}", None, *not_in),
        ("GET", f"{V}/rooms/{room}/members", None, *not_in),
        ("GET", f"{V}/rooms/{room}/joined_members", None, *not_in),
        ("GET", f"{V}/rooms/{room}/aliases", None, *not_in),
        ("PUT", f"{V}/rooms/{room}/send/m.room.message/x", {"body": "x"}, *not_in),
        ("PUT", f"{V}/rooms/{room}/state/m.room.name", {"name": "x"}, *not_in),
        ("PUT", f"{V}/rooms/{room}/redact/{event}/r", {}, *not_in),
        ("POST", f"{V}/rooms/{room}/invite", {"user_id": "{me}"}, *not_in),
        ("POST", f"{V}/rooms/{room}/kick", {"user_id": "@alice:hs.test"}, *not_in),
        ("POST", f"{V}/rooms/{room}/ban", {"user_id": "@alice:hs.test"}, *not_in),
        ("POST", f"{V}/rooms/{room}/unban", {"user_id": "@alice:hs.test"}, *not_in),
        ("POST", f"{V}/rooms/{room}/leave", {}, 404, "M_NOT_FOUND"),
        ("POST", f"{V}/rooms/{room}/forget", {}, 404, "M_NOT_FOUND"),
        ("PUT", f"{V}/rooms/{room}/typing/{{me}}", {"typing": True}, *not_in),
        ("PUT", f"{V}/rooms/{room}/typing/@alice:hs.test", {"typing": True}, *not_in),
        ("POST", f"{V}/rooms/{room}/receipt/m.read/{event}", {}, *not_in),
        ("POST", f"{V}/rooms/{room}/read_markers", {"m.fully_read": event}, *not_in),
        ("POST", f"{V}/join/{room}", {}, 404, "M_NOT_FOUND"),
        ("POST", f"{V}/rooms/{room}/join", {}, 404, "M_NOT_FOUND"),
        # Over federation A refuses the join (private room, no invite).
        ("POST", f"{V}/join/{q('#priv:hs.test')}", {}, *not_in),
        ("DELETE", f"{V}/directory/room/{q('#priv:hs.test')}", None, 400, "M_INVALID_PARAM"),
        ("PUT", f"{V}/directory/room/{q('#x:hs.test')}", {"room_id": room},
         400, "M_INVALID_PARAM"),
        ("PUT", f"{V}/directory/room/{q('#x:b.test')}", {"room_id": room}, 404, "M_NOT_FOUND"),
        ("GET", f"{V}/directory/list/room/{room}", None, 404, "M_NOT_FOUND"),
        ("PUT", f"{V}/directory/list/room/{room}", {"visibility": "public"},
         404, "M_NOT_FOUND"),
        ("PUT", f"{V}/profile/@alice:hs.test/displayname", {"displayname": "pwn"},
         400, "M_INVALID_PARAM"),
        ("PUT", f"{V}/profile/@alice:hs.test/avatar_url", {"avatar_url": "mxc://x/y"},
         400, "M_INVALID_PARAM"),
        ("GET", f"{V}/user/@alice:hs.test/filter/1", None, *not_in),
        ("POST", f"{V}/user/@alice:hs.test/filter", {}, *not_in),
        ("GET", f"{V}/user/@alice:hs.test/account_data/m.direct", None, *not_in),
        ("PUT", f"{V}/user/@alice:hs.test/account_data/m.direct", {}, *not_in),
        ("GET", f"{V}/user/@alice:hs.test/rooms/{room}/account_data/m.tag", None, *not_in),
        # Allowed, and showing nothing of A's beyond what federation shows.
        ("GET", f"{V}/sync", None, 200, None),
        ("GET", f"{V}/joined_rooms", None, 200, None),
        ("GET", f"{V}/publicRooms", None, 200, None),
        ("POST", f"{V}/publicRooms", {}, 200, None),
        ("GET", f"{V}/directory/room/{q('#priv:hs.test')}", None, 200, None),
        ("GET", f"{V}/publicRooms?server=hs.test", None, 200, None),
        ("GET", f"{V}/profile/@alice:hs.test", None, 200, None),
        ("GET", f"{V}/profile/@alice:hs.test/displayname", None, 200, None),
    ]
    federation_visible = {
        f"{V}/directory/room/{q('#priv:hs.test')}": {"room_id": room, "servers": ["hs.test"]},
        f"{V}/profile/@alice:hs.test": {"displayname": "Alice A"},
        f"{V}/profile/@alice:hs.test/displayname": {"displayname": "Alice A"},
    }
    # Someone else's profile: 403 for a user; an admin (who may set the
    # profiles of their own tenant's users) learns it is not a local user.
    per_caller = {
        ("@bob:b.test", "PUT", f"{V}/profile/@alice:hs.test/{field}"): (403, "M_FORBIDDEN")
        for field in ("displayname", "avatar_url")
    }
    secrets = (room, event, "the secret", "Secret room", "@alice:hs.test")
    for who, token in (("@bob:b.test", bob), ("@boss:b.test", boss)):
        for method, path, body, status, errcode in client_calls:
            path = path.replace("{me}", who)
            if isinstance(body, dict):
                body = {k: (who if v == "{me}" else v) for k, v in body.items()}
            if (who, method, path) in per_caller:
                status, errcode = per_caller[who, method, path]
            got_status, got = await b.call(method, path, body, token=token)
            assert (got_status, got.get("errcode")) == (status, errcode), (who, method, path, got)
            if status != 200:
                continue
            if path in federation_visible:
                assert got == federation_visible[path], (path, got)
            elif path.endswith("server=hs.test"):
                # A's published directory, as any server sees it: the public room only.
                assert [r["room_id"] for r in got["chunk"]] == [public], got
            else:
                text = json.dumps(got)
                assert not any(s in text for s in secrets), (path, got)
                assert public not in text, (path, got)

    # Every admin servlet, with B's admin and B's plain user.
    admin_calls: list[tuple[str, str, Any, int, str]] = [
        ("GET", f"{ADMIN}/users/@alice:hs.test", None, 404, "M_NOT_FOUND"),
        ("GET", f"{ADMIN}/tenants", None, 403, "M_FORBIDDEN"),
        ("POST", f"{ADMIN}/tenants", {"server_name": "c.test"}, 403, "M_FORBIDDEN"),
        ("GET", f"{ADMIN}/tenants/{PRIMARY}", None, 403, "M_FORBIDDEN"),
        ("DELETE", f"{ADMIN}/tenants/{PRIMARY}", None, 403, "M_FORBIDDEN"),
        ("POST", f"{ADMIN}/tenants/{PRIMARY}/suspend", {}, 403, "M_FORBIDDEN"),
        ("POST", f"{ADMIN}/tenants/{PRIMARY}/resume", {}, 403, "M_FORBIDDEN"),
        ("GET", f"{ADMIN}/tenants/{PRIMARY}/trusted_servers", None, 403, "M_FORBIDDEN"),
        ("PUT", f"{ADMIN}/tenants/{PRIMARY}/trusted_servers", {"servers": ["*"]},
         403, "M_FORBIDDEN"),
        ("DELETE", f"{ADMIN}/tenants/{PRIMARY}/trusted_servers", None, 403, "M_FORBIDDEN"),
        ("GET", f"{ADMIN}/federation/trusted_servers", None, 403, "M_FORBIDDEN"),
        ("PUT", f"{ADMIN}/federation/trusted_servers", {"servers": ["*"]},
         403, "M_FORBIDDEN"),
        ("DELETE", f"{ADMIN}/federation/trusted_servers", None, 403, "M_FORBIDDEN"),
        ("GET", f"{ADMIN}/federation/destinations", None, 403, "M_FORBIDDEN"),
        ("GET", f"{ADMIN}/federation/destinations/{B}", None, 403, "M_FORBIDDEN"),
        ("POST", f"{ADMIN}/federation/destinations/{B}/reset", {}, 403, "M_FORBIDDEN"),
        ("GET", f"{ADMIN}/federation/dead_letters", None, 403, "M_FORBIDDEN"),
        ("GET", f"{ADMIN}/federation/dead_letters/1", None, 403, "M_FORBIDDEN"),
        ("DELETE", f"{ADMIN}/federation/dead_letters/1", None, 403, "M_FORBIDDEN"),
        ("POST", f"{ADMIN}/federation/dead_letters/1/replay", {}, 403, "M_FORBIDDEN"),
        ("POST", f"{ADMIN}/federation/dead_letters/purge", {}, 403, "M_FORBIDDEN"),
        ("POST", f"{ADMIN}/federation/replay", {}, 403, "M_FORBIDDEN"),
        ("GET", f"{ADMIN}/discovery/peers", None, 403, "M_FORBIDDEN"),
        ("GET", f"{ADMIN}/discovery/peers/{PRIMARY}", None, 403, "M_FORBIDDEN"),
        ("PUT", f"{ADMIN}/discovery/peers/{PRIMARY}", {}, 403, "M_FORBIDDEN"),
        ("DELETE", f"{ADMIN}/discovery/peers/{PRIMARY}", None, 403, "M_FORBIDDEN"),
        ("POST", f"{ADMIN}/discovery/crawl", {}, 403, "M_FORBIDDEN"),
    ]
    for method, path, body, status, errcode in admin_calls:
        got_status, got = await b.call(method, path, body, token=boss)
        assert (got_status, got.get("errcode")) == (status, errcode), ("boss", path, got)
        got_status, got = await b.call(method, path, body, token=bob)
        assert (got_status, got.get("errcode")) == (403, "M_FORBIDDEN"), ("bob", path, got)
    got = await ok(b, "GET", f"{ADMIN}/users", None, boss)
    assert sorted(u["user_id"] for u in got["users"]) == ["@bob:b.test", "@boss:b.test"]

    # A's own token is not valid at B's Host, for any endpoint.
    open_endpoints = {("GET", f"{V}/directory/list/room/{room}")}
    for method, path, body, _, _ in [*client_calls, *admin_calls,
                                     ("GET", f"{ADMIN}/users", None, 0, "")]:
        path = path.replace("{me}", "@alice:hs.test")
        got_status, got = await b.call(method, path, body, token=alice)
        if (method, path.split("?")[0]) in open_endpoints:
            # No authentication needed (spec): A's token counts for nothing,
            # the answer is the anonymous one.
            assert (got_status, got) == await b.call(method, path, body), (path, got)
            continue
        assert (got_status, got.get("errcode")) == (401, "M_UNKNOWN_TOKEN"), (path, got)

    # Nothing of A's changed; A still reads its room, alias and profile.
    assert await snapshot(hs.database, PRIMARY) == before
    assert (await RoomAliasStore(hs.database).get_alias(PRIMARY, "#priv:hs.test")) is not None
    profile = await ProfileStore(hs.database).get_profile(PRIMARY, "@alice:hs.test")
    assert profile is not None and profile.displayname == "Alice A"
    got = await ok(a, "GET", f"{V}/rooms/{room}/messages?dir=b", None, alice)
    assert [e["content"].get("body") for e in got["chunk"]
            if e["type"] == "m.room.message"] == ["the secret"]
