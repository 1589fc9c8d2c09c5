"""``/login``, ``/logout`` and ``/logout/all``.

Client-Server API "Login" and "Logout". Only ``m.login.password`` is offered,
with the ``m.id.user`` identifier or the deprecated top-level ``user``.
Attempts are rate-limited per client address and per account (429
``M_LIMIT_EXCEEDED`` with ``retry_after_ms``); a wrong password and an
unknown user get the same 403 ``M_FORBIDDEN``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from federation.errors import Codes, MatrixError
from homeserver.auth import Auth
from homeserver.handlers.accounts import AccountHandler
from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.http.tenant_routing import request_tenant
from homeserver.rest.client.register import body_str, check_password, client_patterns

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["LoginServlet", "LogoutAllServlet", "LogoutServlet", "register"]


def _login_user(body: JsonDict) -> str:
    identifier = body.get("identifier")
    if identifier is not None:
        if not isinstance(identifier, dict):
            raise MatrixError(400, Codes.INVALID_PARAM, "identifier must be an object")
        id_type = identifier.get("type")
        if id_type != "m.id.user":
            raise MatrixError(
                400, Codes.UNKNOWN, f"Unsupported identifier type {id_type!r}; use m.id.user"
            )
        user = body_str(identifier, "user", required=True)
    else:
        user = body_str(body, "user")
        if user is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter: identifier")
    assert user is not None
    if not user:
        raise MatrixError(400, Codes.INVALID_PARAM, "user must not be empty")
    return user


class LoginServlet(Servlet):
    PATTERNS = client_patterns("/login")

    def __init__(self, accounts: AccountHandler) -> None:
        self._accounts = accounts

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        request_tenant(request)
        return 200, {"flows": [{"type": "m.login.password"}]}

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        tenant = request_tenant(request)
        body = await read_json_body(request)
        login_type = body_str(body, "type", required=True)
        if login_type != "m.login.password":
            raise MatrixError(400, Codes.UNKNOWN, f"Unknown login type {login_type!r}")
        user = _login_user(body)
        password = body_str(body, "password", required=True)
        assert password is not None
        check_password(password)
        device_id = body_str(body, "device_id")
        display_name = body_str(body, "initial_device_display_name")
        result = await self._accounts.login_with_password(
            tenant,
            user,
            password,
            device_id=device_id,
            device_display_name=display_name,
            ip=request.remote,
        )
        return 200, result.to_json(tenant)


class LogoutServlet(Servlet):
    PATTERNS = client_patterns("/logout")

    def __init__(self, auth: Auth) -> None:
        self._auth = auth

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        requester = await self._auth.get_user_by_req(request)
        store = await requester.tenant.user_store()
        await store.delete_device(requester.user_id, requester.device_id, requester.token_id)
        return 200, {}


class LogoutAllServlet(Servlet):
    PATTERNS = client_patterns("/logout/all")

    def __init__(self, auth: Auth) -> None:
        self._auth = auth

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        requester = await self._auth.get_user_by_req(request)
        store = await requester.tenant.user_store()
        await store.delete_all_devices(requester.user_id)
        return 200, {}


def register(app: web.Application, hs: HomeServer) -> None:
    LoginServlet(hs.accounts).register(app)
    LogoutServlet(hs.auth).register(app)
    LogoutAllServlet(hs.auth).register(app)
