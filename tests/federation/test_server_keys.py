"""federation/server_keys.py: our key response, checking theirs, notary signatures.

The corpus files are real Synapse responses; with the throwaway seeds we must
reproduce corpus-a's response byte for byte.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from canonicaljson import encode_canonical_json
from signedjson.key import decode_signing_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json

from federation.server_keys import (
    MAX_KEY_VALIDITY_MS,
    KeyLookupError,
    OldVerifyKey,
    build_server_key_response,
    decode_verify_key,
    key_id_of,
    notary_sign,
    parse_server_key_response,
    verify_notary_signature,
)

CORPUS = Path("/work/shared/synapse-corpus/keys")
SERVERS = ["corpus-a.test:8521", "corpus-b.test:8522", "corpus-c.test:8523"]
DAY_MS = 24 * 3600 * 1000
NOW = 1_700_000_000_000


def corpus_response(server: str) -> dict[str, Any]:
    path = CORPUS / (server.replace(":", "_") + ".key_v2_server.json")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def corpus_signing_key(server: str) -> Any:
    seeds = json.loads((CORPUS / "signing_keys_THROWAWAY.json").read_text())["keys"][server]
    alg, version = seeds["key_id"].split(":", 1)
    return decode_signing_key_base64(alg, version, seeds["seed"])


@pytest.mark.parametrize("server", SERVERS)
def test_corpus_key_responses_verify(server: str) -> None:
    resp = corpus_response(server)
    parsed = parse_server_key_response(resp, server)
    assert parsed.server_name == server
    assert parsed.valid_until_ts == resp["valid_until_ts"]
    assert list(parsed.verify_keys) == list(resp["verify_keys"])
    assert parsed.old_verify_keys == {}


@pytest.mark.parametrize("server", SERVERS)
def test_corpus_response_reproduced_byte_for_byte(server: str) -> None:
    resp = corpus_response(server)
    sk = corpus_signing_key(server)
    ours = build_server_key_response(
        server, [sk], [], now_ms=resp["valid_until_ts"] - DAY_MS, validity_ms=DAY_MS
    )
    assert encode_canonical_json(ours) == encode_canonical_json(resp)
    assert ours["signatures"] == resp["signatures"]


def test_server_name_must_match_exactly_including_port() -> None:
    resp = corpus_response("corpus-a.test:8521")
    with pytest.raises(KeyLookupError, match="expected 'corpus-a.test'"):
        parse_server_key_response(resp, "corpus-a.test")
    with pytest.raises(KeyLookupError, match="corpus-a.test:8522"):
        parse_server_key_response(resp, "corpus-a.test:8522")


def test_tampered_response_is_rejected() -> None:
    resp = corpus_response("corpus-a.test:8521")
    resp["valid_until_ts"] += 1
    with pytest.raises(KeyLookupError, match="does not verify"):
        parse_server_key_response(resp, "corpus-a.test:8521")


def test_tampered_signature_is_rejected() -> None:
    resp = corpus_response("corpus-b.test:8522")
    sig = resp["signatures"]["corpus-b.test:8522"]["ed25519:a_yTnK"]
    resp["signatures"]["corpus-b.test:8522"]["ed25519:a_yTnK"] = "A" + sig[1:]
    with pytest.raises(KeyLookupError, match="self-signature"):
        parse_server_key_response(resp, "corpus-b.test:8522")


def _two_key_response() -> tuple[dict[str, Any], Any, Any]:
    k1, k2 = generate_signing_key("one"), generate_signing_key("two")
    resp = build_server_key_response("hs.test", [k1, k2], [], now_ms=NOW, validity_ms=DAY_MS)
    return resp, k1, k2


def test_every_verify_key_must_have_signed() -> None:
    resp, k1, k2 = _two_key_response()
    assert set(resp["signatures"]["hs.test"]) == {"ed25519:one", "ed25519:two"}
    parse_server_key_response(resp, "hs.test")
    del resp["signatures"]["hs.test"]["ed25519:two"]
    with pytest.raises(KeyLookupError, match="not signed by its own key ed25519:two"):
        parse_server_key_response(resp, "hs.test")


def test_signature_by_another_server_is_not_a_self_signature() -> None:
    k = generate_signing_key("k")
    resp = {
        "server_name": "hs.test",
        "verify_keys": {"ed25519:k": {"key": _b64(k)}},
        "old_verify_keys": {},
        "valid_until_ts": NOW + DAY_MS,
    }
    resp = sign_json(resp, "other.test", k)
    with pytest.raises(KeyLookupError, match="not signed by hs.test"):
        parse_server_key_response(resp, "hs.test")


def _b64(sk: Any) -> str:
    from signedjson.key import encode_verify_key_base64

    out: str = encode_verify_key_base64(get_verify_key(sk))
    return out


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("valid_until_ts"), "valid_until_ts"),
        (lambda r: r.__setitem__("valid_until_ts", "123"), "valid_until_ts"),
        (lambda r: r.__setitem__("valid_until_ts", True), "valid_until_ts"),
        (lambda r: r.__setitem__("verify_keys", {}), "no verify_keys"),
        (lambda r: r.__setitem__("verify_keys", []), "no verify_keys"),
        (lambda r: r.pop("signatures"), "not signed"),
        (lambda r: r.__setitem__("old_verify_keys", []), "old_verify_keys"),
        (
            lambda r: r["verify_keys"]["ed25519:one"].__setitem__("key", "AAAA"),
            "not 32",
        ),
        (
            lambda r: r["verify_keys"]["ed25519:one"].__setitem__("key", "!!!"),
            "base64",
        ),
        (lambda r: r["verify_keys"].__setitem__("ed25519:bad-id", {"key": "x"}), "malformed"),
        (
            lambda r: r["old_verify_keys"].__setitem__("ed25519:old", {"key": "x"}),
            "expired_ts",
        ),
    ],
)
def test_malformed_responses(mutate: Any, message: str) -> None:
    resp, _, _ = _two_key_response()
    mutate(resp)
    with pytest.raises(KeyLookupError, match=message):
        parse_server_key_response(resp, "hs.test")


def test_not_an_object() -> None:
    with pytest.raises(KeyLookupError, match="not a JSON object"):
        parse_server_key_response([1], "hs.test")


def test_unknown_algorithm_is_skipped_not_fatal() -> None:
    k = generate_signing_key("k")
    resp = {
        "server_name": "hs.test",
        "verify_keys": {"ed25519:k": {"key": _b64(k)}, "curve9:x": {"key": "whatever"}},
        "valid_until_ts": NOW + DAY_MS,
    }
    resp = sign_json(resp, "hs.test", k)
    parsed = parse_server_key_response(resp, "hs.test")
    assert list(parsed.verify_keys) == ["ed25519:k"]


def test_old_keys_and_validity_cap() -> None:
    cur = generate_signing_key("new")
    old = generate_signing_key("old")
    resp = build_server_key_response(
        "hs.test",
        [cur],
        [OldVerifyKey("ed25519:old", get_verify_key(old), NOW - 1000)],
        now_ms=NOW,
        validity_ms=30 * DAY_MS,
    )
    assert resp["old_verify_keys"] == {"ed25519:old": {"key": _b64(old), "expired_ts": NOW - 1000}}
    parsed = parse_server_key_response(resp, "hs.test")
    keys = parsed.to_fetched_keys(fetched_ts=NOW)
    # v5-signing-requirements: the lesser of valid_until_ts and 7 days into the future.
    assert keys["ed25519:new"].valid_until_ts == NOW + MAX_KEY_VALIDITY_MS
    assert keys["ed25519:new"].valid_at(NOW + MAX_KEY_VALIDITY_MS)
    assert not keys["ed25519:new"].valid_at(NOW + MAX_KEY_VALIDITY_MS + 1)
    assert keys["ed25519:new"].valid_at(NOW, allow_old=False)
    o = keys["ed25519:old"]
    assert o.expired_ts == NOW - 1000
    assert o.valid_at(NOW - 1001)
    assert not o.valid_at(NOW - 1000)
    assert not o.valid_at(NOW - 1001, allow_old=False)
    # A short published validity is kept as is.
    short = parse_server_key_response(
        build_server_key_response("hs.test", [cur], [], now_ms=NOW, validity_ms=3600_000),
        "hs.test",
    )
    assert short.to_fetched_keys(NOW)["ed25519:new"].valid_until_ts == NOW + 3600_000


def test_current_key_is_not_also_published_as_old() -> None:
    cur = generate_signing_key("k")
    resp = build_server_key_response(
        "hs.test",
        [cur],
        [OldVerifyKey("ed25519:k", get_verify_key(cur), NOW)],
        now_ms=NOW,
        validity_ms=DAY_MS,
    )
    assert resp["old_verify_keys"] == {}


def test_build_requires_a_key() -> None:
    with pytest.raises(ValueError):
        build_server_key_response("hs.test", [], [], now_ms=NOW, validity_ms=DAY_MS)


def test_notary_signature_added_beside_origin() -> None:
    origin = corpus_response("corpus-a.test:8521")
    notary_key = generate_signing_key("notary")
    signed = notary_sign(origin, "notary.test", [notary_key])
    assert origin == corpus_response("corpus-a.test:8521")  # input untouched
    assert set(signed["signatures"]) == {"corpus-a.test:8521", "notary.test"}
    # The origin's self-signature still verifies with the notary's added.
    parse_server_key_response(signed, "corpus-a.test:8521")
    verify_notary_signature(signed, "notary.test", {"ed25519:notary": get_verify_key(notary_key)})


def test_notary_signature_checks() -> None:
    origin = corpus_response("corpus-a.test:8521")
    notary_key = generate_signing_key("notary")
    other = generate_signing_key("notary")
    pinned = {"ed25519:notary": get_verify_key(notary_key)}
    with pytest.raises(KeyLookupError, match="not signed by notary"):
        verify_notary_signature(origin, "notary.test", pinned)
    forged = notary_sign(origin, "notary.test", [other])
    with pytest.raises(KeyLookupError, match="is bad"):
        verify_notary_signature(forged, "notary.test", pinned)
    unpinned = notary_sign(origin, "notary.test", [generate_signing_key("x")])
    with pytest.raises(KeyLookupError, match="pinned key"):
        verify_notary_signature(unpinned, "notary.test", pinned)
    # Extra signature by an unpinned key is ignored when a pinned one is good.
    both = notary_sign(
        notary_sign(origin, "notary.test", [notary_key]), "notary.test", [generate_signing_key("y")]
    )
    verify_notary_signature(both, "notary.test", pinned)


def test_key_id_helpers() -> None:
    sk = corpus_signing_key("corpus-a.test:8521")
    assert key_id_of(sk) == "ed25519:a_OGRE"
    vk = decode_verify_key("ed25519:a_OGRE", "ZoUbkMTS0FoYI4+OGZzkZIiKPhbj10f4iUJ2ssK9pQY")
    assert bytes(vk) == bytes(get_verify_key(sk))
    with pytest.raises(KeyLookupError):
        decode_verify_key("rsa:x", "ZoUbkMTS0FoYI4+OGZzkZIiKPhbj10f4iUJ2ssK9pQY")
    with pytest.raises(KeyLookupError):
        decode_verify_key("ed25519:x", 12)


def test_deepcopy_of_fetched_key_response_is_safe() -> None:
    resp = corpus_response("corpus-c.test:8523")
    parsed = parse_server_key_response(copy.deepcopy(resp), "corpus-c.test:8523")
    fk = parsed.to_fetched_keys(NOW)["ed25519:fp_a9134ffa"]
    assert fk.response_json == resp
    assert fk.key_b64 == "JwUFhFjIwbJToUpbSjMIi9/hOtUAnpPzdxXbf9+Tm58"
