"""``/_concord/admin/v1/federation``: destinations, dead letters, replay windows.

Needs the access token of a *server* admin (an admin account of the node's
own ``server_name``): delivery state is the node's, shared by its tenants.
docs/usage/delivery.md and docs/usage/administration/admin_api.md.

* ``GET  /destinations``: ``{"destinations": [...]}``; ``GET /destinations/{name}``
* ``POST /destinations/{name}/reset``: end the backoff, retry now
* ``GET  /dead_letters?destination=&room_id=&reason=&origin=&older_than=&newer_than=
  &limit=&from=``: ``{"dead_letters": [...], "total", "next_token"?}``
* ``GET  /dead_letters/{id}`` (with ``event`` while it is stored), ``DELETE`` it
* ``POST /dead_letters/{id}/replay``
* ``POST /dead_letters/replay`` and ``/dead_letters/purge`` with a body of
  filters (``ids``, ``destination``, ``room_id``, ``reason``, ``origin``,
  ``older_than``, ``newer_than``); purging everything needs ``"all": true``
* ``POST /replay``: ``{"destination", "since", "room_id"?, "origin"?}``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from federation.errors import Codes, MatrixError
from homeserver.auth import Auth
from homeserver.federation_sender.admin import (
    DeliveryAdmin,
    ReplayScopeError,
    parse_age,
    parse_since,
    tenant_databases,
)
from homeserver.http.json import JsonDict, read_json_body
from homeserver.http.servlet import Servlet
from storage.stores.dead_letters import DeadLetterFilter, DeadLetterReason

if TYPE_CHECKING:
    from federation.clock import Clock
    from homeserver.server import HomeServer

__all__ = ["register"]

PREFIX = "/_concord/admin/v1/federation"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_REASONS = {r.value for r in DeadLetterReason}


def _bad(msg: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, msg)


def _str(raw: Any, name: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw:
        raise _bad(f"{name} must be a non-empty string")
    return raw


def _age(raw: Any, name: str) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    if isinstance(raw, str):
        try:
            return parse_age(raw)
        except ValueError:
            pass
    raise _bad(f'{name} must be a duration like "30m", "2h" or "7d", or milliseconds')


def _filter(params: Any, now_ms: int) -> DeadLetterFilter:
    """Filters from query parameters or a JSON body (same names)."""
    reason = _str(params.get("reason"), "reason")
    if reason is not None and reason not in _REASONS:
        raise _bad(f"reason must be one of {', '.join(sorted(_REASONS))}")
    older = _age(params.get("older_than"), "older_than")
    newer = _age(params.get("newer_than"), "newer_than")
    ids = params.get("ids")
    if ids is not None and (
        not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids)
    ):
        raise _bad("ids must be a list of dead-letter IDs")
    return DeadLetterFilter(
        destination=_str(params.get("destination"), "destination"),
        room_id=_str(params.get("room_id"), "room_id"),
        reason=reason,
        origin=_str(params.get("origin"), "origin"),
        dead_before_ts=None if older is None else now_ms - older,
        dead_since_ts=None if newer is None else now_ms - newer,
        ids=None if ids is None else tuple(ids),
    )


class _FederationAdminServlet(Servlet):
    def __init__(self, auth: Auth, admin: DeliveryAdmin, clock: Clock) -> None:
        self._auth = auth
        self._admin = admin
        self._clock = clock

    async def _require(self, request: web.Request) -> None:
        requester = await self._auth.get_user_by_req(request)
        if not requester.is_server_admin:
            raise MatrixError(
                403, Codes.FORBIDDEN,
                "Federation delivery is managed by an admin of the node's own server name",
            )


class DestinationsServlet(_FederationAdminServlet):
    PATTERNS = (f"{PREFIX}/destinations",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        return 200, {"destinations": [d.to_json() for d in await self._admin.destinations()]}


class DestinationServlet(_FederationAdminServlet):
    PATTERNS = (f"{PREFIX}/destinations/{{destination}}",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        name = request.match_info["destination"]
        info = await self._admin.destination(name)
        if info is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"No delivery state for {name}")
        return 200, info.to_json()


class ResetDestinationServlet(_FederationAdminServlet):
    PATTERNS = (f"{PREFIX}/destinations/{{destination}}/reset",)

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        name = request.match_info["destination"]
        if not await self._admin.reset_backoff(name):
            raise MatrixError(404, Codes.NOT_FOUND, f"No delivery state for {name}")
        info = await self._admin.destination(name)
        assert info is not None
        return 200, info.to_json()


class DeadLettersServlet(_FederationAdminServlet):
    PATTERNS = (f"{PREFIX}/dead_letters",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        q = request.query
        filt = _filter(q, self._clock.time_ms())
        raw_limit = q.get("limit", str(DEFAULT_LIMIT))
        if not raw_limit.isdigit() or int(raw_limit) < 1:
            raise _bad("limit must be a positive integer")
        limit = min(int(raw_limit), MAX_LIMIT)
        after = None
        token = q.get("from")
        if token is not None:
            parts = token.split("_", 2)
            if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
                raise _bad("from must be a next_token from an earlier answer")
            after = (int(parts[0]), int(parts[1]), parts[2])
        letters, total = await self._admin.dead_letters(filt, limit=limit + 1, after=after)
        body: JsonDict = {"dead_letters": [d.to_json() for d in letters[:limit]],
                          "total": total}
        if len(letters) > limit:
            last = letters[limit - 1]
            body["next_token"] = f"{last.dead_ts}_{last.seq}_{last.dead_letter_id}"
        return 200, body


class DeadLetterServlet(_FederationAdminServlet):
    PATTERNS = (f"{PREFIX}/dead_letters/{{id}}",)

    async def on_GET(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        found = await self._admin.dead_letter(request.match_info["id"])
        if found is None:
            raise MatrixError(404, Codes.NOT_FOUND, "No such dead letter")
        letter, db = found
        body = letter.to_json()
        if letter.kind == "pdu":
            body["event"] = await self._admin.event_of(letter, db)
        return 200, body

    async def on_DELETE(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        dl_id = request.match_info["id"]
        n = await self._admin.purge_dead_letters(DeadLetterFilter(ids=(dl_id,)))
        if not n:
            raise MatrixError(404, Codes.NOT_FOUND, "No such dead letter")
        return 200, {"purged": n}


class ReplayDeadLetterServlet(_FederationAdminServlet):
    PATTERNS = (f"{PREFIX}/dead_letters/{{id}}/replay",)

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        dl_id = request.match_info["id"]
        n = await self._admin.replay_dead_letters(DeadLetterFilter(ids=(dl_id,)))
        if not n:
            raise MatrixError(404, Codes.NOT_FOUND, "No such dead letter")
        return 200, {"replayed": n}


class BulkDeadLettersServlet(_FederationAdminServlet):
    # Registered before DeadLetterServlet's {id} pattern would match "replay"/"purge".
    PATTERNS = (f"{PREFIX}/dead_letters/{{action:(replay|purge)}}",)

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        body = await read_json_body(request)
        filt = _filter(body, self._clock.time_ms())
        if request.match_info["action"] == "replay":
            return 200, {"replayed": await self._admin.replay_dead_letters(filt)}
        everything = body.get("all")
        if everything is not None and not isinstance(everything, bool):
            raise _bad("all must be true or false")
        if filt.is_empty and not everything:
            raise _bad('purging every dead letter needs "all": true')
        return 200, {"purged": await self._admin.purge_dead_letters(filt)}


class ReplayWindowServlet(_FederationAdminServlet):
    PATTERNS = (f"{PREFIX}/replay",)

    async def on_POST(self, request: web.Request) -> tuple[int, JsonDict]:
        await self._require(request)
        body = await read_json_body(request)
        destination = _str(body.get("destination"), "destination")
        if destination is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "destination is required")
        raw_since = body.get("since")
        if isinstance(raw_since, int) and not isinstance(raw_since, bool) and raw_since >= 0:
            since = raw_since
        elif isinstance(raw_since, str):
            try:
                since = parse_since(raw_since, self._clock.time_ms())
            except ValueError:
                raise _bad("since must be milliseconds since the epoch, an ISO 8601 time "
                           'or an age like "2h"') from None
        else:
            raise MatrixError(400, Codes.MISSING_PARAM,
                              "since is required (milliseconds, ISO 8601 time or age)")
        try:
            queued = await self._admin.replay_window(
                destination, since, room_id=_str(body.get("room_id"), "room_id"),
                origin=_str(body.get("origin"), "origin"),
            )
        except ReplayScopeError as e:
            raise _bad(str(e)) from None
        return 200, {"queued": queued, "since": since}


def delivery_admin(hs: HomeServer) -> DeliveryAdmin:
    sender: Any = getattr(hs, "federation_sender", None)
    origins, database_for = tenant_databases(hs.tenants, hs.database)
    return DeliveryAdmin(clock=hs.clock, origins=origins, database_for=database_for,
                         sender=sender)


def register(app: web.Application, hs: HomeServer) -> None:
    admin = delivery_admin(hs)
    for cls in (DestinationsServlet, ResetDestinationServlet, DestinationServlet,
                BulkDeadLettersServlet, ReplayDeadLetterServlet, DeadLetterServlet,
                DeadLettersServlet, ReplayWindowServlet):
        cls(hs.auth, admin, hs.clock).register(app)
