"""Several tenants on one node: routing, isolation, suspension, the admin API,
quotas, persistence and dedicated databases."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from federation.clock import FakeClock
from federation.errors import MatrixError
from federation.transport.client import FederationHttpError
from homeserver.server import HomeServer
from storage.database import Database
from tests.tenants.conftest import PRIMARY, Api, NodeFn

ApiFor = Callable[[HomeServer, str | None], Api]

B = "b.test"
WHOAMI = "/_matrix/client/v3/account/whoami"
TENANTS = "/_concord/admin/v1/tenants"


def two_tenants(**b_extra: Any) -> dict[str, Any]:
    return {
        "client_hostnames": ["matrix.hs.test"],
        "tenants": [
            {
                "server_name": B,
                "client_hostnames": ["matrix.b.test", "chat.b.test:8443"],
                "enable_registration": True,
                **b_extra,
            }
        ],
    }


async def test_routing_by_host(node: NodeFn, api_for: ApiFor, tmp_path: Path) -> None:
    hs = await node(**two_tenants())
    assert (tmp_path / "tenants" / "b.test.signing.key").exists()
    a = api_for(hs, PRIMARY)
    users = {}
    for host in (PRIMARY, B):
        body = await a.as_host(host).admin_register("alice", "pw")
        users[host] = body
    assert users[PRIMARY]["user_id"] == "@alice:hs.test"
    assert users[B]["user_id"] == "@alice:b.test"

    async def whoami(host: str | None, token: str) -> tuple[int, Any]:
        return await a.as_host(host).call("GET", WHOAMI, token=token)

    tb = users[B]["access_token"]
    # Server name, client hostnames; the port ignored unless the name has one.
    for host in (B, "matrix.b.test", "MATRIX.B.TEST:8008", "b.test:443", "chat.b.test:8443"):
        status, body = await whoami(host, tb)
        assert (status, body.get("user_id")) == (200, "@alice:b.test"), host
    status, body = await whoami("chat.b.test:9999", tb)
    assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")
    # A name we do not host: 404 naming it, for every path but /health.
    status, body = await whoami("unknown.test", tb)
    assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")
    assert "unknown.test" in body["error"]
    status, body = await a.as_host("unknown.test").call("GET", "/_matrix/client/versions")
    assert status == 404
    async with a.session.get(a.base + "/health", headers={"Host": "unknown.test"}) as r:
        assert r.status == 200
    # Each tenant publishes its own key on the federation listener (by Host).
    async with a.session.get(
        hs.base_url("federation") + "/_matrix/key/v2/server", headers={"Host": B}
    ) as r:
        assert (await r.json())["server_name"] == B


async def test_single_tenant_node_answers_every_host(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node()
    body = await api_for(hs, "anything.example:1234").admin_register("alice", "pw")
    assert body["user_id"] == "@alice:hs.test"


async def test_isolation_between_tenants(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node(**two_tenants())
    a, b = api_for(hs, PRIMARY), api_for(hs, B)
    admin_a = (await a.admin_register("root", "pw", admin=True))["access_token"]
    admin_b = (await b.admin_register("boss", "pw", admin=True))["access_token"]
    alice_a = (await a.admin_register("alice", "pw"))["access_token"]
    await b.admin_register("bob", "pw")

    # A token is valid only on its own tenant.
    for token in (admin_a, alice_a):
        status, body = await b.call("GET", WHOAMI, token=token)
        assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, body = await a.call("GET", WHOAMI, token=admin_b)
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, body = await b.call("POST", "/_matrix/client/v3/logout", {}, token=alice_a)
    assert status == 401
    status, _ = await a.call("GET", WHOAMI, token=alice_a)
    assert status == 200

    # Credentials of one tenant do not log in on another.
    status, body = await b.login("@alice:hs.test", "pw")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await b.login("alice", "pw")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")

    # Each admin sees only its own tenant's users.
    status, body = await a.call("GET", "/_concord/admin/v1/users", token=admin_a)
    assert status == 200
    assert [u["user_id"] for u in body["users"]] == ["@alice:hs.test", "@root:hs.test"]
    status, body = await b.call("GET", "/_concord/admin/v1/users", token=admin_b)
    assert [u["user_id"] for u in body["users"]] == ["@bob:b.test", "@boss:b.test"]
    status, body = await a.call("GET", "/_concord/admin/v1/users/@bob:b.test", token=admin_a)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # A non-admin sees none.
    status, body = await a.call("GET", "/_concord/admin/v1/users", token=alice_a)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # Only an admin of the node's own name manages tenants.
    status, body = await b.call("GET", TENANTS, token=admin_b)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await a.call("GET", TENANTS, token=alice_a)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await a.call("GET", TENANTS, token=admin_a)
    assert status == 200
    assert [(t["server_name"], t["state"]) for t in body["tenants"]] == [
        (PRIMARY, "active"),
        (B, "active"),
    ]


async def test_suspension(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node(**two_tenants())
    a, b = api_for(hs, PRIMARY), api_for(hs, B)
    root = (await a.admin_register("root", "pw", admin=True))["access_token"]
    bob = (await b.admin_register("bob", "pw"))["access_token"]
    keys = hs.keys
    assert keys is not None
    keys.client.destination_overrides[B] = hs.base_url("federation")
    version = "/_matrix/federation/v1/version"
    assert "server" in await keys.client.get_json(B, version, origin=PRIMARY)

    status, body = await a.call("POST", f"{TENANTS}/{B}/suspend", {}, token=root)
    assert (status, body["state"]) == (200, "suspended")
    for call in (
        b.call("GET", WHOAMI, token=bob),
        b.login("bob", "pw"),
        b.call("GET", "/_matrix/client/versions"),
    ):
        status, body = await call
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        assert "b.test is suspended" in body["error"]
    with pytest.raises(FederationHttpError) as err:
        await keys.client.get_json(B, version, origin=PRIMARY)
    assert (err.value.status, err.value.errcode) == (403, "M_FORBIDDEN")
    # Its keys stay published: its old events must still verify.
    async with a.session.get(
        hs.base_url("federation") + "/_matrix/key/v2/server", headers={"Host": B}
    ) as r:
        assert r.status == 200

    status, body = await a.call("POST", f"{TENANTS}/{PRIMARY}/suspend", {}, token=root)
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await a.call("POST", f"{TENANTS}/nope.test/suspend", {}, token=root)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")

    status, body = await a.call("POST", f"{TENANTS}/{B}/resume", {}, token=root)
    assert (status, body["state"]) == (200, "active")
    status, body = await b.call("GET", WHOAMI, token=bob)
    assert status == 200
    assert "server" in await keys.client.get_json(B, version, origin=PRIMARY)


async def test_admin_api_creates_and_removes_tenants(
    node: NodeFn, api_for: ApiFor, tmp_path: Path
) -> None:
    hs = await node(**two_tenants())
    a = api_for(hs, PRIMARY)
    root = (await a.admin_register("root", "pw", admin=True))["access_token"]
    before = await hs.database.fetch("SELECT server_name FROM tenants ORDER BY server_name")

    bad: list[tuple[Any, str]] = [
        ({}, "M_MISSING_PARAM"),
        ({"server_name": "bad name"}, "M_INVALID_PARAM"),
        ({"server_name": B}, "M_INVALID_PARAM"),
        ({"server_name": "matrix.b.test"}, "M_INVALID_PARAM"),
        ({"server_name": "c.test", "mode": "weird"}, "M_INVALID_PARAM"),
        ({"server_name": "c.test", "mode": "dedicated"}, "M_INVALID_PARAM"),
        ({"server_name": "c.test", "database_url": "sqlite:///x.db"}, "M_INVALID_PARAM"),
        ({"server_name": "c.test", "client_hostnames": "x"}, "M_INVALID_PARAM"),
        ({"server_name": "c.test", "client_hostnames": [B]}, "M_INVALID_PARAM"),
        ({"server_name": "c.test", "quotas": {"max_users": -1}}, "M_INVALID_PARAM"),
        ({"server_name": "c.test", "quotas": {"max_cats": 1}}, "M_INVALID_PARAM"),
        ({"server_name": "c.test", "enable_registration": 1}, "M_INVALID_PARAM"),
    ]
    for body, errcode in bad:
        status, got = await a.call("POST", TENANTS, body, token=root)
        assert (status, got["errcode"]) == (400, errcode), (body, got)
    assert await hs.database.fetch("SELECT server_name FROM tenants ORDER BY server_name") == before
    assert not (tmp_path / "tenants" / "c.test.signing.key").exists()

    status, got = await a.call(
        "POST",
        TENANTS,
        {"server_name": "c.test", "client_hostnames": ["chat.c.test"], "quotas": {"max_users": 5}},
        token=root,
    )
    assert status == 200, got
    assert got["source"] == "runtime" and got["quotas"] == {"max_users": 5}
    assert (tmp_path / "tenants" / "c.test.signing.key").exists()
    c = api_for(hs, "chat.c.test")
    carol = (await c.admin_register("carol", "pw"))["access_token"]
    status, body = await c.call("GET", WHOAMI, token=carol)
    assert (status, body["user_id"]) == (200, "@carol:c.test")
    async with a.session.get(
        hs.base_url("federation") + "/_matrix/key/v2/server", headers={"Host": "c.test"}
    ) as r:
        assert (await r.json())["server_name"] == "c.test"
    status, got = await a.call("GET", f"{TENANTS}/c.test", token=root)
    assert (status, got["server_name"]) == (200, "c.test")

    # Config tenants are removed in the config, the node's own name never.
    for name in (B, PRIMARY):
        status, got = await a.call("DELETE", f"{TENANTS}/{name}", token=root)
        assert (status, got["errcode"]) == (400, "M_INVALID_PARAM")
    status, got = await a.call("DELETE", f"{TENANTS}/c.test", token=root)
    assert status == 200
    status, body = await c.call("GET", WHOAMI, token=carol)
    assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")
    assert await hs.database.fetchval("SELECT COUNT(*) FROM users WHERE tenant = 'c.test'") == 0
    status, got = await a.call("GET", f"{TENANTS}/c.test", token=root)
    assert status == 404
    status, got = await a.call("DELETE", f"{TENANTS}/c.test", token=root)
    assert status == 404


async def test_tenants_persist_across_restarts(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node(**two_tenants())
    a = api_for(hs, PRIMARY)
    root = (await a.admin_register("root", "pw", admin=True))["access_token"]
    status, _ = await a.call("POST", TENANTS, {"server_name": "c.test"}, token=root)
    assert status == 200
    status, _ = await a.call("POST", f"{TENANTS}/{B}/suspend", {}, token=root)
    assert status == 200
    await hs.stop()

    hs2 = await node(**two_tenants())
    assert [(t.server_name, str(t.state)) for t in hs2.tenants.all()] == [
        (PRIMARY, "active"),
        (B, "suspended"),
        ("c.test", "active"),
    ]
    status, body = await api_for(hs2, PRIMARY).call("GET", WHOAMI, token=root)
    assert status == 200
    assert hs2.keys is not None and hs2.keys.hosts("c.test")


async def test_changes_by_another_process_are_picked_up(
    node: NodeFn, api_for: ApiFor, clock: FakeClock
) -> None:
    from homeserver.tenants import TenantRegistry, TenantState

    hs = await node(**two_tenants())
    # Another registry on the same database stands for `homeserver tenant ...`.
    other = await TenantRegistry.load(config=hs.config, database=hs.database, clock=clock)
    await other.create("d.test")
    await other.set_state(B, TenantState.SUSPENDED)
    assert hs.tenants.get("d.test") is None
    clock.advance(10)
    await asyncio.wait_for(hs.tenants.refreshed.wait(), 10)
    body = await api_for(hs, "d.test").admin_register("dave", "pw")
    assert body["user_id"] == "@dave:d.test"
    status, body = await api_for(hs, B).call("GET", "/_matrix/client/versions")
    assert status == 403
    await other.close()


async def test_user_quota(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node(**two_tenants(quotas={"max_users": 1, "admin_contact": "mailto:it@b.test"}))
    b = api_for(hs, B)
    await b.admin_register("first", "pw")
    dummy = {"type": "m.login.dummy"}
    status, body = await b.call(
        "POST",
        "/_matrix/client/v3/register",
        {"username": "second", "password": "pw", "auth": dummy},
    )
    assert (status, body["errcode"]) == (403, "M_RESOURCE_LIMIT_EXCEEDED")
    assert "limit of 1 users" in body["error"]
    assert body["admin_contact"] == "mailto:it@b.test"
    assert await hs.database.fetchval("SELECT COUNT(*) FROM users WHERE tenant = $1", B) == 1
    # Other tenants are not limited by B's quota.
    await api_for(hs, PRIMARY).admin_register("x", "pw")
    await api_for(hs, PRIMARY).admin_register("y", "pw")


async def test_room_and_event_quotas(node: NodeFn, clock: FakeClock) -> None:
    hs = await node(
        **two_tenants(quotas={"max_rooms": 0, "max_events_per_minute": 2}),
        quotas={"max_rooms": 1},
    )
    b = hs.tenants.get(B)
    assert b is not None
    with pytest.raises(MatrixError) as err:
        await hs.quotas.check_can_create_room(b)
    assert err.value.errcode == "M_RESOURCE_LIMIT_EXCEEDED"
    assert "limit of 0 rooms" in err.value.msg
    await hs.quotas.check_can_create_room(hs.tenants.primary)  # 0 of 1 used

    hs.quotas.check_event_rate(b)
    hs.quotas.check_event_rate(b)
    with pytest.raises(MatrixError) as err:
        hs.quotas.check_event_rate(b)
    assert err.value.errcode == "M_RESOURCE_LIMIT_EXCEEDED"
    assert "2 events per minute" in err.value.msg
    assert err.value.extra["retry_after_ms"] == 30_000
    hs.quotas.check_event_rate(hs.tenants.primary)  # unlimited
    clock.advance(30)
    hs.quotas.check_event_rate(b)


async def test_dedicated_tenant(node: NodeFn, api_for: ApiFor, second_database_url: str) -> None:
    hs = await node(**two_tenants(mode="dedicated", database_url=second_database_url))
    b = api_for(hs, B)
    bob = await b.admin_register("bob", "pw")
    status, body = await b.call("GET", WHOAMI, token=bob["access_token"])
    assert (status, body["user_id"]) == (200, "@bob:b.test")
    # Bob lives in the dedicated database, not the node's.
    assert await hs.database.fetchval("SELECT COUNT(*) FROM users WHERE tenant = $1", B) == 0
    tenant = hs.tenants.get(B)
    assert tenant is not None
    dedicated = await tenant.database()
    assert dedicated is not hs.database
    assert await dedicated.fetchval("SELECT user_id FROM users") == "@bob:b.test"


async def test_dedicated_tenant_created_at_run_time(
    node: NodeFn, api_for: ApiFor, second_database_url: str, tmp_path: Path
) -> None:
    hs = await node()
    a = api_for(hs, PRIMARY)
    root = (await a.admin_register("root", "pw", admin=True))["access_token"]
    status, got = await a.call(
        "POST",
        TENANTS,
        {"server_name": "e.test", "mode": "dedicated", "database_url": second_database_url},
        token=root,
    )
    assert (status, got["mode"]) == (200, "dedicated"), got
    # Migrated on creation: the schema is there before anyone uses the tenant.
    db = await Database.open(second_database_url)
    try:
        assert await db.fetchval("SELECT COUNT(*) FROM users") == 0
    finally:
        await db.close()
    e = api_for(hs, "e.test")
    body = await e.admin_register("eve", "pw")
    assert body["user_id"] == "@eve:e.test"
    # An unreachable database: refused, nothing recorded.
    status, got = await a.call(
        "POST",
        TENANTS,
        {
            "server_name": "f.test",
            "mode": "dedicated",
            "database_url": "sqlite:///nonexistent-dir-xyz/f.db",
        },
        token=root,
    )
    assert status == 400, got
    assert hs.tenants.get("f.test") is None
    assert not (tmp_path / "tenants" / "f.test.signing.key").exists()


async def test_room_quota_through_create_room(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node(**two_tenants(quotas={"max_rooms": 1}))
    b = api_for(hs, B)
    token = (await b.admin_register("bob", "pw"))["access_token"]
    status, body = await b.call("POST", "/_matrix/client/v3/createRoom", {}, token=token)
    assert status == 200, body
    status, body = await b.call("POST", "/_matrix/client/v3/createRoom", {}, token=token)
    assert (status, body["errcode"]) == (403, "M_RESOURCE_LIMIT_EXCEEDED")
    assert "limit of 1 rooms" in body["error"]
    rooms = await hs.database.fetchval(
        "SELECT COUNT(*) FROM events WHERE tenant = $1 AND type = 'm.room.create'", B
    )
    assert rooms == 1
    # The primary tenant has no room quota.
    a = api_for(hs, PRIMARY)
    token_a = (await a.admin_register("alice", "pw"))["access_token"]
    for _ in range(2):
        status, body = await a.call("POST", "/_matrix/client/v3/createRoom", {}, token=token_a)
        assert status == 200, body
