"""Wakes long-polling ``/sync`` requests when something they wait for happens.

Spec: client-server-api ``GET /sync`` ``timeout``: "The maximum time to wait,
in milliseconds, before returning this request" if nothing new has happened.

A request registers a :class:`Listener` for its tenant, rooms and user
*before* it looks for news, then waits on it; anything notified in between
wakes it at once, so no event is missed. Timeouts run on the server's
:class:`~federation.clock.Clock` (a FakeClock in tests).

Who notifies: the client API after it creates events, typing and receipt
changes; federation code after it persists events received from other
servers (``hs.notifier.on_new_events(tenant, events)``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from federation.clock import Clock
from federation.events import Event

__all__ = ["Listener", "Notifier"]


class Listener:
    def __init__(
        self, notifier: Notifier, tenant: str, user_id: str, room_ids: Iterable[str]
    ) -> None:
        self._notifier = notifier
        self.tenant = tenant
        self.user_id = user_id
        self.room_ids = set(room_ids)
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # The timeout counts from when the request started listening, fixed
        # now: the sleeper below may take its first step after the clock moved.
        self._started = notifier.clock.monotonic()

    def matches(self, room_ids: set[str], user_ids: set[str]) -> bool:
        return bool(self.room_ids & room_ids) or self.user_id in user_ids

    def wake(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

    @property
    def woken(self) -> bool:
        return self._future.done()

    async def wait(self, timeout_ms: int) -> bool:
        """Wait until woken (True) or ``timeout_ms`` of clock time passed since
        the listener was registered (False)."""
        if self._future.done():
            return True
        if timeout_ms <= 0:
            return False
        clock = self._notifier.clock
        deadline = self._started + timeout_ms / 1000

        async def until_deadline() -> None:
            remaining = deadline - clock.monotonic()
            if remaining > 0:
                await clock.sleep(remaining)

        sleeper = asyncio.ensure_future(until_deadline())
        try:
            await asyncio.wait({self._future, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
        return self._future.done()

    def close(self) -> None:
        self._notifier._remove(self)
        if not self._future.done():
            self._future.cancel()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Notifier:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._listeners: dict[str, set[Listener]] = {}

    def listen(self, tenant: str, user_id: str, room_ids: Iterable[str]) -> Listener:
        listener = Listener(self, tenant, user_id, room_ids)
        self._listeners.setdefault(tenant, set()).add(listener)
        return listener

    def _remove(self, listener: Listener) -> None:
        group = self._listeners.get(listener.tenant)
        if group is not None:
            group.discard(listener)
            if not group:
                del self._listeners[listener.tenant]

    def notify(
        self, tenant: str, *, room_ids: Iterable[str] = (), user_ids: Iterable[str] = ()
    ) -> None:
        """Wake the tenant's listeners in any of ``room_ids`` or for any of ``user_ids``."""
        rooms, users = set(room_ids), set(user_ids)
        for listener in list(self._listeners.get(tenant, ())):
            if listener.matches(rooms, users):
                listener.wake()

    def on_new_events(self, tenant: str, events: Iterable[Event]) -> None:
        """New events were persisted for ``tenant``: wake who waits for their
        rooms, and the targets of membership events (an invite to a room the
        user is not in yet)."""
        rooms: set[str] = set()
        users: set[str] = set()
        for ev in events:
            rooms.add(ev.room_id)
            if ev.type == "m.room.member" and ev.state_key is not None:
                users.add(ev.state_key)
        self.notify(tenant, room_ids=rooms, user_ids=users)

    def listener_count(self) -> int:
        return sum(len(g) for g in self._listeners.values())
