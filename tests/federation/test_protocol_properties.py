"""Property tests over the protocol core: what must hold for *every* input."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from signedjson.key import generate_signing_key, get_verify_key

from federation.canonical_json import (
    CANONICAL_INT_MAX,
    CANONICAL_INT_MIN,
    encode_canonical_json,
    parse_json_strict,
)
from federation.errors import MatrixError
from federation.event_format import EventFormatError
from federation.hashes import compute_event_id, content_hash_input
from federation.redaction import preserved_content_keys, preserved_top_level_keys, redact
from federation.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from federation.signing import SignatureVerifyError, add_hashes_and_signatures, verify_pdu

PROPS = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])

SERVER = "hs.test"
KEY = generate_signing_key("p")
KEYS = {SERVER: {"ed25519:p": get_verify_key(KEY)}}
EVENT_ID = "$" + "E" * 43

ints = st.integers(CANONICAL_INT_MIN, CANONICAL_INT_MAX)
keys = st.text(max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | ints | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(keys, json_values, max_size=6)
room_versions = st.sampled_from([ROOM_V10, ROOM_V11, ROOM_V12])
event_types = st.sampled_from([
    "m.room.message", "m.room.member", "m.room.create", "m.room.join_rules",
    "m.room.power_levels", "m.room.history_visibility", "m.room.redaction", "m.room.name",
    "org.example.custom",
])


def _pdu(rv: RoomVersion, event_type: str, content: dict[str, Any], state: bool) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "type": event_type,
        "sender": f"@user:{SERVER}",
        "content": content,
        "depth": 7,
        "origin_server_ts": 1_700_000_000_000,
        "prev_events": [EVENT_ID],
        "auth_events": [EVENT_ID],
    }
    if not (rv.room_id_from_create_event and event_type == "m.room.create"):
        pdu["room_id"] = "!" + "R" * 43 if rv.room_id_from_create_event else f"!room:{SERVER}"
    if state:
        pdu["state_key"] = ""
    return pdu


versioned_events = room_versions.flatmap(
    lambda rv: st.tuples(st.just(rv), st.builds(_pdu, st.just(rv), event_types, json_objects,
                                                st.booleans()))
)


def _reshuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _reshuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_reshuffled(v, rng) for v in value]
    return value


@PROPS
@given(json_values, st.randoms())
def test_canonical_json_is_stable_and_round_trips(value: Any, rng: random.Random) -> None:
    encoded = encode_canonical_json(value)
    assert encode_canonical_json(_reshuffled(value, rng)) == encoded
    # The spec's reference definition (appendices.md), written out independently.
    assert encoded == json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                                 sort_keys=True).encode("utf-8")
    assert parse_json_strict(encoded) == value


def _inject(value: Any, literal: str, rng: random.Random) -> str:
    """JSON text of ``value`` with ``literal`` placed at a random leaf position."""
    marker = "\x00MARK\x00"
    holder: Any = {"k": marker}
    if isinstance(value, dict) and value and rng.random() < 0.5:
        holder = dict(value)
        holder[rng.choice(list(holder))] = marker
    elif isinstance(value, list):
        holder = [*value, marker]
    return json.dumps(holder).replace(json.dumps(marker), literal)


@PROPS
@given(json_values, st.randoms(), st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(float(f))),
    st.integers(CANONICAL_INT_MAX + 1).map(str),
    st.integers(max_value=CANONICAL_INT_MIN - 1).map(str),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e5", "1E5", "-0.0"]),
))
def test_strict_parser_rejects_non_canonical_numbers(value: Any, rng: random.Random,
                                                     literal: str) -> None:
    text = _inject(value, literal, rng)
    with pytest.raises(MatrixError) as e:
        parse_json_strict(text)
    assert e.value.errcode == "M_BAD_JSON"


@PROPS
@given(json_objects, keys, json_values, json_values)
def test_strict_parser_rejects_duplicate_keys(obj: dict[str, Any], key: str, a: Any,
                                              b: Any) -> None:
    members = [json.dumps(k) + ":" + json.dumps(v) for k, v in obj.items() if k != key]
    members += [json.dumps(key) + ":" + json.dumps(a), json.dumps(key) + ":" + json.dumps(b)]
    text = json.dumps({"outer": "PLACEHOLDER"}).replace('"PLACEHOLDER"', "{" + ",".join(members) + "}")
    with pytest.raises(MatrixError) as e:
        parse_json_strict(text)
    assert e.value.errcode == "M_BAD_JSON" and "duplicate key" in e.value.msg


@PROPS
@given(versioned_events, st.dictionaries(st.sampled_from(
    ["origin", "membership", "prev_state", "event_id", "redacts", "x.custom", "unsigned"]),
    json_values, max_size=4))
def test_redaction_keeps_exactly_the_preserved_keys(
    versioned: tuple[RoomVersion, dict[str, Any]], extra: dict[str, Any]
) -> None:
    rv, pdu = versioned
    pdu = {**pdu, **extra, "hashes": {"sha256": "x"}, "signatures": {}}
    snapshot = copy.deepcopy(pdu)
    once = redact(pdu, rv)
    assert pdu == snapshot
    assert redact(once, rv) == once
    assert set(once) == (set(pdu) & preserved_top_level_keys(rv)) | {"content"}
    allowed = preserved_content_keys(pdu["type"], rv)
    if allowed is None:
        assert once["content"] == pdu["content"]
    else:
        for k, v in once["content"].items():
            if k == "third_party_invite" and rv.updated_redaction_rules:
                assert set(v) <= {"signed"}
            else:
                assert k in allowed and v == pdu["content"][k]
        assert set(pdu["content"]) & allowed <= set(once["content"])


@PROPS
@given(versioned_events)
def test_sign_then_verify_round_trips(versioned: tuple[RoomVersion, dict[str, Any]]) -> None:
    rv, pdu = versioned
    signed = add_hashes_and_signatures(pdu, rv, SERVER, KEY)
    result = verify_pdu(signed, rv, KEYS)
    assert result.content_hash_ok and result.event.pdu is signed
    assert result.event.event_id == compute_event_id(signed, rv)


Mutation = Callable[[dict[str, Any]], None]

MUTATIONS: dict[str, Mutation] = {
    "depth": lambda p: p.__setitem__("depth", p["depth"] + 1),
    "ts": lambda p: p.__setitem__("origin_server_ts", p["origin_server_ts"] - 1),
    "type": lambda p: p.__setitem__("type", p["type"] + ".x"),
    "sender": lambda p: p.__setitem__("sender", f"@other:{SERVER}"),
    "prev_events": lambda p: p.__setitem__("prev_events", []),
    "auth_events": lambda p: p["auth_events"].append("$" + "F" * 43),
    "state_key": lambda p: p.__setitem__("state_key", p.get("state_key", "") + "s"),
    "content_add": lambda p: p["content"].__setitem__("added_by_mutation", 1),
    "content_all": lambda p: p.__setitem__("content", {"replaced": True}),
    "new_top_level": lambda p: p.__setitem__("x.unknown", 1),
    "origin": lambda p: p.__setitem__("origin", "elsewhere.test"),
}


@PROPS
@given(versioned_events, st.sampled_from(sorted(MUTATIONS)))
def test_changing_signed_or_hashed_fields_is_detected(
    versioned: tuple[RoomVersion, dict[str, Any]], which: str
) -> None:
    rv, pdu = versioned
    signed = add_hashes_and_signatures(pdu, rv, SERVER, KEY)
    tampered = copy.deepcopy(signed)
    MUTATIONS[which](tampered)

    signature_covered = redact(tampered, rv) != redact(signed, rv)
    assert signature_covered or content_hash_input(tampered) != content_hash_input(signed)
    try:
        result = verify_pdu(tampered, rv, KEYS)
    except (SignatureVerifyError, EventFormatError):
        assert signature_covered
    else:
        assert not signature_covered, "a change to a signed field went unnoticed"
        assert result.redacted
        assert result.event.pdu == redact(tampered, rv)
