"""The federation outbox, outbound transactions and destination backoff state.

Spec: ``server-server-api.md`` "Transactions" (a transaction carries at most
50 PDUs and 100 EDUs; its ``txnId`` is unique per sender and reused when the
same transaction is retried). Tables: migration ``0006_federation_outbox``.

Rows are written with :meth:`OutboxStore.enqueue_pdu_txn` inside the
transaction that persists the event, so an event and what we owe other
servers for it commit or roll back together. Writers and the transaction
builder take the origin's outbox lock, which keeps ``seq`` in commit order and
makes a builder woken during a write wait for that write to end.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage.database import Database, Transaction
from storage.stores.state import allocate_counter, chunks, in_list

__all__ = [
    "MAX_EDUS_PER_TRANSACTION",
    "MAX_PDUS_PER_TRANSACTION",
    "DestinationState",
    "OutboundTransaction",
    "OutboxStore",
    "QueuedEdu",
    "outbox_lock",
]

#: Spec "Transactions": "a transaction is limited in size; they can have at
#: most 50 PDUs and 100 EDUs".
MAX_PDUS_PER_TRANSACTION = 50
MAX_EDUS_PER_TRANSACTION = 100


def outbox_lock(origin: str) -> str:
    return f"federation_outbox:{origin}"


@dataclass(frozen=True)
class QueuedEdu:
    destination: str
    edu_type: str
    content: dict[str, Any]


@dataclass(frozen=True)
class OutboundTransaction:
    """A transaction ready to ``PUT /send/{txn_id}``; ``body`` is exact."""

    origin: str
    destination: str
    txn_id: str
    origin_server_ts: int
    pdus: list[dict[str, Any]]
    edus: list[dict[str, Any]]
    #: Outbox rows it carries (``seq``), in order.
    seqs: list[int]
    #: Earlier attempts to send this very transaction.
    attempts: int
    #: PDU rows whose event is no longer stored (purged): dropped from the body.
    missing_event_ids: list[str]
    #: When each PDU's row was queued, by event ID (delivery latency).
    queued_ts: dict[str, int] = field(default_factory=dict)
    #: When the oldest row it carries was queued (``federation.max_delivery_age``).
    oldest_queued_ts: int = 0
    #: Built by an earlier call (so it may have reached the peer, whatever we
    #: recorded): its body must never change under this ``txn_id``.
    in_flight: bool = False

    @property
    def body(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "origin_server_ts": self.origin_server_ts,
            "pdus": self.pdus,
            "edus": self.edus,
        }


@dataclass(frozen=True)
class DestinationState:
    destination: str
    failure_count: int
    retry_interval_ms: int
    next_retry_ts: int | None
    last_success_ts: int | None
    last_failure_ts: int | None
    last_error: str | None


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def database(self) -> Database:
        return self._db

    # Writing the outbox

    async def enqueue_pdu_txn(
        self,
        txn: Transaction,
        origin: str,
        destinations: Collection[str],
        event_id: str,
        room_id: str,
        now_ms: int,
    ) -> None:
        """One row per destination for ``event_id``, in the caller's transaction."""
        if not destinations:
            return
        await txn.lock(outbox_lock(origin))
        seq = await allocate_counter(txn, origin, "federation_outbox", 1)
        await txn.executemany(
            "INSERT INTO federation_outbox (origin, destination, seq, kind, event_id, room_id, "
            "created_ts) VALUES ($1, $2, $3, 'pdu', $4, $5, $6)",
            [(origin, d, seq, event_id, room_id, now_ms) for d in sorted(destinations)],
        )

    async def enqueue_edus_txn(
        self, txn: Transaction, origin: str, edus: Sequence[QueuedEdu], now_ms: int
    ) -> None:
        if not edus:
            return
        await txn.lock(outbox_lock(origin))
        first = await allocate_counter(txn, origin, "federation_outbox", len(edus))
        await txn.executemany(
            "INSERT INTO federation_outbox (origin, destination, seq, kind, edu_type, "
            "edu_content, created_ts) VALUES ($1, $2, $3, 'edu', $4, $5, $6)",
            [
                (origin, e.destination, first + n, e.edu_type,
                 json.dumps(e.content, ensure_ascii=False), now_ms)
                for n, e in enumerate(edus)
            ],
        )

    # Building and completing transactions

    async def next_transaction(
        self, origin: str, destination: str, now_ms: int
    ) -> OutboundTransaction | None:
        """The transaction to send next: the one in flight (unchanged), else a
        new one of the oldest rows (≤50 PDUs, ≤100 EDUs); ``None`` if nothing
        is queued."""
        async with self._db.transaction("federation_next_transaction") as txn:
            await txn.lock(outbox_lock(origin))
            row = await txn.fetchrow(
                "SELECT txn_id, origin_server_ts, attempts FROM federation_outbox_transactions "
                "WHERE origin = $1 AND destination = $2",
                origin, destination,
            )
            if row is not None:
                txn_id, ts, attempts = str(row[0]), int(row[1]), int(row[2])
                rows = await txn.fetch(
                    "SELECT seq, kind, event_id, edu_type, edu_content, created_ts FROM federation_outbox "
                    "WHERE origin = $1 AND destination = $2 AND txn_id = $3 ORDER BY seq",
                    origin, destination, txn_id,
                )
            else:
                rows = await txn.fetch(
                    "SELECT seq, kind, event_id, edu_type, edu_content, created_ts FROM federation_outbox "
                    "WHERE origin = $1 AND destination = $2 AND kind = 'pdu' AND txn_id IS NULL "
                    "ORDER BY seq LIMIT $3",
                    origin, destination, MAX_PDUS_PER_TRANSACTION,
                )
                rows += await txn.fetch(
                    "SELECT seq, kind, event_id, edu_type, edu_content, created_ts FROM federation_outbox "
                    "WHERE origin = $1 AND destination = $2 AND kind = 'edu' AND txn_id IS NULL "
                    "ORDER BY seq LIMIT $3",
                    origin, destination, MAX_EDUS_PER_TRANSACTION,
                )
                if not rows:
                    return None
                rows.sort(key=lambda r: int(r[0]))
                txn_id = await self._new_txn_id(txn, origin, destination, now_ms)
                ts, attempts = now_ms, 0
                await txn.execute(
                    "INSERT INTO federation_outbox_transactions (origin, destination, txn_id, "
                    "origin_server_ts) VALUES ($1, $2, $3, $4)",
                    origin, destination, txn_id, ts,
                )
                seqs = [int(r[0]) for r in rows]
                for part in chunks(seqs):
                    await txn.execute(
                        f"UPDATE federation_outbox SET txn_id = $3 WHERE origin = $1 AND "
                        f"destination = $2 AND seq IN ({in_list(part, 4)})",
                        origin, destination, txn_id, *part,
                    )
            event_ids = [str(r[2]) for r in rows if r[1] == "pdu"]
            pdu_json: dict[str, dict[str, Any]] = {}
            for part in chunks(event_ids):
                for r in await txn.fetch(
                    "SELECT event_id, json FROM events WHERE tenant = $1 AND event_id IN "
                    f"({in_list(part, 2)})",
                    origin, *part,
                ):
                    pdu_json[str(r[0])] = json.loads(r[1])
        pdus = [pdu_json[e] for e in event_ids if e in pdu_json]
        edus = [
            {"edu_type": str(r[3]), "content": json.loads(r[4])} for r in rows if r[1] == "edu"
        ]
        return OutboundTransaction(
            origin, destination, txn_id, ts, pdus, edus, [int(r[0]) for r in rows], attempts,
            [e for e in event_ids if e not in pdu_json],
            queued_ts={str(r[2]): int(r[5]) for r in rows if r[1] == "pdu"},
            oldest_queued_ts=min((int(r[5]) for r in rows), default=0),
            in_flight=row is not None,
        )

    async def reissue_transaction(
        self, origin: str, destination: str, txn_id: str, now_ms: int
    ) -> str:
        """Move the rows left in ``txn_id`` to a new transaction ID and return it.

        For a transaction in flight whose body changed (an event of it was
        purged): the peer may hold ``txn_id`` with the old body already, and
        the spec's idempotency is per ``txnId``, so a receiver refuses the
        same ID with other content. Its attempts carry over.
        """
        async with self._db.transaction("federation_reissue_transaction") as txn:
            await txn.lock(outbox_lock(origin))
            new_id = await self._new_txn_id(txn, origin, destination, now_ms)
            await txn.execute(
                "UPDATE federation_outbox_transactions SET txn_id = $4, origin_server_ts = $5 "
                "WHERE origin = $1 AND destination = $2 AND txn_id = $3",
                origin, destination, txn_id, new_id, now_ms,
            )
            await txn.execute(
                "UPDATE federation_outbox SET txn_id = $4 WHERE origin = $1 AND "
                "destination = $2 AND txn_id = $3",
                origin, destination, txn_id, new_id,
            )
        return new_id

    async def _new_txn_id(
        self, txn: Transaction, origin: str, destination: str, now_ms: int
    ) -> str:
        await txn.execute(
            "INSERT INTO federation_txn_counters (origin, destination, last_n) "
            "VALUES ($1, $2, 0) ON CONFLICT (origin, destination) DO NOTHING",
            origin, destination,
        )
        rows = await txn.fetch(
            "UPDATE federation_txn_counters SET last_n = last_n + 1 "
            "WHERE origin = $1 AND destination = $2 RETURNING last_n",
            origin, destination,
        )
        return f"{now_ms}-{int(rows[0][0])}"

    async def complete_transaction(self, origin: str, destination: str, txn_id: str) -> None:
        """The destination acknowledged ``txn_id``: its rows are done."""
        async with self._db.transaction("federation_complete_transaction") as txn:
            await txn.execute(
                "DELETE FROM federation_outbox WHERE origin = $1 AND destination = $2 "
                "AND txn_id = $3",
                origin, destination, txn_id,
            )
            await txn.execute(
                "DELETE FROM federation_outbox_transactions WHERE origin = $1 AND "
                "destination = $2 AND txn_id = $3",
                origin, destination, txn_id,
            )

    async def record_attempt_failure(
        self, origin: str, destination: str, txn_id: str, now_ms: int, error: str
    ) -> None:
        async with self._db.transaction("federation_attempt_failed") as txn:
            await txn.execute(
                "UPDATE federation_outbox_transactions SET attempts = attempts + 1 "
                "WHERE origin = $1 AND destination = $2 AND txn_id = $3",
                origin, destination, txn_id,
            )
            await txn.execute(
                "UPDATE federation_outbox SET attempts = attempts + 1, last_attempt_ts = $4, "
                "first_attempt_ts = COALESCE(first_attempt_ts, $4), last_error = $5 "
                "WHERE origin = $1 AND destination = $2 AND txn_id = $3",
                origin, destination, txn_id, now_ms, error[:1000],
            )

    # Reading the queues

    async def pending_queues(self) -> list[tuple[str, str]]:
        """Every ``(origin, destination)`` with something queued."""
        rows = await self._db.fetch(
            "SELECT DISTINCT origin, destination FROM federation_outbox ORDER BY origin, destination"
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    async def queue_depth(self, origin: str, destination: str) -> int:
        return int(await self._db.fetchval(
            "SELECT COUNT(*) FROM federation_outbox WHERE origin = $1 AND destination = $2",
            origin, destination,
        ))

    async def queue_depths(self) -> dict[tuple[str, str], int]:
        """Rows queued per ``(origin, destination)`` (the queue-depth metric)."""
        rows = await self._db.fetch(
            "SELECT origin, destination, COUNT(*) FROM federation_outbox "
            "GROUP BY origin, destination"
        )
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    async def backing_off(self, now_ms: int) -> list[str]:
        """Destinations whose next retry is still ahead."""
        rows = await self._db.fetch(
            "SELECT destination FROM federation_destinations WHERE next_retry_ts > $1",
            now_ms,
        )
        return [str(r[0]) for r in rows]

    async def queued_event_ids(self, origin: str, destination: str) -> list[str]:
        rows = await self._db.fetch(
            "SELECT event_id FROM federation_outbox WHERE origin = $1 AND destination = $2 "
            "AND kind = 'pdu' ORDER BY seq",
            origin, destination,
        )
        return [str(r[0]) for r in rows]

    # Destinations

    async def get_destination(self, destination: str) -> DestinationState | None:
        row = await self._db.fetchrow(
            "SELECT destination, failure_count, retry_interval_ms, next_retry_ts, "
            "last_success_ts, last_failure_ts, last_error FROM federation_destinations "
            "WHERE destination = $1",
            destination,
        )
        return None if row is None else _destination(row)

    async def list_destinations(self) -> list[DestinationState]:
        rows = await self._db.fetch(
            "SELECT destination, failure_count, retry_interval_ms, next_retry_ts, "
            "last_success_ts, last_failure_ts, last_error FROM federation_destinations "
            "ORDER BY destination"
        )
        return [_destination(r) for r in rows]

    async def record_failure(
        self, destination: str, now_ms: int, retry_interval_ms: int, error: str
    ) -> None:
        await self._db.execute(
            "INSERT INTO federation_destinations (destination, failure_count, retry_interval_ms, "
            "next_retry_ts, last_failure_ts, last_error) VALUES ($1, 1, $2, $3, $4, $5) "
            "ON CONFLICT (destination) DO UPDATE SET "
            "failure_count = federation_destinations.failure_count + 1, "
            "retry_interval_ms = $2, next_retry_ts = $3, last_failure_ts = $4, last_error = $5",
            destination, retry_interval_ms, now_ms + retry_interval_ms, now_ms, error[:1000],
        )

    async def record_success(self, destination: str, now_ms: int) -> None:
        await self._db.execute(
            "INSERT INTO federation_destinations (destination, last_success_ts) VALUES ($1, $2) "
            "ON CONFLICT (destination) DO UPDATE SET failure_count = 0, retry_interval_ms = 0, "
            "next_retry_ts = NULL, last_success_ts = $2",
            destination, now_ms,
        )

    async def reset_backoff(self, destinations: Iterable[str]) -> None:
        """Retry these destinations at once (e.g. they just contacted us)."""
        for d in destinations:
            await self._db.execute(
                "UPDATE federation_destinations SET next_retry_ts = NULL, retry_interval_ms = 0 "
                "WHERE destination = $1",
                d,
            )


def _destination(row: Any) -> DestinationState:
    def opt(v: Any) -> int | None:
        return None if v is None else int(v)

    return DestinationState(
        destination=str(row[0]),
        failure_count=int(row[1]),
        retry_interval_ms=int(row[2]),
        next_retry_ts=opt(row[3]),
        last_success_ts=opt(row[4]),
        last_failure_ts=opt(row[5]),
        last_error=row[6],
    )
