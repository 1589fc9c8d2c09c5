"""Server signing keys: publishing ours, checking theirs, notary signatures.

Spec: server-server API, "Retrieving server keys" ("Publishing Keys",
"Querying Keys Through Another Server"), ``data/api/server-server/keys_server.yaml``,
``keys_query.yaml``, ``definitions/keys.yaml``, and the room-version rule in
``content/rooms/fragments/v5-signing-requirements.md``:

    Servers MUST use the lesser of ``valid_until_ts`` and 7 days into the
    future when determining if a key is valid.

Everything here is pure: time comes in as ``now_ms``, keys as objects. The
keyring (``federation/keyring.py``) does the fetching and caching.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import VerifyKey
from signedjson.types import SigningKey
from unpaddedbase64 import encode_base64

from federation.signing import SignatureVerifyError, sign_json, verify_json_signature

__all__ = [
    "MAX_KEY_VALIDITY_MS",
    "FetchedKey",
    "KeyLookupError",
    "OldVerifyKey",
    "ServerKeyResponse",
    "build_server_key_response",
    "decode_verify_key",
    "encode_verify_key",
    "key_id_of",
    "notary_sign",
    "parse_server_key_response",
    "verify_key_of",
    "verify_notary_signature",
]

# v5-signing-requirements.md: "the lesser of valid_until_ts and 7 days into the future".
MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000

# definitions/keys.yaml: "The version must have characters matching [a-zA-Z0-9_]".
_KEY_ID_RE = re.compile(r"^ed25519:[a-zA-Z0-9_]+$")


class KeyLookupError(Exception):
    """A key response was unusable (bad shape, wrong server, bad signature) or
    the keys could not be fetched. Internal: never shown to a peer as is."""


def key_id_of(key: SigningKey) -> str:
    """The ``ed25519:version`` ID signedjson stores on its key objects."""
    return f"{key.alg}:{key.version}"


def verify_key_of(key: SigningKey) -> VerifyKey:
    """The public half of a signing key."""
    return VerifyKey(bytes(key.verify_key))


def encode_verify_key(key: VerifyKey) -> str:
    """Unpadded base64 of a public key, as published in ``verify_keys``."""
    encoded: str = encode_base64(bytes(key))
    return encoded


def decode_verify_key(key_id: str, key_b64: object) -> VerifyKey:
    """Decode an unpadded-base64 ed25519 public key named ``key_id``.

    Raises :class:`KeyLookupError` on an unsupported algorithm, a malformed
    key ID or a key that is not 32 bytes of valid base64.
    """
    if not isinstance(key_id, str) or not _KEY_ID_RE.match(key_id):
        raise KeyLookupError(f"unsupported or malformed key ID {key_id!r}")
    if not isinstance(key_b64, str):
        raise KeyLookupError(f"key {key_id} is not a string")
    # Strict decoding: unpaddedbase64 silently drops characters outside the
    # alphabet, which would let a malformed key through.
    stripped = key_b64.rstrip("=")
    try:
        raw = base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise KeyLookupError(f"key {key_id} is not valid base64") from e
    if len(raw) != 32:
        raise KeyLookupError(f"key {key_id} is {len(raw)} bytes, not 32")
    return VerifyKey(raw)


@dataclass(frozen=True)
class OldVerifyKey:
    """One of our retired keys, published under ``old_verify_keys``."""

    key_id: str
    verify_key: VerifyKey
    expired_ts: int


@dataclass(frozen=True)
class FetchedKey:
    """A remote server's public key, as the keyring caches it.

    ``valid_until_ts`` is already capped at ``fetched_ts`` + 7 days
    (v5-signing-requirements.md). ``expired_ts`` is set for keys that came
    from ``old_verify_keys``: those verify only what was signed before it,
    and never a request (spec: old keys "are only valid for signing events").
    ``response_json`` is the signed response the key came from, kept so that
    we can serve it again as a notary.
    """

    server_name: str
    key_id: str
    verify_key: VerifyKey
    valid_until_ts: int
    fetched_ts: int
    expired_ts: int | None = None
    response_json: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def key_b64(self) -> str:
        return encode_verify_key(self.verify_key)

    def valid_at(self, ts: int, *, allow_old: bool = True) -> bool:
        """Whether this key may verify a signature made at ``ts``.

        Server-server API "Validating hashes and signatures on received
        events": "any keys that are known to have expired prior to the
        event's origin_server_ts are ignored"; a current key is good up to
        its (capped) ``valid_until_ts`` inclusive, v5-signing-requirements.md.
        """
        if self.expired_ts is not None:
            return allow_old and ts < self.expired_ts
        return ts <= self.valid_until_ts


@dataclass(frozen=True)
class ServerKeyResponse:
    """A verified ``GET /_matrix/key/v2/server`` body."""

    server_name: str
    valid_until_ts: int
    verify_keys: Mapping[str, VerifyKey]
    old_verify_keys: Mapping[str, tuple[VerifyKey, int]]
    raw: Mapping[str, Any] = field(repr=False)

    def to_fetched_keys(self, fetched_ts: int) -> dict[str, FetchedKey]:
        """The keys of this response as cache entries, ``fetched_ts`` = now.

        The 7-day cap counts from when we received the response.
        """
        valid_until = min(self.valid_until_ts, fetched_ts + MAX_KEY_VALIDITY_MS)
        out: dict[str, FetchedKey] = {}
        for key_id, (vk, expired_ts) in self.old_verify_keys.items():
            out[key_id] = FetchedKey(
                server_name=self.server_name,
                key_id=key_id,
                verify_key=vk,
                valid_until_ts=min(valid_until, expired_ts),
                fetched_ts=fetched_ts,
                expired_ts=expired_ts,
                response_json=self.raw,
            )
        # A key listed both as current and old (a confused server) counts as current.
        for key_id, vk in self.verify_keys.items():
            out[key_id] = FetchedKey(
                server_name=self.server_name,
                key_id=key_id,
                verify_key=vk,
                valid_until_ts=valid_until,
                fetched_ts=fetched_ts,
                response_json=self.raw,
            )
        return out


def build_server_key_response(
    server_name: str,
    signing_keys: Sequence[SigningKey],
    old_keys: Iterable[OldVerifyKey],
    *,
    now_ms: int,
    validity_ms: int,
) -> dict[str, Any]:
    """Our ``GET /_matrix/key/v2/server`` body, signed by every current key.

    ``valid_until_ts`` is ``now_ms + validity_ms``. keys_server.yaml asks
    origins to "avoid returning responses that expire in less than an hour",
    which a validity of at least an hour (checked in config) guarantees.
    """
    if not signing_keys:
        raise ValueError("a server needs at least one signing key")
    verify_keys: dict[str, Any] = {}
    for sk in signing_keys:
        verify_keys[key_id_of(sk)] = {"key": encode_verify_key(verify_key_of(sk))}
    old: dict[str, Any] = {}
    for ok in old_keys:
        if ok.key_id in verify_keys:
            continue  # still in use: publishing it as expired would contradict itself
        old[ok.key_id] = {
            "key": encode_verify_key(ok.verify_key),
            "expired_ts": ok.expired_ts,
        }
    body: dict[str, Any] = {
        "server_name": server_name,
        "verify_keys": verify_keys,
        "old_verify_keys": old,
        "valid_until_ts": now_ms + validity_ms,
    }
    for sk in signing_keys:
        body = sign_json(body, server_name, sk)
    return body


def _is_int(v: object) -> bool:
    return type(v) is int


def parse_server_key_response(response: object, expected_server_name: str) -> ServerKeyResponse:
    """Check a server's key response (from it directly, or relayed by a notary).

    - ``server_name`` must equal ``expected_server_name`` exactly, port included;
    - every key in ``verify_keys`` must have signed the response as that
      server (definitions/keys.yaml: "Digital signatures for this object
      signed using the verify_keys"), and every such signature must verify;
    - ``valid_until_ts`` must be an integer. It is *not* required to be in
      the future: a stale response still verifies what was signed before it
      expired, and notaries are told to keep serving the last response they
      have ("keys_server.yaml"). The keyring decides per use.

    Signatures by other servers (a notary's) are left alone; the caller
    checks those against pinned keys. Raises :class:`KeyLookupError`.
    """
    if not isinstance(response, dict):
        raise KeyLookupError("key response is not a JSON object")
    name = response.get("server_name")
    if name != expected_server_name:
        raise KeyLookupError(
            f"key response is for server {name!r}, expected {expected_server_name!r}"
        )
    valid_until_ts = response.get("valid_until_ts")
    if not _is_int(valid_until_ts):
        raise KeyLookupError("key response has no integer valid_until_ts")
    assert isinstance(valid_until_ts, int)
    vk_json = response.get("verify_keys")
    if not isinstance(vk_json, dict) or not vk_json:
        raise KeyLookupError("key response has no verify_keys")
    sigs = response.get("signatures")
    if not isinstance(sigs, dict) or not isinstance(sigs.get(expected_server_name), dict):
        raise KeyLookupError(f"key response is not signed by {expected_server_name}")

    verify_keys: dict[str, VerifyKey] = {}
    for key_id, entry in vk_json.items():
        if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
            continue  # an algorithm we do not speak: neither usable nor fatal
        if not isinstance(entry, dict):
            raise KeyLookupError(f"verify key {key_id} is not an object")
        verify_keys[key_id] = decode_verify_key(key_id, entry.get("key"))
    if not verify_keys:
        raise KeyLookupError("key response has no ed25519 verify key")

    old: dict[str, tuple[VerifyKey, int]] = {}
    old_json = response.get("old_verify_keys", {})
    if not isinstance(old_json, dict):
        raise KeyLookupError("old_verify_keys is not an object")
    for key_id, entry in old_json.items():
        if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
            continue
        if not isinstance(entry, dict) or not _is_int(entry.get("expired_ts")):
            raise KeyLookupError(f"old verify key {key_id} has no integer expired_ts")
        old[key_id] = (decode_verify_key(key_id, entry.get("key")), entry["expired_ts"])

    for key_id, vk in verify_keys.items():
        if key_id not in sigs[expected_server_name]:
            raise KeyLookupError(f"key response is not signed by its own key {key_id}")
        try:
            verify_json_signature(response, expected_server_name, vk, key_id=key_id)
        except SignatureVerifyError as e:
            raise KeyLookupError(f"self-signature by {key_id} does not verify: {e}") from e

    return ServerKeyResponse(
        server_name=expected_server_name,
        valid_until_ts=valid_until_ts,
        verify_keys=verify_keys,
        old_verify_keys=old,
        raw=response,
    )


def verify_notary_signature(
    response: Mapping[str, Any], notary_name: str, pinned_keys: Mapping[str, VerifyKey]
) -> None:
    """Check that ``notary_name`` signed ``response`` with a pinned key.

    At least one pinned key must have signed, and every signature by a pinned
    key must verify. Signatures by keys we did not pin prove nothing and are
    ignored. Raises :class:`KeyLookupError`.
    """
    sigs = response.get("signatures")
    by_notary = sigs.get(notary_name) if isinstance(sigs, dict) else None
    if not isinstance(by_notary, dict):
        raise KeyLookupError(f"response is not signed by notary {notary_name}")
    checked = 0
    for key_id in by_notary:
        vk = pinned_keys.get(key_id)
        if vk is None:
            continue
        try:
            verify_json_signature(response, notary_name, vk, key_id=key_id)
        except SignatureVerifyError as e:
            raise KeyLookupError(f"notary {notary_name} signature by {key_id} is bad: {e}") from e
        checked += 1
    if not checked:
        raise KeyLookupError(f"response is not signed by a pinned key of notary {notary_name}")


def notary_sign(
    response: Mapping[str, Any], notary_name: str, signing_keys: Sequence[SigningKey]
) -> dict[str, Any]:
    """A copy of ``response`` with our signatures added beside the origin's.

    keys_query.yaml: "The receiving (notary) server must sign the keys
    returned by the queried server." A response that is our own key response
    already carries our signatures; signing again replaces them by identical
    ones (ed25519 is deterministic).
    """
    out: dict[str, Any] = copy.deepcopy(dict(response))
    for sk in signing_keys:
        out = sign_json(out, notary_name, sk)
    return out
