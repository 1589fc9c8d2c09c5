"""federation/event_format.py: each version's PDU format, field by field."""

from __future__ import annotations

from typing import Any

import pytest
from canonicaljson import encode_canonical_json

from federation.canonical_json import CANONICAL_INT_MAX
from federation.errors import MatrixError
from federation.event_format import (
    MAX_PDU_BYTES,
    EventFormatError,
    check_pdu_format,
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
    pdu_size_without_unsigned,
)
from federation.events import event_from_pdu
from federation.hashes import content_hash_input
from federation.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from federation.signing import SignatureVerifyError, verify_pdu
from tests.vectors.loader import corpus_events

EVENT_ID = "$" + "x" * 43


def _pdu(rv: RoomVersion, **changes: Any) -> dict[str, Any]:
    """A valid non-create PDU for ``rv``; ``changes`` with value ``...`` delete keys."""
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "room_id": "!" + "R" * 43 if rv.room_id_from_create_event else "!r:a.test",
        "sender": "@u:a.test",
        "content": {"body": "x"},
        "depth": 3,
        "origin_server_ts": 1,
        "prev_events": [EVENT_ID],
        "auth_events": [EVENT_ID],
        "hashes": {"sha256": "abc"},
        "signatures": {"a.test": {"ed25519:1": "sig"}},
    }
    for key, value in changes.items():
        if value is ...:
            pdu.pop(key, None)
        else:
            pdu[key] = value
    return pdu


ALL = [ROOM_V10, ROOM_V11, ROOM_V12]


@pytest.mark.parametrize("rv", ALL, ids=lambda rv: f"v{rv.identifier}")
def test_valid(rv: RoomVersion) -> None:
    check_pdu_format(_pdu(rv), rv)
    check_pdu_format(_pdu(rv, state_key="", unsigned={"age": 1}), rv)


BAD: list[tuple[dict[str, Any], str]] = [
    ({"type": ...}, "type"),
    ({"type": 5}, "type"),
    ({"type": "t" * 256}, "type"),
    ({"sender": ...}, "sender"),
    ({"sender": "u:a.test"}, "sender"),
    ({"sender": "@u"}, "sender"),
    ({"sender": "@u:bad host"}, "sender"),
    ({"sender": "@u\x00:a.test"}, "sender"),
    ({"sender": "@" + "u" * 250 + ":a.test"}, "sender"),
    ({"state_key": 1}, "state_key"),
    ({"state_key": "é" * 128}, "state_key"),
    ({"room_id": ...}, "room_id"),
    ({"room_id": 1}, "room_id"),
    ({"origin_server_ts": ...}, "origin_server_ts"),
    ({"origin_server_ts": 1.0}, "origin_server_ts"),
    ({"origin_server_ts": True}, "origin_server_ts"),
    ({"origin_server_ts": CANONICAL_INT_MAX + 1}, "origin_server_ts"),
    ({"depth": ...}, "depth"),
    ({"depth": -1}, "depth"),
    ({"depth": "3"}, "depth"),
    ({"depth": CANONICAL_INT_MAX + 1}, "depth"),
    ({"content": ...}, "content"),
    ({"content": []}, "content"),
    ({"hashes": ...}, "hashes"),
    ({"hashes": {}}, "hashes.sha256"),
    ({"hashes": {"sha256": 1}}, "hashes.sha256"),
    ({"signatures": ...}, "signatures"),
    ({"signatures": {"a.test": "x"}}, "signatures.a.test"),
    ({"signatures": {"a.test": {"ed25519:1": 1}}}, "signatures.a.test.ed25519:1"),
    ({"unsigned": []}, "unsigned"),
    ({"prev_events": ...}, "prev_events"),
    ({"prev_events": [EVENT_ID] * 21}, "prev_events"),
    ({"prev_events": ["$short"]}, "prev_events[0]"),
    ({"prev_events": "x"}, "prev_events"),
    ({"auth_events": [EVENT_ID] * 11}, "auth_events"),
    ({"auth_events": [1]}, "auth_events[0]"),
    ({"content": {"n": 1.5}}, "event"),
    ({"content": {"n": [2**53]}}, "event"),
    ({"content": {"body": "\ud800"}}, "event"),
    ({"content": {"body": "x" * MAX_PDU_BYTES}}, "event"),
]


