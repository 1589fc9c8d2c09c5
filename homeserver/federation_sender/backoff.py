"""How long to leave a destination alone after a failed transaction.

Exponential backoff with jitter between bounds, in the spirit of Synapse's
``destination_min_retry_interval`` (10 min there; 10 s here, since every
retry is one cheap request) up to a day. Pure: the caller passes the random
generator and stores the interval.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["BackoffPolicy", "DeliveryLimits"]


@dataclass(frozen=True)
class BackoffPolicy:
    min_interval_ms: int = 10_000
    max_interval_ms: int = 24 * 3600 * 1000
    multiplier: float = 2.0
    #: Each interval is scaled by a factor in [1 - jitter, 1 + jitter], so
    #: many queues that failed together do not retry together.
    jitter: float = 0.2

    def next_interval_ms(
        self, previous_ms: int, rng: random.Random, retry_after_ms: int | None = None
    ) -> int:
        """The wait after a failure, given the wait after the previous one
        (0: first failure). A peer's ``retry_after_ms`` (429) is honoured
        when longer, within the maximum."""
        base = self.min_interval_ms if previous_ms <= 0 else previous_ms * self.multiplier
        base = min(base, self.max_interval_ms)
        interval = int(base * rng.uniform(1 - self.jitter, 1 + self.jitter))
        interval = max(self.min_interval_ms, min(interval, self.max_interval_ms))
        if retry_after_ms is not None:
            interval = max(interval, min(retry_after_ms, self.max_interval_ms))
        return interval


@dataclass(frozen=True)
class DeliveryLimits:
    """When the sender gives up on a delivery and moves it to the dead letters
    (``federation.max_delivery_attempts`` / ``max_delivery_age``)."""

    max_attempts: int = 20
    max_age_ms: int = 7 * 24 * 3600 * 1000
