"""Testable time: the one Clock the whole server reads.

Pure protocol code takes ``now_ms`` as an argument; the I/O edges (keyring,
sender, HTTP handlers) take a :class:`Clock`. Tests pass a :class:`FakeClock`
and ``advance()`` it instead of sleeping, so retry, backoff and expiry are
tested deterministically.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def time_ms(self) -> int:
        """Milliseconds since the Unix epoch (wall clock)."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock, for measuring durations."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class RealClock:
    def time_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # noqa: TID251 - the one real sleep


class FakeClock:
    """A clock that moves only when a test calls :meth:`advance`.

    ``sleep`` parks the caller on a future that ``advance`` resolves once the
    fake time reaches its deadline, so code under test runs unchanged.
    """

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms
        self._mono = 0.0
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def time_ms(self) -> int:
        return self._now_ms

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + max(seconds, 0.0), next(self._seq), fut))
        await fut

    def pending_sleepers(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self._mono += seconds
        self._now_ms += int(round(seconds * 1000))
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
