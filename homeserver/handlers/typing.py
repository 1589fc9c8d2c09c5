"""Typing notifications (client-server-api "Typing Notifications").

Kept in memory, as the spec intends (ephemeral): per tenant and room, the
users typing and when each stops. Each change takes the next serial of the
tenant's typing stream, the third part of a sync token. A user stops typing
after ``timeout`` ms of the server's Clock unless they send again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from federation.clock import Clock
from homeserver.notifier import Notifier

__all__ = ["MAX_TYPING_TIMEOUT_MS", "TypingHandler"]

# Synapse's bound on how long one request keeps a user typing.
MAX_TYPING_TIMEOUT_MS = 120_000


@dataclass
class _Room:
    until: dict[str, float] = field(default_factory=dict)  # user -> monotonic deadline
    serial: int = 0


class TypingHandler:
    def __init__(self, clock: Clock, notifier: Notifier) -> None:
        self._clock = clock
        self._notifier = notifier
        self._rooms: dict[tuple[str, str], _Room] = {}
        self._serial: dict[str, int] = {}
        self._timers: set[asyncio.Task[None]] = set()

    def current_serial(self, tenant: str) -> int:
        return self._serial.get(tenant, 0)

    def _bump(self, tenant: str, room_id: str, room: _Room) -> None:
        serial = self._serial.get(tenant, 0) + 1
        self._serial[tenant] = serial
        room.serial = serial
        self._notifier.notify(tenant, room_ids=[room_id])

    def set_typing(
        self, tenant: str, room_id: str, user_id: str, typing: bool, timeout_ms: int = 30_000
    ) -> None:
        room = self._rooms.setdefault((tenant, room_id), _Room())
        if not typing:
            if room.until.pop(user_id, None) is not None:
                self._bump(tenant, room_id, room)
            return
        timeout_ms = max(0, min(timeout_ms, MAX_TYPING_TIMEOUT_MS))
        deadline = self._clock.monotonic() + timeout_ms / 1000
        was_typing = user_id in room.until
        room.until[user_id] = deadline
        if not was_typing:
            self._bump(tenant, room_id, room)
        task = asyncio.ensure_future(self._expire(tenant, room_id, user_id, deadline))
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    async def _expire(self, tenant: str, room_id: str, user_id: str, deadline: float) -> None:
        await self._clock.sleep(max(0.0, deadline - self._clock.monotonic()))
        room = self._rooms.get((tenant, room_id))
        if room is not None and room.until.get(user_id) == deadline:
            del room.until[user_id]
            self._bump(tenant, room_id, room)

    def typing_users(self, tenant: str, room_id: str) -> list[str]:
        room = self._rooms.get((tenant, room_id))
        if room is None:
            return []
        now = self._clock.monotonic()
        return sorted(u for u, d in room.until.items() if d > now)

    def changed_rooms(self, tenant: str, room_ids: set[str], since: int) -> list[str]:
        """Rooms among ``room_ids`` whose typing set changed after serial ``since``.

        A ``since`` ahead of the current serial (the server restarted and
        typing started again from 0) counts every room with typing users.
        """
        restarted = since > self.current_serial(tenant)
        out = []
        for rid in sorted(room_ids):
            room = self._rooms.get((tenant, rid))
            if room is None:
                continue
            if room.serial > since or (restarted and room.until):
                out.append(rid)
        return out

    async def close(self) -> None:
        for task in list(self._timers):
            task.cancel()
        for task in list(self._timers):
            try:
                await task
            except asyncio.CancelledError:
                pass
