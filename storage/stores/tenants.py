"""The node's tenant registry table (migration ``0004_tenants_users.sql``).

One row per hosted server name. Rows of config-declared tenants are
re-synced from the config at every start (their run-time ``state`` is kept);
rows of tenants created at run time exist only here. This table is always in
the node's own database, whatever mode each tenant uses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storage.database import Database
from storage.engines import Row

__all__ = ["TenantRow", "TenantStore"]


@dataclass(frozen=True)
class TenantRow:
    server_name: str
    source: str  # "config" | "runtime"
    mode: str  # "shared" | "dedicated"
    database_url: str | None
    state: str  # "active" | "suspended"
    signing_key_path: str
    options: Mapping[str, Any]
    created_ts: int


def _row(r: Row) -> TenantRow:
    return TenantRow(
        server_name=r["server_name"],
        source=r["source"],
        mode=r["mode"],
        database_url=r["database_url"],
        state=r["state"],
        signing_key_path=r["signing_key_path"],
        options=json.loads(r["options_json"]),
        created_ts=int(r["created_ts"]),
    )


_COLUMNS = (
    "server_name, source, mode, database_url, state, signing_key_path, options_json, created_ts"
)


class TenantStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_all(self) -> list[TenantRow]:
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM tenants ORDER BY created_ts, server_name"
        )
        return [_row(r) for r in rows]

    async def get(self, server_name: str) -> TenantRow | None:
        r = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM tenants WHERE server_name = $1", server_name
        )
        return None if r is None else _row(r)

    async def insert(self, row: TenantRow) -> bool:
        """Insert ``row``; False (and nothing written) if the name is taken."""
        async with self._db.transaction("insert_tenant") as txn:
            if await txn.fetchval("SELECT 1 FROM tenants WHERE server_name = $1", row.server_name):
                return False
            await txn.execute(
                f"INSERT INTO tenants ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                row.server_name,
                row.source,
                row.mode,
                row.database_url,
                row.state,
                row.signing_key_path,
                json.dumps(dict(row.options), sort_keys=True),
                row.created_ts,
            )
        return True

    async def sync_config_tenant(self, row: TenantRow) -> TenantRow:
        """Write a config-declared tenant, keeping a stored run-time ``state``.

        The config is the source of truth for everything but suspension,
        which operators change at run time and expect to survive a restart.
        """
        async with self._db.transaction("sync_config_tenant") as txn:
            state = await txn.fetchval(
                "SELECT state FROM tenants WHERE server_name = $1", row.server_name
            )
            args = (
                row.source,
                row.mode,
                row.database_url,
                row.signing_key_path,
                json.dumps(dict(row.options), sort_keys=True),
            )
            if state is None:
                await txn.execute(
                    f"INSERT INTO tenants ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    row.server_name,
                    args[0],
                    args[1],
                    args[2],
                    row.state,
                    args[3],
                    args[4],
                    row.created_ts,
                )
                return row
            await txn.execute(
                "UPDATE tenants SET source = $2, mode = $3, database_url = $4, "
                "signing_key_path = $5, options_json = $6 WHERE server_name = $1",
                row.server_name,
                *args,
            )
        return TenantRow(**{**row.__dict__, "state": state})

    async def set_state(self, server_name: str, state: str) -> bool:
        async with self._db.transaction("set_tenant_state") as txn:
            if not await txn.fetchval("SELECT 1 FROM tenants WHERE server_name = $1", server_name):
                return False
            await txn.execute(
                "UPDATE tenants SET state = $2 WHERE server_name = $1", server_name, state
            )
        return True

    async def delete(self, server_name: str) -> bool:
        async with self._db.transaction("delete_tenant") as txn:
            if not await txn.fetchval("SELECT 1 FROM tenants WHERE server_name = $1", server_name):
                return False
            await txn.execute("DELETE FROM tenants WHERE server_name = $1", server_name)
        return True
