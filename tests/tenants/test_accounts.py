"""Registration, login, logout, whoami and devices on a single-tenant node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bcrypt

from homeserver.server import HomeServer
from tests.tenants.conftest import PRIMARY, Api, NodeFn

ApiFor = Callable[[HomeServer, str | None], Api]

REGISTER = "/_matrix/client/v3/register"


async def _users(hs: HomeServer) -> list[str]:
    store = await hs.tenants.primary.user_store()
    return [u.user_id for u in await store.list_users(limit=1000)]


async def _token_count(hs: HomeServer) -> int:
    return int(await hs.database.fetchval("SELECT COUNT(*) FROM access_tokens"))


async def test_open_registration_dummy_flow_login_whoami_logout(
    node: NodeFn, api_for: ApiFor
) -> None:
    hs = await node(enable_registration=True)
    api = api_for(hs, None)

    # The first request learns the flows and gets a session.
    status, body = await api.call("POST", REGISTER, {"username": "alice", "password": "pw1"})
    assert status == 401, body
    assert body["flows"] == [{"stages": ["m.login.dummy"]}]
    session = body["session"]
    assert await _users(hs) == []

    status, body = await api.call(
        "POST",
        REGISTER,
        {
            "username": "Alice",
            "password": "pw1",
            "auth": {"type": "m.login.dummy", "session": session},
            "initial_device_display_name": "phone",
        },
    )
    assert status == 200, body
    assert body["user_id"] == f"@alice:{PRIMARY}"
    token, device = body["access_token"], body["device_id"]

    status, body = await api.call("GET", "/_matrix/client/v3/account/whoami", token=token)
    assert (status, body) == (
        200,
        {"user_id": f"@alice:{PRIMARY}", "device_id": device, "is_guest": False},
    )
    # The r0 alias and the deprecated query parameter reach the same servlet.
    status, body = await api.call("GET", f"/_matrix/client/r0/account/whoami?access_token={token}")
    assert status == 200 and body["user_id"] == f"@alice:{PRIMARY}"

    status, body = await api.call("GET", "/_matrix/client/v3/devices", token=token)
    assert status == 200
    assert [(d["device_id"], d.get("display_name")) for d in body["devices"]] == [(device, "phone")]

    # Taken, in any case.
    status, body = await api.call("GET", "/_matrix/client/v3/register/available?username=ALICE")
    assert (status, body["errcode"]) == (400, "M_USER_IN_USE")
    status, body = await api.call("GET", "/_matrix/client/v3/register/available?username=bob")
    assert (status, body) == (200, {"available": True})

    # Login with m.id.user (localpart or full ID) and with the legacy `user`.
    status, body = await api.login("alice", "pw1")
    assert status == 200, body
    token2 = body["access_token"]
    assert body["device_id"] != device
    status, body = await api.call(
        "POST",
        "/_matrix/client/r0/login",
        {"type": "m.login.password", "user": f"@alice:{PRIMARY}", "password": "pw1"},
    )
    assert status == 200, body
    token3 = body["access_token"]

    status, body = await api.login("alice", "wrong")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await api.login("nobody", "pw1")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")

    # Logout ends one session; its token is now unknown, for good.
    assert await api.call("POST", "/_matrix/client/v3/logout", {}, token=token) == (200, {})
    status, body = await api.call("GET", "/_matrix/client/v3/account/whoami", token=token)
    assert (status, body) == (
        401,
        {"errcode": "M_UNKNOWN_TOKEN", "error": "Unrecognised access token", "soft_logout": False},
    )
    status, _ = await api.call("GET", "/_matrix/client/v3/account/whoami", token=token2)
    assert status == 200
    # logout/all ends every other one.
    assert await api.call("POST", "/_matrix/client/v3/logout/all", {}, token=token2) == (200, {})
    for t in (token2, token3):
        status, body = await api.call("GET", "/_matrix/client/v3/account/whoami", token=t)
        assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert await _token_count(hs) == 0


async def test_tokens_are_stored_hashed(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node()
    api = api_for(hs, None)
    # Spaces are outside bcrypt's hash alphabet, so the password can never
    # appear in the stored hash by chance (a short one like "pw" sometimes did).
    password = "correct horse battery staple"
    body = await api.admin_register("carol", password)
    rows = await hs.database.fetch("SELECT token_hash FROM access_tokens")
    assert len(rows) == 1
    assert rows[0]["token_hash"] != body["access_token"]
    assert body["access_token"] not in rows[0]["token_hash"]
    pw = await hs.database.fetchval("SELECT password_hash FROM users")
    assert pw.startswith("$2b$04$") and password not in pw
    assert bcrypt.checkpw(password.encode(), pw.encode())


async def test_missing_and_unknown_tokens(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node()
    api = api_for(hs, None)
    status, body = await api.call("GET", "/_matrix/client/v3/account/whoami")
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    status, body = await api.call(
        "GET", "/_matrix/client/v3/account/whoami", headers={"Authorization": "Basic abc"}
    )
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    status, body = await api.call("GET", "/_matrix/client/v3/account/whoami", token="nope")
    assert (status, body["errcode"], body["soft_logout"]) == (401, "M_UNKNOWN_TOKEN", False)


async def test_registration_disabled_by_default(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node()
    api = api_for(hs, None)
    status, body = await api.call(
        "POST",
        REGISTER,
        {"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}},
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await api.call("GET", "/_matrix/client/v3/register/available?username=x")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    assert await _users(hs) == []


async def test_bad_registration_input_changes_nothing(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node(enable_registration=True)
    api = api_for(hs, None)
    await api.admin_register("taken", "pw")
    dummy = {"type": "m.login.dummy"}
    cases: list[tuple[Any, int, str]] = [
        ({"username": "taken", "password": "pw", "auth": dummy}, 400, "M_USER_IN_USE"),
        ({"username": "TAKEN", "password": "pw", "auth": dummy}, 400, "M_USER_IN_USE"),
        ({"username": "has space", "password": "pw", "auth": dummy}, 400, "M_INVALID_USERNAME"),
        ({"username": "bad!", "password": "pw", "auth": dummy}, 400, "M_INVALID_USERNAME"),
        ({"username": "_reserved", "password": "pw", "auth": dummy}, 400, "M_INVALID_USERNAME"),
        ({"username": "", "password": "pw", "auth": dummy}, 400, "M_INVALID_USERNAME"),
        ({"username": "x" * 260, "password": "pw", "auth": dummy}, 400, "M_INVALID_USERNAME"),
        ({"username": 5, "password": "pw", "auth": dummy}, 400, "M_INVALID_PARAM"),
        ({"username": "ok", "password": 5, "auth": dummy}, 400, "M_INVALID_PARAM"),
        ({"username": "ok", "password": "x" * 513, "auth": dummy}, 400, "M_INVALID_PARAM"),
        ({"username": "ok", "auth": dummy}, 400, "M_MISSING_PARAM"),
        ({"username": "ok", "password": "pw", "auth": "dummy"}, 400, "M_INVALID_PARAM"),
        (
            {
                "username": "ok",
                "password": "pw",
                "auth": {"type": "m.login.dummy", "session": "forged"},
            },
            400,
            "M_UNKNOWN",
        ),
        (
            {"username": "ok", "password": "pw", "auth": dummy, "inhibit_login": "yes"},
            400,
            "M_INVALID_PARAM",
        ),
    ]
    for body, code, errcode in cases:
        status, got = await api.call("POST", REGISTER, body)
        assert (status, got.get("errcode")) == (code, errcode), (body, got)
    status, got = await api.call("POST", REGISTER, raw=b"{not json")
    assert (status, got["errcode"]) == (400, "M_NOT_JSON")
    status, got = await api.call("POST", REGISTER + "?kind=guest", {})
    assert (status, got["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")
    # An unsupported stage answers 401 again, with the flows.
    status, got = await api.call(
        "POST", REGISTER, {"username": "ok", "password": "pw", "auth": {"type": "m.login.email"}}
    )
    assert status == 401 and got["flows"] == [{"stages": ["m.login.dummy"]}]
    assert await _users(hs) == [f"@taken:{PRIMARY}"]
    assert await _token_count(hs) == 1

    # inhibit_login: an account, no session.
    status, got = await api.call(
        "POST",
        REGISTER,
        {"username": "quiet", "password": "pw", "auth": dummy, "inhibit_login": True},
    )
    assert (status, set(got)) == (200, {"user_id", "home_server"})
    assert await _token_count(hs) == 1
    # No username: the server picks one.
    status, got = await api.call("POST", REGISTER, {"password": "pw", "auth": dummy})
    assert status == 200 and got["user_id"].endswith(f":{PRIMARY}")


async def test_bad_login_input(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node()
    api = api_for(hs, None)
    await api.admin_register("alice", "pw")
    login = "/_matrix/client/v3/login"
    status, body = await api.call("GET", login)
    assert (status, body) == (200, {"flows": [{"type": "m.login.password"}]})
    cases: list[tuple[Any, int, str]] = [
        ({}, 400, "M_MISSING_PARAM"),
        ({"type": "m.login.token", "token": "x"}, 400, "M_UNKNOWN"),
        ({"type": 5}, 400, "M_INVALID_PARAM"),
        ({"type": "m.login.password", "password": "pw"}, 400, "M_MISSING_PARAM"),
        (
            {"type": "m.login.password", "identifier": "alice", "password": "pw"},
            400,
            "M_INVALID_PARAM",
        ),
        (
            {"type": "m.login.password", "identifier": {"type": "m.id.phone"}, "password": "pw"},
            400,
            "M_UNKNOWN",
        ),
        (
            {"type": "m.login.password", "identifier": {"type": "m.id.user"}, "password": "pw"},
            400,
            "M_MISSING_PARAM",
        ),
        (
            {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}},
            400,
            "M_MISSING_PARAM",
        ),
        (
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": 1,
            },
            400,
            "M_INVALID_PARAM",
        ),
        (
            {"type": "m.login.password", "user": "@alice:other.test", "password": "pw"},
            403,
            "M_FORBIDDEN",
        ),
    ]
    for body, code, errcode in cases:
        status, got = await api.call("POST", login, body)
        assert (status, got.get("errcode")) == (code, errcode), (body, got)
    assert await _token_count(hs) == 1


async def test_login_reusing_a_device_replaces_its_token(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node()
    api = api_for(hs, None)
    await api.admin_register("alice", "pw")
    status, first = await api.login("alice", "pw", device_id="LAPTOP")
    assert status == 200 and first["device_id"] == "LAPTOP"
    status, second = await api.login("alice", "pw", device_id="LAPTOP")
    assert status == 200 and second["device_id"] == "LAPTOP"
    status, body = await api.call(
        "GET", "/_matrix/client/v3/account/whoami", token=first["access_token"]
    )
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, body = await api.call(
        "PUT",
        "/_matrix/client/v3/devices/LAPTOP",
        {"display_name": "work"},
        token=second["access_token"],
    )
    assert status == 200
    status, body = await api.call(
        "GET", "/_matrix/client/v3/devices/LAPTOP", token=second["access_token"]
    )
    assert status == 200 and body["display_name"] == "work"
    status, body = await api.call(
        "GET", "/_matrix/client/v3/devices/NOPE", token=second["access_token"]
    )
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
