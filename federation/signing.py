"""Signing JSON and events, and verifying received PDUs.

Spec:
* ``appendices.md`` "Signing JSON", "Signing Details", "Checking for a
  Signature": sign the canonical JSON of the object without ``signatures``
  and ``unsigned``; ed25519 through PyNaCl, via signedjson for signing.
* ``server-server-api.md`` "Signing Events": "Adding hashes and signatures
  to outgoing events" (content hash, then sign the *redacted* event) and
  "Validating hashes and signatures on received events" (signatures over the
  redacted event; "only the signature(s) from the originating server (the
  server the ``sender`` belongs to) are required", except for third-party
  invites; a hash mismatch means the event is *redacted*, not dropped).
* ``server-server-api.md`` "Checks performed on receipt of a PDU", steps
  1-3, in that order: format (dropped), signatures (dropped), hashes
  (redacted).
* ``rooms/v12.md`` rule 5.2.1 (restricted joins must be signed by the server
  of ``join_authorised_via_users_server``). Like Synapse, that signature is
  checked here with the others, so such a join without it is dropped.

Keys are given by the caller (the keyring), already filtered to those valid
at the event's ``origin_server_ts`` (``rooms/fragments/v5-signing-requirements.md``):
this module does no I/O and knows no clock.

:func:`verify_pdu` is the hot path for every received event. It encodes two
byte strings, each once: the content-hash input (also used for the size limit)
and the redacted signing bytes (also the reference-hash input, so the event ID
comes for free).
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, NamedTuple

import nacl.exceptions
import signedjson.sign
from nacl.signing import VerifyKey
from signedjson.types import SigningKey
from unpaddedbase64 import decode_base64, encode_base64

from federation.canonical_json import check_canonical_values, encode_canonical_json
from federation.errors import Codes, MatrixError
from federation.event_format import (
    EventFormatError,
    check_pdu_fields,
    check_pdu_size_from_content_hash_input,
    is_valid_user_id,
    server_name_of,
)
from federation.events import Event
from federation.hashes import compute_content_hash, content_hash_input, expected_content_hash
from federation.redaction import redact
from federation.room_versions import RoomVersion

__all__ = [
    "SignatureFailure",
    "SignatureVerifyError",
    "VerifiedPdu",
    "add_hashes_and_signatures",
    "key_id_of",
    "required_signers",
    "sign_json",
    "verify_json_signature",
    "verify_pdu",
]

_NOT_SIGNED = ("signatures", "unsigned")


class SignatureFailure(StrEnum):
    """Why a signature check failed: what the keyring/receiver acts on."""

    # The object has no signature at all from a server that must sign it.
    MISSING_SIGNATURE = "missing_signature"
    # Signatures exist, but none under a key we know (fetch keys, then retry).
    UNKNOWN_KEY = "unknown_key"
    # The signature is not base64 or not 64 bytes.
    MALFORMED_SIGNATURE = "malformed_signature"
    # The key is known and the signature does not verify: forged or altered.
    BAD_SIGNATURE = "bad_signature"


class SignatureVerifyError(MatrixError):
    """A required signature is missing or wrong.

    ``server_name`` is the signer that failed, ``key_id`` the key involved
    (``None`` when no single key is at fault, e.g. ``MISSING_SIGNATURE``),
    and ``reason`` a :class:`SignatureFailure`. ``key_ids`` lists the key IDs
    the object claims for ``server_name``, for ``UNKNOWN_KEY``.
    """

    def __init__(
        self,
        server_name: str,
        key_id: str | None,
        reason: SignatureFailure,
        detail: str = "",
        key_ids: tuple[str, ...] = (),
    ) -> None:
        what = f"{server_name}" + (f" {key_id}" if key_id else "")
        msg = f"Signature check failed ({reason.value}) for {what}"
        if detail:
            msg += f": {detail}"
        super().__init__(401, Codes.UNAUTHORIZED, msg)
        self.server_name = server_name
        self.key_id = key_id
        self.reason = reason
        self.key_ids = key_ids


def key_id_of(key: SigningKey) -> str:
    """``"ed25519:<version>"`` for a signedjson key."""
    return f"{key.alg}:{key.version}"


def _strip_unsigned(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in _NOT_SIGNED}


def sign_json(obj: Mapping[str, Any], server_name: str, signing_key: SigningKey) -> dict[str, Any]:
    """A signed copy of ``obj`` (appendices.md "Signing Details"); ``obj`` is unchanged.

    Existing signatures (including other keys of ``server_name``) are kept.
    Raises ``M_BAD_JSON`` if ``obj`` holds a value with no canonical form
    (a float, say): such a signature could never be verified by a peer.
    """
    check_canonical_values(obj)
    to_sign = _strip_unsigned(obj)
    signed = signedjson.sign.sign_json(to_sign, server_name, signing_key)
    signatures: dict[str, dict[str, str]] = {}
    existing = obj.get("signatures")
    if isinstance(existing, Mapping):
        signatures = {name: dict(sigs) for name, sigs in existing.items()}
    signatures.setdefault(server_name, {}).update(signed["signatures"][server_name])
    result = dict(obj)
    result["signatures"] = signatures
    return result


def _verify_bytes(
    message: bytes,
    server_name: str,
    key_id: str,
    signature_b64: object,
    verify_key: VerifyKey,
) -> None:
    if not isinstance(signature_b64, str):
        raise SignatureVerifyError(
            server_name, key_id, SignatureFailure.MALFORMED_SIGNATURE, "not a string"
        )
    try:
        signature: bytes = decode_base64(signature_b64)
    except (binascii.Error, ValueError):
        raise SignatureVerifyError(
            server_name, key_id, SignatureFailure.MALFORMED_SIGNATURE, "not base64"
        ) from None
    try:
        verify_key.verify(message, signature)
    except nacl.exceptions.BadSignatureError:
        raise SignatureVerifyError(server_name, key_id, SignatureFailure.BAD_SIGNATURE) from None
    except (nacl.exceptions.ValueError, ValueError, TypeError) as e:
        raise SignatureVerifyError(
            server_name, key_id, SignatureFailure.MALFORMED_SIGNATURE, str(e)
        ) from None


def verify_json_signature(
    obj: Mapping[str, Any],
    server_name: str,
    verify_key: VerifyKey,
    key_id: str | None = None,
) -> None:
    """Check ``server_name``'s signature on ``obj`` with ``verify_key`` (appendices.md
    "Checking for a Signature"), or raise :class:`SignatureVerifyError`.

    ``key_id`` defaults to the signedjson attributes of ``verify_key``
    (``alg:version``), as set by ``signedjson.key.decode_verify_key_bytes``.
    """
    if key_id is None:
        key_id = f"{getattr(verify_key, 'alg', 'ed25519')}:{getattr(verify_key, 'version', '')}"
    signatures = obj.get("signatures")
    server_sigs = signatures.get(server_name) if isinstance(signatures, Mapping) else None
    if not isinstance(server_sigs, Mapping) or not server_sigs:
        raise SignatureVerifyError(server_name, None, SignatureFailure.MISSING_SIGNATURE)
    if key_id not in server_sigs:
        raise SignatureVerifyError(
            server_name,
            key_id,
            SignatureFailure.UNKNOWN_KEY,
            "no signature under this key",
            key_ids=tuple(str(k) for k in server_sigs),
        )
    message = encode_canonical_json(_strip_unsigned(obj))
    _verify_bytes(message, server_name, key_id, server_sigs[key_id], verify_key)


def add_hashes_and_signatures(
    pdu: Mapping[str, Any],
    rv: RoomVersion,
    server_name: str,
    signing_key: SigningKey,
) -> dict[str, Any]:
    """Content hash, then sign the redacted event (server-server-api.md "Adding
    hashes and signatures to outgoing events"). Returns a new dict; ``pdu`` is
    unchanged, its ``unsigned`` and other servers' signatures are kept.
    """
    check_canonical_values(pdu)
    out = dict(pdu)
    hashes = dict(out["hashes"]) if isinstance(out.get("hashes"), Mapping) else {}
    hashes["sha256"] = encode_base64(compute_content_hash(out))
    out["hashes"] = hashes

    redacted = redact(out, rv)
    redacted.pop("signatures", None)
    signed = signedjson.sign.sign_json(redacted, server_name, signing_key)

    signatures: dict[str, dict[str, str]] = {}
    existing = pdu.get("signatures")
    if isinstance(existing, Mapping):
        signatures = {name: dict(sigs) for name, sigs in existing.items()}
    signatures.setdefault(server_name, {}).update(signed["signatures"][server_name])
    out["signatures"] = signatures
    return out


def _is_third_party_invite(pdu: Mapping[str, Any]) -> bool:
    content = pdu.get("content")
    return (
        pdu.get("type") == "m.room.member"
        and isinstance(content, Mapping)
        and content.get("membership") == "invite"
        and "third_party_invite" in content
    )


def required_signers(pdu: Mapping[str, Any], rv: RoomVersion) -> set[str]:
    """The servers whose signatures ``pdu`` must carry.

    * The sender's server ("the originating server"), except for an invite
      made from a third-party invite, which another server may send on the
      sender's behalf (server-server-api.md "Validating hashes and signatures
      on received events"). For those the set can be empty; :func:`verify_pdu`
      then still demands one valid signature from some known server.
    * For a membership event carrying ``join_authorised_via_users_server``
      (room versions with restricted rooms), also the server of that user,
      whatever the membership: auth rule 4.2.1 (v12: 5.2.1) applies to every
      ``m.room.member`` event with the key ("not validly signed by the
      homeserver of the user ID denoted by the key, reject"), not only to
      joins. Synapse verifies it for joins only and checks mere presence
      otherwise; a leave or invite carrying a forged authoriser signature
      would pass there and is refused here, as the spec says.

    The v10 ``origin`` field is not a signer: v3+ rooms only require the
    sender's server, and Synapse does not add its own signature to joins it
    relays through ``send_join``. Raises ``EventFormatError`` if ``sender`` or
    the authorising user is not a valid user ID.
    """
    sender = pdu.get("sender")
    if not isinstance(sender, str) or not is_valid_user_id(sender):
        raise EventFormatError("sender", "is not a valid user ID")
    return _required_signers(pdu, rv, sender)


def _required_signers(pdu: Mapping[str, Any], rv: RoomVersion, sender: str) -> set[str]:
    """:func:`required_signers` for a ``sender`` already known to be valid."""
    if pdu.get("type") != "m.room.member":
        return {server_name_of(sender)}
    signers: set[str] = set()
    if not _is_third_party_invite(pdu):
        signers.add(server_name_of(sender))
    content = pdu.get("content")
    if (
        rv.restricted_join_rule
        and isinstance(content, Mapping)
        and "join_authorised_via_users_server" in content
    ):
        via = content["join_authorised_via_users_server"]
        if not isinstance(via, str) or not is_valid_user_id(via):
            raise EventFormatError(
                "content.join_authorised_via_users_server", "is not a valid user ID"
            )
        signers.add(server_name_of(via))
    return signers


class VerifiedPdu(NamedTuple):
    """The result of :func:`verify_pdu`.

    ``event`` has the correct event ID. When ``content_hash_ok`` is false the
    spec says to carry on with the *redacted* event, and ``event.pdu`` is
    exactly that redacted copy (signatures and hashes kept, ``unsigned``
    dropped); the receiver must not use the full copy it was sent.
    """

    event: Event
    content_hash_ok: bool

    @property
    def redacted(self) -> bool:
        return not self.content_hash_ok


def _check_server_signatures(
    signing_bytes: bytes,
    server_name: str,
    signatures: Mapping[str, Any],
    keys: Mapping[str, Mapping[str, VerifyKey]],
) -> int:
    """Verify every signature of ``server_name`` made with a known ed25519 key.

    Returns how many verified; raises on the first failure. Unknown keys are
    skipped (spec); having none known is the caller's decision.
    """
    server_sigs = signatures.get(server_name)
    if not server_sigs or (type(server_sigs) is not dict and not isinstance(server_sigs, Mapping)):
        raise SignatureVerifyError(server_name, None, SignatureFailure.MISSING_SIGNATURE)
    server_keys = keys.get(server_name) or {}
    checked = 0
    for key_id, sig in server_sigs.items():
        # "Removes any signing key identifiers ... with algorithms it doesn't understand."
        if not key_id.startswith("ed25519:"):
            continue
        verify_key = server_keys.get(key_id)
        if verify_key is None:
            continue
        _verify_bytes(signing_bytes, server_name, key_id, sig, verify_key)
        checked += 1
    return checked


def verify_pdu(
    pdu: Mapping[str, Any],
    rv: RoomVersion,
    keys: Mapping[str, Mapping[str, VerifyKey]],
) -> VerifiedPdu:
    """Full receipt checks 1-3 on a PDU: format, signatures, content hash; and its ID.

    ``keys`` maps server name -> key ID -> verify key, holding the keys valid
    for this event. Raises :class:`~federation.event_format.EventFormatError`
    (drop: bad format), :class:`SignatureVerifyError` (drop: a required
    signer's signature is missing, unknown or wrong). A content-hash mismatch
    is not an error: see :class:`VerifiedPdu`.
    """
    check_pdu_fields(pdu, rv)
    try:
        content_bytes = content_hash_input(pdu)
        redacted = redact(pdu, rv)
        signatures = redacted.pop("signatures")
        signing_bytes = encode_canonical_json(redacted)
    except UnicodeEncodeError:
        raise EventFormatError("event", "contains a lone UTF-16 surrogate") from None
    check_pdu_size_from_content_hash_input(pdu, content_bytes)

    signers = _required_signers(pdu, rv, pdu["sender"])  # sender checked by the format
    for server_name in signers:
        if _check_server_signatures(signing_bytes, server_name, signatures, keys) == 0:
            raise SignatureVerifyError(
                server_name,
                None,
                SignatureFailure.UNKNOWN_KEY,
                "no signature under a known key",
                key_ids=tuple(str(k) for k in signatures.get(server_name, {})),
            )
    if not signers:
        # Third-party invite: some server must still vouch for the event.
        if not any(
            _check_server_signatures(signing_bytes, name, signatures, keys)
            for name in signatures
            if name in keys
        ):
            raise SignatureVerifyError(
                "*", None, SignatureFailure.UNKNOWN_KEY, "no signature under a known key"
            )

    event_id = "$" + encode_base64(hashlib.sha256(signing_bytes).digest(), urlsafe=True)
    content_hash_ok = hashlib.sha256(content_bytes).digest() == expected_content_hash(pdu)
    if content_hash_ok:
        return VerifiedPdu(Event(pdu, event_id, rv), True)
    redacted["signatures"] = signatures
    return VerifiedPdu(Event(redacted, event_id, rv), False)
