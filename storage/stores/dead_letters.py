"""Deliveries the sender gave up on, and what an operator does with them.

Table ``federation_dead_letters`` (migration ``0008_federation_delivery``):
an outbox row (``federation_outbox``, migration 0006) leaves the outbox
either acknowledged by its destination or moved here, in the same database
transaction, with the reason, its last error, its attempt count and its
timestamps. Nothing is ever dropped without a row here
(docs/usage/delivery.md).

:meth:`DeadLetterStore.replay` moves rows back to the outbox (new ``seq``,
attempts reset, original order kept); :meth:`DeadLetterStore.purge` deletes
them. :meth:`DeadLetterStore.local_events_since` finds what a replay window
re-sends.
"""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage.database import Database, Transaction
from storage.stores.outbox import outbox_lock
from storage.stores.state import allocate_counter, chunks, in_list

__all__ = [
    "DeadLetter",
    "DeadLetterFilter",
    "DeadLetterReason",
    "DeadLetterStore",
    "move_outbox_rows_txn",
]


class DeadLetterReason(enum.StrEnum):
    """Why a delivery left the outbox without being acknowledged."""

    #: The transaction carrying it failed ``federation.max_delivery_attempts`` times.
    MAX_ATTEMPTS = "max_attempts"
    #: Undelivered ``federation.max_delivery_age`` after it was queued.
    MAX_AGE = "max_age"
    #: The peer refused the whole transaction with a 4xx other than 429.
    REJECTED = "rejected"
    #: The peer took the transaction but answered an error for this PDU.
    PDU_REJECTED = "pdu_rejected"
    #: The event is no longer stored here (purged), so it cannot be sent.
    EVENT_MISSING = "event_missing"
    #: The destination is outside the trust domain (docs/usage/trust_domain.md):
    #: never sent.
    UNTRUSTED = "untrusted"


_OUTBOX_COLUMNS = (
    "seq, kind, event_id, room_id, edu_type, edu_content, created_ts, txn_id, attempts, "
    "first_attempt_ts, last_attempt_ts, last_error"
)
_DL_COLUMNS = (
    "dead_letter_id, origin, destination, seq, kind, event_id, room_id, edu_type, "
    "edu_content, reason, last_error, attempts, created_ts, first_attempt_ts, "
    "last_attempt_ts, dead_ts, txn_id"
)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


@dataclass(frozen=True)
class DeadLetter:
    dead_letter_id: str
    origin: str
    destination: str
    seq: int
    kind: str
    event_id: str | None
    room_id: str | None
    edu_type: str | None
    edu_content: dict[str, Any] | None
    reason: str
    last_error: str | None
    attempts: int
    #: When the delivery was queued (the outbox row was written).
    created_ts: int
    first_attempt_ts: int | None
    last_attempt_ts: int | None
    #: When it was moved here.
    dead_ts: int
    txn_id: str | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.dead_letter_id,
            "origin": self.origin,
            "destination": self.destination,
            "kind": self.kind,
            "reason": self.reason,
            "last_error": self.last_error,
            "attempts": self.attempts,
            "created_ts": self.created_ts,
            "first_attempt_ts": self.first_attempt_ts,
            "last_attempt_ts": self.last_attempt_ts,
            "dead_ts": self.dead_ts,
            "txn_id": self.txn_id,
        }
        if self.kind == "pdu":
            out["event_id"] = self.event_id
            out["room_id"] = self.room_id
        else:
            out["edu_type"] = self.edu_type
            out["edu_content"] = self.edu_content
        return out


