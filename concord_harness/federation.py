"""A federation of Concord nodes for one test, with faults on demand.

    async with Federation(nodes=3, engine="postgres") as fed:
        a, b, c = fed.nodes
        alice = await a.register_user("alice")
        ...
        fed.partition(a, b)          # both directions
        fed.link(c, a).drop(0.3)     # one direction, 30 % of requests lost
        fed.heal()
        await fed.converged(room_id, timeout=30)

Every ordered pair of servers (A, B) with A started by the harness has a
:class:`~concord_harness.faults.FaultProxy`; A's config routes B's server
names to it. External peers (:class:`ExternalPeer`) are servers the harness
did not start: our nodes reach them through proxies too, but what they send
to our nodes goes straight to the node (the harness does not control their
outbound routing).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from concord_harness.client import Client
from concord_harness.convergence import (
    ConvergenceError,
    RoomSnapshot,
    diff_snapshots,
    snapshot,
)
from concord_harness.faults import FaultProxy
from concord_harness.nodes import Engine, Mode, Node, NodeStartError
from federation.clock import RealClock

__all__ = ["ExternalPeer", "Federation"]

logger = logging.getLogger(__name__)

START_ATTEMPTS = 3
POLL_INTERVAL_S = 0.1


@dataclass
class ExternalPeer:
    """A server the harness did not start (e.g. a Synapse the test runs).

    ``base_url`` is its federation base URL (``https://127.0.0.1:8448``);
    ``client_url`` its client API, needed only to read its view of a room in
    :meth:`Federation.converged` through a client added with :meth:`add_client`.
    """

    server_name: str
    base_url: str
    client_url: str | None = None
    clients: list[Client] = field(default_factory=list)

    @property
    def tenants(self) -> list[str]:
        return [self.server_name]

    def add_client(self, client: Client) -> Client:
        """Let :meth:`Federation.converged` read this server's view through ``client``."""
        self.clients.append(client)
        return client


Server = Node | ExternalPeer


class Federation:
    """N Concord nodes on loopback, each with its own throwaway database.

    ``engine`` is one engine for every node or one per node; ``mode`` likewise.
    ``seed`` seeds every link's fault decisions. ``extra_config`` is merged
    into every node's generated config. ``directory`` keeps the nodes' files
    (config, keys, SQLite, subprocess logs) there instead of a temporary
    directory removed at the end.
    """

    def __init__(
        self,
        nodes: int = 2,
        *,
        engine: Engine | Sequence[Engine] = "sqlite",
        mode: Mode | Sequence[Mode] = "inprocess",
        tenants_per_node: int = 1,
        external: Iterable[ExternalPeer] = (),
        seed: int | str = 0,
        extra_config: Mapping[str, Any] | None = None,
        directory: str | Path | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"a federation needs at least one node, got {nodes}")
        self._engines = _per_node(engine, nodes, "engine")
        self._modes = _per_node(mode, nodes, "mode")
        self._tenants_per_node = tenants_per_node
        self.external = list(external)
        self.seed = seed
        self._extra_config = dict(extra_config or {})
        self._keep_dir = directory is not None
        self._dir_arg = Path(directory) if directory is not None else None
        self._count = nodes
        self.nodes: list[Node] = []
        self._links: dict[tuple[str, str], FaultProxy] = {}
        self._session: aiohttp.ClientSession | None = None
        self._dir: Path | None = None
        self._clock = RealClock()

    # Life cycle

    async def __aenter__(self) -> Federation:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start every node; retried with other ports if one was taken meanwhile."""
        self._dir = self._dir_arg or Path(tempfile.mkdtemp(prefix="concord-harness-"))
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self.nodes = [
            Node(
                label=f"hs{i + 1}",
                directory=self._dir / f"hs{i + 1}",
                engine=self._engines[i],
                mode=self._modes[i],
                tenants_per_node=self._tenants_per_node,
                session=self._session,
                extra_config=self._extra_config,
            )
            for i in range(self._count)
        ]
        try:
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    await self._start_once()
                    return
                except NodeStartError as e:
                    await asyncio.gather(*(n.stop() for n in self.nodes))
                    if not e.port_conflict or attempt == START_ATTEMPTS:
                        raise
                    logger.info("Port taken while starting (%s); retrying", e)
        except BaseException:
            await self.close()
            raise

    async def _start_once(self) -> None:
        taken: set[int] = set()
        for node in self.nodes:
            await node.prepare(taken)
        await self._build_links()
        for node in self.nodes:
            # The node's other tenants are servers like any other, reached over
            # HTTP, but on the same host: directly, not through a fault proxy.
            overrides = {name: node.federation_url for name in node.tenants[1:]}
            peers: list[Server] = [*self.nodes, *self.external]
            for other in peers:
                if other is node:
                    continue
                proxy = self._links[(node.server_name, other.tenants[0])]
                for name in other.tenants:
                    overrides[name] = proxy.url
            node.write_config(overrides)
        await asyncio.gather(*(n.start() for n in self.nodes))

    async def _build_links(self) -> None:
        # Ports change between start attempts, and the links are keyed by name.
        await asyncio.gather(*(p.close() for p in self._links.values()))
        self._links = {}
        for src in self.nodes:
            dsts: list[Server] = [*self.nodes, *self.external]
            for dst in dsts:
                if dst is src:
                    continue
                upstream = dst.federation_url if isinstance(dst, Node) else dst.base_url
                proxy = FaultProxy(src.server_name, dst.tenants[0], upstream, seed=self.seed)
                await proxy.start()
                self._links[(src.server_name, dst.tenants[0])] = proxy

    async def close(self) -> None:
        """Stop every node, drop their databases, close the proxies."""
        results = await asyncio.gather(
            *(n.cleanup() for n in self.nodes), return_exceptions=True
        )
        await asyncio.gather(*(p.close() for p in self._links.values()), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._dir is not None and not self._keep_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    # Faults

    def _name(self, server: Server | str) -> str:
        if isinstance(server, str):
            return server
        return server.tenants[0]

    def link(self, source: Node | str, destination: Server | str) -> FaultProxy:
        """The proxy carrying ``source``'s requests to ``destination`` (one direction)."""
        key = (self._name(source), self._name(destination))
        try:
            return self._links[key]
        except KeyError:
            raise KeyError(
                f"no link {key[0]} → {key[1]}: the source must be a node the harness started"
            ) from None

    def links(self) -> list[FaultProxy]:
        return list(self._links.values())

    def partition(self, a: Server | str, b: Server | str) -> None:
        """Cut ``a`` and ``b`` apart, both directions (where the harness routes them)."""
        for src, dst in ((a, b), (b, a)):
            key = (self._name(src), self._name(dst))
            if key in self._links:
                self._links[key].partition()

    def isolate(self, node: Server | str) -> None:
        """Cut ``node`` off from every other server."""
        name = self._name(node)
        for (src, dst), proxy in self._links.items():
            if name in (src, dst):
                proxy.partition()

    def heal(self, a: Server | str | None = None, b: Server | str | None = None) -> None:
        """Remove every fault: from all links, or between ``a`` and ``b`` (both ways)."""
        if a is None and b is None:
            for proxy in self._links.values():
                proxy.heal()
            return
        if a is None or b is None:
            raise TypeError("heal() takes no servers or two")
        for src, dst in ((a, b), (b, a)):
            key = (self._name(src), self._name(dst))
            if key in self._links:
                self._links[key].heal()

    def node(self, server_name: str) -> Node:
        """The node hosting ``server_name``."""
        for n in self.nodes:
            if server_name in n.tenants:
                return n
        raise KeyError(server_name)

    # Rooms

    async def create_room(
        self, creator: Client, *joiners: Client, **create_body: Any
    ) -> str:
        """Create a public room as ``creator`` and join every ``joiner`` to it
        (through the creator's server); returns the room ID."""
        create_body.setdefault("preset", "public_chat")
        room_id = await creator.create_room(**create_body)
        via = creator.user_id.split(":", 1)[1]
        for j in joiners:
            await j.join(room_id, via=[via])
        return room_id

    async def snapshots(
        self, room_id: str, servers: Iterable[Server] | None = None
    ) -> list[RoomSnapshot]:
        """Each server's view of ``room_id``, read by its first harness user who
        can read the room (servers with no user in the room are left out unless
        named in ``servers``)."""
        explicit = servers is not None
        chosen: list[Server] = (
            list(servers) if servers is not None else [*self.nodes, *self.external]
        )
        out: list[RoomSnapshot] = []
        for server in chosen:
            if isinstance(server, Node) and not server.running:
                if explicit:
                    out.append(RoomSnapshot(self._name(server), error="the node is not running"))
                continue
            # Each tenant of a node is a server of its own, read by its own users;
            # a named node's extra tenants count when a harness user lives there.
            for n, name in enumerate(server.tenants):
                clients = [c for c in server.clients if _server_of(c.user_id) == name]
                required = explicit and (n == 0 or bool(clients))
                snap = None
                for client in clients:
                    candidate = await snapshot(name, client, room_id)
                    if candidate.error is None:
                        snap = candidate
                        break
                    snap = snap or candidate
                if snap is None:
                    if required:
                        out.append(RoomSnapshot(name, error="no harness user on this server"))
                    continue
                if snap.error is not None and not required:
                    continue  # nobody here is in the room
                out.append(snap)
        return out

    async def converged(
        self,
        room_id: str,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - a polling budget, part of the API
        servers: Iterable[Server] | None = None,
        history: str = "from_join",
    ) -> list[RoomSnapshot]:
        """Wait until every server shows the same events and current state for
        ``room_id``; raise :class:`ConvergenceError` (an AssertionError) with a
        diff if they still differ after ``timeout`` seconds. ``history``: see
        :func:`~concord_harness.convergence.diff_snapshots`.

        Servers compared: ``servers``, or every server where a harness user can
        read the room (at least two must be found then, or it is an error).
        """
        chosen = list(servers) if servers is not None else None
        deadline = self._clock.monotonic() + timeout
        while True:
            snaps = await self.snapshots(room_id, chosen)
            diff = diff_snapshots(room_id, snaps, history=history)
            if diff is None and chosen is None and len(snaps) < 2 and len(self.nodes) > 1:
                diff = (
                    f"room {room_id}: only {[s.server for s in snaps]} can read it; "
                    "join a harness user on the other servers or pass servers=[...]"
                )
            if diff is None:
                return snaps
            if self._clock.monotonic() >= deadline:
                stats = "\n".join(
                    f"  link {p.source} → {p.destination}: "
                    + (" ".join(f"{k}={v}" for k, v in sorted(p.stats.counts.items())) or "idle")
                    for p in self._links.values()
                )
                raise ConvergenceError(
                    f"not converged after {timeout:g}s: {diff}\nlinks:\n{stats}", snaps
                )
            await self._clock.sleep(POLL_INTERVAL_S)

    async def wait_for(
        self,
        condition: Any,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - a polling budget, part of the API
        what: str = "condition",
    ) -> Any:
        """Poll ``await condition()`` until it returns something truthy (returned),
        or raise AssertionError after ``timeout`` seconds."""
        deadline = self._clock.monotonic() + timeout
        last: BaseException | None = None
        while True:
            try:
                result = await condition()
                if result:
                    return result
            except Exception as e:  # the condition may fail while nodes catch up
                last = e
            if self._clock.monotonic() >= deadline:
                raise AssertionError(
                    f"{what} not reached after {timeout:g}s"
                    + (f" (last error: {last})" if last else "")
                )
            await self._clock.sleep(POLL_INTERVAL_S)


def _server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def _per_node(value: Any, n: int, what: str) -> list[Any]:
    if isinstance(value, str):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{what}: expected one value or {n}, got {len(values)}")
    return values

