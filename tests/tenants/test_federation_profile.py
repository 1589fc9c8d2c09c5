"""Profiles over federation between two tenants of one node (spec
server-server "Query profile"): an existing user without a stored profile
has the default displayname (their localpart), as the client API says
locally; only a user who does not exist is 404 M_NOT_FOUND."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

import pytest

from homeserver.server import HomeServer
from tests.tenants.conftest import PRIMARY, Api, NodeFn

B = "b.test"
V = "/_matrix/client/v3"
ApiFor = Callable[[HomeServer, str | None], Api]


async def test_profile_query_defaults_for_existing_user(node: NodeFn, api_for: ApiFor) -> None:
    hs = await node(tenants=[{"server_name": B}])
    fed = hs.base_url("federation")
    hs.keys.client.destination_overrides.update({B: fed, PRIMARY: fed})  # type: ignore[union-attr]
    a, b = api_for(hs, PRIMARY), api_for(hs, B)
    await a.admin_register("alice", "pw-alice-1")
    carol = (await a.admin_register("carol", "pw-carol-1"))["access_token"]
    bob = (await b.admin_register("bob", "pw-bob-1"))["access_token"]
    status, got = await a.call("PUT", f"{V}/profile/@carol:hs.test/displayname",
                               {"displayname": "Carol C"}, token=carol)
    assert status == 200, got
    assert await hs.database.fetchval(
        "SELECT COUNT(*) FROM profiles WHERE user_id = '@alice:hs.test'") == 0

    # Locally and from the other tenant alike.
    for api, token in ((a, carol), (b, bob)):
        status, got = await api.call("GET", f"{V}/profile/@alice:hs.test", token=token)
        assert (status, got) == (200, {"displayname": "alice"}), (api.host, got)
        status, got = await api.call("GET", f"{V}/profile/@carol:hs.test", token=token)
        assert (status, got) == (200, {"displayname": "Carol C"}), (api.host, got)
        status, got = await api.call("GET", f"{V}/profile/@nobody:hs.test", token=token)
        assert (status, got["errcode"]) == (404, "M_NOT_FOUND"), (api.host, got)

    # The federation query itself, field by field.
    client = hs.keys.client

    async def query(user_id: str, field: str | None = None) -> object:
        qs = f"user_id={urllib.parse.quote(user_id)}" + (f"&field={field}" if field else "")
        return await client.get_json(PRIMARY, f"/_matrix/federation/v1/query/profile?{qs}",
                                     origin=B)

    assert await query("@alice:hs.test") == {"displayname": "alice"}
    assert await query("@alice:hs.test", "displayname") == {"displayname": "alice"}
    assert await query("@alice:hs.test", "avatar_url") == {}
    with pytest.raises(Exception, match="M_NOT_FOUND"):  # the client's typed 404 error
        await query("@nobody:hs.test")
    assert await hs.database.fetchval(
        "SELECT COUNT(*) FROM profiles WHERE user_id = '@alice:hs.test'") == 0
