"""Events as clients see them (client-server-api "Room Events", "Client
event format"), with redactions applied.

Spec: ``client-server-api/modules/redaction.md``: a redacted event is served
with its content pruned by the room version's redaction algorithm and the
redaction in ``unsigned.redacted_because``; ``rooms/fragments/
v3-handling-redactions.md``: a redaction is applied only if its sender has
the redact level or is on the redacted event's server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from federation.auth_rules import can_apply_redaction
from federation.events import Event
from federation.redaction import redact
from homeserver.handlers.client_stores import TenantStores

__all__ = ["format_client_event", "format_events", "load_redactions"]

JsonDict = dict[str, Any]


def format_client_event(
    ev: Event,
    now_ms: int,
    *,
    include_room_id: bool = True,
    redacted_by: Event | None = None,
    txn_id: str | None = None,
) -> JsonDict:
    pdu: Any = ev.pdu
    if redacted_by is not None:
        pdu = redact(ev.pdu, ev.room_version)
    out: JsonDict = {
        "content": dict(pdu.get("content", {})),
        "event_id": ev.event_id,
        "origin_server_ts": ev.origin_server_ts,
        "sender": ev.sender,
        "type": ev.type,
    }
    if include_room_id:
        out["room_id"] = ev.room_id
    if ev.is_state():
        out["state_key"] = ev.state_key
    if ev.type == "m.room.redaction" and ev.redacts is not None:
        # Top-level `redacts` for clients of every version (v11 moved it into
        # content; clients still read it here).
        out["redacts"] = ev.redacts
    unsigned: JsonDict = {"age": max(0, now_ms - ev.origin_server_ts)}
    if txn_id is not None:
        unsigned["transaction_id"] = txn_id
    if redacted_by is not None:
        unsigned["redacted_because"] = format_client_event(
            redacted_by, now_ms, include_room_id=include_room_id
        )
    out["unsigned"] = unsigned
    return out


async def load_redactions(
    ts: TenantStores, events: Sequence[Event]
) -> dict[str, Event]:
    """``event_id -> redaction`` for those of ``events`` an accepted redaction applies to."""
    tenant = ts.server_name
    out: dict[str, Event] = {}
    by_room: dict[str, list[Event]] = {}
    for ev in events:
        by_room.setdefault(ev.room_id, []).append(ev)
    for room_id, room_events in by_room.items():
        ids = await ts.s.memberships.redaction_event_ids(tenant, room_id)
        if not ids:
            continue
        redactions = await ts.s.events.get_events(tenant, ids)
        targets = {ev.event_id: ev for ev in room_events}
        for red in redactions.values():
            target = targets.get(red.redacts or "")
            if target is None or target.event_id in out:
                continue
            auth = await _auth_events_of(ts, red)
            if can_apply_redaction(red, target, auth):
                out[target.event_id] = red
    return out


async def _auth_events_of(ts: TenantStores, ev: Event) -> dict[tuple[str, str], Event]:
    ids: list[str] = list(ev.auth_event_ids)
    if ev.room_version.room_id_from_create_event:
        # v12 reads the create event without listing it; its ID is the room's.
        ids.append("$" + ev.room_id[1:])
    loaded = await ts.s.events.get_events(ts.server_name, ids)
    return {
        (e.type, e.state_key): e for e in loaded.values() if e.state_key is not None
    }


async def format_events(
    ts: TenantStores,
    events: Iterable[Event],
    now_ms: int,
    *,
    include_room_id: bool = True,
    txn_ids: dict[str, str] | None = None,
) -> list[JsonDict]:
    evs = list(events)
    redactions = await load_redactions(ts, evs)
    return [
        format_client_event(
            ev, now_ms, include_room_id=include_room_id,
            redacted_by=redactions.get(ev.event_id),
            txn_id=(txn_ids or {}).get(ev.event_id),
        )
        for ev in evs
    ]
