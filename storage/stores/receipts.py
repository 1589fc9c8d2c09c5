"""Read receipts (client-server-api "Receipts"): the latest receipt per
room, type, user and thread, ordered by a per-tenant stream for /sync.

Table ``receipts`` (migration 0005).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from storage.database import Database
from storage.stores.state import allocate_counter, chunks, in_list

__all__ = ["Receipt", "ReceiptStore"]


@dataclass(frozen=True)
class Receipt:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str
    event_id: str
    ts: int
    stream_id: int


class ReceiptStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put_receipt(
        self, tenant: str, room_id: str, receipt_type: str, user_id: str, thread_id: str,
        event_id: str, ts: int,
    ) -> int:
        """Store (replace) a receipt; returns its stream position."""
        async with self._db.transaction("put_receipt") as txn:
            stream_id = await allocate_counter(txn, tenant, "receipts", 1)
            await txn.execute(
                "DELETE FROM receipts WHERE tenant = $1 AND room_id = $2 AND receipt_type = $3 "
                "AND user_id = $4 AND thread_id = $5",
                tenant, room_id, receipt_type, user_id, thread_id,
            )
            await txn.execute(
                "INSERT INTO receipts (tenant, room_id, receipt_type, user_id, thread_id, "
                "event_id, ts, stream_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                tenant, room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id,
            )
        return stream_id

    async def get_max_stream_id(self, tenant: str) -> int:
        value = await self._db.fetchval(
            "SELECT value FROM event_graph_counters WHERE tenant = $1 AND name = 'receipts'",
            tenant,
        )
        return int(value or 0)

    async def get_receipts(
        self, tenant: str, room_ids: Iterable[str], *, after: int = 0, upto: int | None = None
    ) -> list[Receipt]:
        """Receipts in ``room_ids`` with ``after < stream_id <= upto``."""
        ids = list(dict.fromkeys(room_ids))
        out: list[Receipt] = []
        top = upto if upto is not None else 2**62
        for part in chunks(ids):
            rows = await self._db.fetch(
                "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id "
                "FROM receipts WHERE tenant = $1 AND stream_id > $2 AND stream_id <= $3 "
                f"AND room_id IN ({in_list(part, 4)}) ORDER BY stream_id",
                tenant, after, top, *part,
            )
            out.extend(
                Receipt(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5]),
                        int(r[6]))
                for r in rows
            )
        return out
