"""Sending and reading room events for local users.

Spec: client-server-api "Sending events to a room" (``PUT
/rooms/{roomId}/send/{eventType}/{txnId}``, ``PUT .../state/...``),
"Transaction identifiers" (idempotent per access token and txnId),
"Getting events for a room" (``/event``, ``/state``, ``/members``,
``/joined_members``, ``/joined_rooms``), "Redactions"; "Size limits": an
event is at most 65,536 bytes of canonical JSON (``413 M_TOO_LARGE``).

Every event is created, checked against the auth rules and persisted in one
transaction; refused input changes nothing stored. After commit the
``on_new_events`` hooks run (the notifier that wakes ``/sync``, and the
federation sender when there is one).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from canonicaljson import encode_canonical_json

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from federation.event_format import MAX_PDU_BYTES
from federation.events import Event
from federation.room_versions import get_room_version
from homeserver.handlers.client_events import format_client_event, format_events
from homeserver.handlers.client_stores import TenantStores
from homeserver.handlers.room_access import (
    check_event_id,
    check_room_id,
    get_membership,
    require_joined,
    require_read_access,
)
from homeserver.handlers.visibility import filter_events_for_client

__all__ = ["MessageHandler", "NewEventsHook", "RateCheck"]

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
NewEventsHook = Callable[[str, Sequence[Event]], Any]
RateCheck = Callable[[str], Awaitable[None]]

MAX_TYPE_BYTES = 255


def check_event_type(event_type: str) -> None:
    if not event_type or len(event_type.encode()) > MAX_TYPE_BYTES:
        raise MatrixError(400, Codes.INVALID_PARAM,
                          "Event type must be 1 to 255 bytes")


def _check_content_size(content: Mapping[str, Any]) -> None:
    size = len(encode_canonical_json(dict(content)))
    if size > MAX_PDU_BYTES:
        raise MatrixError(
            413, Codes.TOO_LARGE,
            f"Event content is {size} bytes; events are limited to {MAX_PDU_BYTES} bytes",
        )


class MessageHandler:
    def __init__(
        self,
        clock: Clock,
        *,
        on_new_events: Sequence[NewEventsHook] = (),
        check_event_rate: RateCheck | None = None,
    ) -> None:
        self._clock = clock
        self._hooks = list(on_new_events)
        self._check_event_rate = check_event_rate

    def add_hook(self, hook: NewEventsHook) -> None:
        self._hooks.append(hook)

    def new_events(self, tenant: str, events: Sequence[Event]) -> None:
        """Run the post-commit hooks; one failing hook does not stop the others."""
        for hook in self._hooks:
            try:
                hook(tenant, events)
            except Exception:
                logger.exception("on_new_events hook %r failed", hook)

    # Creating

    async def create_event(
        self,
        ts: TenantStores,
        sender: str,
        room_id: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        token_id: str | None = None,
        txn_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Event:
        """Create and persist one event of ``sender``; idempotent on
        ``(token_id, txn_id)`` when both are given (the first event is returned)."""
        check_room_id(room_id)
        check_event_type(event_type)
        if state_key is not None and len(state_key.encode()) > MAX_TYPE_BYTES:
            raise MatrixError(400, Codes.INVALID_PARAM, "State key must be at most 255 bytes")
        if not isinstance(content, Mapping):
            raise MatrixError(400, Codes.BAD_JSON, "Event content must be a JSON object")
        _check_content_size(content)
        tenant = ts.server_name
        if token_id is not None and txn_id is not None:
            async with ts.db.transaction("client_txn_lookup") as txn:
                existing = await ts.s.txns.get_event_id_txn(txn, tenant, token_id, txn_id)
            if existing is not None:
                ev = (await ts.s.events.get_events(tenant, [existing])).get(existing)
                if ev is not None:
                    return ev
        if self._check_event_rate is not None:
            await self._check_event_rate(tenant)
        async with ts.db.transaction("client_create_event") as txn:
            if token_id is not None and txn_id is not None:
                await txn.lock(f"client_txn:{tenant}:{token_id}")
                existing = await ts.s.txns.get_event_id_txn(txn, tenant, token_id, txn_id)
                if existing is not None:
                    ev_id = existing
                    event = None
                else:
                    ev_id = None
            else:
                ev_id = None
            if ev_id is None:
                event = await ts.s.creation.create_event_txn(
                    txn, tenant, room_id, event_type=event_type, sender=sender,
                    content=content, state_key=state_key, extra=extra,
                )
                size = len(encode_canonical_json(
                    {k: v for k, v in event.pdu.items() if k != "unsigned"}
                ))
                if size > MAX_PDU_BYTES:
                    # Raising rolls the whole transaction back.
                    raise MatrixError(
                        413, Codes.TOO_LARGE,
                        f"Event is {size} bytes; events are limited to {MAX_PDU_BYTES} bytes",
                    )
                if token_id is not None and txn_id is not None:
                    await ts.s.txns.record_txn(
                        txn, tenant, token_id, txn_id, event.event_id, self._clock.time_ms()
                    )
        if event is None:
            assert ev_id is not None
            got = (await ts.s.events.get_events(tenant, [ev_id])).get(ev_id)
            if got is None:
                raise MatrixError(500, Codes.UNKNOWN, "transaction's event is missing")
            return got
        self.new_events(tenant, [event])
        return event

    async def send_message(
        self, ts: TenantStores, sender: str, room_id: str, event_type: str,
        content: Mapping[str, Any], *, token_id: str | None, txn_id: str | None,
    ) -> str:
        check_room_id(room_id)
        check_event_type(event_type)
        await require_joined(ts, room_id, sender)
        ev = await self.create_event(
            ts, sender, room_id, event_type, content, token_id=token_id, txn_id=txn_id,
        )
        return ev.event_id

    async def send_state(
        self, ts: TenantStores, sender: str, room_id: str, event_type: str, state_key: str,
        content: Mapping[str, Any],
    ) -> str:
        check_room_id(room_id)
        check_event_type(event_type)
        state = await require_joined(ts, room_id, sender)
        # Re-sending the current content changes nothing: answer with the
        # current event (as Synapse does) rather than grow the room.
        current = state.get((event_type, state_key))
        if current is not None:
            ev = (await ts.s.events.get_events(ts.server_name, [current])).get(current)
            if ev is not None and ev.sender == sender and dict(ev.content) == dict(content):
                return ev.event_id
        ev = await self.create_event(
            ts, sender, room_id, event_type, content, state_key=state_key
        )
        return ev.event_id

    async def redact(
        self, ts: TenantStores, sender: str, room_id: str, event_id: str,
        reason: str | None, *, token_id: str | None, txn_id: str | None,
    ) -> str:
        """``PUT /rooms/{roomId}/redact/{eventId}/{txnId}``: v10 carries
        ``redacts`` at the top level, v11+ in the content (``rooms/v11.md``)."""
        check_room_id(room_id)
        check_event_id(event_id)
        await require_joined(ts, room_id, sender)
        rv_id = await ts.s.events.state.get_room_version_id(ts.server_name, room_id)
        content: dict[str, Any] = {}
        if reason is not None:
            content["reason"] = reason
        extra: dict[str, Any] | None = None
        rv = get_room_version(rv_id)
        if rv.redacts_in_content:
            content["redacts"] = event_id
        else:
            extra = {"redacts": event_id}
        ev = await self.create_event(
            ts, sender, room_id, "m.room.redaction", content, token_id=token_id,
            txn_id=txn_id, extra=extra,
        )
        return ev.event_id

    # Reading

    async def get_event(
        self, ts: TenantStores, user_id: str, room_id: str, event_id: str,
        token_id: str | None = None,
    ) -> JsonDict:
        check_room_id(room_id)
        check_event_id(event_id)
        access = await require_read_access(ts, room_id, user_id)
        stored = await ts.s.events.get_event(ts.server_name, event_id)
        not_found = MatrixError(404, Codes.NOT_FOUND, "Event not found")
        if (stored is None or stored.event.room_id != room_id or stored.outlier
                or stored.rejected_reason is not None):
            raise not_found
        if access.hides(stored.event.depth, stored.stream_ordering):
            raise not_found
        if not await filter_events_for_client(ts, user_id, [stored]):
            raise not_found
        txn_ids = (
            await ts.s.txns.get_txn_ids_for_events(ts.server_name, token_id, [event_id])
            if token_id else {}
        )
        return (await format_events(ts, [stored.event], self._clock.time_ms(),
                                    txn_ids=txn_ids))[0]

    async def get_state(self, ts: TenantStores, user_id: str, room_id: str) -> list[JsonDict]:
        check_room_id(room_id)
        access = await self._state_access(ts, room_id, user_id)
        events = await ts.s.events.get_events(ts.server_name, access.values())
        return await format_events(ts, events.values(), self._clock.time_ms())

    async def get_state_event(
        self, ts: TenantStores, user_id: str, room_id: str, event_type: str, state_key: str,
    ) -> Event:
        check_room_id(room_id)
        state = await self._state_access(ts, room_id, user_id)
        eid = state.get((event_type, state_key))
        ev = None if eid is None else (
            await ts.s.events.get_events(ts.server_name, [eid])).get(eid)
        if ev is None:
            raise MatrixError(
                404, Codes.NOT_FOUND, f"Room has no state event {event_type} {state_key!r}"
            )
        return ev

    async def _state_access(
        self, ts: TenantStores, room_id: str, user_id: str
    ) -> Mapping[tuple[str, str], str]:
        access = await require_read_access(ts, room_id, user_id)
        if access.membership == "invite" and access.upto is None:
            hv = access.state.get(("m.room.history_visibility", ""))
            world = False
            if hv is not None:
                ev = (await ts.s.events.get_events(ts.server_name, [hv])).get(hv)
                world = ev is not None and ev.content.get("history_visibility") == (
                    "world_readable")
            if not world:
                raise MatrixError(403, Codes.FORBIDDEN,
                                  f"User {user_id} is not in room {room_id}")
        return access.state

    async def get_members(
        self, ts: TenantStores, user_id: str, room_id: str, *,
        membership: str | None = None, not_membership: str | None = None,
    ) -> list[JsonDict]:
        state = await self._state_access(ts, room_id, user_id)
        ids = [eid for (t, _), eid in state.items() if t == "m.room.member"]
        events = await ts.s.events.get_events(ts.server_name, ids)
        chosen = [
            ev for ev in events.values()
            if (membership is None or ev.content.get("membership") == membership)
            and (not_membership is None or ev.content.get("membership") != not_membership)
        ]
        chosen.sort(key=lambda e: e.state_key or "")
        now = self._clock.time_ms()
        return [format_client_event(ev, now) for ev in chosen]

    async def get_joined_members(
        self, ts: TenantStores, user_id: str, room_id: str
    ) -> dict[str, JsonDict]:
        check_room_id(room_id)
        state = await require_joined(ts, room_id, user_id)
        ids = [eid for (t, _), eid in state.items() if t == "m.room.member"]
        events = await ts.s.events.get_events(ts.server_name, ids)
        out: dict[str, JsonDict] = {}
        for ev in sorted(events.values(), key=lambda e: e.state_key or ""):
            if ev.content.get("membership") == "join" and ev.state_key is not None:
                out[ev.state_key] = {
                    "display_name": ev.content.get("displayname"),
                    "avatar_url": ev.content.get("avatar_url"),
                }
        return out

    async def joined_rooms(self, ts: TenantStores, user_id: str) -> list[str]:
        rooms = await ts.s.memberships.rooms_with_membership_events(ts.server_name, user_id)
        out = []
        for rid in rooms:
            membership, _ = await get_membership(ts, rid, user_id)
            if membership == "join":
                out.append(rid)
        return out
