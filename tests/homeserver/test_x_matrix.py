"""X-Matrix request authentication on a live federation listener.

Node A signs requests to node B's ``GET /_matrix/federation/v1/query/profile``
(any authenticated endpoint would do); every failure mode answers 401
M_UNAUTHORIZED naming the failed check. ``GET /_matrix/federation/v1/version``
has no security requirement in the spec: it answers without a signature.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from signedjson.key import generate_signing_key

from federation.clock import FakeClock
from federation.transport.wire import sign_request
from homeserver import __version__
from tests.homeserver.test_key_api import NodeFactory, clock, nodes, stop

__all__ = ["clock", "nodes"]  # fixtures, imported for pytest

VERSION = "/_matrix/federation/v1/version"
#: An endpoint that requires X-Matrix (every one but /version and the keys).
AUTHED = "/_matrix/federation/v1/query/profile?user_id=@alice:b.test"


async def call(
    url: str, method: str, path: str, auth: str | None, body: Any = None
) -> tuple[int, Any]:
    headers = {} if auth is None else {"Authorization": auth}
    data = None if body is None else json.dumps(body).encode()
    async with aiohttp.ClientSession() as s:
        async with s.request(method, url + path, headers=headers, data=data) as r:
            return r.status, await r.json()


def signed(
    key: Any,
    *,
    origin: str = "a.test",
    destination: str | None = "b.test",
    method: str = "GET",
    uri: str = AUTHED,
    content: Any = None,
) -> str:
    return sign_request(
        origin=origin,
        destination=destination or "b.test",
        method=method,
        uri=uri,
        signing_key=key,
        content=content,
    )


async def test_signed_request_between_nodes_passes(nodes: NodeFactory) -> None:
    a = await nodes("a.test")
    b = await nodes("b.test")
    got = await a.keys.client.get_json("b.test", VERSION)
    assert got == {"server": {"name": "Concord", "version": __version__}}
    # B fetched A's key once to check it; a second request needs no fetch.
    await a.keys.client.get_json("b.test", VERSION, query={"x": ["1", "2"]})
    assert a.counts["/_matrix/key/v2/server"] == 1
    assert b.counts[VERSION] == 2


async def test_version_needs_no_signature(nodes: NodeFactory) -> None:
    """version.yaml has no security requirement (Synapse: REQUIRE_AUTH = False)."""
    b = await nodes("b.test", default_registrars=True)
    status, body = await call(b.url, "GET", VERSION, None)
    assert (status, body) == (200, {"server": {"name": "Concord", "version": __version__}})
    # A header that is sent is still checked, as Synapse does.
    status, body = await call(b.url, "GET", VERSION, "Bearer abc")
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
    # Only that path: every other federation endpoint still needs X-Matrix.
    status, body = await call(b.url, "GET", AUTHED, None)
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")


async def test_failure_modes(nodes: NodeFactory) -> None:
    a = await nodes("a.test", default_registrars=True)
    b = await nodes("b.test", default_registrars=True)

    async def expect_401(auth: str | None, fragment: str, **kw: Any) -> None:
        status, body = await call(
            b.url, kw.pop("method", "GET"), kw.pop("path", AUTHED), auth, **kw
        )
        assert status == 401, (auth, body)
        assert body["errcode"] == "M_UNAUTHORIZED"
        assert fragment in body["error"], body["error"]

    await expect_401(None, "missing Authorization header")
    await expect_401("Bearer abc", "not X-Matrix")
    await expect_401('X-Matrix origin="a.test"', "missing parameter")
    await expect_401('X-Matrix origin="a.test",key="ed25519:k1",sig="x",bogus', "expected '='")
    # Addressed to a server this node does not host.
    await expect_401(
        signed(a.key, destination="c.test"), "'c.test' is not a server name hosted here"
    )
    # A key A never published.
    await expect_401(signed(generate_signing_key("nope")), "no known key 'ed25519:nope'")
    # An origin nobody can reach.
    await expect_401(signed(a.key, origin="gone.test"), "no known key")
    # Right key ID, wrong key: a forgery.
    await expect_401(signed(generate_signing_key("k1")), "signature does not verify")
    # Signed for another path, or another method.
    await expect_401(signed(a.key, uri="/_matrix/federation/v1/other"), "signature does not verify")
    await expect_401(signed(a.key, uri=AUTHED + "&x=1"), "signature does not verify")
    # Body not what was signed.
    await expect_401(
        signed(a.key, method="POST", content={"a": 1}),
        "signature does not verify",
        method="POST",
        body={"a": 2},
    )
    # Body signed as sent: authentication passes, then the route has no POST.
    status, body = await call(
        b.url, "POST", AUTHED, signed(a.key, method="POST", content={"a": 1}), {"a": 1}
    )
    assert (status, body["errcode"]) == (405, "M_UNRECOGNIZED")
    # Authenticated: the servlet answers (alice has no profile on b.test).
    status, body = await call(b.url, "GET", AUTHED, signed(a.key))
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # No destination parameter (older servers): checked as addressed to us.
    auth = signed(a.key)
    no_dest = ",".join(p for p in auth.split(",") if not p.startswith("destination="))
    assert "destination" not in no_dest
    status, body = await call(b.url, "GET", AUTHED, no_dest)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # Key endpoints stay open.
    status, _ = await call(b.url, "GET", "/_matrix/key/v2/server", None)
    assert status == 200


async def test_old_key_cannot_authenticate_requests(nodes: NodeFactory, clock: FakeClock) -> None:
    a = await nodes("a.test")
    b = await nodes("b.test")
    old_key = a.key
    await a.keys.client.get_json("b.test", VERSION)
    clock.advance(600)
    await stop(a)
    a2 = await nodes("a.test", key=generate_signing_key("k2"))
    b.keys.client.destination_overrides["a.test"] = a2.url
    # The new key works (B refetches on the unknown key ID)...
    assert (await a2.keys.client.get_json("b.test", VERSION))["server"]["name"] == "Concord"
    # ...the retired one, now in old_verify_keys, no longer authenticates.
    status, body = await call(b.url, "GET", AUTHED, signed(old_key))
    assert status == 401
    assert "no known key 'ed25519:k1'" in body["error"]
