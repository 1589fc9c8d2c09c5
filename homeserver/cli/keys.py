"""``homeserver keys rotate|list|revoke``: our signing keys (docs/usage/key_rotation.md).

Works on the key files and the database the config names, with or without
the node running: a running node notices within
:data:`homeserver.keys.KEY_REFRESH_INTERVAL_S` seconds, or at once on
SIGHUP, and signs new events with the new key without a restart. Exit
status 0 on success, 1 with a one-line reason otherwise.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from federation.clock import RealClock
from homeserver.cli._common import open_database, run_with_config
from homeserver.config import HomeserverConfig, parse_duration
from homeserver.key_rotation import (
    KeyInfo,
    KeyRotationError,
    list_signing_keys,
    revoke_signing_key,
    rotate_signing_key,
)
from storage.database import Database
from storage.errors import StorageError
from storage.stores.tenants import TenantStore

__all__ = ["DEFAULT_OVERLAP", "add_parser"]

#: How long a rotated-out key stays valid for events (``expired_ts`` = now + this).
DEFAULT_OVERLAP = "1h"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "keys",
        help="Rotate, list or revoke this server's signing keys.",
        description="Manage the signing keys of the node's server name (or of a tenant with "
        "--tenant). A running node picks changes up within seconds, or at once on SIGHUP.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        a: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
        a.add_argument("--config", "-c", required=True, metavar="FILE", help="the YAML config")
        a.add_argument("--tenant", metavar="NAME", help="a tenant's server name (default: the "
                       "node's own)")
        a.set_defaults(func=run_keys)
        return a

    r = action("rotate", "Create a new signing key and sign with it from now on; the old key "
               "stays published under old_verify_keys until now + --overlap.")
    r.add_argument("--overlap", default=DEFAULT_OVERLAP, metavar="DURATION",
                   help=f"how long the old key stays valid for events (default {DEFAULT_OVERLAP}"
                   "; e.g. 10m, 1h, 1d)")
    lst = action("list", "List the keys with their state: current, old (with its expiry) or "
                 "revoked.")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    rv = action("revoke", "Stop publishing a (compromised) key at once. A current key is "
                "rotated out first. Peers that never cached it can no longer verify what it "
                "signed.")
    rv.add_argument("key_id", metavar="KEY_ID", help="e.g. ed25519:a_bcde")


async def _key_path(db: Database, config: HomeserverConfig, tenant: str | None) -> tuple[str, str]:
    if tenant is None or tenant == config.server_name:
        return config.server_name, config.signing_key_path
    row = await TenantStore(db).get(tenant)
    if row is None:
        raise KeyRotationError(f"no tenant named {tenant}")
    return tenant, row.signing_key_path


def _ts(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(k: KeyInfo, now_ms: int) -> str:
    if k.state == "revoked":
        state = f"revoked {_ts(k.revoked_ts)}"
    elif k.state == "old":
        verb = "expires" if k.expired_ts is not None and k.expired_ts > now_ms else "expired"
        state = f"old, {verb} {_ts(k.expired_ts)}"
    else:
        state = "current"
    return "\t".join([k.server_name, k.key_id, state, f"created {_ts(k.created_ts)}",
                      k.public_key])


async def _run(args: argparse.Namespace, config: HomeserverConfig) -> None:
    db = await open_database(config)
    try:
        name, path = await _key_path(db, config, args.tenant)
        now = RealClock().time_ms()
        if args.action == "rotate":
            try:
                overlap = parse_duration(args.overlap)
            except ValueError:
                raise KeyRotationError(
                    f"--overlap: expected a duration like 10m, 1h or 1d, got {args.overlap!r}"
                ) from None
            res = await rotate_signing_key(db, name, path, now_ms=now, overlap_ms=overlap)
            print(f"{name}: now signing with {res.new_key_id}; "
                  f"{', '.join(res.retired_key_ids)} published as old until {_ts(res.expired_ts)}")
        elif args.action == "list":
            for k in await list_signing_keys(db, name, path):
                print(json.dumps(k.to_json(), sort_keys=True) if args.json else _describe(k, now))
        else:
            rotation = await revoke_signing_key(db, name, path, args.key_id, now_ms=now)
            if rotation is not None:
                print(f"{name}: {args.key_id} was current; now signing with {rotation.new_key_id}")
            print(f"{name}: {args.key_id} revoked; it is no longer published")
    finally:
        await db.close()


def run_keys(args: argparse.Namespace) -> int:
    return run_with_config(
        f"homeserver keys {args.action}", args.config, lambda config: _run(args, config),
        (KeyRotationError, StorageError, ValueError),
    )