def _dead_letter(r: Any) -> DeadLetter:
    return DeadLetter(
        dead_letter_id=str(r[0]), origin=str(r[1]), destination=str(r[2]), seq=int(r[3]),
        kind=str(r[4]), event_id=r[5], room_id=r[6], edu_type=r[7],
        edu_content=json.loads(r[8]) if r[8] is not None else None, reason=str(r[9]),
        last_error=r[10], attempts=int(r[11]), created_ts=int(r[12]),
        first_attempt_ts=_opt_int(r[13]), last_attempt_ts=_opt_int(r[14]),
        dead_ts=int(r[15]), txn_id=r[16],
    )


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters an operation applies to; every set field must match."""

    destination: str | None = None
    room_id: str | None = None
    reason: str | None = None
    origin: str | None = None
    #: Moved here before this time (older than an age).
    dead_before_ts: int | None = None
    #: Moved here at or after this time (newer than an age).
    dead_since_ts: int | None = None
    ids: tuple[str, ...] | None = None

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in (
            "destination", "room_id", "reason", "origin", "dead_before_ts", "dead_since_ts",
            "ids",
        ))

    def where(self, first: int = 1) -> tuple[str, list[Any]]:
        """``(SQL condition, args)`` with placeholders from ``$first``."""
        conds: list[str] = []
        args: list[Any] = []

        def add(sql: str, value: Any) -> None:
            args.append(value)
            conds.append(sql.format(f"${first + len(args) - 1}"))

        if self.destination is not None:
            add("destination = {}", self.destination)
        if self.room_id is not None:
            add("room_id = {}", self.room_id)
        if self.reason is not None:
            add("reason = {}", self.reason)
        if self.origin is not None:
            add("origin = {}", self.origin)
        if self.dead_before_ts is not None:
            add("dead_ts < {}", self.dead_before_ts)
        if self.dead_since_ts is not None:
            add("dead_ts >= {}", self.dead_since_ts)
        if self.ids is not None:
            if not self.ids:
                conds.append("1 = 0")
            else:
                conds.append(f"dead_letter_id IN ({in_list(self.ids, first + len(args))})")
                args.extend(self.ids)
        return (" AND ".join(conds) or "1 = 1"), args


async def move_outbox_rows_txn(
    txn: Transaction,
    origin: str,
    destination: str,
    condition: str,
    args: Sequence[Any],
    *,
    reason: DeadLetterReason,
    now_ms: int,
    error: str | None = None,
    errors_by_event: Mapping[str, str] | None = None,
) -> int:
    """Move the outbox rows of ``(origin, destination)`` matching ``condition``
    (placeholders from ``$3``) to the dead letters; returns how many.

    ``error`` replaces each row's last error; ``errors_by_event`` does so
    per PDU (the peer's per-PDU answer).
    """
    rows = await txn.fetch(
        f"SELECT {_OUTBOX_COLUMNS} FROM federation_outbox WHERE origin = $1 AND "
        f"destination = $2 AND ({condition}) ORDER BY seq",
        origin, destination, *args,
    )
    if not rows:
        return 0
    values = []
    for r in rows:
        last_error = r[11]
        if errors_by_event is not None and r[2] in errors_by_event:
            last_error = errors_by_event[r[2]]
        elif error is not None:
            last_error = error
        values.append((
            secrets.token_hex(8), origin, destination, int(r[0]), r[1], r[2], r[3], r[4], r[5],
            reason.value, None if last_error is None else str(last_error)[:1000], int(r[8]),
            int(r[6]), r[9], r[10], now_ms, r[7],
        ))
    await txn.executemany(
        f"INSERT INTO federation_dead_letters ({_DL_COLUMNS}) VALUES "
        "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        values,
    )
    seqs = [int(r[0]) for r in rows]
    for part in chunks(seqs):
        await txn.execute(
            f"DELETE FROM federation_outbox WHERE origin = $1 AND destination = $2 AND "
            f"seq IN ({in_list(part, 3)})",
            origin, destination, *part,
        )
    return len(rows)


class DeadLetterStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def database(self) -> Database:
        return self._db

    # Moving deliveries here (the sender)

    async def dead_letter_transaction(
        self, origin: str, destination: str, txn_id: str, reason: DeadLetterReason,
        now_ms: int, error: str | None = None,
    ) -> int:
        """Give up on the transaction in flight: every row it carries moves here."""
        async with self._db.transaction("federation_dead_letter_txn") as txn:
            await txn.lock(outbox_lock(origin))
            n = await move_outbox_rows_txn(
                txn, origin, destination, "txn_id = $3", [txn_id], reason=reason,
                now_ms=now_ms, error=error,
            )
            await txn.execute(
                "DELETE FROM federation_outbox_transactions WHERE origin = $1 AND "
                "destination = $2 AND txn_id = $3",
                origin, destination, txn_id,
            )
        return n

    async def dead_letter_expired(
        self, origin: str, destination: str, queued_before_ts: int, now_ms: int
    ) -> int:
        """Rows not yet in a transaction, queued before ``queued_before_ts``."""
        async with self._db.transaction("federation_dead_letter_expired") as txn:
            await txn.lock(outbox_lock(origin))
            return await move_outbox_rows_txn(
                txn, origin, destination, "txn_id IS NULL AND created_ts < $3",
                [queued_before_ts], reason=DeadLetterReason.MAX_AGE, now_ms=now_ms,
                error="undelivered past federation.max_delivery_age",
            )

    async def dead_letter_events_of_transaction(
        self, origin: str, destination: str, txn_id: str, errors: Mapping[str, str],
        reason: DeadLetterReason, now_ms: int,
    ) -> int:
        """The PDU rows of ``txn_id`` for these event IDs (with their errors)."""
        if not errors:
            return 0
        ids = sorted(errors)
        n = 0
        async with self._db.transaction("federation_dead_letter_events") as txn:
            await txn.lock(outbox_lock(origin))
            for part in chunks(ids):
                n += await move_outbox_rows_txn(
                    txn, origin, destination,
                    f"txn_id = $3 AND kind = 'pdu' AND event_id IN ({in_list(part, 4)})",
                    [txn_id, *part], reason=reason, now_ms=now_ms, errors_by_event=errors,
                )
        return n

    async def complete_transaction(
        self, origin: str, destination: str, txn_id: str, rejected: Mapping[str, str],
        now_ms: int,
    ) -> int:
        """The peer acknowledged ``txn_id``: PDUs it answered an error for move
        here (``pdu_rejected``), the rest are done. Returns how many moved."""
        n = 0
        async with self._db.transaction("federation_complete_transaction") as txn:
            await txn.lock(outbox_lock(origin))
            ids = sorted(rejected)
            for part in chunks(ids):
                n += await move_outbox_rows_txn(
                    txn, origin, destination,
                    f"txn_id = $3 AND kind = 'pdu' AND event_id IN ({in_list(part, 4)})",
                    [txn_id, *part], reason=DeadLetterReason.PDU_REJECTED, now_ms=now_ms,
                    errors_by_event=rejected,
                )
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
        return n

    # Reading

    async def list_dead_letters(
        self, filt: DeadLetterFilter, *, limit: int, after: tuple[int, int, str] | None = None
    ) -> list[DeadLetter]:
        """Oldest first (by ``dead_ts``, then outbox order), after the
        ``(dead_ts, seq, id)`` key of the last one seen."""
        cond, args = filt.where(1)
        if after is not None:
            a, b, c = (f"${len(args) + i}" for i in (1, 2, 3))
            cond += (f" AND (dead_ts > {a} OR (dead_ts = {a} AND (seq > {b} OR "
                     f"(seq = {b} AND dead_letter_id > {c}))))")
            args += [after[0], after[1], after[2]]
        rows = await self._db.fetch(
            f"SELECT {_DL_COLUMNS} FROM federation_dead_letters WHERE {cond} "
            f"ORDER BY dead_ts, seq, dead_letter_id LIMIT ${len(args) + 1}",
            *args, limit,
        )
        return [_dead_letter(r) for r in rows]

    async def get(self, dead_letter_id: str) -> DeadLetter | None:
        row = await self._db.fetchrow(
            f"SELECT {_DL_COLUMNS} FROM federation_dead_letters WHERE dead_letter_id = $1",
            dead_letter_id,
        )
        return None if row is None else _dead_letter(row)

    async def count(self, filt: DeadLetterFilter | None = None) -> int:
        cond, args = (filt or DeadLetterFilter()).where(1)
        return int(await self._db.fetchval(
            f"SELECT COUNT(*) FROM federation_dead_letters WHERE {cond}", *args
        ))

    async def count_by(self, column: str) -> dict[str, int]:
        """Dead letters per ``reason`` or per ``destination``."""
        if column not in ("reason", "destination"):
            raise ValueError(column)
        rows = await self._db.fetch(
            f"SELECT {column}, COUNT(*) FROM federation_dead_letters GROUP BY {column}"
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def get_event_json(self, origin: str, event_id: str) -> dict[str, Any] | None:
        """The stored event a PDU dead letter names (``None`` if purged)."""
        raw = await self._db.fetchval(
            "SELECT json FROM events WHERE tenant = $1 AND event_id = $2", origin, event_id
        )
        if raw is None:
            return None
        value = json.loads(raw)
        return value if isinstance(value, dict) else None

    # Operator actions

    async def replay(self, filt: DeadLetterFilter, now_ms: int) -> dict[tuple[str, str], int]:
        """Queue the matching dead letters again (fresh outbox rows, attempts
        reset, in their original order) and delete them here. Returns how many
        per ``(origin, destination)``."""
        cond, args = filt.where(1)
        done: dict[tuple[str, str], int] = {}
        async with self._db.transaction("federation_replay_dead_letters") as txn:
            rows = await txn.fetch(
                "SELECT dead_letter_id, origin, destination, kind, event_id, room_id, edu_type, "
                f"edu_content FROM federation_dead_letters WHERE {cond} "
                "ORDER BY origin, seq, destination",
                *args,
            )
            by_origin: dict[str, list[Any]] = {}
            for r in rows:
                by_origin.setdefault(str(r[1]), []).append(r)
            # Locks in a fixed order, so two replays cannot deadlock.
            for origin in sorted(by_origin):
                group = by_origin[origin]
                await txn.lock(outbox_lock(origin))
                first = await allocate_counter(txn, origin, "federation_outbox", len(group))
                await txn.executemany(
                    "INSERT INTO federation_outbox (origin, destination, seq, kind, event_id, "
                    "room_id, edu_type, edu_content, created_ts) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    [(origin, r[2], first + n, r[3], r[4], r[5], r[6], r[7], now_ms)
                     for n, r in enumerate(group)],
                )
                for r in group:
                    key = (origin, str(r[2]))
                    done[key] = done.get(key, 0) + 1
            ids = [str(r[0]) for r in rows]
            for part in chunks(ids):
                await txn.execute(
                    f"DELETE FROM federation_dead_letters WHERE dead_letter_id IN "
                    f"({in_list(part, 1)})",
                    *part,
                )
        return done

    async def purge(self, filt: DeadLetterFilter) -> int:
        """Delete the matching dead letters for good; returns how many."""
        cond, args = filt.where(1)
        async with self._db.transaction("federation_purge_dead_letters") as txn:
            n = int(await txn.fetchval(
                f"SELECT COUNT(*) FROM federation_dead_letters WHERE {cond}", *args
            ))
            await txn.execute(f"DELETE FROM federation_dead_letters WHERE {cond}", *args)
        return n

    # Replay windows

    async def local_events_since(
        self, origin: str, room_id: str, since_ts: int, *, after_stream: int, limit: int
    ) -> list[tuple[int, str]]:
        """``(stream_ordering, event_id)`` of events ``origin``'s own users sent in
        the room at or after ``since_ts`` (their ``origin_server_ts``), in stream
        order, after ``after_stream``: what a replay window re-sends. Outliers
        and rejected events are not part of the room's history and are skipped."""
        rows = await self._db.fetch(
            "SELECT stream_ordering, event_id FROM events WHERE tenant = $1 AND room_id = $2 "
            "AND origin_server_ts >= $3 AND stream_ordering > $4 AND sender LIKE $5 "
            "AND outlier = 0 AND rejected_reason IS NULL "
            "ORDER BY stream_ordering LIMIT $6",
            origin, room_id, since_ts, after_stream, "%:" + origin, limit,
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    async def count_local_events_since(self, origin: str, room_id: str, since_ts: int) -> int:
        return int(await self._db.fetchval(
            "SELECT COUNT(*) FROM events WHERE tenant = $1 AND room_id = $2 "
            "AND origin_server_ts >= $3 AND sender LIKE $4 AND outlier = 0 "
            "AND rejected_reason IS NULL",
            origin, room_id, since_ts, "%:" + origin,
        ))

    async def rooms_of(self, origin: str) -> list[str]:
        """Rooms ``origin`` holds a current state of."""
        rows = await self._db.fetch(
            "SELECT room_id FROM room_current_state WHERE tenant = $1 ORDER BY room_id", origin
        )
        return [str(r[0]) for r in rows]

    async def enqueue_replay(
        self, origin: str, destination: str, event_ids: Sequence[tuple[str, str]], now_ms: int
    ) -> int:
        """Queue ``(event_id, room_id)`` PDUs for ``destination`` (in the given
        order), skipping events already queued for it and not yet sent."""
        if not event_ids:
            return 0
        async with self._db.transaction("federation_enqueue_replay") as txn:
            await txn.lock(outbox_lock(origin))
            queued: set[str] = set()
            ids = [e for e, _ in event_ids]
            for part in chunks(ids):
                rows = await txn.fetch(
                    "SELECT event_id FROM federation_outbox WHERE origin = $1 AND "
                    "destination = $2 AND kind = 'pdu' AND txn_id IS NULL AND "
                    f"event_id IN ({in_list(part, 3)})",
                    origin, destination, *part,
                )
                queued.update(str(r[0]) for r in rows)
            todo = [(e, r) for e, r in event_ids if e not in queued]
            if not todo:
                return 0
            first = await allocate_counter(txn, origin, "federation_outbox", len(todo))
            await txn.executemany(
                "INSERT INTO federation_outbox (origin, destination, seq, kind, event_id, "
                "room_id, created_ts) VALUES ($1, $2, $3, 'pdu', $4, $5, $6)",
                [(origin, destination, first + n, e, r, now_ms) for n, (e, r) in enumerate(todo)],
            )
        return len(todo)
