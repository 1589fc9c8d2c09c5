"""Peer health from probe results: ``online``, ``degraded`` or ``offline``.

Pure: probes and settings in, a state and its reason out
(docs/usage/room_discovery.md, "Peer health"). A probe asks the peer's
``GET /_matrix/federation/v1/version`` and ``GET /_matrix/key/v2/server``
(server-server-api "Retrieving server keys": a response is fresh while its
``valid_until_ts`` is in the future).

Over the probes of the rolling window, oldest first:

- no probe yet: ``unknown``;
- the last ``offline_failures`` probes all failed: ``offline``;
- any failure in the window, stale keys on the last probe, a median latency
  above ``degraded_latency_ms``, or the delivery queue backing off from the
  destination (``delivery_error``, its last error): ``degraded``;
- otherwise ``online``.

The service evaluates after every probe, and again whenever the delivery
queue's view of the destination changes (no new probe then).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from storage.stores.discovery import ProbeRecord

__all__ = ["HealthSettings", "PeerState", "evaluate", "STATES"]

PeerState = Literal["unknown", "online", "degraded", "offline"]
STATES: tuple[PeerState, ...] = ("unknown", "online", "degraded", "offline")


@dataclass(frozen=True)
class HealthSettings:
    degraded_latency_ms: int
    offline_failures: int


def evaluate(
    probes: Sequence[ProbeRecord],
    settings: HealthSettings,
    *,
    delivery_error: str | None = None,
) -> tuple[PeerState, str]:
    """The state the window of ``probes`` gives, and why (for operators)."""
    if not probes:
        return "unknown", "not probed yet"
    trailing = 0
    for p in reversed(probes):
        if p.ok:
            break
        trailing += 1
    last = probes[-1]
    if trailing >= settings.offline_failures:
        return "offline", f"the last {trailing} probes failed: {last.error or 'no answer'}"
    failed = sum(1 for p in probes if not p.ok)
    if failed:
        return "degraded", f"{failed} of {len(probes)} probes failed (last: {last.error})" \
            if not last.ok else f"{failed} of {len(probes)} probes failed"
    if not last.keys_fresh:
        return "degraded", "its signing keys are expired or missing (valid_until_ts passed)"
    median = statistics.median(p.latency_ms for p in probes)
    if median > settings.degraded_latency_ms:
        return "degraded", f"median latency {median:.0f} ms > {settings.degraded_latency_ms} ms"
    if delivery_error is not None:
        return "degraded", f"outbound deliveries are backing off: {delivery_error}"
    return "online", f"{len(probes)} probes answered, median latency {median:.0f} ms"
