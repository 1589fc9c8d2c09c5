"""Content hash, reference hash, event IDs and (v12) room IDs.

Spec: ``server-server-api.md`` "Calculating the content hash for an event"
and "Calculating the reference hash for an event";
``rooms/fragments/v4-event-ids.md`` (event ID = ``$`` + URL-safe unpadded
base64 of the reference hash); ``rooms/v12.md`` and ``appendices.md``
"Room IDs" (a v12 room ID is the create event's ID with ``!`` for ``$``).

The canonical bytes each hash covers are exposed too
(:func:`content_hash_input`, :func:`reference_hash_input`), because the
reference-hash bytes are exactly the bytes the event signatures sign: the
verifier computes them once and reuses them.
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

from unpaddedbase64 import decode_base64, encode_base64

from federation.canonical_json import encode_canonical_json
from federation.redaction import redact
from federation.room_versions import RoomVersion

__all__ = [
    "check_content_hash",
    "compute_content_hash",
    "compute_event_id",
    "compute_reference_hash",
    "compute_room_id",
    "content_hash_input",
    "event_id_from_reference_hash",
    "expected_content_hash",
    "reference_hash_input",
]

_NOT_IN_CONTENT_HASH = frozenset({"unsigned", "signatures", "hashes"})


def content_hash_input(pdu: Mapping[str, Any]) -> bytes:
    """Canonical JSON of ``pdu`` without ``unsigned``, ``signatures`` and ``hashes``."""
    stripped = dict(pdu)
    for key in _NOT_IN_CONTENT_HASH:
        stripped.pop(key, None)
    return encode_canonical_json(stripped)


def compute_content_hash(pdu: Mapping[str, Any]) -> bytes:
    """The SHA-256 content hash (raw 32 bytes); ``hashes.sha256`` is its unpadded base64."""
    return hashlib.sha256(content_hash_input(pdu)).digest()


def expected_content_hash(pdu: Mapping[str, Any]) -> bytes | None:
    """The decoded ``hashes.sha256`` of ``pdu``, or ``None`` if absent or not base64."""
    hashes = pdu.get("hashes")
    if type(hashes) is not dict and not isinstance(hashes, Mapping):
        return None
    claimed = hashes.get("sha256")
    if not isinstance(claimed, str):
        return None
    try:
        decoded: bytes = decode_base64(claimed)
    except (binascii.Error, ValueError):
        return None
    return decoded


def check_content_hash(pdu: Mapping[str, Any]) -> bool:
    """Whether ``hashes.sha256`` matches the content hash of ``pdu``.

    ``False`` also when the hash is missing or malformed. The spec's answer
    to ``False`` is to use the redacted event, not to drop it.
    """
    claimed = expected_content_hash(pdu)
    return claimed is not None and claimed == compute_content_hash(pdu)


def reference_hash_input(pdu: Mapping[str, Any], rv: RoomVersion) -> bytes:
    """Canonical JSON of the redacted ``pdu`` without ``signatures`` and ``unsigned``.

    These are also the bytes every event signature signs.
    """
    redacted = redact(pdu, rv)  # a new top-level dict: safe to pop from
    redacted.pop("signatures", None)
    return encode_canonical_json(redacted)


def compute_reference_hash(pdu: Mapping[str, Any], rv: RoomVersion) -> bytes:
    """The SHA-256 reference hash of ``pdu`` (raw 32 bytes)."""
    return hashlib.sha256(reference_hash_input(pdu, rv)).digest()


def event_id_from_reference_hash(reference_hash: bytes) -> str:
    """``$`` + URL-safe unpadded base64 of the reference hash."""
    return "$" + encode_base64(reference_hash, urlsafe=True)


def compute_event_id(pdu: Mapping[str, Any], rv: RoomVersion) -> str:
    """The event ID of ``pdu`` in room version ``rv`` (v4-event-ids.md)."""
    return event_id_from_reference_hash(compute_reference_hash(pdu, rv))


def compute_room_id(create_pdu: Mapping[str, Any], rv: RoomVersion) -> str:
    """The room ID a v12 ``m.room.create`` event defines: ``!`` + its reference hash.

    Only meaningful when ``rv.room_id_from_create_event``; earlier versions
    carry the room ID in the event.
    """
    if not rv.room_id_from_create_event:
        raise ValueError(f"room version {rv.identifier} does not derive room IDs")
    return "!" + encode_base64(compute_reference_hash(create_pdu, rv), urlsafe=True)
