"""Local accounts, their devices and access tokens (migration ``0004``).

Every method is scoped to one tenant: a :class:`UserStore` is built for a
``(database, tenant)`` pair by the tenant resolver
(:meth:`homeserver.tenants.TenantRegistry.database`), so a token or user of
one tenant is invisible to another even when both share a database.

Access tokens are never stored: only the hex SHA-256 of each token, which is
what :meth:`UserStore.get_token` looks up.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass

from storage.database import Database, Transaction

__all__ = [
    "CreateUserResult",
    "DeviceRow",
    "TokenInfo",
    "UserRow",
    "UserStore",
    "hash_token",
]


def hash_token(token: str) -> str:
    """What the database holds for an access token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_id() -> int:
    # Positive and under 2**62: fits BIGINT on both engines with room to spare.
    return secrets.randbits(62) or 1


class CreateUserResult(enum.Enum):
    CREATED = "created"
    TAKEN = "taken"
    OVER_QUOTA = "over_quota"


@dataclass(frozen=True)
class UserRow:
    user_id: str
    password_hash: str | None
    admin: bool
    deactivated: bool
    created_ts: int


@dataclass(frozen=True)
class TokenInfo:
    token_id: int
    user_id: str
    device_id: str | None
    admin: bool


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


class UserStore:
    """Accounts, devices and tokens of one tenant."""

    def __init__(self, db: Database, tenant: str) -> None:
        self._db = db
        self.tenant = tenant

    # -- users

    async def create_user(
        self,
        user_id: str,
        password_hash: str | None,
        *,
        admin: bool,
        now_ms: int,
        max_users: int | None = None,
    ) -> CreateUserResult:
        """Create the account unless it exists or the tenant is at ``max_users``.

        The count and the insert run under one lock, so concurrent
        registrations cannot overshoot the quota.
        """
        async with self._db.transaction("create_user") as txn:
            await txn.lock(f"users:{self.tenant}")
            if await txn.fetchval(
                "SELECT 1 FROM users WHERE tenant = $1 AND user_id = $2", self.tenant, user_id
            ):
                return CreateUserResult.TAKEN
            if max_users is not None:
                count = await txn.fetchval(
                    "SELECT COUNT(*) FROM users WHERE tenant = $1", self.tenant
                )
                if int(count) >= max_users:
                    return CreateUserResult.OVER_QUOTA
            await txn.execute(
                "INSERT INTO users (tenant, user_id, password_hash, admin, deactivated, "
                "created_ts) VALUES ($1, $2, $3, $4, 0, $5)",
                self.tenant,
                user_id,
                password_hash,
                1 if admin else 0,
                now_ms,
            )
        return CreateUserResult.CREATED

    async def get_user(self, user_id: str) -> UserRow | None:
        r = await self._db.fetchrow(
            "SELECT user_id, password_hash, admin, deactivated, created_ts FROM users "
            "WHERE tenant = $1 AND user_id = $2",
            self.tenant,
            user_id,
        )
        if r is None:
            return None
        return UserRow(
            r["user_id"],
            r["password_hash"],
            bool(r["admin"]),
            bool(r["deactivated"]),
            int(r["created_ts"]),
        )

    async def list_users(self, *, limit: int, from_user_id: str = "") -> list[UserRow]:
        rows = await self._db.fetch(
            "SELECT user_id, password_hash, admin, deactivated, created_ts FROM users "
            "WHERE tenant = $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
            self.tenant,
            from_user_id,
            limit,
        )
        return [
            UserRow(
                r["user_id"],
                r["password_hash"],
                bool(r["admin"]),
                bool(r["deactivated"]),
                int(r["created_ts"]),
            )
            for r in rows
        ]

    async def count_users(self) -> int:
        return int(
            await self._db.fetchval("SELECT COUNT(*) FROM users WHERE tenant = $1", self.tenant)
        )

    async def set_admin(self, user_id: str, admin: bool) -> bool:
        async with self._db.transaction("set_admin") as txn:
            if not await txn.fetchval(
                "SELECT 1 FROM users WHERE tenant = $1 AND user_id = $2", self.tenant, user_id
            ):
                return False
            await txn.execute(
                "UPDATE users SET admin = $3 WHERE tenant = $1 AND user_id = $2",
                self.tenant,
                user_id,
                1 if admin else 0,
            )
        return True

    async def count_created_rooms(self, txn: Transaction | None = None) -> int:
        """Rooms whose create event one of this tenant's users sent (inside
        ``txn`` when given, so a caller holding a lock counts and creates
        atomically)."""
        # Server names hold no LIKE wildcards (letters, digits, '-', '.', ':', '[]').
        conn: Database | Transaction = txn if txn is not None else self._db
        return int(
            await conn.fetchval(
                "SELECT COUNT(*) FROM events WHERE tenant = $1 AND type = 'm.room.create' "
                "AND state_key = '' AND sender LIKE $2",
                self.tenant,
                "%:" + self.tenant,
            )
        )

    # -- devices and tokens

    async def login(
        self,
        user_id: str,
        device_id: str,
        token: str,
        *,
        now_ms: int,
        display_name: str | None = None,
        ip: str | None = None,
    ) -> int:
        """Create (or reuse) the device and issue ``token`` for it; returns the token ID.

        Client-Server API "Login": a reused ``device_id`` loses the tokens it
        had ("the server will invalidate any access token previously
        associated with that device").
        """
        async with self._db.transaction("login") as txn:
            exists = await txn.fetchval(
                "SELECT 1 FROM devices WHERE tenant = $1 AND user_id = $2 AND device_id = $3",
                self.tenant,
                user_id,
                device_id,
            )
            if exists:
                await txn.execute(
                    "DELETE FROM access_tokens WHERE tenant = $1 AND user_id = $2 "
                    "AND device_id = $3",
                    self.tenant,
                    user_id,
                    device_id,
                )
                await txn.execute(
                    "UPDATE devices SET last_seen_ts = $4, last_seen_ip = $5 "
                    "WHERE tenant = $1 AND user_id = $2 AND device_id = $3",
                    self.tenant,
                    user_id,
                    device_id,
                    now_ms,
                    ip,
                )
            else:
                await txn.execute(
                    "INSERT INTO devices (tenant, user_id, device_id, display_name, created_ts, "
                    "last_seen_ts, last_seen_ip) VALUES ($1, $2, $3, $4, $5, $5, $6)",
                    self.tenant,
                    user_id,
                    device_id,
                    display_name,
                    now_ms,
                    ip,
                )
            return await self._insert_token_txn(txn, user_id, device_id, token, now_ms)

    async def _insert_token_txn(
        self, txn: Transaction, user_id: str, device_id: str | None, token: str, now_ms: int
    ) -> int:
        token_id = _new_id()
        await txn.execute(
            "INSERT INTO access_tokens (tenant, id, token_hash, user_id, device_id, created_ts) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            self.tenant,
            token_id,
            hash_token(token),
            user_id,
            device_id,
            now_ms,
        )
        return token_id

    async def get_token(self, token: str) -> TokenInfo | None:
        r = await self._db.fetchrow(
            "SELECT t.id, t.user_id, t.device_id, u.admin FROM access_tokens t "
            "JOIN users u ON u.tenant = t.tenant AND u.user_id = t.user_id "
            "WHERE t.tenant = $1 AND t.token_hash = $2 AND u.deactivated = 0",
            self.tenant,
            hash_token(token),
        )
        if r is None:
            return None
        return TokenInfo(int(r["id"]), r["user_id"], r["device_id"], bool(r["admin"]))

    async def delete_device(self, user_id: str, device_id: str | None, token_id: int) -> None:
        """Log out one session: its token and, when it has one, its device."""
        async with self._db.transaction("logout") as txn:
            await txn.execute(
                "DELETE FROM access_tokens WHERE tenant = $1 AND id = $2", self.tenant, token_id
            )
            if device_id is not None:
                await txn.execute(
                    "DELETE FROM access_tokens WHERE tenant = $1 AND user_id = $2 "
                    "AND device_id = $3",
                    self.tenant,
                    user_id,
                    device_id,
                )
                await txn.execute(
                    "DELETE FROM devices WHERE tenant = $1 AND user_id = $2 AND device_id = $3",
                    self.tenant,
                    user_id,
                    device_id,
                )

    async def delete_all_devices(self, user_id: str) -> None:
        async with self._db.transaction("logout_all") as txn:
            await txn.execute(
                "DELETE FROM access_tokens WHERE tenant = $1 AND user_id = $2",
                self.tenant,
                user_id,
            )
            await txn.execute(
                "DELETE FROM devices WHERE tenant = $1 AND user_id = $2", self.tenant, user_id
            )

    async def get_devices(self, user_id: str) -> list[DeviceRow]:
        rows = await self._db.fetch(
            "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices "
            "WHERE tenant = $1 AND user_id = $2 ORDER BY device_id",
            self.tenant,
            user_id,
        )
        return [
            DeviceRow(
                r["device_id"],
                r["display_name"],
                None if r["last_seen_ts"] is None else int(r["last_seen_ts"]),
                r["last_seen_ip"],
            )
            for r in rows
        ]

    async def set_device_display_name(
        self, user_id: str, device_id: str, display_name: str | None
    ) -> bool:
        async with self._db.transaction("set_device_display_name") as txn:
            if not await txn.fetchval(
                "SELECT 1 FROM devices WHERE tenant = $1 AND user_id = $2 AND device_id = $3",
                self.tenant,
                user_id,
                device_id,
            ):
                return False
            await txn.execute(
                "UPDATE devices SET display_name = $4 "
                "WHERE tenant = $1 AND user_id = $2 AND device_id = $3",
                self.tenant,
                user_id,
                device_id,
                display_name,
            )
        return True

    async def delete_tenant_rows(self) -> None:
        """Forget every account, device and token of the tenant (tenant removal)."""
        async with self._db.transaction("delete_tenant_users") as txn:
            for table in ("access_tokens", "devices", "users"):
                await txn.execute(f"DELETE FROM {table} WHERE tenant = $1", self.tenant)
