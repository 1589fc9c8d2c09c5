"""``homeserver tenant create|list|suspend|resume|remove``: manage tenants.

Works on the database the config names, with or without the node running: a
running node re-reads the ``tenants`` table every few seconds
(:data:`homeserver.tenants.REFRESH_INTERVAL_S`), so changes take effect
without a restart. ``create`` writes the tenant's signing key under
``<data_dir>/tenants/``; with ``--mode dedicated`` it also creates the
schema in ``--database-url``. Exit status 0 on success, 1 with a one-line
reason otherwise.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.cli._common import open_registry, run_with_config
from homeserver.config import HomeserverConfig
from homeserver.tenants import Quotas, TenantError, TenantState
from storage.errors import StorageError

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tenant",
        help="Create, list, suspend, resume or remove the server names this node hosts.",
        description="Manage tenants (server names hosted by this node) in the database the "
        "config names. A running node picks changes up within seconds. Tenants declared in "
        "the config are changed by editing it.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str, *, named: bool = True) -> argparse.ArgumentParser:
        a: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
        a.add_argument("--config", "-c", required=True, metavar="FILE", help="the YAML config")
        if named:
            a.add_argument("name", metavar="NAME", help="the tenant's server name")
        a.set_defaults(func=run_tenant)
        return a

    c = action("create", "Create a tenant: its signing key, (dedicated mode) its database schema.")
    c.add_argument(
        "--mode",
        choices=("shared", "dedicated"),
        default="shared",
        help="shared: rows in the node's database (default); dedicated: its own database",
    )
    c.add_argument("--database-url", metavar="URL", help="the dedicated database")
    c.add_argument(
        "--client-hostname",
        action="append",
        default=[],
        metavar="HOST",
        help="another Host name its client API answers on (repeatable)",
    )
    c.add_argument("--max-users", type=int, metavar="N")
    c.add_argument("--max-rooms", type=int, metavar="N")
    c.add_argument("--max-events-per-minute", type=int, metavar="N")
    c.add_argument("--admin-contact", metavar="URI", help="e.g. mailto:ops@example.org")
    c.add_argument("--enable-registration", action="store_true", help="open registration on it")
    lst = action("list", "List every tenant and its state.", named=False)
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    action("suspend", "Suspend a tenant: its client API answers 403, its federation stops.")
    action("resume", "Resume a suspended tenant.")
    action("remove", "Remove a tenant created at run time, with its accounts and tokens.")


def _print_tenant(t: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(t, sort_keys=True))
        return
    extra = []
    if t["client_hostnames"]:
        extra.append("hosts=" + ",".join(t["client_hostnames"]))
    if t["quotas"]:
        extra.append("quotas=" + ",".join(f"{k}={v}" for k, v in sorted(t["quotas"].items())))
    if t["primary"]:
        extra.append("primary")
    print("\t".join([t["server_name"], t["state"], t["mode"], t["source"], " ".join(extra)]))


async def _run(args: argparse.Namespace, config: HomeserverConfig) -> None:
    db, registry = await open_registry(config)
    try:
        actions: dict[str, Callable[[], Awaitable[None]]] = {}

        async def create() -> None:
            tenant = await registry.create(
                args.name,
                mode=args.mode,
                database_url=args.database_url,
                client_hostnames=args.client_hostname,
                quotas=Quotas(
                    args.max_users, args.max_rooms, args.max_events_per_minute, args.admin_contact
                ),
                enable_registration=args.enable_registration,
            )
            print(f"created {tenant.server_name} (signing key {tenant.signing_key_path})")

        async def list_() -> None:
            for t in registry.all():
                _print_tenant(t.to_json(), args.json)

        async def suspend() -> None:
            await registry.set_state(args.name, TenantState.SUSPENDED)
            print(f"suspended {args.name}")

        async def resume() -> None:
            await registry.set_state(args.name, TenantState.ACTIVE)
            print(f"resumed {args.name}")

        async def remove() -> None:
            await registry.remove(args.name)
            print(f"removed {args.name}")

        actions.update(create=create, list=list_, suspend=suspend, resume=resume, remove=remove)
        await actions[args.action]()
    finally:
        await registry.close()
        await db.close()


def run_tenant(args: argparse.Namespace) -> int:
    return run_with_config(
        f"homeserver tenant {args.action}", args.config, lambda config: _run(args, config),
        (TenantError, StorageError),
    )
