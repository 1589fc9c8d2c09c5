"""The Synapse corpus, byte for byte: hashes, IDs, redaction, signatures, X-Matrix.

Every event Synapse served for room versions 10, 11 and 12 must give exactly
the content hash, reference hash, event ID and redacted form recorded in
``expected.json``; its signature must verify with the servers' published
keys; and re-signing with the throwaway seeds must reproduce Synapse's
signature string exactly.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from unpaddedbase64 import encode_base64

from federation.canonical_json import encode_canonical_json, parse_json_strict
from federation.event_format import check_pdu_format
from federation.events import event_from_pdu
from federation.hashes import (
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    compute_room_id,
    content_hash_input,
    reference_hash_input,
)
from federation.redaction import redact
from federation.room_versions import get_room_version
from federation.signing import (
    add_hashes_and_signatures,
    required_signers,
    sign_json,
    verify_json_signature,
    verify_pdu,
)
from federation.transport.wire import (
    XMatrixAuth,
    XMatrixAuthError,
    XMatrixFailure,
    format_authorization_header,
    parse_authorization_header,
    sign_request,
    verify_request,
)
from tests.vectors.loader import (
    CORPUS,
    CORPUS_VERSIONS,
    corpus_events,
    corpus_expected,
    corpus_file,
    corpus_signing_keys,
    corpus_verify_keys,
)

KEYS = corpus_verify_keys()
SIGNING_KEYS = corpus_signing_keys()

CASES = [
    pytest.param(version, index, id=f"v{version}-{index:02d}-{exp['label']}")
    for version in CORPUS_VERSIONS
    for index, exp in enumerate(corpus_expected(version))
]


def _case(version: str, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    return corpus_events(version)[index], corpus_expected(version)[index]


def test_corpus_shape() -> None:
    for version in CORPUS_VERSIONS:
        events, expected = corpus_events(version), corpus_expected(version)
        assert len(events) == len(expected) == 30
        assert [e["index"] for e in expected] == list(range(30))


@pytest.mark.parametrize(("version", "index"), CASES)
def test_hashes_and_event_id(version: str, index: int) -> None:
    pdu, exp = _case(version, index)
    rv = get_room_version(version)

    assert content_hash_input(pdu) == exp["content_hash_input"].encode("utf-8")
    assert encode_base64(compute_content_hash(pdu)) == exp["content_hash"]
    assert check_content_hash(pdu) is exp["content_hash_ok"] is True

    assert reference_hash_input(pdu, rv) == exp["reference_hash_input"].encode("utf-8")
    ref = compute_reference_hash(pdu, rv)
    assert encode_base64(ref) == exp["reference_hash"]
    assert encode_base64(ref, urlsafe=True) == exp["reference_hash_urlsafe"]
    assert compute_event_id(pdu, rv) == exp["computed_event_id"] == exp["event_id"]


@pytest.mark.parametrize(("version", "index"), CASES)
def test_redaction(version: str, index: int) -> None:
    pdu, exp = _case(version, index)
    rv = get_room_version(version)
    before = copy.deepcopy(pdu)
    redacted = redact(pdu, rv)
    assert redacted == exp["redacted"]
    assert pdu == before, "redact must not modify its input"
    assert redact(redacted, rv) == redacted


@pytest.mark.parametrize(("version", "index"), CASES)
def test_signatures_verify_and_resign_identically(version: str, index: int) -> None:
    pdu, exp = _case(version, index)
    rv = get_room_version(version)

    result = verify_pdu(pdu, rv, KEYS)
    assert result.content_hash_ok
    assert result.event.event_id == exp["event_id"]
    assert result.event.pdu is pdu
    assert required_signers(pdu, rv) == {exp["sender"].split(":", 1)[1]}

    redacted = redact(pdu, rv)
    for check in exp["signatures"].values():
        server, key_id = check["server"], check["key_id"]
        assert check["verified"] and check["resigned_identical"]
        verify_json_signature(redacted, server, KEYS[server][key_id], key_id=key_id)
        # Re-sign the redacted event with the throwaway seed: ed25519 is
        # deterministic, so the signature string must be Synapse's.
        bare = {k: v for k, v in redacted.items() if k != "signatures"}
        ours = sign_json(bare, server, SIGNING_KEYS[server])["signatures"][server][key_id]
        assert ours == pdu["signatures"][server][key_id]


@pytest.mark.parametrize(("version", "index"), CASES)
def test_rebuilding_reproduces_synapse_event(version: str, index: int) -> None:
    """Strip hashes and signatures, then hash and sign as the sender: same bytes."""
    pdu, exp = _case(version, index)
    rv = get_room_version(version)
    server = exp["sender"].split(":", 1)[1]
    template = {k: v for k, v in pdu.items() if k not in ("hashes", "signatures", "unsigned")}
    rebuilt = add_hashes_and_signatures(template, rv, server, SIGNING_KEYS[server])
    assert rebuilt["hashes"] == pdu["hashes"]
    assert rebuilt["signatures"] == pdu["signatures"]
    assert encode_canonical_json(rebuilt) == encode_canonical_json(
        {k: v for k, v in pdu.items() if k != "unsigned"}
    )


@pytest.mark.parametrize(("version", "index"), CASES)
def test_format_and_event_from_pdu(version: str, index: int) -> None:
    pdu, exp = _case(version, index)
    rv = get_room_version(version)
    check_pdu_format(pdu, rv)
    event = event_from_pdu(pdu, version)
    assert event.event_id == exp["event_id"]
    assert event.type == exp["type"]


@pytest.mark.parametrize("version", CORPUS_VERSIONS)
def test_strict_parser_accepts_corpus_bytes(version: str) -> None:
    """The exact body Synapse sent (including the nested-integers event) parses."""
    txn = corpus_file(version, "send_txn")
    body = parse_json_strict(txn["body_text"].encode("utf-8"))
    assert body == txn["body"]
    for name in ("events", "state", "backfill", "expected"):
        raw = (CORPUS / f"v{version}" / f"{name}.json").read_bytes()
        parse_json_strict(raw)


@pytest.mark.parametrize("version", CORPUS_VERSIONS)
def test_redacted_copy_served_later(version: str) -> None:
    """A's pruned copy of index 16: content hash fails, ID and signature hold."""
    rv = get_room_version(version)
    original = corpus_events(version)[16]
    exp = corpus_expected(version)[16]
    (entry,) = corpus_file(version, "served_after_redaction")
    served = entry["pdu"]
    assert entry["event_id"] == exp["event_id"]
    assert served["unsigned"] == {}
    assert {k: v for k, v in served.items() if k != "unsigned"} == redact(original, rv)
    assert not check_content_hash(served)
    result = verify_pdu(served, rv, KEYS)
    assert not result.content_hash_ok and result.redacted
    assert result.event.event_id == exp["event_id"]
    assert result.event.pdu == exp["redacted"]

    backfilled = {compute_event_id(p, rv): p for p in corpus_file(version, "backfill")["pdus"]}
    assert not check_content_hash(backfilled[exp["event_id"]])
    assert verify_pdu(backfilled[exp["event_id"]], rv, KEYS).event.event_id == exp["event_id"]


