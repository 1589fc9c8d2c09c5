"""Trust domains set at run time (admin API), from migration ``0011``.

One row per scope: ``""`` for the node-wide setting, else a tenant's server
name. ``patterns`` ``None`` means open federation (node scope) or "use the
node-wide setting" (tenant scope). See docs/usage/trust_domain.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from storage.database import Database

__all__ = ["NODE_SCOPE", "TrustOverride", "TrustOverrideStore"]

NODE_SCOPE = ""


@dataclass(frozen=True)
class TrustOverride:
    scope: str
    patterns: tuple[str, ...] | None
    updated_ts: int


class TrustOverrideStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_all(self) -> dict[str, TrustOverride]:
        rows = await self._db.fetch(
            "SELECT scope, patterns_json, updated_ts FROM trusted_servers_overrides"
        )
        out = {}
        for r in rows:
            raw = r["patterns_json"]
            patterns = None if raw is None else tuple(str(p) for p in json.loads(raw))
            out[r["scope"]] = TrustOverride(r["scope"], patterns, int(r["updated_ts"]))
        return out

    async def set(self, scope: str, patterns: tuple[str, ...] | None, now_ms: int) -> None:
        blob = None if patterns is None else json.dumps(list(patterns))
        await self._db.execute(
            "INSERT INTO trusted_servers_overrides (scope, patterns_json, updated_ts)"
            " VALUES ($1, $2, $3) ON CONFLICT (scope) DO UPDATE SET"
            " patterns_json = excluded.patterns_json, updated_ts = excluded.updated_ts",
            scope,
            blob,
            now_ms,
        )

    async def delete(self, scope: str) -> bool:
        """Remove a scope's override; False if it had none."""
        async with self._db.transaction("delete_trust_override") as txn:
            found = await txn.fetchval(
                "SELECT scope FROM trusted_servers_overrides WHERE scope = $1", scope
            )
            if found is None:
                return False
            await txn.execute("DELETE FROM trusted_servers_overrides WHERE scope = $1", scope)
        return True
