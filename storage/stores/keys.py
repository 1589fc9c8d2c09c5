"""Server signing keys: the cache of remote keys, and our own public keys.

Spec: server-server API "Retrieving server keys". Tables from migration
``0002_server_keys.sql``:

- ``remote_server_keys``: what the keyring fetched (it implements
  :class:`federation.keyring.KeyCache`), with the signed response each key
  came from, so we can serve it again as a notary;
- ``local_signing_keys``: the public key of every signing key each hosted
  server name has used. When the key file changes, the key that disappeared
  is marked expired here and keeps being published in ``old_verify_keys``,
  so events it signed still verify for peers after a restart. Private seeds
  are never stored here.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from canonicaljson import encode_canonical_json
from nacl.signing import VerifyKey

from federation.server_keys import (
    FetchedKey,
    OldVerifyKey,
    decode_verify_key,
    encode_verify_key,
)
from storage.database import Database
from storage.engines import Row

__all__ = ["KeyStore", "LocalKey"]

# Placeholders per IN (...) list, well under both engines' parameter limits.
_IN_CHUNK = 500


@dataclass(frozen=True)
class LocalKey:
    """One signing key a hosted server name has used (public half only)."""

    server_name: str
    key_id: str
    verify_key: VerifyKey
    created_ts: int
    expired_ts: int | None


def _placeholders(n: int, first: int) -> str:
    return ", ".join(f"${i}" for i in range(first, first + n))


class KeyStore:
    """Remote key cache and local public keys, on either engine."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # key_json strings repeat across the rows of one response; parse once.
        self._json_cache: dict[str, Mapping[str, Any]] = {}

    # -- remote keys (federation.keyring.KeyCache) -----------------------------------

    async def get_server_keys(
        self, server_name: str, key_ids: Collection[str] | None = None
    ) -> dict[str, FetchedKey]:
        """Cached keys of ``server_name``; all of them when ``key_ids`` is None."""
        cols = (
            "key_id, verify_key, valid_until_ts, expired_ts, fetched_ts, key_json"
            " FROM remote_server_keys WHERE server_name = $1"
        )
        rows: list[Row] = []
        if key_ids is None:
            rows = await self._db.fetch(f"SELECT {cols}", server_name)
        else:
            ids = sorted(set(key_ids))
            for i in range(0, len(ids), _IN_CHUNK):
                part = ids[i : i + _IN_CHUNK]
                rows += await self._db.fetch(
                    f"SELECT {cols} AND key_id IN ({_placeholders(len(part), 2)})",
                    server_name,
                    *part,
                )
        return {r["key_id"]: self._row_to_key(server_name, r) for r in rows}

    def _row_to_key(self, server_name: str, r: Row) -> FetchedKey:
        raw = r["key_json"]
        parsed: Mapping[str, Any] | None = None
        if raw is not None:
            parsed = self._json_cache.get(raw)
            if parsed is None:
                parsed = json.loads(raw)
                if len(self._json_cache) > 1000:
                    self._json_cache.clear()
                self._json_cache[raw] = parsed
        return FetchedKey(
            server_name=server_name,
            key_id=r["key_id"],
            verify_key=decode_verify_key(r["key_id"], r["verify_key"]),
            valid_until_ts=int(r["valid_until_ts"]),
            fetched_ts=int(r["fetched_ts"]),
            expired_ts=None if r["expired_ts"] is None else int(r["expired_ts"]),
            response_json=parsed,
        )

    async def store_server_keys(self, server_name: str, keys: Mapping[str, FetchedKey]) -> None:
        """Insert or replace keys; a row is only replaced by one fetched no earlier."""
        if not keys:
            return
        rows = []
        for key_id, fk in sorted(keys.items()):
            blob = (
                None
                if fk.response_json is None
                else encode_canonical_json(fk.response_json).decode("utf-8")
            )
            rows.append(
                (
                    server_name,
                    key_id,
                    fk.key_b64,
                    fk.valid_until_ts,
                    fk.expired_ts,
                    fk.fetched_ts,
                    blob,
                )
            )
        async with self._db.transaction("store_server_keys") as txn:
            await txn.executemany(
                "INSERT INTO remote_server_keys (server_name, key_id, verify_key,"
                " valid_until_ts, expired_ts, fetched_ts, key_json)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " ON CONFLICT (server_name, key_id) DO UPDATE SET"
                " verify_key = excluded.verify_key, valid_until_ts = excluded.valid_until_ts,"
                " expired_ts = excluded.expired_ts, fetched_ts = excluded.fetched_ts,"
                " key_json = excluded.key_json"
                " WHERE excluded.fetched_ts >= remote_server_keys.fetched_ts",
                rows,
            )

    # -- our own keys -----------------------------------------------------------------

    async def get_local_keys(self, server_name: str) -> list[LocalKey]:
        """Keys to publish (revoked ones, migration 0011, never are)."""
        rows = await self._db.fetch(
            "SELECT key_id, verify_key, created_ts, expired_ts FROM local_signing_keys"
            " WHERE server_name = $1 AND revoked_ts IS NULL ORDER BY created_ts, key_id",
            server_name,
        )
        return [
            LocalKey(
                server_name=server_name,
                key_id=r["key_id"],
                verify_key=decode_verify_key(r["key_id"], r["verify_key"]),
                created_ts=int(r["created_ts"]),
                expired_ts=None if r["expired_ts"] is None else int(r["expired_ts"]),
            )
            for r in rows
        ]

    async def sync_local_keys(
        self,
        server_name: str,
        current: Mapping[str, VerifyKey],
        configured_old: Iterable[OldVerifyKey],
        now_ms: int,
    ) -> list[OldVerifyKey]:
        """Record this start's keys; return the old keys to publish.

        - each current key is recorded (``created_ts`` = now) if new; a key
          that was retired and is back in the key file is current again;
        - a recorded current key no longer in the key file was rotated out:
          it expires now;
        - keys from config ``old_signing_keys`` are recorded with their
          configured ``expired_ts`` (config wins for those).

        Raises ``ValueError`` if a key ID is reused for a different public key:
        peers cache keys by ID, so that would break verification everywhere
        (a new key needs a new key ID).
        """
        configured = list(configured_old)
        async with self._db.transaction("sync_local_keys") as txn:
            rows = await txn.fetch(
                "SELECT key_id, verify_key, expired_ts FROM local_signing_keys"
                " WHERE server_name = $1",
                server_name,
            )
            known = {r["key_id"]: (r["verify_key"], r["expired_ts"]) for r in rows}
            for key_id, vk in current.items():
                b64 = encode_verify_key(vk)
                if key_id in known:
                    if known[key_id][0] != b64:
                        raise ValueError(
                            f"signing key {key_id} of {server_name} differs from the one "
                            "used before under the same ID; give the new key a new ID"
                        )
                    if known[key_id][1] is not None:
                        await txn.execute(
                            "UPDATE local_signing_keys SET expired_ts = NULL"
                            " WHERE server_name = $1 AND key_id = $2",
                            server_name,
                            key_id,
                        )
                else:
                    await txn.execute(
                        "INSERT INTO local_signing_keys"
                        " (server_name, key_id, verify_key, created_ts, expired_ts)"
                        " VALUES ($1, $2, $3, $4, NULL)",
                        server_name,
                        key_id,
                        b64,
                        now_ms,
                    )
            for key_id, (_, expired_ts) in known.items():
                if key_id not in current and expired_ts is None:
                    await txn.execute(
                        "UPDATE local_signing_keys SET expired_ts = $3"
                        " WHERE server_name = $1 AND key_id = $2",
                        server_name,
                        key_id,
                        now_ms,
                    )
            for ok in configured:
                if ok.key_id in current:
                    continue
                b64 = encode_verify_key(ok.verify_key)
                if ok.key_id in known and known[ok.key_id][0] != b64:
                    raise ValueError(
                        f"old signing key {ok.key_id} of {server_name} in config differs "
                        "from the one recorded under the same ID"
                    )
                await txn.execute(
                    "INSERT INTO local_signing_keys"
                    " (server_name, key_id, verify_key, created_ts, expired_ts)"
                    " VALUES ($1, $2, $3, $4, $5)"
                    " ON CONFLICT (server_name, key_id) DO UPDATE SET expired_ts = excluded.expired_ts",
                    server_name,
                    ok.key_id,
                    b64,
                    min(now_ms, ok.expired_ts),
                    ok.expired_ts,
                )
        return [
            OldVerifyKey(k.key_id, k.verify_key, k.expired_ts)
            for k in await self.get_local_keys(server_name)
            if k.expired_ts is not None
        ]
