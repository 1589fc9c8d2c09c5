"""The tenant's public room directory (client-server-api "Listing rooms").

Table ``room_directory`` (migration 0005): a row per published room.
"""

from __future__ import annotations

from storage.database import Database
from storage.stores.state import Writer

__all__ = ["RoomDirectoryStore"]


class RoomDirectoryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def set_visibility(
        self, tenant: str, room_id: str, public: bool, now_ms: int
    ) -> None:
        if public:
            await self._db.execute(
                "INSERT INTO room_directory (tenant, room_id, published_ts) VALUES ($1, $2, $3) "
                "ON CONFLICT (tenant, room_id) DO NOTHING",
                tenant, room_id, now_ms,
            )
        else:
            await self._db.execute(
                "DELETE FROM room_directory WHERE tenant = $1 AND room_id = $2",
                tenant, room_id,
            )

    async def publish_txn(self, txn: Writer, tenant: str, room_id: str, now_ms: int) -> None:
        await txn.execute(
            "INSERT INTO room_directory (tenant, room_id, published_ts) VALUES ($1, $2, $3) "
            "ON CONFLICT (tenant, room_id) DO NOTHING",
            tenant, room_id, now_ms,
        )

    async def is_public(self, tenant: str, room_id: str) -> bool:
        row = await self._db.fetchrow(
            "SELECT 1 FROM room_directory WHERE tenant = $1 AND room_id = $2", tenant, room_id
        )
        return row is not None

    async def public_room_ids(self, tenant: str) -> list[str]:
        """Published rooms, oldest publication first (a stable order for paging)."""
        rows = await self._db.fetch(
            "SELECT room_id FROM room_directory WHERE tenant = $1 "
            "ORDER BY published_ts, room_id",
            tenant,
        )
        return [str(r[0]) for r in rows]
