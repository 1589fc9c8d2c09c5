"""federation/transport/wire.py: X-Matrix headers, parsed, signed and verified."""

from __future__ import annotations

from typing import Any

import pytest
from canonicaljson import encode_canonical_json
from signedjson.key import generate_signing_key, get_verify_key
from unpaddedbase64 import decode_base64

from federation.transport.wire import (
    XMatrixAuth,
    XMatrixAuthError,
    XMatrixFailure,
    format_authorization_header,
    parse_authorization_header,
    request_json,
    sign_request,
    verify_request,
)
from tests.vectors.loader import load_vector

VECTORS = load_vector("xmatrix_headers")
KEY = generate_signing_key("k1")
VK = get_verify_key(KEY)
ORIGIN, DEST = "origin.test:8448", "dest.test"
URI = "/_matrix/federation/v1/send/1?x=a%20b&y=2"
BODY = {"pdus": [], "edus": [{"edu_type": "m.typing", "content": {"a": "é"}}]}


@pytest.mark.parametrize("case", VECTORS["parse"], ids=lambda c: c["why"])
def test_parse(case: dict[str, Any]) -> None:
    assert parse_authorization_header(case["header"]) == XMatrixAuth(**case["auth"])


@pytest.mark.parametrize("case", VECTORS["reject"], ids=lambda c: repr(c["header"])[:40])
def test_parse_rejects(case: dict[str, Any]) -> None:
    with pytest.raises(XMatrixAuthError) as e:
        parse_authorization_header(case["header"])
    assert e.value.reason is XMatrixFailure(case["error"])
    assert (e.value.code, e.value.errcode) == (401, "M_UNAUTHORIZED")
    assert case.get("where", "") in e.value.msg


def _header(method: str = "PUT", uri: str = URI, content: Any = BODY) -> str:
    return sign_request(origin=ORIGIN, destination=DEST, method=method, uri=uri,
                        content=content, signing_key=KEY)


def test_sign_request_format() -> None:
    header = _header()
    auth = parse_authorization_header(header)
    assert header == (
        f'X-Matrix origin="{ORIGIN}",destination="{DEST}",key="ed25519:k1",sig="{auth.sig}"'
    )
    # The signature is over exactly the spec's JSON, checked with pynacl directly.
    signed_bytes = encode_canonical_json(
        {"method": "PUT", "uri": URI, "origin": ORIGIN, "destination": DEST, "content": BODY})
    VK.verify(signed_bytes, decode_base64(auth.sig))


@pytest.mark.parametrize("content", [BODY, None, {}, []], ids=["body", "none", "empty", "list"])
def test_round_trip(content: Any) -> None:
    auth = parse_authorization_header(_header(content=content))
    verify_request(auth, "PUT", URI, DEST, content, VK)


def test_get_without_body_signs_no_content_key() -> None:
    assert "content" not in request_json("GET", "/x", ORIGIN, DEST)
    assert request_json("GET", "/x", ORIGIN, DEST, {})["content"] == {}


def _failure(auth: XMatrixAuth, *, method: str = "PUT", uri: str = URI, dest: str = DEST,
             content: Any = BODY, key: Any = VK) -> XMatrixFailure:
    with pytest.raises(XMatrixAuthError) as e:
        verify_request(auth, method, uri, dest, content, key)
    assert (e.value.code, e.value.errcode) == (401, "M_UNAUTHORIZED")
    return e.value.reason


def test_each_check_has_its_reason() -> None:
    auth = parse_authorization_header(_header())
    assert _failure(auth, dest="other.test") is XMatrixFailure.DESTINATION_MISMATCH
    assert _failure(auth, key=None) is XMatrixFailure.UNKNOWN_KEY
    wrong_alg = XMatrixAuth(origin=ORIGIN, key="rsa:k1", sig=auth.sig, destination=DEST)
    assert _failure(wrong_alg) is XMatrixFailure.UNKNOWN_KEY
    assert _failure(auth, key=get_verify_key(generate_signing_key("x"))) is \
        XMatrixFailure.BAD_SIGNATURE
    assert _failure(auth, method="POST") is XMatrixFailure.BAD_SIGNATURE
    assert _failure(auth, uri=URI.replace("a%20b", "a b")) is XMatrixFailure.BAD_SIGNATURE
    assert _failure(auth, content={**BODY, "pdus": [1]}) is XMatrixFailure.BAD_SIGNATURE
    assert _failure(auth, content=None) is XMatrixFailure.BAD_SIGNATURE
    garbage = XMatrixAuth(origin=ORIGIN, key="ed25519:k1", sig="!!", destination=DEST)
    assert _failure(garbage) is XMatrixFailure.BAD_SIGNATURE
    with pytest.raises(XMatrixAuthError) as e:
        parse_authorization_header(None)
    assert e.value.reason is XMatrixFailure.MISSING_HEADER


def test_missing_destination_is_accepted_and_signed_as_ours() -> None:
    """Older servers omit `destination`; the JSON then still names the receiver."""
    auth = parse_authorization_header(_header())
    legacy = XMatrixAuth(origin=auth.origin, key=auth.key, sig=auth.sig)
    verify_request(legacy, "PUT", URI, DEST, BODY, VK)
    # Signed for another destination: the signature does not cover us.
    assert _failure(legacy, dest="other.test") is XMatrixFailure.BAD_SIGNATURE


def test_format_escapes_quotes() -> None:
    auth = XMatrixAuth(origin="a.test", key='ed25519:"k\\', sig="s", destination="b.test")
    header = format_authorization_header(auth)
    assert header == 'X-Matrix origin="a.test",destination="b.test",key="ed25519:\\"k\\\\",sig="s"'
    assert parse_authorization_header(header) == auth
