"""Authorisation rules: the vector tables (tests/vectors/auth/*.json) and tricky cases.

The one loader is here; the table format is described in
tests/vectors/auth/README.md.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from federation.auth_rules import (
    RULES,
    AuthError,
    auth_types_for_event,
    authorising_rule,
    can_apply_redaction,
    check_auth,
    check_auth_events_selection,
    get_named_level,
    get_power_level,
    get_send_level,
    get_user_power_level,
    is_membership_change_allowed,
    room_creators,
    rules_for,
)
from federation.errors import MatrixError
from federation.events import Event
from federation.room_versions import SUPPORTED_ROOM_VERSIONS, RoomVersion, get_room_version

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "auth"
ALL_VERSIONS = ["10", "11", "12"]

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
CAROL = "@carol:a.test"

StateKey = tuple[str, str]


# --------------------------------------------------------------------------
# The room builder


def _domain(user_id: str) -> str:
    return user_id.partition(":")[2]


def _room_id(rv: RoomVersion) -> str:
    return "!create" if rv.room_id_from_create_event else "!room:a.test"


def _merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _with_creator_level(content: Mapping[str, Any], rv: RoomVersion) -> dict[str, Any]:
    """README "Creator level": alice has 100 where creators are not privileged."""
    out = copy.deepcopy(dict(content))
    if out.pop("$no_creator_default", False) or rv.privileged_room_creators:
        return out
    users = out.get("users")
    if users is None:
        out["users"] = {ALICE: 100}
    elif isinstance(users, dict) and ALICE not in users:
        users[ALICE] = 100
    return out


def _create_content(rv: RoomVersion, patch: Mapping[str, Any] | None = None) -> dict[str, Any]:
    base: dict[str, Any] = {"room_version": rv.identifier}
    if not rv.implicit_room_creator:
        base["creator"] = ALICE
    return _merge(base, patch or {})


@dataclass
class Room:
    rv: RoomVersion
    state: dict[StateKey, Event]
    pool: dict[str, Event]


def _pdu(rv: RoomVersion, spec: Mapping[str, Any]) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "type": spec["type"],
        "sender": spec["sender"],
        "content": copy.deepcopy(spec.get("content", {})),
        "prev_events": ["$earlier"],
        "auth_events": [],
        "depth": 5,
        "origin_server_ts": 0,
        "signatures": {_domain(spec["sender"]): {"ed25519:k": "sig"}},
    }
    room_id = spec.get("room_id", _room_id(rv))
    if room_id is not None:
        pdu["room_id"] = room_id
    if "state_key" in spec:
        pdu["state_key"] = spec["state_key"]
    return pdu


def build_room(rv: RoomVersion, spec: Mapping[str, Any]) -> Room:
    state: dict[StateKey, Event] = {}

    def put(event_id: str, ev_spec: Mapping[str, Any]) -> None:
        pdu = _pdu(rv, ev_spec)
        if ev_spec["type"] == "m.room.create":
            pdu["prev_events"] = []
            if rv.room_id_from_create_event:
                pdu.pop("room_id")
        state[(pdu["type"], pdu["state_key"])] = Event(pdu, event_id, rv)

    if not spec.get("bare"):
        if spec.get("create", {}) is not None:
            content = _create_content(rv, spec.get("create"))
            put("$create", {"type": "m.room.create", "sender": ALICE, "state_key": "",
                            "content": content})
        members: dict[str, Any] = {ALICE: "join", **spec.get("members", {})}
        for user, membership in members.items():
            if membership is not None:
                sender = user if membership in ("join", "leave", "knock") else ALICE
                put(f"$member:{user}", {"type": "m.room.member", "sender": sender,
                                        "state_key": user,
                                        "content": {"membership": membership}})
        pl = spec.get("power_levels", {})
        if pl is not None:
            put("$power_levels", {"type": "m.room.power_levels", "sender": ALICE,
                                  "state_key": "", "content": _with_creator_level(pl, rv)})
        join_rule = spec.get("join_rule", "public")
        if join_rule is not None:
            put("$join_rules", {"type": "m.room.join_rules", "sender": ALICE,
                                "state_key": "", "content": {"join_rule": join_rule}})
        for extra in spec.get("state", []):
            put(f"$state:{extra['type']}:{extra['state_key']}", extra)

    rejected = set(spec.get("rejected", []))
    for key, ev in list(state.items()):
        if ev.event_id in rejected:
            state[key] = Event(ev.pdu, ev.event_id, rv, rejected_reason="test: rejected")
    pool = {ev.event_id: ev for ev in state.values()}
    for extra in spec.get("extra_events", []):
        pool[extra["id"]] = Event(_pdu(rv, extra), extra["id"], rv,
                                  rejected_reason=extra.get("rejected"))
    return Room(rv, state, pool)


def build_event(room: Room, spec: Mapping[str, Any]) -> Event:
    rv = room.rv
    is_create = spec["type"] == "m.room.create"
    pdu = _pdu(rv, spec)
    if is_create:
        pdu["prev_events"] = []
        if rv.room_id_from_create_event and "room_id" not in spec:
            pdu.pop("room_id")
        if "content" not in spec:
            pdu["content"] = _create_content(rv)
    if spec["type"] == "m.room.power_levels":
        pdu["content"] = _with_creator_level(pdu["content"], rv)
    pdu["content"] = _merge(pdu["content"], spec.get("content_merge", {}))
    for key in ("prev_events", "signatures", "depth"):
        if key in spec:
            pdu[key] = spec[key]
    if "auth_events" in spec:
        pdu["auth_events"] = list(spec["auth_events"])
    elif not is_create:
        wanted = auth_types_for_event(pdu, rv)
        ids = sorted(room.state[k].event_id for k in wanted if k in room.state)
        ids = [i for i in ids if i not in spec.get("auth_events_remove", [])]
        pdu["auth_events"] = ids + list(spec.get("auth_events_add", []))
    return Event(pdu, spec.get("id", "$test"), rv)


# --------------------------------------------------------------------------
# The loader


@dataclass(frozen=True)
class Case:
    file: str
    name: str
    version: str
    room: Mapping[str, Any]
    event: Mapping[str, Any]
    expect: str
    rule: str

    @property
    def edits_auth_events(self) -> bool:
        keys = ("auth_events", "auth_events_add", "auth_events_remove")
        return any(k in self.event for k in keys) or "extra_events" in self.room


def load_cases() -> Iterator[Case]:
    for path in sorted(VECTORS.glob("*.json")):
        data = json.loads(path.read_text())
        for raw in data["cases"]:
            for version in raw.get("versions", ALL_VERSIONS):
                yield Case(path.name, raw["name"], version, raw.get("room", {}),
                           raw["event"], raw["expect"], raw["rule"])


CASES = list(load_cases())


def _outcome(fn: Any) -> tuple[str, str]:
    try:
        return "allow", fn()
    except AuthError as err:
        return "deny", err.rule


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c.file[:-5]}:{c.name}:v{c.version}" for c in CASES]
)
def test_vector(case: Case) -> None:
    rv = get_room_version(case.version)
    room = build_room(rv, case.room)
    event = build_event(room, case.event)

    def own_auth_events() -> str:
        return authorising_rule(event, check_auth_events_selection(event, room.pool))

    got = _outcome(own_auth_events)
    assert got == (case.expect, case.rule), f"own auth_events: got {got}"
    if not case.edits_auth_events:
        got_state = _outcome(lambda: authorising_rule(event, room.state))
        assert got_state == (case.expect, case.rule), f"room state: got {got_state}"


def test_every_rule_of_every_version_has_allow_and_deny_vectors() -> None:
    seen: set[tuple[str, str, str]] = {(c.version, c.rule, c.expect) for c in CASES}
    missing = []
    for version in ALL_VERSIONS:
        rv = get_room_version(version)
        for rule in rules_for(rv):
            wanted = ["allow", "deny"] if rule.outcome == "both" else [rule.outcome]
            missing += [f"v{version} {rule.id} ({w})" for w in wanted
                        if (version, rule.id, w) not in seen]
    assert not missing, "no vector for: " + ", ".join(missing)


def test_vectors_name_only_rules_of_their_version() -> None:
    for case in CASES:
        rule = RULES.get(case.rule)
        assert rule is not None, f"{case.file}:{case.name}: unknown rule {case.rule}"
        assert rule.applies(get_room_version(case.version)), (case.name, case.version)
        assert case.expect in ("allow", "deny")
        assert rule.outcome in (case.expect, "both"), (case.name, case.expect)


# --------------------------------------------------------------------------
# Tricky cases, in Python


def _room(version: str, **spec: Any) -> Room:
    return build_room(get_room_version(version), spec)


def _deny(room: Room, event_spec: Mapping[str, Any]) -> AuthError:
    event = build_event(room, event_spec)
    with pytest.raises(AuthError) as info:
        check_auth(event, check_auth_events_selection(event, room.pool))
    return info.value


def test_auth_error_is_a_forbidden_matrix_error_naming_the_rule() -> None:
    room = _room("10")
    err = _deny(room, {"type": "m.room.power_levels", "sender": ALICE, "state_key": "",
                       "content": {"ban": "50"}})
    assert isinstance(err, MatrixError)
    assert (err.code, err.errcode) == (403, "M_FORBIDDEN")
    assert err.rule == "power_levels.int_fields"
    assert err.spec_rule == "v10 9.1"
    assert err.to_json()["error"].startswith("Auth rule v10 9.1 (power_levels.int_fields) failed")
    assert "'50'" in err.msg


@pytest.mark.parametrize("key", ["users_default", "events_default", "state_default", "ban",
                                 "redact", "kick", "invite"])
def test_v10_string_power_levels_are_refused_for_every_named_level(key: str) -> None:
    room = _room("10")
    err = _deny(room, {"type": "m.room.power_levels", "sender": ALICE, "state_key": "",
                       "content": {key: "0"}})
    assert err.rule == "power_levels.int_fields"
    assert key in err.reason


def test_v12_creators_in_power_levels_users_are_refused() -> None:
    room = _room("12", create={"additional_creators": [CAROL]})
    for creator in (ALICE, CAROL):
        err = _deny(room, {"type": "m.room.power_levels", "sender": ALICE, "state_key": "",
                           "content": {"users": {creator: 100, BOB: 50}}})
        assert (err.rule, err.spec_rule) == ("power_levels.creator_in_users", "v12 10.4")
        assert creator in err.reason
    # The same content is fine in v11, where creators are ordinary users.
    room11 = _room("11")
    event = build_event(room11, {"type": "m.room.power_levels", "sender": ALICE,
                                 "state_key": "", "content": {"users": {ALICE: 100}}})
    check_auth(event, room11.state)


@pytest.mark.parametrize("bad", ["@bob:b.test", ["bob"], ["@bob"], [None], ["@bob:bad host"],
                                 ["@" + "x" * 260 + ":b.test"], ["@bo\x00b:b.test"]])
def test_v12_invalid_additional_creators_are_refused(bad: object) -> None:
    room = _room("12", bare=True)
    err = _deny(room, {"type": "m.room.create", "sender": ALICE, "state_key": "",
                       "content_merge": {"additional_creators": bad}})
    assert (err.rule, err.spec_rule) == ("create.additional_creators", "v12 1.4")


def test_restricted_join_via_an_authoriser_without_invite_power() -> None:
    spec = {"type": "m.room.member", "sender": BOB, "state_key": BOB,
            "content": {"membership": "join", "join_authorised_via_users_server": CAROL},
            "signatures": {"b.test": {"ed25519:k": "s"}, "a.test": {"ed25519:k": "s"}}}
    low = _room("11", join_rule="restricted", members={CAROL: "join"},
                power_levels={"invite": 50, "users": {CAROL: 49}})
    err = _deny(low, spec)
    assert (err.rule, err.spec_rule) == ("member.join.restricted.authoriser", "v11 4.3.5.2")
    assert "invite level 50" in err.reason
    # One more level and the same join is allowed; the authoriser's member
    # event is part of the selected auth events.
    enough = _room("11", join_rule="restricted", members={CAROL: "join"},
                   power_levels={"invite": 50, "users": {CAROL: 50}})
    event = build_event(enough, spec)
    assert ("m.room.member", CAROL) in auth_types_for_event(event, enough.rv)
    assert authorising_rule(event, check_auth_events_selection(event, enough.pool)) == (
        "member.join.restricted.allow")


def test_knock_on_a_knock_restricted_room_then_join() -> None:
    room = _room("12", join_rule="knock_restricted", members={CAROL: "join"})
    knock = build_event(room, {"type": "m.room.member", "sender": BOB, "state_key": BOB,
                               "content": {"membership": "knock"}})
    assert ("m.room.join_rules", "") in auth_types_for_event(knock, room.rv)
    assert authorising_rule(knock, room.state) == "member.knock.allow"
    # After knocking, bob still cannot join on his own...
    knocked = _room("12", join_rule="knock_restricted", members={CAROL: "join", BOB: "knock"})
    join = {"type": "m.room.member", "sender": BOB, "state_key": BOB,
            "content": {"membership": "join"}}
    assert _deny(knocked, join).rule == "member.join.restricted.authoriser"
    # ...but can when a joined member's server authorises it (or once invited).
    authorised = {**join, "content": {"membership": "join",
                                      "join_authorised_via_users_server": CAROL},
                  "signatures": {"b.test": {"ed25519:k": "s"}, "a.test": {"ed25519:k": "s"}}}
    assert authorising_rule(build_event(knocked, authorised), knocked.state) == (
        "member.join.restricted.allow")
    invited = _room("12", join_rule="knock_restricted", members={BOB: "invite"})
    assert authorising_rule(build_event(invited, join), invited.state) == (
        "member.join.restricted.member")


def test_ban_needs_the_ban_level_while_kick_needs_the_kick_level() -> None:
    room = _room("10", members={BOB: "join", CAROL: "join"},
                 power_levels={"kick": 10, "ban": 50, "users": {BOB: 20}})
    assert get_named_level(room.state, "kick") == 10
    assert get_named_level(room.state, "ban") == 50
    kick = build_event(room, {"type": "m.room.member", "sender": BOB, "state_key": CAROL,
                              "content": {"membership": "leave"}})
    ban = build_event(room, {"type": "m.room.member", "sender": BOB, "state_key": CAROL,
                             "content": {"membership": "ban"}})
    assert is_membership_change_allowed(kick, room.state)
    assert not is_membership_change_allowed(ban, room.state)
    with pytest.raises(AuthError, match="ban level is 50"):
        check_auth(ban, room.state)
    # Unbanning needs both levels: the kick level alone is not enough.
    banned = _room("10", members={BOB: "join", CAROL: "ban"},
                   power_levels={"kick": 10, "ban": 50, "users": {BOB: 20}})
    unban = build_event(banned, {"type": "m.room.member", "sender": BOB, "state_key": CAROL,
                                 "content": {"membership": "leave"}})
    with pytest.raises(AuthError) as info:
        check_auth(unban, banned.state)
    assert info.value.rule == "member.leave.unban_power"


def test_power_level_lookups() -> None:
    v10 = _room("10", power_levels=None, members={BOB: "join"})
    assert get_power_level(ALICE, v10.state) == 100  # creator, no power levels
    assert get_power_level(BOB, v10.state) == 0
    assert get_send_level("m.room.name", True, v10.state) == 50
    assert get_send_level("m.room.message", False, v10.state) == 0

    v11 = _room("11", power_levels={"users_default": 5, "users": {BOB: 20},
                                    "events": {"m.room.message": 3}})
    assert get_power_level(ALICE, v11.state) == 100
    assert get_power_level(BOB, v11.state) == 20
    assert get_power_level(CAROL, v11.state) == 5
    assert get_send_level("m.room.message", False, v11.state) == 3
    assert get_named_level(v11.state, "redact") == 50

    v12 = _room("12", create={"additional_creators": [CAROL]},
                power_levels={"users": {BOB: 100}})
    assert get_power_level(ALICE, v12.state) == math.inf
    assert get_user_power_level(CAROL, v12.state) == math.inf
    assert get_power_level(BOB, v12.state) == 100
    assert get_power_level(ALICE, {}) == 0


def test_room_creators_per_version() -> None:
    assert room_creators(_room("10", create={"creator": CAROL}).state[("m.room.create", "")]) == {
        CAROL}
    assert room_creators(_room("11", create={"creator": CAROL}).state[("m.room.create", "")]) == {
        ALICE}
    v12 = _room("12", create={"additional_creators": [BOB, CAROL]})
    assert room_creators(v12.state[("m.room.create", "")]) == {ALICE, BOB, CAROL}


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_can_apply_redaction(version: str) -> None:
    room = _room(version, members={BOB: "join", CAROL: "join"},
                 power_levels={"users": {CAROL: 50}, "redact": 50})
    rv = room.rv

    def redaction(sender: str, target: str) -> Event:
        pdu: dict[str, Any] = {"type": "m.room.redaction", "sender": sender,
                               "room_id": _room_id(rv), "content": {}}
        if rv.redacts_in_content:
            pdu["content"]["redacts"] = target
        else:
            pdu["redacts"] = target
        return Event(pdu, "$redaction", rv)

    def message(sender: str, event_id: str) -> Event:
        return Event({"type": "m.room.message", "sender": sender, "room_id": _room_id(rv),
                      "content": {"body": "x"}}, event_id, rv)

    alices = message(ALICE, "$alice_msg")
    bobs = message(BOB, "$bob_msg")
    # Same server (carol and alice are on a.test), below the redact level: applies.
    low = _room(version, members={CAROL: "join"}, power_levels={"users": {CAROL: 0}})
    assert can_apply_redaction(redaction(CAROL, "$alice_msg"), alices, low.state)
    # Another server, below the redact level: does not apply.
    assert not can_apply_redaction(redaction(BOB, "$alice_msg"), alices, room.state)
    # The redact level lets carol redact bob's event from another server.
    assert can_apply_redaction(redaction(CAROL, "$bob_msg"), bobs, room.state)
    # A redaction only applies to the event it names, in its room.
    assert not can_apply_redaction(redaction(CAROL, "$other"), bobs, room.state)
    elsewhere = Event({**bobs.pdu, "room_id": "!elsewhere:b.test"}, "$bob_msg", rv)
    assert not can_apply_redaction(redaction(CAROL, "$bob_msg"), elsewhere, room.state)


def test_auth_types_for_partial_events() -> None:
    v11, v12 = get_room_version("11"), get_room_version("12")
    pl, create, jr = ("m.room.power_levels", ""), ("m.room.create", ""), ("m.room.join_rules", "")
    assert auth_types_for_event({"type": "m.room.create", "sender": ALICE}, v12) == set()
    assert auth_types_for_event({"type": "m.room.message", "sender": BOB}, v11) == {
        create, pl, ("m.room.member", BOB)}
    assert auth_types_for_event({"type": "m.room.message", "sender": BOB}, v12) == {
        pl, ("m.room.member", BOB)}
    invite = {"type": "m.room.member", "sender": ALICE, "state_key": BOB,
              "content": {"membership": "invite",
                          "third_party_invite": {"signed": {"token": "tok"}}}}
    assert auth_types_for_event(invite, v12) == {
        pl, jr, ("m.room.member", ALICE), ("m.room.member", BOB),
        ("m.room.third_party_invite", "tok")}
    leave = {"type": "m.room.member", "sender": ALICE, "state_key": BOB,
             "content": {"membership": "leave", "join_authorised_via_users_server": CAROL}}
    assert auth_types_for_event(leave, v12) == {
        pl, ("m.room.member", ALICE), ("m.room.member", BOB)}
    join = {"type": "m.room.member", "sender": BOB, "state_key": BOB,
            "content": {"membership": "join", "join_authorised_via_users_server": CAROL}}
    assert ("m.room.member", CAROL) in auth_types_for_event(join, v11)


def test_v12_selection_adds_the_create_event_for_the_later_rules() -> None:
    room = _room("12", members={BOB: "join"})
    event = build_event(room, {"type": "m.room.message", "sender": BOB})
    assert "$create" not in event.auth_event_ids
    keyed = check_auth_events_selection(event, room.pool)
    assert keyed[("m.room.create", "")].event_id == "$create"
    # Without the create event in the mapping, v12 rule 2 cannot pass.
    del keyed[("m.room.create", "")]
    with pytest.raises(AuthError) as info:
        check_auth(event, keyed)
    assert info.value.spec_rule == "v12 2"


def test_spec_numbers_follow_each_version_text() -> None:
    v10, v11, v12 = (get_room_version(v) for v in ALL_VERSIONS)
    assert [RULES["create.allow"].number(rv) for rv in (v10, v11, v12)] == ["1.5", "1.4", "1.5"]
    assert [RULES["member.join.banned"].number(rv) for rv in (v10, v11, v12)] == [
        "4.3.3", "4.3.3", "5.3.3"]
    assert RULES["auth_events.room_id"].number(v12) == "3.5"
    assert RULES["power_levels.allow"].number(v12) == "10.11"
    assert RULES["default.allow"].number(v11) == "10"
    # Every rule listed for a version has a real number in that version.
    for rv in (v10, v11, v12):
        assert all(r.number(rv) != "-" for r in rules_for(rv))
    assert set(SUPPORTED_ROOM_VERSIONS) == set(ALL_VERSIONS)
