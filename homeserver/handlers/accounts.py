"""Accounts: registration, login, logout and sessions of a tenant's users.

Client-Server API "Account registration and management" and "Login"
(``client-server-api/_index.md``). Every operation takes the tenant the
request was routed to and reaches its rows through ``tenant.user_store()``,
so two tenants never see each other's accounts or tokens. Inputs are fully
checked before anything is written.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from homeserver.passwords import PasswordHasher
from homeserver.quotas import QuotaEnforcer
from homeserver.ratelimit import Ratelimiter
from homeserver.tenants import Tenant
from storage.stores.users import CreateUserResult

__all__ = ["AccountHandler", "LoginResult", "check_localpart"]

# Appendices "User Identifiers": the localpart grammar for new accounts.
_LOCALPART_RE = re.compile(r"^[a-z0-9._=\-/+]+$")
MAX_USER_ID_LENGTH = 255
#: Synapse refuses longer passwords, before hashing (bcrypt is slow).
MAX_PASSWORD_LENGTH = 512
_DEVICE_ID_CHARS = string.ascii_uppercase


def check_localpart(localpart: str, server_name: str) -> str:
    """The full user ID for a new account, or 400 ``M_INVALID_USERNAME``."""
    if not localpart:
        raise MatrixError(400, Codes.INVALID_USERNAME, "User ID cannot be empty")
    if not _LOCALPART_RE.match(localpart):
        raise MatrixError(
            400,
            Codes.INVALID_USERNAME,
            "User ID can only contain characters a-z, 0-9, or '=_-./+'",
        )
    if localpart.startswith("_"):
        # Reserved for application services' users, as in Synapse.
        raise MatrixError(400, Codes.INVALID_USERNAME, "User ID may not begin with _")
    user_id = f"@{localpart}:{server_name}"
    if len(user_id.encode("utf-8")) > MAX_USER_ID_LENGTH:
        raise MatrixError(
            400,
            Codes.INVALID_USERNAME,
            f"User ID may not be longer than {MAX_USER_ID_LENGTH} characters",
        )
    return user_id


def new_device_id() -> str:
    return "".join(secrets.choice(_DEVICE_ID_CHARS) for _ in range(10))


def new_access_token() -> str:
    # 256 bits; the database keeps only its SHA-256.
    return "cct_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class LoginResult:
    user_id: str
    device_id: str
    access_token: str

    def to_json(self, tenant: Tenant) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "access_token": self.access_token,
            "device_id": self.device_id,
            # Deprecated by the spec, still read by older clients.
            "home_server": tenant.server_name,
        }


class AccountHandler:
    def __init__(
        self,
        *,
        clock: Clock,
        hasher: PasswordHasher,
        quotas: QuotaEnforcer,
        login_per_address: Ratelimiter,
        login_per_account: Ratelimiter,
    ) -> None:
        self._clock = clock
        self._hasher = hasher
        self._quotas = quotas
        self._per_address = login_per_address
        self._per_account = login_per_account

    # -- registration

    async def check_available(self, tenant: Tenant, localpart: str) -> str:
        """The user ID for ``localpart``, or 400 M_INVALID_USERNAME / M_USER_IN_USE."""
        user_id = check_localpart(localpart, tenant.server_name)
        store = await tenant.user_store()
        if await store.get_user(user_id) is not None:
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken.")
        return user_id

    async def generate_localpart(self, tenant: Tenant) -> str:
        store = await tenant.user_store()
        while True:
            localpart = "u" + secrets.token_hex(5)
            if await store.get_user(f"@{localpart}:{tenant.server_name}") is None:
                return localpart

    async def register(
        self,
        tenant: Tenant,
        localpart: str,
        password: str,
        *,
        admin: bool = False,
        device_id: str | None = None,
        device_display_name: str | None = None,
        inhibit_login: bool = False,
        ip: str | None = None,
    ) -> tuple[str, LoginResult | None]:
        """Create the account (and a session unless ``inhibit_login``).

        Raises M_INVALID_USERNAME, M_USER_IN_USE or M_RESOURCE_LIMIT_EXCEEDED
        with nothing written.
        """
        user_id = await self.check_available(tenant, localpart)
        await self._quotas.check_can_register(tenant)
        password_hash = await self._hasher.hash(password)
        store = await tenant.user_store()
        result = await store.create_user(
            user_id,
            password_hash,
            admin=admin,
            now_ms=self._clock.time_ms(),
            max_users=tenant.quotas.max_users,
        )
        if result is CreateUserResult.TAKEN:
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken.")
        if result is CreateUserResult.OVER_QUOTA:
            raise self._quotas.users_exceeded(tenant)
        if inhibit_login:
            return user_id, None
        session = await self._new_session(tenant, user_id, device_id, device_display_name, ip)
        return user_id, session

    # -- login

    def parse_login_user(self, tenant: Tenant, user: str) -> str:
        """A login identifier's user (``alice`` or ``@alice:name``) as a user ID
        of this tenant; localparts are matched case-insensitively."""
        if user.startswith("@"):
            localpart, sep, server = user[1:].partition(":")
            if not sep or server != tenant.server_name:
                # Someone else's user: as unknown as a wrong password.
                raise MatrixError(403, Codes.FORBIDDEN, "Invalid username or password")
            user = localpart
        return f"@{user.lower()}:{tenant.server_name}"

    async def login_with_password(
        self,
        tenant: Tenant,
        user: str,
        password: str,
        *,
        device_id: str | None,
        device_display_name: str | None,
        ip: str | None,
    ) -> LoginResult:
        """Check the password and start a session; rate-limited per IP and per account.

        Every attempt counts, successful or not (as Synapse's ``rc_login``), so
        guessing passwords from many addresses is still slowed per account.
        """
        self._per_address.check((tenant.server_name, "ip", ip), what="login attempts")
        user_id = self.parse_login_user(tenant, user)
        self._per_account.check((tenant.server_name, "user", user_id), what="login attempts")
        store = await tenant.user_store()
        row = await store.get_user(user_id)
        ok = await self._hasher.check(password, None if row is None else row.password_hash)
        if row is None or not ok:
            raise MatrixError(403, Codes.FORBIDDEN, "Invalid username or password")
        if row.deactivated:
            raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
        return await self._new_session(tenant, user_id, device_id, device_display_name, ip)

    async def _new_session(
        self,
        tenant: Tenant,
        user_id: str,
        device_id: str | None,
        display_name: str | None,
        ip: str | None,
    ) -> LoginResult:
        store = await tenant.user_store()
        device_id = device_id or new_device_id()
        token = new_access_token()
        await store.login(
            user_id,
            device_id,
            token,
            now_ms=self._clock.time_ms(),
            display_name=display_name,
            ip=ip,
        )
        return LoginResult(user_id, device_id, token)
