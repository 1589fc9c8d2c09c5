"""Room aliases a tenant resolves (client-server-api "Room aliases").

Table ``room_aliases`` (migration 0005).
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.database import Database
from storage.errors import UniqueViolation
from storage.stores.state import Writer

__all__ = ["AliasEntry", "RoomAliasStore"]


@dataclass(frozen=True)
class AliasEntry:
    room_alias: str
    room_id: str
    creator: str


class RoomAliasStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_alias(
        self, tenant: str, room_alias: str, room_id: str, creator: str, now_ms: int
    ) -> bool:
        """Add an alias; False if the alias already exists (nothing changed)."""
        try:
            await self._db.execute(
                "INSERT INTO room_aliases (tenant, room_alias, room_id, creator, created_ts) "
                "VALUES ($1, $2, $3, $4, $5)",
                tenant, room_alias, room_id, creator, now_ms,
            )
        except UniqueViolation:
            return False
        return True

    async def create_alias_txn(
        self, txn: Writer, tenant: str, room_alias: str, room_id: str, creator: str,
        now_ms: int,
    ) -> None:
        """Add an alias inside a transaction (``UniqueViolation`` if it exists)."""
        await txn.execute(
            "INSERT INTO room_aliases (tenant, room_alias, room_id, creator, created_ts) "
            "VALUES ($1, $2, $3, $4, $5)",
            tenant, room_alias, room_id, creator, now_ms,
        )

    async def get_alias(self, tenant: str, room_alias: str) -> AliasEntry | None:
        row = await self._db.fetchrow(
            "SELECT room_alias, room_id, creator FROM room_aliases "
            "WHERE tenant = $1 AND room_alias = $2",
            tenant, room_alias,
        )
        if row is None:
            return None
        return AliasEntry(str(row[0]), str(row[1]), str(row[2]))

    async def get_aliases_for_room(self, tenant: str, room_id: str) -> list[str]:
        rows = await self._db.fetch(
            "SELECT room_alias FROM room_aliases WHERE tenant = $1 AND room_id = $2 "
            "ORDER BY room_alias",
            tenant, room_id,
        )
        return [str(r[0]) for r in rows]

    async def delete_alias(self, tenant: str, room_alias: str) -> bool:
        """Remove an alias; False if there was none."""
        async with self._db.transaction("delete_room_alias") as txn:
            row = await txn.fetchrow(
                "SELECT room_id FROM room_aliases WHERE tenant = $1 AND room_alias = $2",
                tenant, room_alias,
            )
            if row is None:
                return False
            await txn.execute(
                "DELETE FROM room_aliases WHERE tenant = $1 AND room_alias = $2",
                tenant, room_alias,
            )
        return True
