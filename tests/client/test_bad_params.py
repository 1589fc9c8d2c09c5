"""Query and path parameters out of range get a Matrix error, never a 500:
filter IDs beyond a BIGINT, unknown membership values."""

from __future__ import annotations

import pytest

from tests.client.conftest import Node

HUGE = "99999999999999999999999"


@pytest.mark.parametrize("raw", [HUGE, "9223372036854775808", "\u00b2", "12a"])
async def test_filter_ids_out_of_range(node: Node, raw: str) -> None:
    alice = await node.user("alice")
    status, got = await alice.call("GET", f"/user/{alice.user_id}/filter/{raw}")
    assert (status, got["errcode"]) == (404, "M_NOT_FOUND"), got
    status, got = await alice.call("GET", "/sync", params={"filter": raw})
    assert (status, got["errcode"]) == (400, "M_INVALID_PARAM"), got
    # The largest BIGINT is a well-formed ID that names no filter.
    status, got = await alice.call("GET", f"/user/{alice.user_id}/filter/9223372036854775807")
    assert (status, got["errcode"]) == (404, "M_NOT_FOUND"), got


async def test_stored_filter_still_loads(node: Node) -> None:
    alice = await node.user("alice")
    got = await alice.ok("POST", f"/user/{alice.user_id}/filter", {"room": {"timeline": {"limit": 1}}})
    fid = got["filter_id"]
    assert (await alice.ok("GET", f"/user/{alice.user_id}/filter/{fid}"))["room"] == {
        "timeline": {"limit": 1}}
    await alice.ok("GET", "/sync", params={"filter": fid})


async def test_members_membership_values(node: Node) -> None:
    alice = await node.user("alice")
    room = await alice.create_room()
    for param in ("membership", "not_membership"):
        status, got = await alice.call("GET", f"/rooms/{room}/members", params={param: "weird"})
        assert (status, got["errcode"]) == (400, "M_INVALID_PARAM"), got
        assert param in got["error"]
    got = await alice.ok("GET", f"/rooms/{room}/members", params={"membership": "join"})
    assert [e["state_key"] for e in got["chunk"]] == [alice.user_id]
    got = await alice.ok("GET", f"/rooms/{room}/members", params={"not_membership": "join"})
    assert got["chunk"] == []
