"""The PDU format of each room version, checked field by field.

Spec:
* ``data/api/server-server/definitions/pdu_v6.yaml`` (room version 10),
  ``pdu_v11.yaml`` (11) and ``pdu_v12.yaml`` (12), with their components
  ``pdu_base.yaml``, ``auth_events_prev_events_v4.yaml`` (at most 20
  ``prev_events`` and 10 ``auth_events``), ``depth_v6.yaml``,
  ``room_id_before_v12.yaml`` and ``room_id_v12.yaml`` (omitted from
  ``m.room.create``);
* ``client-server-api/_index.md`` "Size limits": the complete event at most
  65536 bytes of canonical JSON, ``type`` and ``state_key`` at most 255 bytes,
  ``sender``/``room_id``/event IDs within their identifier limits;
* ``appendices.md`` "Identifier Grammar" (server names, user IDs including
  the historical localparts servers MUST accept, room IDs, event IDs);
* ``rooms/fragments/v6-canonical-json.md``: every number an integer in the
  canonical range.

``server-server-api.md`` "Checks performed on receipt of a PDU", step 1: an
event that fails these checks is dropped. Errors are
``EventFormatError`` (``MatrixError(400, M_BAD_JSON)``) naming the field.

The size limit counts the PDU without ``unsigned``: every hop rewrites
``unsigned`` (Synapse filters it on receipt), so it must not be able to push a
valid event over the limit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from federation.canonical_json import (
    CANONICAL_INT_MAX,
    CANONICAL_INT_MIN,
    check_canonical_values,
    encode_canonical_json,
)
from federation.errors import Codes, MatrixError
from federation.room_versions import RoomVersion

__all__ = [
    "MAX_AUTH_EVENTS",
    "MAX_ID_BYTES",
    "MAX_PDU_BYTES",
    "MAX_PREV_EVENTS",
    "EventFormatError",
    "check_pdu_fields",
    "check_pdu_format",
    "check_pdu_size",
    "check_pdu_size_from_content_hash_input",
    "is_valid_event_id",
    "is_valid_room_id",
    "is_valid_server_name",
    "is_valid_user_id",
    "pdu_size_without_unsigned",
    "server_name_of",
]

MAX_PDU_BYTES = 65536
MAX_ID_BYTES = 255
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10

# appendices.md "Server Name": hostname [ ":" port ], hostname an IPv4 literal,
# a bracketed IPv6 literal or a dns-name of 1-255 of [0-9A-Za-z.-].
_SERVER_NAME = re.compile(r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Za-z.\-]{1,255})(?::[0-9]{1,5})?")
# v4+ event IDs and v12 room IDs: sigil + URL-safe unpadded base64 of a SHA-256.
_HASH_ID = re.compile(r"[A-Za-z0-9_\-]{43}")


class EventFormatError(MatrixError):
    """A PDU does not match its room version's format; ``field`` says where."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(400, Codes.BAD_JSON, f"Invalid PDU: {field} {problem}")
        self.field = field
        self.problem = problem


def _over_id_limit(value: str) -> bool:
    """Whether ``value`` exceeds 255 bytes of UTF-8 (at most 4 bytes a code point)."""
    return len(value) > MAX_ID_BYTES // 4 and len(value.encode("utf-8")) > MAX_ID_BYTES


def is_valid_server_name(name: str) -> bool:
    """Whether ``name`` matches the server-name grammar (appendices.md "Server Name")."""
    return _SERVER_NAME.fullmatch(name) is not None


def _is_valid_localpart_id(value: str, sigil: str) -> bool:
    # Historical user IDs (appendices.md): localparts may hold any code point
    # but ":" and NUL, even be empty; servers MUST accept them over federation.
    # Room ID localparts share that rule.
    if not value.startswith(sigil):
        return False
    localpart, sep, server = value[1:].partition(":")
    if not sep or "\x00" in localpart:
        return False
    return is_valid_server_name(server) and not _over_id_limit(value)


def is_valid_user_id(user_id: str) -> bool:
    """``@localpart:server_name``, at most 255 bytes, historical localparts allowed."""
    return _is_valid_localpart_id(user_id, "@")


def server_name_of(user_id: str) -> str:
    """The server name of a user ID (or any ``&localpart:domain`` identifier)."""
    return user_id.partition(":")[2]


def is_valid_event_id(event_id: str) -> bool:
    """A room-version 4+ event ID: ``$`` + 43 characters of URL-safe base64."""
    return len(event_id) == 44 and event_id[0] == "$" and _HASH_ID.fullmatch(event_id, 1) is not None


