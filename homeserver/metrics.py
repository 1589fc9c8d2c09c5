"""Prometheus metrics, one registry per HomeServer.

A per-server registry (not prometheus_client's global one) lets tests run
several homeservers in one process without "duplicated timeseries" errors.
Other components add their own metrics to ``Metrics.registry``.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "FederationMetrics", "Metrics"]

# Buckets up to 60 s: federation /send and /sync long-polls are legitimately slow.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Delivery to a peer that was down is measured in hours: up to a day.
_DELIVERY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    3600.0, 21600.0, 86400.0,
)


class FederationMetrics:
    """Delivery guarantees (docs/usage/delivery.md, "Metrics"): outbound
    queues, transactions, dead letters and latency; inbound transactions."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.queue_depth = Gauge(
            "concord_federation_queue_depth",
            "Deliveries (PDUs and EDUs) queued for a destination, every sending tenant together.",
            ["destination"],
            registry=registry,
        )
        self.transactions_sent = Counter(
            "concord_federation_transactions_sent",
            "Transactions a destination acknowledged (200 to PUT /send).",
            registry=registry,
        )
        self.transactions_failed = Counter(
            "concord_federation_transactions_failed",
            "Transaction attempts that failed, by reason: timeout, connection, http_429, "
            "http_5xx, http_4xx (final: dead-lettered) or error.",
            ["reason"],
            registry=registry,
        )
        self.pdus_sent = Counter(
            "concord_federation_pdus_sent",
            "PDUs in acknowledged transactions (including ones the peer refused).",
            registry=registry,
        )
        self.edus_sent = Counter(
            "concord_federation_edus_sent",
            "EDUs in acknowledged transactions.",
            registry=registry,
        )
        self.retries = Counter(
            "concord_federation_transaction_retries",
            "Attempts to send a transaction that had failed before (same txnId).",
            registry=registry,
        )
        self.destinations_backing_off = Gauge(
            "concord_federation_destinations_backing_off",
            "Destinations waiting out a backoff after a failure.",
            registry=registry,
        )
        self.dead_letters = Gauge(
            "concord_federation_dead_letters",
            "Deliveries in the dead-letter store, by reason.",
            ["reason"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "concord_federation_dead_lettered",
            "Deliveries moved to the dead-letter store, by reason.",
            ["reason"],
            registry=registry,
        )
        self.delivery_latency = Histogram(
            "concord_federation_delivery_latency_seconds",
            "From an event's outbox row being written (with the event) to the destination "
            "acknowledging the transaction that carried it.",
            buckets=_DELIVERY_BUCKETS,
            registry=registry,
        )
        self.inbound_transactions = Counter(
            "concord_federation_inbound_transactions",
            "Transactions received (PUT /send), by result: processed, replayed (a known "
            "txnId, answered from the record) or refused.",
            ["result"],
            registry=registry,
        )
        self.inbound_pdus = Counter(
            "concord_federation_inbound_pdus",
            "PDUs received in transactions, by result: accepted, duplicate, soft_failed, "
            "rejected or refused.",
            ["result"],
            registry=registry,
        )

    @classmethod
    def unregistered(cls) -> FederationMetrics:
        """Metrics nobody scrapes (components built outside a HomeServer)."""
        return cls(CollectorRegistry(auto_describe=True))


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
        self.federation = FederationMetrics(self.registry)

    def observe_request(
        self, listener: str, servlet: str, method: str, status: int, seconds: float
    ) -> None:
        self.http_requests.labels(listener, servlet, method, str(status)).inc()
        self.http_latency.labels(listener, servlet, method).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
