"""Rotating and revoking our own signing keys: the ``local_signing_keys`` rows.

Docs: docs/usage/key_rotation.md. The private seeds stay in key files; this
table holds each hosted name's public keys with their state:

- current: ``expired_ts`` NULL (the key file holds it and it signs);
- old: ``expired_ts`` set; published under ``old_verify_keys`` so peers
  verify what it signed before ``expired_ts``;
- revoked: ``revoked_ts`` set (migration 0011); never published again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from nacl.signing import VerifyKey

from federation.server_keys import decode_verify_key, encode_verify_key
from storage.database import Database

__all__ = ["KeyRecord", "KeyRotationStore"]


@dataclass(frozen=True)
class KeyRecord:
    server_name: str
    key_id: str
    verify_key: VerifyKey
    created_ts: int
    expired_ts: int | None
    revoked_ts: int | None

    @property
    def state(self) -> str:
        if self.revoked_ts is not None:
            return "revoked"
        return "current" if self.expired_ts is None else "old"


class KeyRotationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_keys(self, server_name: str) -> list[KeyRecord]:
        """Every key ``server_name`` has used, revoked ones included, oldest first."""
        rows = await self._db.fetch(
            "SELECT key_id, verify_key, created_ts, expired_ts, revoked_ts"
            " FROM local_signing_keys WHERE server_name = $1 ORDER BY created_ts, key_id",
            server_name,
        )
        return [
            KeyRecord(
                server_name=server_name,
                key_id=r["key_id"],
                verify_key=decode_verify_key(r["key_id"], r["verify_key"]),
                created_ts=int(r["created_ts"]),
                expired_ts=None if r["expired_ts"] is None else int(r["expired_ts"]),
                revoked_ts=None if r["revoked_ts"] is None else int(r["revoked_ts"]),
            )
            for r in rows
        ]

    async def rotate(
        self,
        server_name: str,
        retired: Mapping[str, VerifyKey],
        new_key_id: str,
        new_key: VerifyKey,
        now_ms: int,
        expired_ts: int,
    ) -> None:
        """Record ``new_key_id`` as current and ``retired`` as old (until
        ``expired_ts``), in one transaction. Keys in ``retired`` not yet
        recorded (a node that never started) are recorded first."""
        async with self._db.transaction("rotate_signing_key") as txn:
            known = {
                r["key_id"]
                for r in await txn.fetch(
                    "SELECT key_id FROM local_signing_keys WHERE server_name = $1", server_name
                )
            }
            if new_key_id in known:
                raise ValueError(f"key ID {new_key_id} of {server_name} was used before")
            for key_id, vk in retired.items():
                if key_id not in known:
                    await txn.execute(
                        "INSERT INTO local_signing_keys"
                        " (server_name, key_id, verify_key, created_ts, expired_ts)"
                        " VALUES ($1, $2, $3, $4, NULL)",
                        server_name,
                        key_id,
                        encode_verify_key(vk),
                        now_ms,
                    )
                await txn.execute(
                    "UPDATE local_signing_keys SET expired_ts = $3"
                    " WHERE server_name = $1 AND key_id = $2 AND expired_ts IS NULL",
                    server_name,
                    key_id,
                    expired_ts,
                )
            await txn.execute(
                "INSERT INTO local_signing_keys"
                " (server_name, key_id, verify_key, created_ts, expired_ts)"
                " VALUES ($1, $2, $3, $4, NULL)",
                server_name,
                new_key_id,
                encode_verify_key(new_key),
                now_ms,
            )

    async def revoke(self, server_name: str, key_id: str, now_ms: int) -> bool:
        """Mark a retired key revoked; False if no such (unrevoked) key."""
        async with self._db.transaction("revoke_signing_key") as txn:
            found = await txn.fetchval(
                "SELECT key_id FROM local_signing_keys"
                " WHERE server_name = $1 AND key_id = $2 AND revoked_ts IS NULL",
                server_name,
                key_id,
            )
            if found is None:
                return False
            await txn.execute(
                "UPDATE local_signing_keys SET revoked_ts = $3,"
                " expired_ts = COALESCE(expired_ts, $3)"
                " WHERE server_name = $1 AND key_id = $2",
                server_name,
                key_id,
                now_ms,
            )
        return True

    async def revoked_ids(self, server_name: str, key_ids: Collection[str]) -> set[str]:
        rows = await self._db.fetch(
            "SELECT key_id FROM local_signing_keys"
            " WHERE server_name = $1 AND revoked_ts IS NOT NULL",
            server_name,
        )
        return {r["key_id"] for r in rows} & set(key_ids)
