"""Prometheus metrics, one registry per HomeServer.

A per-server registry (not prometheus_client's global one) lets tests run
several homeservers in one process without "duplicated timeseries" errors.
Other components add their own metrics to ``Metrics.registry``.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# Buckets up to 60 s: federation /send and /sync long-polls are legitimately slow.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.http_requests = Counter(
            "concord_http_requests",
            "HTTP requests answered, by servlet (route pattern), method and status.",
            ["listener", "servlet", "method", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "concord_http_request_duration_seconds",
            "Time from receiving an HTTP request to finishing its response.",
            ["listener", "servlet", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_request(
        self, listener: str, servlet: str, method: str, status: int, seconds: float
    ) -> None:
        self.http_requests.labels(listener, servlet, method, str(status)).inc()
        self.http_latency.labels(listener, servlet, method).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
