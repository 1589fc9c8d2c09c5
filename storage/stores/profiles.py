"""Users' global profiles: displayname and avatar_url
(client-server-api "Profiles"). Table ``profiles`` (migration 0005)."""

from __future__ import annotations

from dataclasses import dataclass

from storage.database import Database

__all__ = ["Profile", "ProfileStore"]


@dataclass(frozen=True)
class Profile:
    displayname: str | None
    avatar_url: str | None


class ProfileStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_profile(self, tenant: str, user_id: str) -> Profile | None:
        """The stored profile, or None if the user never set one."""
        row = await self._db.fetchrow(
            "SELECT displayname, avatar_url FROM profiles WHERE tenant = $1 AND user_id = $2",
            tenant, user_id,
        )
        if row is None:
            return None
        return Profile(row[0], row[1])

    async def set_field(
        self, tenant: str, user_id: str, field: str, value: str | None, *,
        default_displayname: str | None,
    ) -> None:
        """Set ``displayname`` or ``avatar_url`` (``None`` removes it)."""
        if field not in ("displayname", "avatar_url"):
            raise ValueError(f"unknown profile field {field!r}")
        async with self._db.transaction("set_profile_field") as txn:
            await txn.execute(
                "INSERT INTO profiles (tenant, user_id, displayname, avatar_url) "
                "VALUES ($1, $2, $3, NULL) ON CONFLICT (tenant, user_id) DO NOTHING",
                tenant, user_id, default_displayname,
            )
            await txn.execute(
                f"UPDATE profiles SET {field} = $3 WHERE tenant = $1 AND user_id = $2",
                tenant, user_id, value,
            )
