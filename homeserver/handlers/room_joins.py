"""Remote joins in progress, so PDUs for a room being joined wait for the join.

Spec: ``server-server-api.md`` "Joining Rooms": once the resident server has
accepted our ``send_join`` it sends the room's new events to us, including
other servers' joins it accepts meanwhile ("the resident server sends the
join on to the other servers in the room"). Those can arrive before we have
stored the room (our join still fetches history and persists it), when the
room is still unknown here. Refusing them ("unknown room", a per-PDU error
inside a 200 ``/send`` answer) loses them for good: the sender does not
retry a PDU the peer answered. Synapse queues such PDUs until the join is
done (``FederationHandler.room_queues``); Concord makes the ``/send`` that
carries them wait for the join instead, so the answer still says what became
of each PDU and nothing is acknowledged before it is stored.

One registry per database (:func:`room_joins`): the joiner
(:class:`~homeserver.handlers.remote_join.RemoteJoiner`) and the inbound
transaction handler of that database meet there.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from federation.clock import Clock
from storage.database import Database

__all__ = ["JOIN_WAIT_S", "RoomJoins", "room_joins"]

#: How long a PDU for a room waits for our join of it. Below the sender's
#: request timeout (30 s), so the peer gets an answer rather than a timeout.
JOIN_WAIT_S = 20.0


class RoomJoins:
    """Joins this node is making, per ``(tenant, room_id)``."""

    def __init__(self) -> None:
        #: Per room being joined: resolved when the join is over, and how many
        #: joins of it are under way.
        self._pending: dict[tuple[str, str], tuple[asyncio.Future[None], int]] = {}
        self._waiting: Counter[tuple[str, str]] = Counter()

    def in_progress(self, tenant: str, room_id: str) -> bool:
        return (tenant, room_id) in self._pending

    def waiting(self, tenant: str, room_id: str) -> int:
        """How many PDUs are waiting for this join now."""
        return self._waiting[(tenant, room_id)]

    @asynccontextmanager
    async def joining(self, tenant: str, room_id: str) -> AsyncIterator[None]:
        """Around a join: PDUs for the room wait until it is over (stored or
        failed). Users of one tenant joining at once: until the last is over."""
        key = (tenant, room_id)
        if key not in self._pending:
            self._pending[key] = (asyncio.get_running_loop().create_future(), 0)
        done, joiners = self._pending[key]
        self._pending[key] = (done, joiners + 1)
        try:
            yield
        finally:
            done, joiners = self._pending[key]
            if joiners == 1:
                del self._pending[key]
                done.set_result(None)
            else:
                self._pending[key] = (done, joiners - 1)

    async def wait(self, tenant: str, room_id: str, clock: Clock,
                   timeout_s: float = JOIN_WAIT_S) -> bool:
        """If we are joining the room, wait (at most ``timeout_s`` on ``clock``)
        until that join is over; whether there was one to wait for."""
        key = (tenant, room_id)
        pending = self._pending.get(key)
        if pending is None:
            return False
        done = pending[0]
        self._waiting[key] += 1
        # An absolute deadline, fixed now: the timer task's first step may
        # come after the clock moved.
        deadline = clock.monotonic() + timeout_s

        async def until_deadline() -> None:
            remaining = deadline - clock.monotonic()
            if remaining > 0:
                await clock.sleep(remaining)

        timer = asyncio.ensure_future(until_deadline())
        try:
            await asyncio.wait({timer, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
        return True


_registries: weakref.WeakKeyDictionary[Database, RoomJoins] = weakref.WeakKeyDictionary()


def room_joins(db: Database) -> RoomJoins:
    """The registry of joins made by the tenants whose events live in ``db``."""
    found = _registries.get(db)
    if found is None:
        found = _registries[db] = RoomJoins()
    return found
