"""``GET /sync``, filters (``POST/GET /user/{userId}/filter``) and account data.

Spec: client-server-api "Syncing", "Filtering", "Client Config".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from federation.canonical_json import parse_json_strict
from federation.errors import Codes, MatrixError
from homeserver.handlers.client_stores import TenantStores
from homeserver.handlers.room_access import check_room_id
from homeserver.handlers.sync import SyncFilter
from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.rest.client._params import query_bool, query_int
from homeserver.rest.client.client_api import ClientAPI, client_api, client_patterns

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register"]

Result = tuple[int, JsonDict]
# Longest long-poll honoured; clients normally ask for 30 s.
MAX_SYNC_TIMEOUT_MS = 5 * 60_000


class _Base(Servlet):
    def __init__(self, api: ClientAPI) -> None:
        self.api = api


def _filter_id(raw: str) -> int | None:
    """A stored filter's ID, or None if ``raw`` cannot be one (filter IDs are
    ours: ASCII digits, within a BIGINT; anything else names no filter)."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return None
    value = int(raw)
    return value if value < 2**63 else None


async def _load_filter(ts: TenantStores, user_id: str, raw: str | None) -> SyncFilter:
    if raw is None or raw == "":
        return SyncFilter()
    if raw.startswith("{"):
        return SyncFilter.from_json(parse_json_strict(raw.encode()))
    filter_id = _filter_id(raw)
    if filter_id is None:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid filter {raw!r}")
    stored = await ts.s.filters.get_filter(ts.server_name, user_id, filter_id)
    if stored is None:
        raise MatrixError(400, Codes.INVALID_PARAM, f"Unknown filter {raw}")
    return SyncFilter.from_json(stored)


class SyncServlet(_Base):
    PATTERNS = client_patterns("/sync")

    async def on_GET(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        flt = await _load_filter(ts, requester.user_id, request.query.get("filter"))
        timeout = min(query_int(request, "timeout", 0), MAX_SYNC_TIMEOUT_MS)
        return 200, await self.api.sync.sync(
            ts, requester.user_id, token_id=str(requester.token_id),
            since=request.query.get("since") or None, timeout_ms=timeout,
            full_state=query_bool(request, "full_state"), flt=flt,
        )


def _own_user(requester: Any, user_id: str) -> None:
    if user_id != requester.user_id:
        raise MatrixError(403, Codes.FORBIDDEN, "You may only use your own user ID here")


class FilterServlet(_Base):
    PATTERNS = client_patterns("/user/{user:[^/]+}/filter")

    async def on_POST(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        _own_user(requester, request.match_info["user"])
        body = await read_json_body(request)
        SyncFilter.from_json(body)  # refuse what /sync would refuse later
        filter_id = await ts.s.filters.add_filter(ts.server_name, requester.user_id, body)
        return 200, {"filter_id": str(filter_id)}


class GetFilterServlet(_Base):
    PATTERNS = client_patterns("/user/{user:[^/]+}/filter/{filter:[^/]+}")

    async def on_GET(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        _own_user(requester, request.match_info["user"])
        filter_id = _filter_id(request.match_info["filter"])
        found = await ts.s.filters.get_filter(
            ts.server_name, requester.user_id, filter_id) if filter_id is not None else None
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No such filter")
        return 200, found


class AccountDataServlet(_Base):
    PATTERNS = (
        *client_patterns("/user/{user:[^/]+}/account_data/{type:[^/]+}"),
        *client_patterns("/user/{user:[^/]+}/rooms/{room:[^/]+}/account_data/{type:[^/]+}"),
    )

    async def on_GET(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        _own_user(requester, request.match_info["user"])
        room = request.match_info.get("room", "")
        found = await ts.s.account_data.get(
            ts.server_name, requester.user_id, room, request.match_info["type"])
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No account data of that type")
        return 200, found

    async def on_PUT(self, request: web.Request) -> Result:
        requester, ts = await self.api.auth(request)
        _own_user(requester, request.match_info["user"])
        room = request.match_info.get("room", "")
        if room:
            check_room_id(room)
        data_type = request.match_info["type"]
        if data_type in ("m.fully_read", "m.push_rules"):
            raise MatrixError(400, Codes.BAD_JSON,
                              f"{data_type} cannot be set through this API")
        body = await read_json_body(request)
        await ts.s.account_data.put(ts.server_name, requester.user_id, room, data_type, body)
        self.api.notifier.notify(ts.server_name, user_ids=[requester.user_id])
        return 200, {}


def register(app: web.Application, hs: HomeServer) -> None:
    api = client_api(hs)
    for cls in (SyncServlet, FilterServlet, GetFilterServlet, AccountDataServlet):
        cls(api).register(app)
