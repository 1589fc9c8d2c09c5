"""Read receipts and read markers.

Spec: client-server-api "Receipts" (``POST
/rooms/{roomId}/receipt/{receiptType}/{eventId}``; ``m.read`` is shared
with the room through ``/sync``'s ``m.receipt`` ephemeral event,
``m.read.private`` only with its owner) and "Fully read markers" (``POST
/rooms/{roomId}/read_markers``; ``m.fully_read`` is room account data).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from homeserver.handlers.client_stores import TenantStores
from homeserver.handlers.room_access import check_event_id, check_room_id, require_joined
from homeserver.notifier import Notifier
from storage.stores.receipts import Receipt

__all__ = ["RECEIPT_TYPES", "ReceiptsHandler", "receipt_event"]

RECEIPT_TYPES = ("m.read", "m.read.private", "m.fully_read")


def receipt_event(receipts: Iterable[Receipt], viewer: str) -> dict[str, Any] | None:
    """The ``m.receipt`` ephemeral event for ``viewer`` (private receipts of
    others left out), or None if there is nothing to show."""
    content: dict[str, Any] = {}
    for r in receipts:
        if r.receipt_type == "m.read.private" and r.user_id != viewer:
            continue
        data: dict[str, Any] = {"ts": r.ts}
        if r.thread_id:
            data["thread_id"] = r.thread_id
        content.setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = data
    if not content:
        return None
    return {"type": "m.receipt", "content": content}


SendEdu = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]


class ReceiptsHandler:
    def __init__(
        self, clock: Clock, notifier: Notifier, *, send_edu: SendEdu | None = None
    ) -> None:
        self._clock = clock
        self._notifier = notifier
        self._send_edu = send_edu

    async def _check_event(self, ts: TenantStores, room_id: str, event_id: str) -> None:
        check_event_id(event_id)
        stored = await ts.s.events.get_event(ts.server_name, event_id)
        if stored is None or stored.event.room_id != room_id:
            raise MatrixError(404, Codes.NOT_FOUND, f"Unknown event {event_id} in {room_id}")

    async def post_receipt(
        self, ts: TenantStores, user_id: str, room_id: str, receipt_type: str, event_id: str,
        thread_id: Any = None,
    ) -> None:
        check_room_id(room_id)
        if receipt_type not in RECEIPT_TYPES:
            raise MatrixError(400, Codes.INVALID_PARAM,
                              f"Unknown receipt type {receipt_type!r}")
        if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
            raise MatrixError(400, Codes.INVALID_PARAM, "thread_id must be a non-empty string")
        await require_joined(ts, room_id, user_id)
        await self._check_event(ts, room_id, event_id)
        await self._put(ts, user_id, room_id, receipt_type, event_id, thread_id or "")

    async def _put(
        self, ts: TenantStores, user_id: str, room_id: str, receipt_type: str, event_id: str,
        thread_id: str,
    ) -> None:
        if receipt_type == "m.fully_read":
            await ts.s.account_data.put(
                ts.server_name, user_id, room_id, "m.fully_read", {"event_id": event_id}
            )
            self._notifier.notify(ts.server_name, user_ids=[user_id])
            return
        now = self._clock.time_ms()
        await ts.s.receipts.put_receipt(
            ts.server_name, room_id, receipt_type, user_id, thread_id, event_id, now,
        )
        self._notifier.notify(ts.server_name, room_ids=[room_id])
        if receipt_type == "m.read" and self._send_edu is not None:
            # Private receipts stay on this server (spec "Private read receipts").
            data: dict[str, Any] = {"ts": now}
            if thread_id:
                data["thread_id"] = thread_id
            await self._send_edu(ts.server_name, room_id, "m.receipt", {
                room_id: {"m.read": {user_id: {"data": data, "event_ids": [event_id]}}}
            })

    async def read_markers(
        self, ts: TenantStores, user_id: str, room_id: str, body: Mapping[str, Any]
    ) -> None:
        check_room_id(room_id)
        wanted: list[tuple[str, str]] = []
        for rtype in RECEIPT_TYPES:
            value = body.get(rtype)
            if value is None:
                continue
            if not isinstance(value, str):
                raise MatrixError(400, Codes.INVALID_PARAM, f"{rtype} must be an event ID")
            wanted.append((rtype, value))
        await require_joined(ts, room_id, user_id)
        for _rtype, eid in wanted:
            await self._check_event(ts, room_id, eid)
        for rtype, eid in wanted:
            await self._put(ts, user_id, room_id, rtype, eid, "")
