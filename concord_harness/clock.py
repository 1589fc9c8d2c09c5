"""A real clock that can be skewed, for testing how nodes cope with clock drift.

Each in-process node of a :class:`~concord_harness.Federation` runs on its own
:class:`SkewableClock`. ``skew(seconds)`` shifts the wall clock the node reads
(``time_ms``: ``origin_server_ts``, key ``valid_until_ts``, X-Matrix checks)
without touching ``monotonic`` or ``sleep``, which measure durations and must
keep running at the real rate. A clock that is one hour fast is
``skew(3600)``; one that is behind is ``skew(-3600)``.
"""

from __future__ import annotations

from federation.clock import Clock, RealClock

__all__ = ["SkewableClock"]


class SkewableClock:
    """:class:`~federation.clock.RealClock` plus a settable wall-clock offset."""

    def __init__(self, inner: Clock | None = None, *, offset_s: float = 0.0) -> None:
        self._inner: Clock = inner if inner is not None else RealClock()
        self._offset_ms = int(round(offset_s * 1000))

    @property
    def offset_s(self) -> float:
        """The current offset from the inner clock, in seconds."""
        return self._offset_ms / 1000

    def skew(self, seconds: float) -> None:
        """Set the offset to ``seconds`` (not cumulative: ``skew(0)`` undoes it)."""
        self._offset_ms = int(round(seconds * 1000))

    def time_ms(self) -> int:
        return self._inner.time_ms() + self._offset_ms

    def monotonic(self) -> float:
        return self._inner.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
