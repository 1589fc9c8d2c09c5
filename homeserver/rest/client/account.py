"""``/account/whoami`` and the minimal device endpoints.

Client-Server API "Current account information" (``GET /account/whoami``)
and "Device management" (``GET /devices``, ``GET``/``PUT /devices/{deviceId}``).
A device is created at login; deleting one through the API needs
user-interactive auth and is not offered yet (``/logout`` deletes the
caller's own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from federation.errors import Codes, MatrixError
from homeserver.auth import Auth
from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.rest.client.register import body_str, client_patterns
from storage.stores.users import DeviceRow

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["DeviceServlet", "DevicesServlet", "WhoamiServlet", "register"]


class WhoamiServlet(Servlet):
    PATTERNS = client_patterns("/account/whoami")

    def __init__(self, auth: Auth) -> None:
        self._auth = auth

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        requester = await self._auth.get_user_by_req(request)
        body: JsonDict = {"user_id": requester.user_id, "is_guest": False}
        if requester.device_id is not None:
            body["device_id"] = requester.device_id
        return 200, body


def _device_json(d: DeviceRow) -> JsonDict:
    body: JsonDict = {"device_id": d.device_id}
    if d.display_name is not None:
        body["display_name"] = d.display_name
    if d.last_seen_ts is not None:
        body["last_seen_ts"] = d.last_seen_ts
    if d.last_seen_ip is not None:
        body["last_seen_ip"] = d.last_seen_ip
    return body


class DevicesServlet(Servlet):
    PATTERNS = client_patterns("/devices")

    def __init__(self, auth: Auth) -> None:
        self._auth = auth

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        requester = await self._auth.get_user_by_req(request)
        store = await requester.tenant.user_store()
        devices = await store.get_devices(requester.user_id)
        return 200, {"devices": [_device_json(d) for d in devices]}


class DeviceServlet(Servlet):
    PATTERNS = client_patterns("/devices/{device_id}")

    def __init__(self, auth: Auth) -> None:
        self._auth = auth

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        requester = await self._auth.get_user_by_req(request)
        device_id = request.match_info["device_id"]
        store = await requester.tenant.user_store()
        for d in await store.get_devices(requester.user_id):
            if d.device_id == device_id:
                return 200, _device_json(d)
        raise MatrixError(404, Codes.NOT_FOUND, "Device not found")

    async def on_PUT(self, request: web.Request) -> tuple[int, JsonDict]:
        requester = await self._auth.get_user_by_req(request)
        body = await read_json_body(request, allow_empty=True)
        display_name = body_str(body, "display_name")
        store = await requester.tenant.user_store()
        device_id = request.match_info["device_id"]
        if not await store.set_device_display_name(requester.user_id, device_id, display_name):
            raise MatrixError(404, Codes.NOT_FOUND, "Device not found")
        return 200, {}


def register(app: web.Application, hs: HomeServer) -> None:
    WhoamiServlet(hs.auth).register(app)
    DevicesServlet(hs.auth).register(app)
    DeviceServlet(hs.auth).register(app)