def is_valid_room_id(room_id: str, rv: RoomVersion) -> bool:
    """A room ID as ``rv`` defines it: ``!`` + hash in v12, ``!opaque:domain`` before."""
    if rv.room_id_from_create_event:
        return len(room_id) == 44 and room_id[0] == "!" and _HASH_ID.fullmatch(room_id, 1) is not None
    return _is_valid_localpart_id(room_id, "!")


def _is_object(value: object) -> bool:
    # `type() is dict` first: isinstance against the Mapping ABC is slow, and
    # parsed JSON is always a dict.
    return type(value) is dict or isinstance(value, Mapping)


def _is_int(value: object, low: int, high: int) -> bool:
    # type() rather than isinstance(): bool is an int subclass, and true is not a number.
    return type(value) is int and low <= value <= high


def _is_json_value_tree(obj: Any) -> bool:
    """Fast check that every number is an int in the canonical range (no paths).

    Hot path of every received event: leaves are tested inline so that only
    containers cost a call. Keys are not checked: parsed JSON only has string
    keys, and JSON we build is checked by ``check_canonical_values`` before
    it is signed.
    """
    t = type(obj)
    if t is dict:
        values: Any = obj.values()
    elif t is list or t is tuple:
        values = obj
    elif t is str or obj is None or t is bool:
        return True
    elif t is int:
        return CANONICAL_INT_MIN <= obj <= CANONICAL_INT_MAX  # type: ignore[no-any-return]
    elif isinstance(obj, Mapping):
        values = obj.values()
    else:
        return False
    for v in values:
        tv = type(v)
        if tv is str or v is None or tv is bool:
            continue
        if tv is int:
            if not CANONICAL_INT_MIN <= v <= CANONICAL_INT_MAX:
                return False
        elif not _is_json_value_tree(v):
            return False
    return True


def _check_event_id_list(pdu: Mapping[str, Any], key: str, limit: int) -> None:
    ids = pdu.get(key)
    if type(ids) is not list:
        raise EventFormatError(key, "must be an array of event IDs")
    if len(ids) > limit:
        raise EventFormatError(key, f"has {len(ids)} entries, more than the limit of {limit}")
    for i, event_id in enumerate(ids):
        if type(event_id) is not str or not is_valid_event_id(event_id):
            raise EventFormatError(f"{key}[{i}]", "is not a valid event ID")


def check_pdu_fields(pdu: Mapping[str, Any], rv: RoomVersion) -> None:
    """Every format rule except the total size (see :func:`check_pdu_format`)."""
    if type(pdu) is not dict and not isinstance(pdu, Mapping):
        raise EventFormatError("event", "must be a JSON object")

    event_type = pdu.get("type")
    if type(event_type) is not str:
        raise EventFormatError("type", "is missing or not a string")
    if _over_id_limit(event_type):
        raise EventFormatError("type", f"exceeds {MAX_ID_BYTES} bytes")

    sender = pdu.get("sender")
    if type(sender) is not str:
        raise EventFormatError("sender", "is missing or not a string")
    if not is_valid_user_id(sender):
        raise EventFormatError("sender", "is not a valid user ID")

    if "state_key" in pdu:
        state_key = pdu["state_key"]
        if type(state_key) is not str:
            raise EventFormatError("state_key", "must be a string")
        if _over_id_limit(state_key):
            raise EventFormatError("state_key", f"exceeds {MAX_ID_BYTES} bytes")

    room_id = pdu.get("room_id")
    if rv.room_id_from_create_event and event_type == "m.room.create":
        # room_id_v12.yaml: "Omitted from m.room.create events" (its ID is the room ID).
        if "room_id" in pdu:
            raise EventFormatError("room_id", "must be absent from m.room.create in this room version")
    elif type(room_id) is not str:
        raise EventFormatError("room_id", "is missing or not a string")
    elif not is_valid_room_id(room_id, rv):
        raise EventFormatError("room_id", f"is not a valid room ID for room version {rv.identifier}")

    if not _is_int(pdu.get("origin_server_ts"), CANONICAL_INT_MIN, CANONICAL_INT_MAX):
        raise EventFormatError("origin_server_ts", "is missing or not an integer in range")
    if not _is_int(pdu.get("depth"), 0, CANONICAL_INT_MAX):
        raise EventFormatError("depth", f"is missing or not an integer in [0, {CANONICAL_INT_MAX}]")

    if not _is_object(pdu.get("content")):
        raise EventFormatError("content", "is missing or not an object")

    hashes: Any = pdu.get("hashes")
    if not _is_object(hashes):
        raise EventFormatError("hashes", "is missing or not an object")
    if type(hashes.get("sha256")) is not str:
        raise EventFormatError("hashes.sha256", "is missing or not a string")

    signatures: Any = pdu.get("signatures")
    if not _is_object(signatures):
        raise EventFormatError("signatures", "is missing or not an object")
    for server, sigs in signatures.items():
        if not _is_object(sigs):
            raise EventFormatError(f"signatures.{server}", "must be an object")
        for key_id, sig in sigs.items():
            if type(sig) is not str:
                raise EventFormatError(f"signatures.{server}.{key_id}", "must be a string")

    if "unsigned" in pdu and not _is_object(pdu["unsigned"]):
        raise EventFormatError("unsigned", "must be an object")

    _check_event_id_list(pdu, "prev_events", MAX_PREV_EVENTS)
    _check_event_id_list(pdu, "auth_events", MAX_AUTH_EVENTS)

    if not rv.redacts_in_content and "redacts" in pdu:
        redacts = pdu["redacts"]
        if type(redacts) is not str or not is_valid_event_id(redacts):
            raise EventFormatError("redacts", "is not a valid event ID")

    if not _is_json_value_tree(pdu):
        # Slow path only on failure: find the offending path for the message.
        try:
            check_canonical_values(pdu)
        except MatrixError as e:
            raise EventFormatError("event", e.msg) from None
        raise EventFormatError("event", "contains a value that is not JSON")


