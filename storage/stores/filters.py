"""Filters uploaded by clients (client-server-api "Filtering").
Table ``user_filters`` (migration 0005)."""

from __future__ import annotations

import json
from typing import Any

from storage.database import Database

__all__ = ["FilterStore"]


class FilterStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_filter(self, tenant: str, user_id: str, filter_json: dict[str, Any]) -> int:
        async with self._db.transaction("add_filter") as txn:
            await txn.lock(f"user_filters:{tenant}:{user_id}")
            top = await txn.fetchval(
                "SELECT MAX(filter_id) FROM user_filters WHERE tenant = $1 AND user_id = $2",
                tenant, user_id,
            )
            filter_id = int(top or 0) + 1
            await txn.execute(
                "INSERT INTO user_filters (tenant, user_id, filter_id, filter_json) "
                "VALUES ($1, $2, $3, $4)",
                tenant, user_id, filter_id, json.dumps(filter_json),
            )
        return filter_id

    async def get_filter(
        self, tenant: str, user_id: str, filter_id: int
    ) -> dict[str, Any] | None:
        row = await self._db.fetchrow(
            "SELECT filter_json FROM user_filters WHERE tenant = $1 AND user_id = $2 "
            "AND filter_id = $3",
            tenant, user_id, filter_id,
        )
        return None if row is None else dict(json.loads(row[0]))
