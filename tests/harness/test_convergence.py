"""The convergence diff: what a failing ``fed.converged`` tells the reader."""

from __future__ import annotations

import pytest

from concord_harness import ConvergenceError, Federation, RoomSnapshot, diff_snapshots
from concord_harness.convergence import MAX_LISTED

ROOM = "!r:hs1"


def ev(eid: str, etype: str = "m.room.message", **kw: object) -> dict[str, object]:
    return {"event_id": eid, "type": etype, "sender": "@u:hs1", **kw}


def snap(server: str, events: list[dict[str, object]], state: dict[tuple[str, str], str]) -> RoomSnapshot:
    return RoomSnapshot(server, {str(e["event_id"]): e for e in events}, dict(state))


def test_equal_views_have_no_diff() -> None:
    events = [ev("$1", "m.room.create", state_key=""), ev("$2", content={"body": "hi"})]
    state = {("m.room.create", ""): "$1"}
    assert diff_snapshots(ROOM, [snap("hs1", events, state), snap("hs2", events, state)]) is None


def test_missing_events_are_named_per_server() -> None:
    create = ev("$1", "m.room.create", state_key="")
    msg = ev("$2", content={"body": "hello there"}, sender="@bob:hs2")
    state = {("m.room.create", ""): "$1"}
    diff = diff_snapshots(ROOM, [snap("hs1", [create, msg], state), snap("hs2", [create], state)])
    assert diff is not None
    assert "room !r:hs1 differs between hs1, hs2" in diff
    assert "hs2 has 1/2 events; lacks 1: $2 (m.room.message 'hello there' from @bob:hs2)" in diff
    assert "hs1 has" not in diff
    assert "current state" not in diff


def test_state_differences_show_each_server_value() -> None:
    pl1 = ev("$p1", "m.room.power_levels", state_key="")
    pl2 = ev("$p2", "m.room.power_levels", state_key="")
    diff = diff_snapshots(
        ROOM,
        [
            snap("hs1", [pl1, pl2], {("m.room.power_levels", ""): "$p1"}),
            snap("hs2", [pl1, pl2], {("m.room.power_levels", ""): "$p2", ("m.room.topic", ""): "$t"}),
        ],
    )
    assert diff is not None
    assert "current state differs on 2 key(s):" in diff
    assert (
        "(m.room.power_levels, ''): hs1 → $p1 (m.room.power_levels[''] from @u:hs1), "
        "hs2 → $p2 (m.room.power_levels[''] from @u:hs1)"
    ) in diff
    assert "(m.room.topic, ''): hs1 → absent, hs2 → $t" in diff


def test_long_lists_are_summarised_and_errors_reported() -> None:
    many = [ev(f"${i}") for i in range(MAX_LISTED + 5)]
    diff = diff_snapshots(
        ROOM,
        [snap("hs1", many, {}), snap("hs2", [], {}), RoomSnapshot("hs3", error="HTTP 403")],
    )
    assert diff is not None
    assert f"hs2 has 0/{MAX_LISTED + 5} events; lacks {MAX_LISTED + 5}" in diff
    assert "and 5 more" in diff
    assert "hs3: cannot read the room: HTTP 403" in diff


def test_no_views_is_a_diff() -> None:
    assert "no server to compare" in (diff_snapshots(ROOM, []) or "")


async def test_converged_fails_with_the_diff_after_its_deadline() -> None:
    async with Federation(nodes=2) as fed:
        with pytest.raises(ConvergenceError, match="not converged after 0.2s") as info:
            await fed.converged("!nowhere:hs1", timeout=0.2)
        assert "no server to compare" in str(info.value)
        assert "links:" in str(info.value)
        a, b = fed.nodes
        with pytest.raises(ConvergenceError, match="no harness user on this server"):
            await fed.converged("!nowhere:hs1", timeout=0.1, servers=[a, b])


def test_a_server_that_joined_later_is_compared_from_its_first_event() -> None:
    early = [ev("$1", "m.room.create", state_key=""), ev("$2")]
    late = [ev("$3", "m.room.member", state_key="@b:hs2"), ev("$4")]
    a = snap("hs1", early + late, {})
    a.order = ["$1", "$2", "$3", "$4"]
    b = snap("hs2", late, {})
    b.order = ["$3", "$4"]
    assert diff_snapshots(ROOM, [a, b]) is None
    full = diff_snapshots(ROOM, [a, b], history="full")
    assert full is not None and "hs2 has 2/4 events; lacks 2: $1" in full
    b.duplicates = ["$4"]
    assert "hs2 shows 1 event(s) twice: $4" in (diff_snapshots(ROOM, [a, b]) or "")
