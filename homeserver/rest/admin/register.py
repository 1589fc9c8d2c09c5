"""Shared-secret registration, as Synapse's ``/_synapse/admin/v1/register``.

Synapse admin API "Shared-Secret Registration" (what
``register_new_matrix_user`` speaks): ``GET`` returns a one-time ``nonce``;
``POST`` carries ``nonce``, ``username``, ``password``, ``admin`` and
``mac``, the hex HMAC-SHA1 keyed by ``registration_shared_secret`` of
``nonce NUL username NUL password NUL ("admin" | "notadmin")`` (plus ``NUL
user_type`` when one is given). Served at the Synapse path and at
``/_concord/admin/v1/register``; the account is created on the tenant the
request was routed to, whether or not open registration is enabled. Nonces
are single use and expire after 60 seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from aiohttp import web

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from homeserver.handlers.accounts import AccountHandler
from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.http.tenant_routing import request_tenant
from homeserver.rest.client.register import body_bool, body_str, check_password

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["SharedSecretRegisterServlet", "compute_mac", "register"]

NONCE_TIMEOUT_MS = 60_000
_MAX_NONCES = 10_000


def compute_mac(
    secret: str,
    nonce: str,
    username: str,
    password: str,
    admin: bool,
    user_type: str | None = None,
) -> str:
    """The ``mac`` a client sends (hex HMAC-SHA1), as register_new_matrix_user computes it."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    mac.update(nonce.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(username.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(password.encode("utf-8"))
    mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    if user_type:
        mac.update(b"\x00")
        mac.update(user_type.encode("utf-8"))
    return mac.hexdigest()


class SharedSecretRegisterServlet(Servlet):
    PATTERNS = ("/_synapse/admin/v1/register", "/_concord/admin/v1/register")

    def __init__(self, accounts: AccountHandler, clock: Clock, secret: str | None) -> None:
        self._accounts = accounts
        self._clock = clock
        self._secret = secret
        self._nonces: dict[str, int] = {}

    def _require_enabled(self) -> str:
        if not self._secret:
            raise MatrixError(400, Codes.UNKNOWN, "Shared secret registration is not enabled")
        return self._secret

    def _expire(self) -> None:
        now = self._clock.time_ms()
        for nonce, created in list(self._nonces.items()):
            if now - created > NONCE_TIMEOUT_MS:
                del self._nonces[nonce]

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        request_tenant(request)
        self._require_enabled()
        self._expire()
        if len(self._nonces) >= _MAX_NONCES:
            raise MatrixError(429, Codes.LIMIT_EXCEEDED, "Too many outstanding nonces")
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = self._clock.time_ms()
        return 200, {"nonce": nonce}

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant = request_tenant(request)
        secret = self._require_enabled()
        body = await read_json_body(request)
        self._expire()
        nonce = body_str(body, "nonce", required=True)
        username = body_str(body, "username", required=True)
        password = body_str(body, "password", required=True)
        mac = body_str(body, "mac", required=True)
        user_type = body_str(body, "user_type")
        display_name = body_str(body, "displayname")
        admin = body_bool(body, "admin")
        assert nonce is not None and username is not None
        assert password is not None and mac is not None
        if nonce not in self._nonces:
            raise MatrixError(400, Codes.UNKNOWN, "Unrecognised nonce")
        # One use only, even when the MAC turns out wrong.
        del self._nonces[nonce]
        want = compute_mac(secret, nonce, username, password, admin, user_type)
        if not hmac.compare_digest(want.encode("ascii"), mac.encode("utf-8", "replace")):
            raise MatrixError(403, Codes.FORBIDDEN, "HMAC incorrect")
        check_password(password)
        user_id, login = await self._accounts.register(
            tenant,
            username.lower(),
            password,
            admin=admin,
            device_display_name=display_name,
            ip=request.remote,
        )
        assert login is not None
        return 200, login.to_json(tenant)


def register(app: web.Application, hs: HomeServer) -> None:
    SharedSecretRegisterServlet(
        hs.accounts, hs.clock, hs.config.registration_shared_secret
    ).register(app)
