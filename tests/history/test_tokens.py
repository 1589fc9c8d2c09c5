"""Pagination tokens: topological ``t<depth>-<stream>`` and stream ``s...``
tokens, parsing and formatting; bad tokens are 400 ``M_INVALID_PARAM`` over
HTTP and change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.canonical_json import CANONICAL_INT_MAX
from federation.errors import MatrixError
from homeserver.handlers.pagination import (
    StreamToken,
    TopologicalToken,
    parse_pagination_token,
)
from tests.client.conftest import start_node


@pytest.mark.parametrize(("raw", "depth", "stream"), [
    ("t0-0", 0, 0),
    ("t12-345", 12, 345),
    ("t7--3", 7, -3),  # a backfilled event: negative stream ordering
    ("t-1-0", -1, 0),  # before the first event
    (f"t{CANONICAL_INT_MAX}-{2**62}", CANONICAL_INT_MAX, 2**62),
])
def test_topological_tokens_parse_and_format(raw: str, depth: int, stream: int) -> None:
    tok = parse_pagination_token(raw)
    assert tok == TopologicalToken(depth, stream)
    assert isinstance(tok, TopologicalToken) and tok.encode() == raw and tok.pos == (depth, stream)


def test_stream_tokens_still_parse() -> None:
    assert parse_pagination_token("s5_1_2_3") == StreamToken(5, 1, 2, 3)
    assert parse_pagination_token("s9") == StreamToken(9)


@pytest.mark.parametrize("raw", [
    "", "t", "t1", "t1-", "t-1", "tx-1", "t1-x", "t1-2-3", "t1_2", "t 1-2", "t1-2 ",
    "t-2-0", f"t{CANONICAL_INT_MAX + 1}-0", f"t0-{2**62 + 1}", "t0--" + "9" * 20,
    "s-1", "sx", "s1_2_3_4_5", "x1-2", "T1-2", "t１-2",
])
def test_bad_tokens_are_invalid_param(raw: str) -> None:
    with pytest.raises(MatrixError) as e:
        parse_pagination_token(raw)
    assert (e.value.code, e.value.errcode) == (400, "M_INVALID_PARAM")


@given(st.integers(-1, CANONICAL_INT_MAX), st.integers(-(2**62), 2**62))
def test_topological_round_trip(depth: int, stream: int) -> None:
    tok = TopologicalToken(depth, stream)
    assert TopologicalToken.parse(tok.encode()) == tok


async def test_bad_tokens_over_http(tmp_path: Path, database_url: str) -> None:
    async with start_node(tmp_path, database_url) as node:
        alice = await node.user("alice")
        room = await alice.create_room()
        await alice.send(room, "hello")
        events_before = await node.count("events")
        for params in ({"from": "t1-"}, {"from": "banana"}, {"to": "t1-2-3"},
                       {"from": "t-5-0", "dir": "f"}):
            status, err = await alice.call("GET", f"/rooms/{room}/messages", params=params)
            assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), params
        status, err = await alice.call("GET", "/sync", params={"since": "t3-4"})
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")
        assert await node.count("events") == events_before
        # A good topological token pages; `start` echoes the position.
        page = await alice.ok("GET", f"/rooms/{room}/messages",
                              params={"dir": "b", "limit": "1"})
        assert page["start"].startswith("t") and page["end"].startswith("t")
        again = await alice.ok("GET", f"/rooms/{room}/messages",
                               params={"dir": "b", "limit": "1", "from": page["start"]})
        assert again == page
