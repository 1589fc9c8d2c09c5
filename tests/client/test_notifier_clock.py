"""Long-poll and join-wait timeouts are fixed when the wait starts, even if
the clock moves before the timer task takes its first step."""

from __future__ import annotations

import asyncio

from federation.clock import FakeClock
from homeserver.handlers.room_joins import RoomJoins
from homeserver.notifier import Notifier


async def test_listener_deadline_fixed_at_registration() -> None:
    clock = FakeClock()
    notifier = Notifier(clock)
    with notifier.listen("hs.test", "@a:hs.test", ["!r:hs.test"]) as listener:
        waiting = asyncio.ensure_future(listener.wait(30_000))
        clock.advance(29)  # before the wait's first step
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        clock.advance(1)
        assert await asyncio.wait_for(waiting, 5) is False


async def test_listener_woken_before_deadline() -> None:
    clock = FakeClock()
    notifier = Notifier(clock)
    with notifier.listen("hs.test", "@a:hs.test", ["!r:hs.test"]) as listener:
        waiting = asyncio.ensure_future(listener.wait(30_000))
        await asyncio.sleep(0)
        notifier.notify("hs.test", room_ids=["!r:hs.test"])
        assert await asyncio.wait_for(waiting, 5) is True
    assert clock.pending_sleepers() == 0


async def test_join_wait_deadline_fixed_at_call() -> None:
    clock = FakeClock()
    joins = RoomJoins()
    async with joins.joining("hs.test", "!r:hs.test"):
        waiting = asyncio.ensure_future(joins.wait("hs.test", "!r:hs.test", clock, 10.0))
        await asyncio.sleep(0)
        clock.advance(9.5)
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()
        clock.advance(0.5)
        assert await asyncio.wait_for(waiting, 5) is True
