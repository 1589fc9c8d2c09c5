"""Client transaction IDs (client-server-api "Transaction identifiers").

A ``PUT .../send/{type}/{txnId}`` repeated with the same access token and
txnId returns the first request's event instead of sending another. Table
``client_txns`` (migration 0005).
"""

from __future__ import annotations

from collections.abc import Iterable

from storage.database import Database
from storage.stores.state import Queryable, Writer, chunks, in_list

__all__ = ["ClientTxnStore"]


class ClientTxnStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_event_id_txn(
        self, txn: Queryable, tenant: str, token_id: str, txn_id: str
    ) -> str | None:
        rows = await txn.fetch(
            "SELECT event_id FROM client_txns WHERE tenant = $1 AND token_id = $2 "
            "AND txn_id = $3",
            tenant, token_id, txn_id,
        )
        return str(rows[0][0]) if rows else None

    async def record_txn(
        self, txn: Writer, tenant: str, token_id: str, txn_id: str, event_id: str,
        now_ms: int,
    ) -> None:
        await txn.execute(
            "INSERT INTO client_txns (tenant, token_id, txn_id, event_id, created_ts) "
            "VALUES ($1, $2, $3, $4, $5)",
            tenant, token_id, txn_id, event_id, now_ms,
        )

    async def get_txn_ids_for_events(
        self, tenant: str, token_id: str, event_ids: Iterable[str]
    ) -> dict[str, str]:
        """``event_id -> txn_id`` for the events this access token sent with a txnId."""
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, str] = {}
        for part in chunks(ids):
            rows = await self._db.fetch(
                "SELECT event_id, txn_id FROM client_txns WHERE tenant = $1 AND token_id = $2 "
                f"AND event_id IN ({in_list(part, 3)})",
                tenant, token_id, *part,
            )
            out.update({str(r[0]): str(r[1]) for r in rows})
        return out
