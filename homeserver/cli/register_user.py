"""``homeserver register-user``: create an account directly in the database.

For the first admin of a node (whose token the admin API needs) and for
scripts. Like Synapse's ``register_new_matrix_user``, but it needs no running
server and no shared secret: access to the config and database is the
authority. The account is created on ``--tenant`` (default: the node's own
``server_name``) with a bcrypt hash at the config's ``password_hash_rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from federation.clock import RealClock
from federation.errors import MatrixError
from homeserver.cli._common import open_registry, report_config_error
from homeserver.config import ConfigError, HomeserverConfig, load_config
from homeserver.handlers.accounts import MAX_PASSWORD_LENGTH, check_localpart
from homeserver.passwords import PasswordHasher
from homeserver.tenants import TenantError
from storage.errors import StorageError
from storage.stores.users import CreateUserResult

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "register-user",
        help="Create a user account (optionally a server admin) on a tenant.",
        description="Create USER with PASSWORD on the node's own server name, or on "
        "--tenant. --admin makes the account an admin of that tenant; an admin of the "
        "node's own server name may also manage tenants through the admin API.",
    )
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="the YAML config")
    p.add_argument("--tenant", metavar="NAME", help="the tenant's server name")
    p.add_argument("--admin", action="store_true", help="make the user an admin")
    p.add_argument("user", metavar="USER", help="the localpart (alice) or full ID")
    p.add_argument("password", metavar="PASSWORD")
    p.set_defaults(func=register_user)


async def _register(args: argparse.Namespace, config: HomeserverConfig) -> str:
    db, registry = await open_registry(config)
    try:
        name = args.tenant or config.server_name
        tenant = registry.get(name)
        if tenant is None:
            raise TenantError(f"no tenant named {name}")
        localpart = args.user
        if localpart.startswith("@"):
            localpart, _, server = localpart[1:].partition(":")
            if server != tenant.server_name:
                raise TenantError(f"{args.user} is not a user ID of {tenant.server_name}")
        user_id = check_localpart(localpart.lower(), tenant.server_name)
        if len(args.password) > MAX_PASSWORD_LENGTH:
            raise TenantError(f"password may not be longer than {MAX_PASSWORD_LENGTH} characters")
        password_hash = await PasswordHasher(config.password_hash_rounds).hash(args.password)
        store = await tenant.user_store()
        result = await store.create_user(
            user_id,
            password_hash,
            admin=args.admin,
            now_ms=RealClock().time_ms(),
            max_users=tenant.quotas.max_users,
        )
        if result is CreateUserResult.TAKEN:
            raise TenantError(f"{user_id} already exists")
        if result is CreateUserResult.OVER_QUOTA:
            raise TenantError(
                f"{tenant.server_name} has reached its limit of {tenant.quotas.max_users} users"
            )
        return user_id
    finally:
        await registry.close()
        await db.close()


def register_user(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        return report_config_error("homeserver register-user", args.config, e)
    try:
        user_id = asyncio.run(_register(args, config))
    except (TenantError, StorageError) as e:
        print(f"homeserver register-user: {e}", file=sys.stderr)
        return 1
    except MatrixError as e:
        print(f"homeserver register-user: {e.msg}", file=sys.stderr)
        return 1
    print(f"registered {user_id}{' (admin)' if args.admin else ''}")
    return 0
