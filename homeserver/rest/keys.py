"""Key servlets: publishing our keys and acting as a notary.

Spec: server-server API "Retrieving server keys":

- ``GET /_matrix/key/v2/server`` (keys_server.yaml): our keys, self-signed
  by every current key, with ``old_verify_keys``;
- ``POST /_matrix/key/v2/query`` and ``GET /_matrix/key/v2/query/{serverName}``
  (keys_query.yaml): other servers' key responses as we have them (cached,
  or fetched from the origin when not valid until ``minimum_valid_until_ts``,
  which defaults to now), each with our signature added.

These endpoints need no X-Matrix authentication (keys must be fetchable
before anything can be verified).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from federation.event_format import is_valid_server_name
from federation.server_keys import notary_sign
from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from homeserver.keys import KeyService, key_service_for

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["LocalKeyServlet", "NotaryKeyQueryServlet", "NotaryServerKeyServlet", "register"]

# How many servers one POST /query may ask about: each may cost a fetch.
MAX_SERVERS_PER_QUERY = 100


def _tenant(request: web.Request, keys: KeyService, default: str) -> str:
    """The hosted name a request is for, from its Host header (multi-tenant)."""
    host = request.headers.get("Host", "")
    return host if keys.hosts(host) else default


class LocalKeyServlet(Servlet):
    PATTERNS = ("/_matrix/key/v2/server",)

    def __init__(self, keys: KeyService, default_server_name: str) -> None:
        self._keys = keys
        self._default = default_server_name

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        return 200, await self._keys.key_response(_tenant(request, self._keys, self._default))


class _NotaryBase(Servlet):
    def __init__(self, keys: KeyService, clock: Clock, default_server_name: str) -> None:
        self._keys = keys
        self._clock = clock
        self._default = default_server_name

    async def _responses_for(
        self, notary: str, server_name: str, key_ids: list[str], minimum_valid_until_ts: int
    ) -> list[dict[str, Any]]:
        if self._keys.hosts(server_name):
            return [await self._keys.key_response(server_name)]
        await self._keys.start()
        found = await self._keys.keyring.get_responses_for_notary(
            server_name, key_ids, minimum_valid_until_ts
        )
        signing = self._keys.signing_keys(notary)
        return [notary_sign(r, notary, signing) for r in found]


def _min_valid(value: Any, now: int, where: str) -> int:
    if value is None:
        return now
    if type(value) is not int:
        raise MatrixError(
            400, Codes.BAD_JSON, f"{where}: minimum_valid_until_ts must be an integer"
        )
    return value


class NotaryKeyQueryServlet(_NotaryBase):
    PATTERNS = ("/_matrix/key/v2/query",)

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        body = await read_json_body(request)
        query = body.get("server_keys")
        if not isinstance(query, dict):
            raise MatrixError(400, Codes.BAD_JSON, "server_keys must be an object")
        if len(query) > MAX_SERVERS_PER_QUERY:
            raise MatrixError(
                400,
                Codes.BAD_JSON,
                f"server_keys asks about {len(query)} servers; at most {MAX_SERVERS_PER_QUERY}",
            )
        now = self._clock.time_ms()
        asks: list[tuple[str, list[str], int]] = []
        for server_name, criteria in query.items():
            if not is_valid_server_name(server_name):
                raise MatrixError(400, Codes.BAD_JSON, f"{server_name!r} is not a server name")
            if not isinstance(criteria, dict):
                raise MatrixError(
                    400, Codes.BAD_JSON, f"server_keys.{server_name} must be an object"
                )
            min_valid = now
            for key_id, c in criteria.items():
                if not isinstance(c, dict):
                    raise MatrixError(
                        400, Codes.BAD_JSON, f"server_keys.{server_name}.{key_id} must be an object"
                    )
                where = f"server_keys.{server_name}.{key_id}"
                min_valid = max(min_valid, _min_valid(c.get("minimum_valid_until_ts"), now, where))
            asks.append((server_name, list(criteria), min_valid))
        notary = _tenant(request, self._keys, self._default)
        results = await asyncio.gather(
            *(self._responses_for(notary, name, ids, mv) for name, ids, mv in asks)
        )
        return 200, {"server_keys": [r for rs in results for r in rs]}


class NotaryServerKeyServlet(_NotaryBase):
    PATTERNS = ("/_matrix/key/v2/query/{server_name}",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        server_name = request.match_info["server_name"]
        if not is_valid_server_name(server_name):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{server_name!r} is not a server name")
        now = self._clock.time_ms()
        raw = request.query.get("minimum_valid_until_ts")
        min_valid = now
        if raw is not None:
            try:
                min_valid = int(raw)
            except ValueError:
                raise MatrixError(
                    400, Codes.INVALID_PARAM, "minimum_valid_until_ts must be an integer"
                ) from None
        notary = _tenant(request, self._keys, self._default)
        return 200, {"server_keys": await self._responses_for(notary, server_name, [], min_valid)}


def register(app: web.Application, hs: HomeServer) -> None:
    keys = key_service_for(hs)
    LocalKeyServlet(keys, hs.server_name).register(app)
    NotaryKeyQueryServlet(keys, hs.clock, hs.server_name).register(app)
    NotaryServerKeyServlet(keys, hs.clock, hs.server_name).register(app)