@pytest.mark.parametrize("rv", ALL, ids=lambda rv: f"v{rv.identifier}")
@pytest.mark.parametrize(("changes", "field"), BAD, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD)])
def test_invalid_names_the_field(rv: RoomVersion, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(EventFormatError) as e:
        check_pdu_format(_pdu(rv, **changes), rv)
    assert e.value.field == field
    assert (e.value.code, e.value.errcode) == (400, "M_BAD_JSON")
    assert field in e.value.msg


def test_room_ids_per_version() -> None:
    assert is_valid_room_id("!r:a.test", ROOM_V11)
    assert not is_valid_room_id("!" + "R" * 43, ROOM_V11)
    assert is_valid_room_id("!" + "R_-" * 14 + "R", ROOM_V12)
    assert not is_valid_room_id("!r:a.test", ROOM_V12)
    assert not is_valid_room_id("!" + "R" * 42, ROOM_V12)
    assert not is_valid_room_id("!" + "+" * 43, ROOM_V12)
    with pytest.raises(EventFormatError) as e:
        check_pdu_format(_pdu(ROOM_V12, room_id="!r:a.test"), ROOM_V12)
    assert e.value.field == "room_id"


def test_v12_create_has_no_room_id() -> None:
    create = corpus_events("12")[0]
    check_pdu_format(create, ROOM_V12)
    with pytest.raises(EventFormatError) as e:
        check_pdu_format({**create, "room_id": "!" + "R" * 43}, ROOM_V12)
    assert e.value.field == "room_id"
    # Before v12 the create event needs one like any other.
    v11_create = corpus_events("11")[0]
    with pytest.raises(EventFormatError):
        check_pdu_format({k: v for k, v in v11_create.items() if k != "room_id"}, ROOM_V11)


def test_v10_redacts_is_an_event_id() -> None:
    check_pdu_format(_pdu(ROOM_V10, type="m.room.redaction", redacts=EVENT_ID), ROOM_V10)
    with pytest.raises(EventFormatError) as e:
        check_pdu_format(_pdu(ROOM_V10, type="m.room.redaction", redacts=5), ROOM_V10)
    assert e.value.field == "redacts"


def test_identifier_grammar() -> None:
    for ok in ("matrix.org", "matrix.org:8888", "1.2.3.4", "1.2.3.4:1234", "[1234:5678::abcd]",
               "[1234:5678::abcd]:5678", "corpus-a.test:8521"):
        assert is_valid_server_name(ok), ok
    for bad in ("", "matrix.org:", "matrix.org:123456", "a b", "[::1", "a_b.org", "host/x"):
        assert not is_valid_server_name(bad), bad
    # Historical localparts are accepted (appendices.md), ':' and NUL are not.
    assert is_valid_user_id("@Ünïcode & spaces:a.test")
    assert is_valid_user_id("@:a.test")
    assert not is_valid_user_id("@a\x00:a.test")


def test_size_limit_is_exact_and_ignores_unsigned() -> None:
    pdu = _pdu(ROOM_V11, content={"body": ""})
    base = len(pdu_size_bytes(pdu))
    fits = _pdu(ROOM_V11, content={"body": "x" * (MAX_PDU_BYTES - base)})
    assert len(pdu_size_bytes(fits)) == MAX_PDU_BYTES
    check_pdu_format({**fits, "unsigned": {"pad": "y" * 70000}}, ROOM_V11)
    over = _pdu(ROOM_V11, content={"body": "x" * (MAX_PDU_BYTES - base + 1)})
    with pytest.raises(EventFormatError):
        check_pdu_format(over, ROOM_V11)


def pdu_size_bytes(pdu: dict[str, Any]) -> bytes:
    return encode_canonical_json({k: v for k, v in pdu.items() if k != "unsigned"})


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_size_from_content_hash_input_matches_full_encoding(version: str) -> None:
    for pdu in corpus_events(version):
        assert pdu_size_without_unsigned(pdu, content_hash_input(pdu)) == len(pdu_size_bytes(pdu))
    bare = {"hashes": {"sha256": "x"}, "signatures": {}}
    assert pdu_size_without_unsigned(bare, content_hash_input(bare)) == len(pdu_size_bytes(bare))


@pytest.mark.parametrize("version", [str(n) for n in range(1, 10)] + ["13", "foo", "", "1.0"])
def test_unsupported_room_versions_refused(version: str) -> None:
    with pytest.raises(MatrixError) as e:
        event_from_pdu(corpus_events("11")[1], version)
    assert (e.value.code, e.value.errcode) == (400, "M_UNSUPPORTED_ROOM_VERSION")


def test_event_from_pdu() -> None:
    pdu = corpus_events("12")[8]
    event = event_from_pdu(pdu, "12")
    assert event.room_version is ROOM_V12 and event.pdu is pdu
    assert event_from_pdu(pdu, ROOM_V12).event_id == event.event_id
    with pytest.raises(EventFormatError):
        event_from_pdu({**pdu, "depth": -5}, "12")


def test_verify_pdu_applies_the_size_limit_to_signatures_too() -> None:
    pdu = _pdu(ROOM_V11, content={"body": ""})
    base = len(pdu_size_bytes(pdu))
    filler = "x" * (MAX_PDU_BYTES - base)
    fits = _pdu(ROOM_V11, content={"body": filler})
    with pytest.raises(SignatureVerifyError):  # past the format checks
        verify_pdu(fits, ROOM_V11, {})
    with pytest.raises(EventFormatError) as e:
        verify_pdu(_pdu(ROOM_V11, content={"body": filler + "x"}), ROOM_V11, {})
    assert "65536" in e.value.msg
    huge_sigs = {"a.test": {f"ed25519:{i}": "s" * 100 for i in range(700)}}
    with pytest.raises(EventFormatError):
        verify_pdu(_pdu(ROOM_V11, signatures=huge_sigs), ROOM_V11, {})
    escaped = {"a.test": {"ed25519:1": "\x01" * 11000}}  # 6 bytes each when encoded
    with pytest.raises(EventFormatError):
        verify_pdu(_pdu(ROOM_V11, signatures=escaped), ROOM_V11, {})
