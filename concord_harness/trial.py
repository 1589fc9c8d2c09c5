"""Twisted trial face of the harness: :class:`FederationTestCase`.

For Twisted codebases (bridges, bots, Synapse modules) that want real
federating Concord nodes in their tests. Run under the asyncio reactor,
where Twisted and asyncio share one event loop::

    python -m twisted.trial --reactor=asyncio mypackage.tests

Every helper returns a Deferred; client calls go through treq
(:class:`TreqClient`). Set the class attributes ``nodes``, ``engine``,
``mode``, ``tenants_per_node`` and ``seed`` to shape the federation, which
``setUp`` starts and ``tearDown`` stops.

This is the only module of Concord that imports Twisted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from collections.abc import Coroutine
from typing import Any
from urllib.parse import quote

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from concord_harness.convergence import RoomSnapshot
from concord_harness.federation import Federation, Server
from concord_harness.nodes import Engine, Mode, Node

__all__ = ["FederationTestCase", "MatrixTrialError", "TreqClient", "as_deferred"]

JsonDict = dict[str, Any]


def as_deferred(coro: Coroutine[Any, Any, Any]) -> Deferred[Any]:
    """Run an asyncio coroutine on the shared loop; its result as a Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(coro))


class MatrixTrialError(Exception):
    """A client request was answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        self.errcode = body.get("errcode") if isinstance(body, dict) else None
        super().__init__(f"{method} {path}: HTTP {status} {body!r}")


def _q(s: str) -> str:
    return quote(s, safe="")


class TreqClient:
    """A Matrix client user over treq; every method returns a Deferred."""

    def __init__(
        self, pool: HTTPConnectionPool, base_url: str, user_id: str, access_token: str,
        host: str | None = None,
    ) -> None:
        self._pool = pool
        self.base_url = base_url
        #: The ``Host`` of every request: a node with several tenants routes
        #: client requests by it.
        self.host = host
        self.user_id = user_id
        self.access_token = access_token
        self._txn = itertools.count()
        self._prefix = secrets.token_hex(4)

    def __repr__(self) -> str:
        return f"<TreqClient {self.user_id} at {self.base_url}>"

    @classmethod
    def register(
        cls, pool: HTTPConnectionPool, base_url: str, localpart: str, host: str | None = None
    ) -> Deferred[TreqClient]:
        """Register with the ``m.login.dummy`` flow (client-server API "register")
        on the tenant named ``host`` (sent as the ``Host`` header)."""

        async def go() -> TreqClient:
            body: JsonDict = {"username": localpart, "password": secrets.token_urlsafe(12)}
            path = "/_matrix/client/v3/register"
            try:
                data = await _call(pool, base_url, "POST", path, body, None, None, host)
            except MatrixTrialError as e:
                if e.status != 401 or not isinstance(e.body, dict) or "session" not in e.body:
                    raise
                body["auth"] = {"type": "m.login.dummy", "session": e.body["session"]}
                data = await _call(pool, base_url, "POST", path, body, None, None, host)
            return cls(pool, base_url, data["user_id"], data["access_token"], host)

        return ensureDeferred(go())

    def request(
        self, method: str, path: str, body: Any = None, query: Any = None
    ) -> Deferred[Any]:
        return ensureDeferred(
            _call(self._pool, self.base_url, method, path, body, query, self.access_token,
                  self.host)
        )

    def create_room(self, **body: Any) -> Deferred[str]:
        d = self.request("POST", "/_matrix/client/v3/createRoom", body)
        return d.addCallback(lambda data: str(data["room_id"]))

    def join(self, room: str, via: list[str] | None = None) -> Deferred[str]:
        query = [("server_name", s) for s in via or []] or None
        d = self.request("POST", f"/_matrix/client/v3/join/{_q(room)}", {}, query)
        return d.addCallback(lambda data: str(data["room_id"]))

    def invite(self, room_id: str, user_id: str) -> Deferred[Any]:
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/invite"
        return self.request("POST", path, {"user_id": user_id})

    def send_message(self, room_id: str, body: str) -> Deferred[str]:
        txn = f"t{self._prefix}.{next(self._txn)}"
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/send/m.room.message/{txn}"
        d = self.request("PUT", path, {"msgtype": "m.text", "body": body})
        return d.addCallback(lambda data: str(data["event_id"]))

    def send_state(
        self, room_id: str, event_type: str, content: JsonDict, state_key: str = ""
    ) -> Deferred[str]:
        path = f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(event_type)}/{_q(state_key)}"
        return self.request("PUT", path, content).addCallback(lambda d: str(d["event_id"]))

    def get_state(self, room_id: str) -> Deferred[list[JsonDict]]:
        return self.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state")

    def messages(
        self, room_id: str, from_token: str | None = None, limit: int = 100
    ) -> Deferred[JsonDict]:
        query: dict[str, str] = {"dir": "b", "limit": str(limit)}
        if from_token is not None:
            query["from"] = from_token
        return self.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/messages", None, query)

    def all_events(self, room_id: str) -> Deferred[list[JsonDict]]:
        """Every event the user can see, oldest first."""

        async def go() -> list[JsonDict]:
            events: list[JsonDict] = []
            token: str | None = None
            while True:
                page = await self.messages(room_id, token, 500)
                chunk = page.get("chunk") or []
                events.extend(chunk)
                token = page.get("end")
                if not chunk or token is None:
                    break
            events.reverse()
            return events

        return ensureDeferred(go())

    def sync(self, since: str | None = None, timeout_ms: int = 0) -> Deferred[JsonDict]:
        query = {"timeout": str(timeout_ms)}
        if since is not None:
            query["since"] = since
        return self.request("GET", "/_matrix/client/v3/sync", None, query)

    def as_asyncio(self) -> _AsyncioView:
        """The same user for asyncio code (what ``Federation.converged`` reads with)."""
        return _AsyncioView(self)


class _AsyncioView:
    def __init__(self, client: TreqClient) -> None:
        self._c = client
        self.user_id = client.user_id

    async def all_events(self, room_id: str) -> list[JsonDict]:
        return await self._c.all_events(room_id).asFuture(asyncio.get_running_loop())

    async def get_state(self, room_id: str) -> list[JsonDict]:
        return await self._c.get_state(room_id).asFuture(asyncio.get_running_loop())


async def _call(
    pool: HTTPConnectionPool,
    base_url: str,
    method: str,
    path: str,
    body: Any,
    query: Any,
    token: str | None,
    host: str | None = None,
) -> Any:
    headers: dict[bytes | str, bytes | str] = {"Content-Type": "application/json"}
    if host:
        headers["Host"] = host
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    resp = await treq.request(
        method, base_url + path, data=data, params=query, headers=headers, pool=pool
    )
    raw = await treq.content(resp)
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    if resp.code >= 300:
        raise MatrixTrialError(method, path, resp.code, parsed)
    return parsed


class FederationTestCase(unittest.TestCase):
    """A trial TestCase with a started :class:`~concord_harness.Federation` as ``self.fed``."""

    nodes: int = 2
    engine: Engine = "sqlite"
    mode: Mode = "inprocess"
    tenants_per_node: int = 1
    seed: int | str = 0
    #: Seconds a test may take; the harness starts real nodes.
    timeout = 120

    fed: Federation
    pool: HTTPConnectionPool

    def setUp(self) -> Deferred[Any]:  # type: ignore[override]  # trial waits on it
        self.pool = HTTPConnectionPool(reactor, persistent=False)  # type: ignore[no-untyped-call]
        self.fed = Federation(
            self.nodes,
            engine=self.engine,
            mode=self.mode,
            tenants_per_node=self.tenants_per_node,
            seed=self.seed,
        )
        return as_deferred(self.fed.start())

    def tearDown(self) -> Deferred[Any]:  # type: ignore[override]  # trial waits on it
        # Client connections first, or trial reports a dirty reactor.
        d: Deferred[Any] = self.pool.closeCachedConnections()  # type: ignore[no-untyped-call]
        d.addCallback(lambda _: as_deferred(self.fed.close()))
        return d

    @property
    def federation_nodes(self) -> list[Node]:
        return self.fed.nodes

    def register_user(
        self, node: Node, localpart: str, tenant: str | None = None
    ) -> Deferred[TreqClient]:
        """A new user ``@localpart:<tenant>`` (default: the node's own name) on
        ``node``, also used by :meth:`converged` to read its view."""
        host = tenant or node.server_name
        if host not in node.tenants:
            raise ValueError(f"{node.label} hosts {node.tenants}, not {tenant}")

        def remember(client: TreqClient) -> TreqClient:
            node.clients.append(client.as_asyncio())  # type: ignore[arg-type]
            return client

        return TreqClient.register(self.pool, node.client_url, localpart, host).addCallback(
            remember
        )

    def create_room(self, creator: TreqClient, *joiners: TreqClient, **body: Any) -> Deferred[str]:
        """A public room made by ``creator`` and joined by every ``joiner``."""
        body.setdefault("preset", "public_chat")

        async def go() -> str:
            room_id: str = await creator.create_room(**body)
            via = creator.user_id.split(":", 1)[1]
            for j in joiners:
                await j.join(room_id, [via])
            return room_id

        return ensureDeferred(go())

    def converged(
        self, room_id: str, timeout: float = 30.0, servers: list[Server] | None = None
    ) -> Deferred[list[RoomSnapshot]]:
        """Fires when every server shows the same events and state (else fails with the diff)."""
        return as_deferred(self.fed.converged(room_id, timeout=timeout, servers=servers))

    def restart(self, node: Node) -> Deferred[None]:
        return as_deferred(node.restart())

    def kill(self, node: Node) -> Deferred[None]:
        return as_deferred(node.kill())

    def partition(self, a: Server, b: Server) -> Deferred[None]:
        """Cut both directions between ``a`` and ``b`` (``Federation.partition``)."""
        self.fed.partition(a, b)
        return succeed(None)

    def heal(self, a: Server | None = None, b: Server | None = None) -> Deferred[None]:
        """Every link back to normal, or only those between ``a`` and ``b``."""
        self.fed.heal(a, b)
        return succeed(None)

    def rotate_signing_key(self, node: Node) -> Deferred[str]:
        """A new signing key for ``node``; fires with its key ID."""
        return as_deferred(node.rotate_signing_key())

    def skew_clock(self, node: Node, seconds: float) -> Deferred[None]:
        """``node``'s wall clock runs ``seconds`` fast (in-process nodes only)."""
        node.skew_clock(seconds)
        return succeed(None)
