"""X-Matrix request authentication, as pure functions over strings and JSON.

Spec: ``server-server-api.md`` "Request Authentication". The signed JSON is
``{method, uri, origin, destination, content?}`` (``uri`` is the path with
``?`` and query, exactly as sent); the header is
``X-Matrix origin="…",destination="…",key="ed25519:…",sig="…"``, parsed per
RFC 9110 §11.4 (scheme, one or more spaces, comma-separated ``name=value``
with optional spaces/tabs around commas, case-insensitive names in any order,
token or quoted-string values with backslash escapes, unknown parameters
ignored, colons tolerated in unquoted values for older servers).

The receiver signs the JSON with its *own* server name as ``destination``;
a ``destination`` parameter that differs from it is refused with 401
(``destination`` may be absent, for older servers).

Every failure is an :class:`XMatrixAuthError` (401 ``M_UNAUTHORIZED``) whose
``reason`` says which check failed; the HTTP middleware lives elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nacl.signing import VerifyKey
from signedjson.types import SigningKey

from federation.errors import Codes, MatrixError
from federation.event_format import is_valid_server_name
from federation.signing import (
    SignatureFailure,
    SignatureVerifyError,
    key_id_of,
    sign_json,
    verify_json_signature,
)

__all__ = [
    "XMatrixAuth",
    "XMatrixAuthError",
    "XMatrixFailure",
    "format_authorization_header",
    "parse_authorization_header",
    "request_json",
    "sign_request",
    "verify_request",
]

SCHEME = "X-Matrix"

# RFC 9110 §5.6.2 tchar.
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WS = " \t"


class XMatrixFailure(StrEnum):
    MISSING_HEADER = "missing_header"
    UNPARSABLE_HEADER = "unparsable_header"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    DESTINATION_MISMATCH = "destination_mismatch"


class XMatrixAuthError(MatrixError):
    """Request authentication failed; ``reason`` says which check."""

    def __init__(self, reason: XMatrixFailure, detail: str) -> None:
        super().__init__(401, Codes.UNAUTHORIZED, f"X-Matrix authentication failed: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class XMatrixAuth:
    """The parameters of one ``Authorization: X-Matrix ...`` header."""

    origin: str
    key: str
    sig: str
    destination: str | None = None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_authorization_header(auth: XMatrixAuth) -> str:
    """The header value, in the spec's order with every value quoted.

    Follows the spec's advice to senders: one space after ``X-Matrix``,
    lower-case names, no whitespace around commas. (Synapse orders the
    parameters ``origin, key, sig, destination``; order does not matter.)
    """
    params = [("origin", auth.origin)]
    if auth.destination is not None:
        params.append(("destination", auth.destination))
    params += [("key", auth.key), ("sig", auth.sig)]
    return f"{SCHEME} " + ",".join(f"{name}={_quote(value)}" for name, value in params)


def request_json(
    method: str, uri: str, origin: str, destination: str, content: Any = None
) -> dict[str, Any]:
    """The object that is signed: ``content`` is left out when ``None`` (no body)."""
    obj: dict[str, Any] = {
        "method": method,
        "uri": uri,
        "origin": origin,
        "destination": destination,
    }
    if content is not None:
        obj["content"] = content
    return obj


def sign_request(
    *,
    origin: str,
    destination: str,
    method: str,
    uri: str,
    signing_key: SigningKey,
    content: Any = None,
) -> str:
    """The ``Authorization`` header value for a request from ``origin``.

    ``uri`` is the path plus ``?query`` exactly as it goes on the wire;
    ``content`` the JSON body as parsed (``None`` for no body).
    """
    signed = sign_json(request_json(method, uri, origin, destination, content), origin, signing_key)
    key_id = key_id_of(signing_key)
    return format_authorization_header(
        XMatrixAuth(
            origin=origin,
            key=key_id,
            sig=signed["signatures"][origin][key_id],
            destination=destination,
        )
    )


def _unparsable(detail: str) -> XMatrixAuthError:
    return XMatrixAuthError(XMatrixFailure.UNPARSABLE_HEADER, detail)


def _parse_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        # Skip OWS and empty list elements ("a=1, ,b=2" is legal list syntax).
        while i < n and (text[i] in _WS or text[i] == ","):
            i += 1
        if i >= n:
            return params
        start = i
        while i < n and text[i] in _TCHAR:
            i += 1
        name = text[start:i].lower()
        if not name:
            raise _unparsable(f"expected a parameter name at offset {start}")
        while i < n and text[i] in _WS:
            i += 1
        if i >= n or text[i] != "=":
            raise _unparsable(f"expected '=' after parameter {name!r}")
        i += 1
        while i < n and text[i] in _WS:
            i += 1
        if i < n and text[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise _unparsable(f"unterminated quoted value for {name!r}")
                ch = text[i]
                if ch == "\\":
                    if i + 1 >= n:
                        raise _unparsable(f"dangling backslash in value for {name!r}")
                    chars.append(text[i + 1])
                    i += 2
                elif ch == '"':
                    i += 1
                    break
                else:
                    chars.append(ch)
                    i += 1
            value = "".join(chars)
        else:
            start = i
            # A token, plus ':' for older servers' unquoted server names and
            # '/' and '=' which unquoted base64 signatures contain.
            while i < n and (text[i] in _TCHAR or text[i] in ":/="):
                i += 1
            value = text[start:i]
            if not value:
                raise _unparsable(f"empty value for {name!r}")
        while i < n and text[i] in _WS:
            i += 1
        if i < n and text[i] != ",":
            raise _unparsable(f"unexpected {text[i]!r} after the value of {name!r}")
        if name in params:
            raise _unparsable(f"parameter {name!r} given twice")
        params[name] = value


def parse_authorization_header(value: str | None) -> XMatrixAuth:
    """Parse an ``Authorization`` header value, or raise :class:`XMatrixAuthError`.

    ``None`` or an empty value is ``MISSING_HEADER``; a different scheme or a
    malformed parameter list is ``UNPARSABLE_HEADER``, with the reason.
    """
    if value is None or not value.strip():
        raise XMatrixAuthError(XMatrixFailure.MISSING_HEADER, "missing Authorization header")
    text = value.strip(_WS)
    scheme, sep, rest = text.partition(" ")
    if scheme.lower() != SCHEME.lower():
        raise _unparsable(f"authorization scheme is not {SCHEME}")
    if not sep:
        raise _unparsable("no parameters after X-Matrix")
    params = _parse_params(rest)
    # The spec's prose names the parameter `signature`; every implementation
    # sends `sig` (the spec's example and code). Accept either, not both.
    if "signature" in params:
        if "sig" in params:
            raise _unparsable("both 'sig' and 'signature' given")
        params["sig"] = params.pop("signature")
    missing = [p for p in ("origin", "key", "sig") if not params.get(p)]
    if missing:
        raise _unparsable(f"missing parameter(s): {', '.join(missing)}")
    if not is_valid_server_name(params["origin"]):
        raise _unparsable("origin is not a valid server name")
    return XMatrixAuth(
        origin=params["origin"],
        key=params["key"],
        sig=params["sig"],
        destination=params.get("destination"),
    )


def verify_request(
    auth: XMatrixAuth,
    method: str,
    uri: str,
    destination: str,
    content: Any,
    verify_key: VerifyKey | None,
) -> None:
    """Check a parsed header against the request, or raise :class:`XMatrixAuthError`.

    ``destination`` is the receiving server's own name; ``verify_key`` the
    origin's key for ``auth.key`` valid now, or ``None`` if the keyring has
    none (``UNKNOWN_KEY``). ``content`` is the parsed JSON body or ``None``.
    """
    if auth.destination is not None and auth.destination != destination:
        raise XMatrixAuthError(
            XMatrixFailure.DESTINATION_MISMATCH,
            f"request is for {auth.destination!r}, this server is {destination!r}",
        )
    if verify_key is None or not auth.key.startswith("ed25519:"):
        raise XMatrixAuthError(
            XMatrixFailure.UNKNOWN_KEY, f"no known key {auth.key!r} for {auth.origin!r}"
        )
    signed = request_json(method, uri, auth.origin, destination, content)
    signed["signatures"] = {auth.origin: {auth.key: auth.sig}}
    try:
        verify_json_signature(signed, auth.origin, verify_key, key_id=auth.key)
    except SignatureVerifyError as e:
        detail = (
            "signature does not verify"
            if e.reason is SignatureFailure.BAD_SIGNATURE
            else f"malformed signature ({e.reason.value})"
        )
        raise XMatrixAuthError(XMatrixFailure.BAD_SIGNATURE, detail) from None
