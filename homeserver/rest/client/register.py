"""``/register`` and ``/register/available``.

Client-Server API "Account registration" (``POST /_matrix/client/v3/register``,
``GET .../register/available``). Open registration is per tenant
(``enable_registration``, off by default) and uses the user-interactive
authentication ``m.login.dummy`` flow, as Synapse offers it: the first
request without ``auth`` answers 401 with the flows and a ``session``; the
client repeats it with ``{"auth": {"type": "m.login.dummy", "session": ...}}``.
Username and password are checked before that 401, so a client learns of a
taken or invalid username at once. Guest registration is not offered.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING

from aiohttp import web

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from homeserver.handlers.accounts import MAX_PASSWORD_LENGTH, AccountHandler
from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.http.tenant_routing import request_tenant

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = [
    "RegisterAvailableServlet",
    "RegisterServlet",
    "body_bool",
    "body_str",
    "client_patterns",
    "register",
]

#: How long a user-interactive auth session stays valid.
UIA_SESSION_MS = 30 * 60 * 1000
_MAX_UIA_SESSIONS = 10_000


def client_patterns(path: str) -> tuple[str, ...]:
    """The v3 path and its r0 alias (clients that never moved to v3)."""
    return (f"/_matrix/client/v3{path}", f"/_matrix/client/r0{path}")


def body_str(body: JsonDict, name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing parameter: {name}")
        return None
    if not isinstance(value, str):
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name} must be a string")
    return value


def body_bool(body: JsonDict, name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name} must be true or false")
    return value


def check_password(password: str) -> None:
    if len(password) > MAX_PASSWORD_LENGTH:
        raise MatrixError(
            400,
            Codes.INVALID_PARAM,
            f"password may not be longer than {MAX_PASSWORD_LENGTH} characters",
        )


class UiaSessions:
    """Sessions handed out in 401 responses (in memory; a restart only means
    a client starts its registration over)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._sessions: OrderedDict[str, int] = OrderedDict()

    def new(self) -> str:
        session = secrets.token_urlsafe(16)
        self._sessions[session] = self._clock.time_ms() + UIA_SESSION_MS
        while len(self._sessions) > _MAX_UIA_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def valid(self, session: str) -> bool:
        expiry = self._sessions.get(session)
        return expiry is not None and expiry > self._clock.time_ms()

    def complete(self, session: str) -> None:
        self._sessions.pop(session, None)


def _uia_flows(session: str) -> JsonDict:
    return {"flows": [{"stages": ["m.login.dummy"]}], "params": {}, "session": session}


class RegisterServlet(Servlet):
    PATTERNS = client_patterns("/register")

    def __init__(self, accounts: AccountHandler, sessions: UiaSessions) -> None:
        self._accounts = accounts
        self._sessions = sessions

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant = request_tenant(request)
        kind = request.query.get("kind", "user")
        if kind == "guest":
            raise MatrixError(
                403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest access is disabled on this server"
            )
        if kind != "user":
            raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid kind {kind!r}")
        body = await read_json_body(request)
        if not tenant.enable_registration:
            raise MatrixError(403, Codes.FORBIDDEN, "Registration has been disabled")

        username = body_str(body, "username")
        password = body_str(body, "password")
        device_id = body_str(body, "device_id")
        display_name = body_str(body, "initial_device_display_name")
        inhibit_login = body_bool(body, "inhibit_login")
        auth = body.get("auth")
        if auth is not None and not isinstance(auth, dict):
            raise MatrixError(400, Codes.INVALID_PARAM, "auth must be an object")
        if password is not None:
            check_password(password)
        if username is not None:
            username = username.lower()
            await self._accounts.check_available(tenant, username)

        if auth is None:
            return 401, _uia_flows(self._sessions.new())
        session = auth.get("session")
        if session is not None and (
            not isinstance(session, str) or not self._sessions.valid(session)
        ):
            raise MatrixError(400, Codes.UNKNOWN, "Unknown session ID")
        if auth.get("type") != "m.login.dummy":
            body401 = _uia_flows(session or self._sessions.new())
            body401.update(errcode=Codes.UNRECOGNIZED.value, error="Unsupported auth type")
            return 401, body401
        if password is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter: password")
        localpart = username or await self._accounts.generate_localpart(tenant)
        user_id, login = await self._accounts.register(
            tenant,
            localpart,
            password,
            device_id=device_id,
            device_display_name=display_name,
            inhibit_login=inhibit_login,
            ip=request.remote,
        )
        if session is not None:
            self._sessions.complete(session)
        if login is None:
            return 200, {"user_id": user_id, "home_server": tenant.server_name}
        return 200, login.to_json(tenant)


class RegisterAvailableServlet(Servlet):
    PATTERNS = client_patterns("/register/available")

    def __init__(self, accounts: AccountHandler) -> None:
        self._accounts = accounts

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant = request_tenant(request)
        if not tenant.enable_registration:
            raise MatrixError(403, Codes.FORBIDDEN, "Registration has been disabled")
        username = request.query.get("username")
        if username is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter: username")
        await self._accounts.check_available(tenant, username.lower())
        return 200, {"available": True}


def register(app: web.Application, hs: HomeServer) -> None:
    sessions = UiaSessions(hs.clock)
    RegisterServlet(hs.accounts, sessions).register(app)
    RegisterAvailableServlet(hs.accounts).register(app)
