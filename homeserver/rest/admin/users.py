"""``/_concord/admin/v1/users``: a tenant admin's view of its own accounts.

An admin sees the users of the tenant the request was routed to, never
another tenant's: a user ID of another tenant is 404 ``M_NOT_FOUND``, as if
it did not exist.

* ``GET /users?from=USER_ID&limit=N``: ``{"users": [...], "next_token"?}``
* ``GET /users/{userId}``
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from federation.errors import Codes, MatrixError
from homeserver.auth import Auth
from homeserver.http.json import JsonDict
from homeserver.http.servlet import Servlet
from storage.stores.users import UserRow

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register"]

PREFIX = "/_concord/admin/v1/users"
MAX_LIMIT = 1000


def _user_json(u: UserRow) -> JsonDict:
    return {
        "user_id": u.user_id,
        "admin": u.admin,
        "deactivated": u.deactivated,
        "created_ts": u.created_ts,
    }


class UsersServlet(Servlet):
    PATTERNS = (PREFIX,)

    def __init__(self, auth: Auth) -> None:
        self._auth = auth

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        requester = await self._auth.get_user_by_req(request)
        self._auth.require_tenant_admin(requester)
        raw_limit = request.query.get("limit", "100")
        if not raw_limit.isdigit() or int(raw_limit) < 1:
            raise MatrixError(400, Codes.INVALID_PARAM, "limit must be a positive integer")
        limit = min(int(raw_limit), MAX_LIMIT)
        start = request.query.get("from", "")
        store = await requester.tenant.user_store()
        users = await store.list_users(limit=limit + 1, from_user_id=start)
        body: JsonDict = {"users": [_user_json(u) for u in users[:limit]]}
        if len(users) > limit:
            body["next_token"] = users[limit - 1].user_id
        return 200, body


class UserServlet(Servlet):
    PATTERNS = (PREFIX + "/{user_id}",)

    def __init__(self, auth: Auth) -> None:
        self._auth = auth

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        requester = await self._auth.get_user_by_req(request)
        self._auth.require_tenant_admin(requester)
        store = await requester.tenant.user_store()
        user = await store.get_user(request.match_info["user_id"])
        if user is None:
            raise MatrixError(404, Codes.NOT_FOUND, "User not found")
        return 200, _user_json(user)


def register(app: web.Application, hs: HomeServer) -> None:
    UsersServlet(hs.auth).register(app)
    UserServlet(hs.auth).register(app)
