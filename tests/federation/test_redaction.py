"""federation/redaction.py: the v9 rules (room v10) against the v11 rules (v11, v12)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from federation.redaction import preserved_content_keys, preserved_top_level_keys, redact
from federation.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion

BASE: dict[str, Any] = {
    "event_id": "$e",
    "type": "m.room.message",
    "room_id": "!r:a.test",
    "sender": "@u:a.test",
    "content": {"body": "x"},
    "hashes": {"sha256": "h"},
    "signatures": {"a.test": {"ed25519:1": "s"}},
    "depth": 1,
    "prev_events": [],
    "auth_events": [],
    "origin_server_ts": 1,
    "origin": "a.test",
    "membership": "join",
    "prev_state": [],
    "unsigned": {"age": 1},
    "redacts": "$r",
    "extra": {"anything": True},
}


def _redacted(rv: RoomVersion, event_type: str, content: dict[str, Any]) -> dict[str, Any]:
    return redact({**BASE, "type": event_type, "content": content, "state_key": ""}, rv)["content"]


def test_top_level_keys() -> None:
    v10 = redact(BASE, ROOM_V10)
    assert set(v10) == set(BASE) - {"unsigned", "redacts", "extra"}
    for rv in (ROOM_V11, ROOM_V12):
        assert set(redact(BASE, rv)) == set(BASE) - {
            "unsigned", "redacts", "extra", "origin", "membership", "prev_state"}
    assert preserved_top_level_keys(ROOM_V10) - preserved_top_level_keys(ROOM_V11) == {
        "origin", "membership", "prev_state"}


@pytest.mark.parametrize(
    ("event_type", "content", "v10", "v11"),
    [
        ("m.room.member",
         {"membership": "join", "displayname": "d", "join_authorised_via_users_server": "@a:b",
          "third_party_invite": {"signed": {"mxid": "@x:y"}, "display_name": "x"}},
         {"membership": "join", "join_authorised_via_users_server": "@a:b"},
         {"membership": "join", "join_authorised_via_users_server": "@a:b",
          "third_party_invite": {"signed": {"mxid": "@x:y"}}}),
        ("m.room.member", {"membership": "invite", "third_party_invite": {"display_name": "x"}},
         {"membership": "invite"},
         {"membership": "invite", "third_party_invite": {}}),
        ("m.room.member", {"membership": "invite", "third_party_invite": "junk"},
         {"membership": "invite"}, {"membership": "invite"}),
        ("m.room.create", {"creator": "@a:b", "room_version": "10", "m.federate": False},
         {"creator": "@a:b"},
         {"creator": "@a:b", "room_version": "10", "m.federate": False}),
        ("m.room.join_rules", {"join_rule": "restricted", "allow": [{"type": "x"}], "z": 1},
         {"join_rule": "restricted", "allow": [{"type": "x"}]},
         {"join_rule": "restricted", "allow": [{"type": "x"}]}),
        ("m.room.power_levels",
         {"ban": 50, "events": {}, "events_default": 0, "invite": 0, "kick": 50, "redact": 50,
          "state_default": 50, "users": {}, "users_default": 0, "historical": 100,
          "notifications": {"room": 50}},
         {"ban": 50, "events": {}, "events_default": 0, "kick": 50, "redact": 50,
          "state_default": 50, "users": {}, "users_default": 0},
         {"ban": 50, "events": {}, "events_default": 0, "invite": 0, "kick": 50, "redact": 50,
          "state_default": 50, "users": {}, "users_default": 0}),
        ("m.room.history_visibility", {"history_visibility": "shared", "x": 1},
         {"history_visibility": "shared"}, {"history_visibility": "shared"}),
        ("m.room.redaction", {"redacts": "$x", "reason": "r"}, {}, {"redacts": "$x"}),
        ("m.room.aliases", {"aliases": ["#a:b"]}, {}, {}),
        ("m.room.name", {"name": "n"}, {}, {}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_content_rules(event_type: str, content: dict[str, Any], v10: dict[str, Any],
                       v11: dict[str, Any]) -> None:
    assert _redacted(ROOM_V10, event_type, content) == v10
    assert _redacted(ROOM_V11, event_type, content) == v11
    assert _redacted(ROOM_V12, event_type, content) == v11


def test_input_untouched_and_idempotent() -> None:
    pdu = {**BASE, "type": "m.room.member",
           "content": {"membership": "join", "third_party_invite": {"signed": {}, "x": 1}}}
    snapshot = copy.deepcopy(pdu)
    for rv in (ROOM_V10, ROOM_V11, ROOM_V12):
        once = redact(pdu, rv)
        assert redact(once, rv) == once
        assert pdu == snapshot


def test_missing_or_odd_content() -> None:
    no_content = {k: v for k, v in BASE.items() if k != "content"}
    assert redact(no_content, ROOM_V11)["content"] == {}
    assert redact({**BASE, "content": ["x"]}, ROOM_V11)["content"] == {}
    assert redact({**BASE, "type": 5}, ROOM_V11)["content"] == {}


def test_preserved_content_keys() -> None:
    assert preserved_content_keys("m.room.create", ROOM_V11) is None
    assert preserved_content_keys("m.room.create", ROOM_V10) == {"creator"}
    assert preserved_content_keys("m.room.message", ROOM_V12) == frozenset()
