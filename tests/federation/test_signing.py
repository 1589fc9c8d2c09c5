"""federation/signing.py: the appendix vectors, independent re-computation, and
every way :func:`verify_pdu` can refuse an event."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
import signedjson.sign
from canonicaljson import encode_canonical_json
from nacl.signing import VerifyKey
from signedjson.key import decode_signing_key_base64, generate_signing_key, get_verify_key
from unpaddedbase64 import decode_base64, encode_base64

from federation.errors import MatrixError
from federation.event_format import EventFormatError
from federation.room_versions import ROOM_V10, ROOM_V11, ROOM_V12, RoomVersion
from federation.signing import (
    SignatureFailure,
    SignatureVerifyError,
    add_hashes_and_signatures,
    required_signers,
    sign_json,
    verify_json_signature,
    verify_pdu,
)
from tests.vectors.loader import load_vector

APPENDIX = load_vector("spec_appendix")
SEED = APPENDIX["signing_key"]
APPENDIX_KEY = decode_signing_key_base64("ed25519", SEED["key_id"].split(":")[1], SEED["seed"])

ORIGIN = "origin.test"
REMOTE = "remote.test:8448"
KEY = generate_signing_key("k1")
REMOTE_KEY = generate_signing_key("r1")
KEYS: dict[str, dict[str, VerifyKey]] = {
    ORIGIN: {"ed25519:k1": get_verify_key(KEY)},
    REMOTE: {"ed25519:r1": get_verify_key(REMOTE_KEY)},
}
ROOM_V10_ID = "!room:origin.test"
ROOM_V12_ID = "!" + "A" * 43
EVENT_ID = "$" + "B" * 43


# --- the spec appendix's cryptographic test vectors --------------------------


@pytest.mark.parametrize("case", APPENDIX["json_signing"], ids=["empty", "data"])
def test_appendix_json_signing(case: dict[str, Any]) -> None:
    signed = sign_json(case["input"], SEED["server_name"], APPENDIX_KEY)
    assert signed == case["signed"]
    verify_json_signature(signed, SEED["server_name"], get_verify_key(APPENDIX_KEY))
    signedjson.sign.verify_signed_json(signed, SEED["server_name"], get_verify_key(APPENDIX_KEY))


@pytest.mark.parametrize("case", APPENDIX["event_signing"], ids=lambda c: c["name"])
def test_appendix_event_signing(case: dict[str, Any]) -> None:
    # The appendix events carry `origin` and `event_id`: the v9 rules (room v10)
    # keep both, which is what the vectors were made with.
    before = copy.deepcopy(case["input"])
    signed = add_hashes_and_signatures(case["input"], ROOM_V10, SEED["server_name"], APPENDIX_KEY)
    assert signed == case["signed"]
    assert encode_canonical_json(signed) == encode_canonical_json(case["signed"])
    assert case["input"] == before, "the input must not be modified"


# --- our signed events, checked without our module ---------------------------


def _independent_redact(pdu: dict[str, Any], updated_rules: bool) -> dict[str, Any]:
    """Just enough of the redaction algorithm for the events built below."""
    keep = {"event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
            "signatures", "depth", "prev_events", "auth_events", "origin_server_ts"}
    if not updated_rules:
        keep |= {"origin", "membership", "prev_state"}
    out = {k: v for k, v in pdu.items() if k in keep}
    content_keep = {"m.room.member": {"membership"}}.get(pdu["type"], set())
    out["content"] = {k: v for k, v in pdu["content"].items() if k in content_keep}
    return out


def _message(rv: RoomVersion, **extra: Any) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "room_id": ROOM_V12_ID if rv.room_id_from_create_event else ROOM_V10_ID,
        "sender": f"@alice:{ORIGIN}",
        "content": {"msgtype": "m.text", "body": "héllo 😀", "n": [1, -2, {"z": None}]},
        "depth": 5,
        "origin_server_ts": 1_700_000_000_000,
        "prev_events": [EVENT_ID],
        "auth_events": [EVENT_ID],
        "unsigned": {"age_ts": 1},
    }
    pdu.update(extra)
    return pdu


@pytest.mark.parametrize("rv", [ROOM_V10, ROOM_V11, ROOM_V12], ids=lambda rv: f"v{rv.identifier}")
@pytest.mark.parametrize("event_type", ["m.room.message", "m.room.member"])
def test_our_signatures_check_out_independently(rv: RoomVersion, event_type: str) -> None:
    pdu = _message(rv, type=event_type)
    if event_type == "m.room.member":
        pdu["state_key"] = pdu["sender"]
        pdu["content"] = {"membership": "join", "displayname": "Alice"}
    signed = add_hashes_and_signatures(pdu, rv, ORIGIN, KEY)

    # Content hash, by hand.
    hashed = {k: v for k, v in signed.items() if k not in ("unsigned", "signatures", "hashes")}
    digest = hashlib.sha256(encode_canonical_json(hashed)).digest()
    assert signed["hashes"]["sha256"] == encode_base64(digest)

    # Signature over the redacted event, with signedjson's own verifier.
    redacted = _independent_redact(signed, rv.updated_redaction_rules)
    signedjson.sign.verify_signed_json(redacted, ORIGIN, get_verify_key(KEY))
    raw_sig = decode_base64(signed["signatures"][ORIGIN]["ed25519:k1"])
    signing_bytes = encode_canonical_json({k: v for k, v in redacted.items() if k != "signatures"})
    get_verify_key(KEY).verify(signing_bytes, raw_sig)

    # Event ID: URL-safe unpadded base64 of the reference hash.
    ref = hashlib.sha256(signing_bytes).digest()
    expected_id = "$" + encode_base64(ref, urlsafe=True)
    result = verify_pdu(signed, rv, KEYS)
    assert result.content_hash_ok
    assert result.event.event_id == expected_id
    assert signed["unsigned"] == {"age_ts": 1}


def test_signing_keeps_other_signatures_and_does_not_mutate() -> None:
    pdu = _message(ROOM_V11)
    first = add_hashes_and_signatures(pdu, ROOM_V11, REMOTE, REMOTE_KEY)
    snapshot = copy.deepcopy(first)
    both = add_hashes_and_signatures(first, ROOM_V11, ORIGIN, KEY)
    assert first == snapshot
    assert set(both["signatures"]) == {ORIGIN, REMOTE}
    assert both["signatures"][REMOTE] == first["signatures"][REMOTE]
    verify_pdu(both, ROOM_V11, KEYS)


def test_sign_json_refuses_floats() -> None:
    with pytest.raises(MatrixError) as e:
        sign_json({"a": 1.5}, ORIGIN, KEY)
    assert e.value.errcode == "M_BAD_JSON" and "float" in e.value.msg


# --- verify_pdu refusals ------------------------------------------------------


def _signed(rv: RoomVersion = ROOM_V11, **extra: Any) -> dict[str, Any]:
    return add_hashes_and_signatures(_message(rv, **extra), rv, ORIGIN, KEY)


def _refusal(pdu: dict[str, Any], rv: RoomVersion = ROOM_V11,
             keys: Any = None) -> SignatureVerifyError:
    with pytest.raises(SignatureVerifyError) as e:
        verify_pdu(pdu, rv, KEYS if keys is None else keys)
    assert e.value.code == 401 and e.value.errcode == "M_UNAUTHORIZED"
    return e.value


def test_missing_signature() -> None:
    pdu = _signed()
    pdu["signatures"] = {REMOTE: pdu["signatures"].pop(ORIGIN)}
    err = _refusal(pdu)
    assert (err.server_name, err.reason) == (ORIGIN, SignatureFailure.MISSING_SIGNATURE)


def test_unknown_key() -> None:
    err = _refusal(_signed(), keys={ORIGIN: {"ed25519:other": get_verify_key(KEY)}})
    assert err.reason is SignatureFailure.UNKNOWN_KEY
    assert err.server_name == ORIGIN and err.key_ids == ("ed25519:k1",)


def test_unknown_algorithm_is_skipped_not_accepted() -> None:
    pdu = _signed()
    pdu["signatures"][ORIGIN] = {"curve9999:k1": pdu["signatures"][ORIGIN]["ed25519:k1"]}
    assert _refusal(pdu).reason is SignatureFailure.UNKNOWN_KEY


def test_wrong_key() -> None:
    err = _refusal(_signed(), keys={ORIGIN: {"ed25519:k1": get_verify_key(REMOTE_KEY)}})
    assert (err.server_name, err.key_id, err.reason) == (
        ORIGIN, "ed25519:k1", SignatureFailure.BAD_SIGNATURE)


@pytest.mark.parametrize("bad", ["not base64!", "AAAA", ""])
def test_malformed_signature(bad: str) -> None:
    pdu = _signed()
    pdu["signatures"][ORIGIN]["ed25519:k1"] = bad
    assert _refusal(pdu).reason is SignatureFailure.MALFORMED_SIGNATURE


@pytest.mark.parametrize(
    "field", ["type", "sender", "room_id", "depth", "prev_events", "auth_events",
              "origin_server_ts", "hashes"]
)
def test_changing_a_signed_field_breaks_the_signature(field: str) -> None:
    pdu = _signed()
    pdu[field] = {
        "type": "m.room.other",
        "sender": f"@mallory:{ORIGIN}",
        "room_id": "!other:origin.test",
        "depth": 6,
        "prev_events": [],
        "auth_events": [],
        "origin_server_ts": 1,
        "hashes": {"sha256": encode_base64(b"\0" * 32)},
    }[field]
    assert _refusal(pdu).reason is SignatureFailure.BAD_SIGNATURE


def test_changing_content_means_redacted_not_dropped() -> None:
    pdu = _signed()
    original_id = verify_pdu(pdu, ROOM_V11, KEYS).event.event_id
    pdu["content"] = {**pdu["content"], "body": "tampered"}
    result = verify_pdu(pdu, ROOM_V11, KEYS)
    assert not result.content_hash_ok and result.redacted
    assert result.event.event_id == original_id
    assert result.event.content == {}
    assert "unsigned" not in result.event.pdu
    assert result.event.pdu["signatures"] == pdu["signatures"]


def test_unsigned_is_not_covered() -> None:
    pdu = _signed()
    pdu["unsigned"] = {"age": 12345, "anything": ["goes"]}
    assert verify_pdu(pdu, ROOM_V11, KEYS).content_hash_ok


def test_format_is_checked_first() -> None:
    pdu = _signed()
    pdu["depth"] = "5"
    with pytest.raises(EventFormatError) as e:
        verify_pdu(pdu, ROOM_V11, {})
    assert e.value.field == "depth"


def test_required_signers_sender_server() -> None:
    assert required_signers(_message(ROOM_V11), ROOM_V11) == {ORIGIN}


def _restricted_join(rv: RoomVersion, via: str) -> dict[str, Any]:
    return _message(rv, type="m.room.member", state_key=f"@bob:{REMOTE}",
                    sender=f"@bob:{REMOTE}",
                    content={"membership": "join", "join_authorised_via_users_server": via})


@pytest.mark.parametrize("rv", [ROOM_V10, ROOM_V11, ROOM_V12], ids=lambda rv: f"v{rv.identifier}")
def test_restricted_join_needs_authorising_server(rv: RoomVersion) -> None:
    pdu = _restricted_join(rv, f"@alice:{ORIGIN}")
    assert required_signers(pdu, rv) == {REMOTE, ORIGIN}
    only_joiner = add_hashes_and_signatures(pdu, rv, REMOTE, REMOTE_KEY)
    err = _refusal(only_joiner, rv)
    assert (err.server_name, err.reason) == (ORIGIN, SignatureFailure.MISSING_SIGNATURE)
    both = add_hashes_and_signatures(only_joiner, rv, ORIGIN, KEY)
    assert verify_pdu(both, rv, KEYS).content_hash_ok
    # join_authorised_via_users_server survives redaction, so stays signed.
    both["content"]["displayname"] = "changed"
    assert verify_pdu(both, rv, KEYS).redacted


@pytest.mark.parametrize("rv", [ROOM_V10, ROOM_V11, ROOM_V12], ids=lambda rv: f"v{rv.identifier}")
@pytest.mark.parametrize("membership", ["leave", "invite", "ban", "knock"])
def test_authoriser_signature_needed_for_every_membership(rv: RoomVersion, membership: str) -> None:
    """Auth rule 4.2.1 (v12 5.2.1) is not limited to joins: any member event
    with join_authorised_via_users_server must be validly signed by that server."""
    pdu = _restricted_join(rv, f"@alice:{ORIGIN}")
    pdu["content"]["membership"] = membership
    assert required_signers(pdu, rv) == {REMOTE, ORIGIN}
    only_sender = add_hashes_and_signatures(pdu, rv, REMOTE, REMOTE_KEY)
    err = _refusal(only_sender, rv)
    assert (err.server_name, err.reason) == (ORIGIN, SignatureFailure.MISSING_SIGNATURE)
    # A forged authoriser signature (present, but not by ORIGIN's key) is refused.
    forged = copy.deepcopy(only_sender)
    forged["signatures"][ORIGIN] = {
        next(iter(KEYS[ORIGIN])): next(iter(forged["signatures"][REMOTE].values()))
    }
    err = _refusal(forged, rv)
    assert (err.server_name, err.reason) == (ORIGIN, SignatureFailure.BAD_SIGNATURE)
    both = add_hashes_and_signatures(only_sender, rv, ORIGIN, KEY)
    assert verify_pdu(both, rv, KEYS).content_hash_ok


def test_restricted_join_with_invalid_authoriser_is_a_format_error() -> None:
    with pytest.raises(EventFormatError):
        required_signers(_restricted_join(ROOM_V11, "not-a-user"), ROOM_V11)


def test_third_party_invite_exempts_sender_server_but_needs_a_signature() -> None:
    pdu = _message(ROOM_V11, type="m.room.member", state_key=f"@carol:{REMOTE}",
                   content={"membership": "invite",
                            "third_party_invite": {"display_name": "c", "signed": {}}})
    assert required_signers(pdu, ROOM_V11) == set()
    by_remote = add_hashes_and_signatures(pdu, ROOM_V11, REMOTE, REMOTE_KEY)
    assert verify_pdu(by_remote, ROOM_V11, KEYS).content_hash_ok
    unsigned = dict(by_remote, signatures={})
    assert _refusal(unsigned).reason is SignatureFailure.UNKNOWN_KEY


def test_verify_json_signature_reasons() -> None:
    signed = sign_json({"a": 1}, ORIGIN, KEY)
    vk = get_verify_key(KEY)
    verify_json_signature(signed, ORIGIN, vk)
    with pytest.raises(SignatureVerifyError) as e:
        verify_json_signature(signed, REMOTE, vk)
    assert e.value.reason is SignatureFailure.MISSING_SIGNATURE
    with pytest.raises(SignatureVerifyError) as e:
        verify_json_signature(signed, ORIGIN, vk, key_id="ed25519:nope")
    assert e.value.reason is SignatureFailure.UNKNOWN_KEY
    with pytest.raises(SignatureVerifyError) as e:
        verify_json_signature({**signed, "a": 2}, ORIGIN, vk)
    assert e.value.reason is SignatureFailure.BAD_SIGNATURE
    # unsigned is not covered
    verify_json_signature({**signed, "unsigned": {"x": 1}}, ORIGIN, vk)
