"""Token-bucket rate limiting on the injected Clock.

Client-Server API "Rate limiting": a limited request answers 429
``M_LIMIT_EXCEEDED`` with ``retry_after_ms``, the time until one more request
would pass. Each key (``(tenant, "ip", address)``, ``(tenant, "user", id)``)
holds a bucket of ``burst`` tokens refilled at ``per_second``; every attempt
takes one. Time comes from :class:`federation.clock.Clock`, so tests advance a
FakeClock instead of sleeping. Buckets live in memory: a restart forgives.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

from federation.clock import Clock
from federation.errors import Codes, MatrixError

__all__ = ["Ratelimiter"]


class Ratelimiter:
    def __init__(
        self,
        clock: Clock,
        *,
        per_second: float,
        burst: int,
        max_keys: int = 100_000,
    ) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("per_second must be positive and burst at least 1")
        self._clock = clock
        self._rate = per_second
        self._burst = float(burst)
        self._max_keys = max_keys
        # key -> (tokens left, monotonic time they were counted)
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def _tokens(self, key: Hashable, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self._burst
        tokens, at = entry
        return min(self._burst, tokens + (now - at) * self._rate)

    def retry_after_ms(self, key: Hashable) -> int:
        """0 if an attempt would pass now, else milliseconds until one would."""
        tokens = self._tokens(key, self._clock.monotonic())
        if tokens >= 1.0:
            return 0
        return max(1, math.ceil((1.0 - tokens) / self._rate * 1000))

    def check(self, key: Hashable, *, what: str = "requests") -> None:
        """Take one token for ``key`` or raise 429 ``M_LIMIT_EXCEEDED``."""
        now = self._clock.monotonic()
        tokens = self._tokens(key, now)
        if tokens < 1.0:
            retry = max(1, math.ceil((1.0 - tokens) / self._rate * 1000))
            raise MatrixError(
                429,
                Codes.LIMIT_EXCEEDED,
                f"Too many {what}; retry in {math.ceil(retry / 1000)} s",
                extra={"retry_after_ms": retry},
            )
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self._max_keys:
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled (they hold no information)."""
        full = [k for k in self._buckets if self._tokens(k, now) >= self._burst]
        for k in full:
            del self._buckets[k]