def _size_upper_bound(obj: Any) -> int | None:
    """An upper bound on the canonical size of nested objects of strings, else ``None``.

    A code point takes at most 6 bytes in canonical JSON (``\\u001f``; a
    4-byte UTF-8 character is one code point). A member adds its key, two
    quotes, a colon and a comma.
    """
    if type(obj) is str:
        return 2 + 6 * len(obj)
    if not _is_object(obj):
        return None
    total = 2
    for k, v in obj.items():
        if type(v) is str:
            total += 6 + 6 * (len(k) + len(v))
            continue
        inner = _size_upper_bound(v)
        if inner is None:
            return None
        total += 4 + 6 * len(k) + inner
    return total


def pdu_size_without_unsigned(pdu: Mapping[str, Any], content_hash_bytes: bytes) -> int:
    """Canonical size of ``pdu`` minus ``unsigned``, from its content-hash input.

    Canonical JSON of an object is ``{`` + members joined by ``,`` + ``}``, so
    adding the ``hashes`` and ``signatures`` members to the content-hash input
    adds exactly their encoded lengths plus one comma each (sorting does not
    change lengths). This avoids a third encoding of the whole event.
    """
    size = len(content_hash_bytes)
    empty = size == 2
    for key in ("hashes", "signatures"):
        if key in pdu:
            size += len(key) + 3 + len(encode_canonical_json(pdu[key]))
            if empty:
                empty = False
            else:
                size += 1
    return size


def _pdu_within_size_limit(pdu: Mapping[str, Any], content_hash_bytes: bytes) -> int | None:
    """``None`` if a cheap bound proves ``pdu`` fits, else its exact size."""
    bound = len(content_hash_bytes) + 2 * 16
    for key in ("hashes", "signatures"):
        if key in pdu:
            inner = _size_upper_bound(pdu[key])
            if inner is None:
                break
            bound += inner
    else:
        if bound <= MAX_PDU_BYTES:
            return None
    return pdu_size_without_unsigned(pdu, content_hash_bytes)


def check_pdu_size_from_content_hash_input(
    pdu: Mapping[str, Any], content_hash_bytes: bytes
) -> None:
    """The size limit, given the bytes already encoded for the content hash."""
    size = _pdu_within_size_limit(pdu, content_hash_bytes)
    if size is not None:
        check_pdu_size(size)


def check_pdu_size(size: int) -> None:
    if size > MAX_PDU_BYTES:
        raise EventFormatError(
            "event", f"is {size} bytes of canonical JSON, over the limit of {MAX_PDU_BYTES}"
        )


def _encode_or_refuse(obj: Mapping[str, Any]) -> bytes:
    try:
        return encode_canonical_json(obj)
    except UnicodeEncodeError:
        raise EventFormatError("event", "contains a lone UTF-16 surrogate") from None


def check_pdu_format(pdu: Mapping[str, Any], rv: RoomVersion) -> None:
    """Raise :class:`EventFormatError` unless ``pdu`` is a well-formed PDU for ``rv``."""
    check_pdu_fields(pdu, rv)
    check_pdu_size(len(_encode_or_refuse({k: v for k, v in pdu.items() if k != "unsigned"})))
