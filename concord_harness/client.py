"""A small Matrix client (Client-Server API) over aiohttp, for harness tests.

It covers what federation tests need — rooms, membership, messages, state,
sync — and nothing else. Every call is a real HTTP request to the node's
client listener; a non-2xx answer raises :class:`MatrixRequestError`
carrying the status, ``errcode`` and ``error``.

Spec: client-server API (v3 endpoints).
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

__all__ = ["Client", "MatrixRequestError", "register"]

JsonDict = dict[str, Any]
Query = Mapping[str, str] | Sequence[tuple[str, str]]


class MatrixRequestError(Exception):
    """The homeserver answered a client request with an error."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        self.errcode = body.get("errcode") if isinstance(body, dict) else None
        self.error = body.get("error") if isinstance(body, dict) else None
        super().__init__(f"{method} {path}: HTTP {status} {self.errcode or ''} {self.error or body!r}")


def _q(s: str) -> str:
    return quote(s, safe="")


async def _request(
    session: aiohttp.ClientSession,
    base_url: str,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: Query | None = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    async with session.request(
        method, base_url + path, json=body, params=query, headers=headers
    ) as resp:
        try:
            data = await resp.json(content_type=None)
        except ValueError:
            data = await resp.text()
        if resp.status >= 300:
            raise MatrixRequestError(method, path, resp.status, data)
        return data


async def register(
    session: aiohttp.ClientSession,
    base_url: str,
    localpart: str,
    *,
    password: str | None = None,
    host: str | None = None,
) -> Client:
    """Register ``localpart`` with the ``m.login.dummy`` flow and return its client.

    Spec: client-server API "POST /_matrix/client/v3/register" and
    "User-Interactive Authentication API" (the first request may answer 401
    with a ``session`` to complete with the dummy stage).
    """
    headers = {"Host": host} if host else None
    body: JsonDict = {
        "username": localpart,
        "password": password or secrets.token_urlsafe(12),
        "inhibit_login": False,
    }
    try:
        data = await _request(
            session, base_url, "POST", "/_matrix/client/v3/register", body=body, headers=headers
        )
    except MatrixRequestError as e:
        if e.status != 401 or not isinstance(e.body, dict) or "session" not in e.body:
            raise
        body["auth"] = {"type": "m.login.dummy", "session": e.body["session"]}
        data = await _request(
            session, base_url, "POST", "/_matrix/client/v3/register", body=body, headers=headers
        )
    return Client(
        session,
        base_url,
        user_id=data["user_id"],
        access_token=data["access_token"],
        device_id=data.get("device_id"),
        host=host,
    )


class Client:
    """One logged-in user on one node. Build it with :func:`register`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        user_id: str,
        access_token: str,
        device_id: str | None = None,
        host: str | None = None,
    ) -> None:
        self._session = session
        self.base_url = base_url
        self.user_id = user_id
        self.access_token = access_token
        self.device_id = device_id
        self._host = host
        self._txn = itertools.count()
        self._txn_prefix = secrets.token_hex(4)

    def __repr__(self) -> str:
        return f"<Client {self.user_id} at {self.base_url}>"

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Query | None = None,
    ) -> Any:
        """Any client API call: ``await c.request("GET", "/_matrix/client/v3/...")``."""
        headers = {"Authorization": f"Bearer {self.access_token}"}
        if self._host:
            headers["Host"] = self._host
        return await _request(
            self._session, self.base_url, method, path, body=body, query=query, headers=headers
        )

    def _txn_id(self) -> str:
        return f"h{self._txn_prefix}.{next(self._txn)}"

    # Rooms and membership

    async def create_room(self, **body: Any) -> str:
        """``POST /createRoom`` with ``body`` as given; returns the room ID."""
        data = await self.request("POST", "/_matrix/client/v3/createRoom", body)
        return str(data["room_id"])

    async def join(self, room: str, *, via: list[str] | None = None) -> str:
        """Join a room by ID or alias (``via``: servers to join through)."""
        query = [("server_name", s) for s in via or []]
        data = await self.request(
            "POST", f"/_matrix/client/v3/join/{_q(room)}", {}, query=query or None
        )
        return str(data["room_id"])

    async def leave(self, room_id: str) -> None:
        await self.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/leave", {})

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.request(
            "POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/invite", {"user_id": user_id}
        )

    async def kick(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        body: JsonDict = {"user_id": user_id}
        if reason:
            body["reason"] = reason
        await self.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/kick", body)

    async def ban(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        body: JsonDict = {"user_id": user_id}
        if reason:
            body["reason"] = reason
        await self.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/ban", body)

    async def joined_rooms(self) -> list[str]:
        data = await self.request("GET", "/_matrix/client/v3/joined_rooms")
        return list(data["joined_rooms"])

    # Events

    async def send_event(self, room_id: str, event_type: str, content: JsonDict) -> str:
        """``PUT /rooms/{id}/send/{type}/{txnId}``; returns the event ID."""
        data = await self.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/send/{_q(event_type)}/{self._txn_id()}",
            content,
        )
        return str(data["event_id"])

    async def send_message(self, room_id: str, body: str, *, msgtype: str = "m.text") -> str:
        return await self.send_event(room_id, "m.room.message", {"msgtype": msgtype, "body": body})

    async def send_state(
        self, room_id: str, event_type: str, content: JsonDict, state_key: str = ""
    ) -> str:
        data = await self.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(event_type)}/{_q(state_key)}",
            content,
        )
        return str(data["event_id"])

    async def get_state(self, room_id: str) -> list[JsonDict]:
        """The room's current state events (``GET /rooms/{id}/state``)."""
        data = await self.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state")
        return list(data)

    async def get_state_event(
        self, room_id: str, event_type: str, state_key: str = ""
    ) -> JsonDict:
        """The content of one current state event."""
        data = await self.request(
            "GET",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(event_type)}/{_q(state_key)}",
        )
        return dict(data)

    async def messages(
        self,
        room_id: str,
        *,
        direction: str = "b",
        from_token: str | None = None,
        limit: int = 100,
    ) -> JsonDict:
        """One page of ``GET /rooms/{id}/messages``."""
        query: dict[str, Any] = {"dir": direction, "limit": str(limit)}
        if from_token is not None:
            query["from"] = from_token
        data = await self.request(
            "GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/messages", query=query
        )
        return dict(data)

    async def all_events(self, room_id: str, *, page: int = 500) -> list[JsonDict]:
        """Every event of the room the user can see, oldest first (pages backwards
        from the end until ``end`` is absent or a page is empty)."""
        events: list[JsonDict] = []
        token: str | None = None
        while True:
            data = await self.messages(room_id, from_token=token, limit=page)
            chunk = data.get("chunk") or []
            events.extend(chunk)
            token = data.get("end")
            if not chunk or token is None:
                break
        events.reverse()
        return events

    async def sync(
        self,
        *,
        since: str | None = None,
        timeout_ms: int = 0,
        filter: str | JsonDict | None = None,
        full_state: bool = False,
    ) -> JsonDict:
        query: dict[str, Any] = {"timeout": str(timeout_ms)}
        if since is not None:
            query["since"] = since
        if filter is not None:
            query["filter"] = filter if isinstance(filter, str) else _json(filter)
        if full_state:
            query["full_state"] = "true"
        return dict(await self.request("GET", "/_matrix/client/v3/sync", query=query))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
