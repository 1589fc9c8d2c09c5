"""The redaction algorithm: what survives of an event once it is redacted.

Spec: ``rooms/fragments/v9-redactions.md`` (used by room version 10) and
``rooms/fragments/v11-redactions.md`` (room versions 11 and 12), selected by
``rv.updated_redaction_rules``. The same algorithm defines what the reference
hash and the event signatures cover (``server-server-api.md`` "Signing
Events"), so every byte of its output matters.

Where the spec text is ambiguous the choice follows Synapse's
``prune_event_dict``, because event IDs are computed from this output and must
agree with Synapse's:

* ``content`` is always present in the result (``{}`` if nothing survives).
* v11 member events: if ``content.third_party_invite`` is an object it is kept
  as ``{}`` plus its ``signed`` key when present.

``unsigned`` is dropped (it is not in the list of kept keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federation.room_versions import RoomVersion

__all__ = ["preserved_content_keys", "preserved_top_level_keys", "redact"]

_TOP_LEVEL_V11: frozenset[str] = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "auth_events",
        "origin_server_ts",
    }
)

# v9 rules (room version 10) also keep these three.
_TOP_LEVEL_V9: frozenset[str] = _TOP_LEVEL_V11 | {"prev_state", "origin", "membership"}

_CONTENT_V9: Mapping[str, frozenset[str]] = {
    "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
    "m.room.create": frozenset({"creator"}),
    "m.room.join_rules": frozenset({"join_rule", "allow"}),
    "m.room.power_levels": frozenset(
        {"ban", "events", "events_default", "kick", "redact", "state_default", "users",
         "users_default"}
    ),
    "m.room.history_visibility": frozenset({"history_visibility"}),
}

_CONTENT_V11: Mapping[str, frozenset[str]] = {
    "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
    "m.room.join_rules": frozenset({"join_rule", "allow"}),
    "m.room.power_levels": _CONTENT_V9["m.room.power_levels"] | {"invite"},
    "m.room.history_visibility": frozenset({"history_visibility"}),
    "m.room.redaction": frozenset({"redacts"}),
}


def preserved_top_level_keys(rv: RoomVersion) -> frozenset[str]:
    """The top-level keys the redaction algorithm of ``rv`` keeps."""
    return _TOP_LEVEL_V11 if rv.updated_redaction_rules else _TOP_LEVEL_V9


def preserved_content_keys(event_type: str, rv: RoomVersion) -> frozenset[str] | None:
    """The content keys kept for ``event_type``; ``None`` means all of them.

    In v11 ``m.room.create`` keeps all its content and ``m.room.member`` also
    keeps ``third_party_invite.signed`` (handled by :func:`redact`).
    """
    if rv.updated_redaction_rules:
        if event_type == "m.room.create":
            return None
        return _CONTENT_V11.get(event_type, frozenset())
    return _CONTENT_V9.get(event_type, frozenset())


def redact(pdu: Mapping[str, Any], rv: RoomVersion) -> dict[str, Any]:
    """The redacted form of ``pdu`` under ``rv``'s rules; ``pdu`` is not modified.

    Idempotent: ``redact(redact(p, rv), rv) == redact(p, rv)``. Nested values
    are shared with the input, not copied; treat the result as read-only or
    copy it before changing it.
    """
    keep = _TOP_LEVEL_V11 if rv.updated_redaction_rules else _TOP_LEVEL_V9
    out = {k: v for k, v in pdu.items() if k in keep}

    content = pdu.get("content")
    if type(content) is not dict and not isinstance(content, Mapping):
        content = {}
    event_type = pdu.get("type")
    allowed = preserved_content_keys(event_type, rv) if isinstance(event_type, str) else frozenset()
    if allowed is None:
        new_content = dict(content)
    else:
        new_content = {k: v for k, v in content.items() if k in allowed}
        if rv.updated_redaction_rules and event_type == "m.room.member":
            tpi = content.get("third_party_invite")
            if isinstance(tpi, Mapping):
                new_content["third_party_invite"] = (
                    {"signed": tpi["signed"]} if "signed" in tpi else {}
                )
    out["content"] = new_content
    return out
