"""Login rate limits (FakeClock) and shared-secret registration (HMAC-SHA1)."""

from __future__ import annotations

from collections.abc import Callable

from federation.clock import FakeClock
from homeserver.rest.admin.register import compute_mac
from homeserver.server import HomeServer
from tests.tenants.conftest import PRIMARY, SECRET, Api, NodeFn

ApiFor = Callable[[HomeServer, str | None], Api]

SYNAPSE_REGISTER = "/_synapse/admin/v1/register"
CONCORD_REGISTER = "/_concord/admin/v1/register"


async def _user_count(hs: HomeServer) -> int:
    return int(await hs.database.fetchval("SELECT COUNT(*) FROM users"))


async def test_login_is_limited_per_address(
    node: NodeFn, api_for: ApiFor, clock: FakeClock
) -> None:
    hs = await node(
        ratelimiting={"login_per_address_burst": 3, "login_per_address_per_second": 0.1}
    )
    api = api_for(hs, None)
    await api.admin_register("alice", "pw")
    for user in ("alice", "bob", "carol"):
        status, body = await api.login(user, "wrong")
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # The fourth attempt from this address is refused, even with the right password.
    status, body = await api.login("alice", "pw")
    assert (status, body["errcode"]) == (429, "M_LIMIT_EXCEEDED")
    assert body["retry_after_ms"] == 10_000
    clock.advance(9.9)
    status, body = await api.login("alice", "pw")
    assert status == 429 and 0 < body["retry_after_ms"] <= 100
    clock.advance(0.1)
    status, body = await api.login("alice", "pw")
    assert status == 200, body


async def test_login_is_limited_per_account(
    node: NodeFn, api_for: ApiFor, clock: FakeClock
) -> None:
    hs = await node(
        ratelimiting={"login_per_account_burst": 2, "login_per_account_per_second": 0.5}
    )
    api = api_for(hs, None)
    await api.admin_register("alice", "pw")
    await api.admin_register("bob", "pw")
    for _ in range(2):
        status, _body = await api.login("alice", "wrong")
        assert status == 403
    # The full user ID is the same account as the localpart.
    status, body = await api.login(f"@ALICE:{PRIMARY}", "pw")
    assert (status, body["errcode"], body["retry_after_ms"]) == (429, "M_LIMIT_EXCEEDED", 2000)
    # Another account from the same address is not affected.
    status, _body = await api.login("bob", "pw")
    assert status == 200
    clock.advance(2)
    status, _body = await api.login("alice", "pw")
    assert status == 200


async def test_shared_secret_registration(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node()
    api = api_for(hs, None)
    for path in (SYNAPSE_REGISTER, CONCORD_REGISTER):
        status, body = await api.call("GET", path)
        assert status == 200 and len(body["nonce"]) == 64
    body = await api.admin_register("root", "pw", admin=True)
    assert body["user_id"] == f"@root:{PRIMARY}"
    status, who = await api.call(
        "GET", "/_concord/admin/v1/users/@root:hs.test", token=body["access_token"]
    )
    assert (status, who["admin"]) == (200, True)

    # Via the Concord path, a non-admin.
    status, nonce_body = await api.call("GET", CONCORD_REGISTER)
    nonce = nonce_body["nonce"]
    status, body = await api.call(
        "POST",
        CONCORD_REGISTER,
        {
            "nonce": nonce,
            "username": "plain",
            "password": "pw",
            "mac": compute_mac(SECRET, nonce, "plain", "pw", False),
        },
    )
    assert status == 200, body
    store = await hs.tenants.primary.user_store()
    plain = await store.get_user(f"@plain:{PRIMARY}")
    assert plain is not None and not plain.admin


async def test_shared_secret_refusals_change_nothing(
    node: NodeFn, api_for: ApiFor, clock: FakeClock
) -> None:
    hs = await node()
    api = api_for(hs, None)

    async def nonce() -> str:
        status, body = await api.call("GET", SYNAPSE_REGISTER)
        assert status == 200
        return str(body["nonce"])

    n = await nonce()
    # A MAC over other values (admin flipped) is refused, and burns the nonce.
    req = {
        "nonce": n,
        "username": "mallory",
        "password": "pw",
        "admin": True,
        "mac": compute_mac(SECRET, n, "mallory", "pw", False),
    }
    status, body = await api.call("POST", SYNAPSE_REGISTER, req)
    assert (status, body["errcode"], body["error"]) == (403, "M_FORBIDDEN", "HMAC incorrect")
    req["mac"] = compute_mac(SECRET, n, "mallory", "pw", True)
    status, body = await api.call("POST", SYNAPSE_REGISTER, req)
    assert (status, body["error"]) == (400, "Unrecognised nonce")
    # Wrong secret.
    n = await nonce()
    status, body = await api.call(
        "POST",
        SYNAPSE_REGISTER,
        {
            "nonce": n,
            "username": "m",
            "password": "pw",
            "mac": compute_mac("x", n, "m", "pw", False),
        },
    )
    assert status == 403
    # Nonces expire after 60 s.
    n = await nonce()
    clock.advance(61)
    status, body = await api.call(
        "POST",
        SYNAPSE_REGISTER,
        {
            "nonce": n,
            "username": "m",
            "password": "pw",
            "mac": compute_mac(SECRET, n, "m", "pw", False),
        },
    )
    assert (status, body["error"]) == (400, "Unrecognised nonce")
    # Missing fields and wrong types.
    n = await nonce()
    for bad, errcode in (
        ({"nonce": n}, "M_MISSING_PARAM"),
        ({"nonce": n, "username": "m", "password": "pw"}, "M_MISSING_PARAM"),
        ({"nonce": n, "username": 1, "password": "pw", "mac": "00"}, "M_INVALID_PARAM"),
        (
            {"nonce": n, "username": "m", "password": "pw", "mac": "00", "admin": "yes"},
            "M_INVALID_PARAM",
        ),
    ):
        status, body = await api.call("POST", SYNAPSE_REGISTER, bad)
        assert (status, body["errcode"]) == (400, errcode), (bad, body)
    # A valid MAC for an invalid username.
    n = await nonce()
    status, body = await api.call(
        "POST",
        SYNAPSE_REGISTER,
        {
            "nonce": n,
            "username": "no way",
            "password": "pw",
            "mac": compute_mac(SECRET, n, "no way", "pw", False),
        },
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_USERNAME")
    assert await _user_count(hs) == 0


async def test_shared_secret_disabled_without_secret(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node(registration_shared_secret=None)
    api = api_for(hs, None)
    status, body = await api.call("GET", SYNAPSE_REGISTER)
    assert status == 400 and "not enabled" in body["error"]
