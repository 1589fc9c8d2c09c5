"""Account data (client-server-api "Client Config"), global and per room;
holds the ``m.fully_read`` read markers. Table ``account_data`` (0005)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from storage.database import Database
from storage.stores.state import allocate_counter

__all__ = ["AccountDataEntry", "AccountDataStore"]


@dataclass(frozen=True)
class AccountDataEntry:
    room_id: str  # '' for global account data
    type: str
    content: dict[str, Any]
    stream_id: int


class AccountDataStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(
        self, tenant: str, user_id: str, room_id: str, data_type: str, content: dict[str, Any]
    ) -> int:
        async with self._db.transaction("put_account_data") as txn:
            stream_id = await allocate_counter(txn, tenant, "account_data", 1)
            await txn.execute(
                "INSERT INTO account_data (tenant, user_id, room_id, type, content, stream_id) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, user_id, room_id, type) "
                "DO UPDATE SET content = $5, stream_id = $6",
                tenant, user_id, room_id, data_type, json.dumps(content), stream_id,
            )
        return stream_id

    async def get(
        self, tenant: str, user_id: str, room_id: str, data_type: str
    ) -> dict[str, Any] | None:
        row = await self._db.fetchrow(
            "SELECT content FROM account_data WHERE tenant = $1 AND user_id = $2 "
            "AND room_id = $3 AND type = $4",
            tenant, user_id, room_id, data_type,
        )
        return None if row is None else dict(json.loads(row[0]))

    async def get_max_stream_id(self, tenant: str) -> int:
        value = await self._db.fetchval(
            "SELECT value FROM event_graph_counters WHERE tenant = $1 AND name = 'account_data'",
            tenant,
        )
        return int(value or 0)

    async def get_changed(
        self, tenant: str, user_id: str, after: int, upto: int
    ) -> list[AccountDataEntry]:
        rows = await self._db.fetch(
            "SELECT room_id, type, content, stream_id FROM account_data WHERE tenant = $1 "
            "AND user_id = $2 AND stream_id > $3 AND stream_id <= $4 ORDER BY stream_id",
            tenant, user_id, after, upto,
        )
        return [
            AccountDataEntry(str(r[0]), str(r[1]), dict(json.loads(r[2])), int(r[3]))
            for r in rows
        ]
