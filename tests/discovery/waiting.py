"""Waiting on real loopback I/O in the discovery tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# Crawls, probes and deliveries travel over real loopback HTTP, so waiting for
# them is bounded by real time (generous, for a loaded CI machine), never by a
# count of short sleeps; the schedules under test run on the FakeClock.
REAL_TIME_BOUND_S = 30.0


async def until(cond: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + REAL_TIME_BOUND_S
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)