@pytest.mark.parametrize("version", CORPUS_VERSIONS)
def test_state_and_auth_chain_ids(version: str) -> None:
    rv = get_room_version(version)
    state, ids = corpus_file(version, "state"), corpus_file(version, "state_ids")
    assert sorted(verify_pdu(p, rv, KEYS).event.event_id for p in state["pdus"]) == sorted(
        ids["pdu_ids"]
    )
    assert sorted(verify_pdu(p, rv, KEYS).event.event_id for p in state["auth_chain"]) == sorted(
        ids["auth_chain_ids"]
    )


@pytest.mark.parametrize("version", CORPUS_VERSIONS)
def test_room_id(version: str) -> None:
    rv = get_room_version(version)
    meta = corpus_file(version, "meta")
    create = corpus_events(version)[0]
    event = verify_pdu(create, rv, KEYS).event
    assert event.room_id == meta["room_id"]
    if rv.room_id_from_create_event:
        assert "room_id" not in create
        assert compute_room_id(create, rv) == meta["room_id"]
        assert all(e["room_id"] == meta["room_id"] for e in corpus_events(version)[1:])
    else:
        with pytest.raises(ValueError):
            compute_room_id(create, rv)


def _transactions(version: str) -> list[tuple[dict[str, Any], Any, str]]:
    """(request, parsed body, destination) for every captured /send request."""
    txn = corpus_file(version, "send_txn")
    out = [(txn["request"], parse_json_strict(txn["body_text"]), "corpus-c.test:8523")]
    for other in txn["other_transactions_to_the_peer_in_the_same_step"]:
        out.append((other, other["body"], "corpus-c.test:8523"))
    return out


@pytest.mark.parametrize("version", CORPUS_VERSIONS)
def test_xmatrix_header_verifies_and_is_reproduced(version: str) -> None:
    for request, body, destination in _transactions(version):
        header = request["headers"]["Authorization"]
        auth = parse_authorization_header(header)
        assert auth.destination == destination
        verify_request(auth, request["method"], request["path"], destination, body,
                       KEYS[auth.origin][auth.key])

        ours = sign_request(
            origin=auth.origin,
            destination=destination,
            method=request["method"],
            uri=request["path"],
            content=body,
            signing_key=SIGNING_KEYS[auth.origin],
        )
        # Same signature, byte for byte; our header is in the spec's parameter
        # order, Synapse's is origin, key, sig, destination.
        assert parse_authorization_header(ours) == auth
        assert ours == format_authorization_header(auth)
        synapse_order = (
            f'X-Matrix origin="{auth.origin}",key="{auth.key}",sig="{auth.sig}",'
            f'destination="{auth.destination}"'
        )
        assert header == synapse_order


@pytest.mark.parametrize("version", CORPUS_VERSIONS)
def test_send_txn_pdu_is_the_event(version: str) -> None:
    rv = get_room_version(version)
    txn = corpus_file(version, "send_txn")
    (pdu,) = txn["body"]["pdus"]
    assert verify_pdu(pdu, rv, KEYS).event.event_id == corpus_expected(version)[29]["event_id"]
    expected = {k: v for k, v in corpus_events(version)[29].items() if k != "unsigned"}
    assert {k: v for k, v in pdu.items() if k != "unsigned"} == expected


def test_xmatrix_corpus_signature_fails_for_other_request() -> None:
    request, body, destination = _transactions("12")[0]
    auth = parse_authorization_header(request["headers"]["Authorization"])
    key = KEYS[auth.origin][auth.key]
    for method, uri, content in (
        ("POST", request["path"], body),
        (request["method"], request["path"] + "x", body),
        (request["method"], request["path"], {**body, "origin_server_ts": 1}),
        (request["method"], request["path"], None),
    ):
        with pytest.raises(XMatrixAuthError) as e:
            verify_request(auth, method, uri, destination, content, key)
        assert e.value.reason is XMatrixFailure.BAD_SIGNATURE
    wrong_origin = XMatrixAuth(origin="corpus-b.test:8522", key=auth.key, sig=auth.sig,
                               destination=destination)
    with pytest.raises(XMatrixAuthError):
        verify_request(wrong_origin, request["method"], request["path"], destination, body, key)
