"""The node's room discovery: crawler, health prober and search, one per node.

Docs: docs/usage/room_discovery.md. Build it with :func:`discovery_for`
(cached on the HomeServer); the client listener starts its one background
task (:meth:`Discovery.start`), which probes peers every
``discovery.health_probe_interval`` and crawls each healthy peer's published
room directory (federation ``publicRooms``, server-server-api "Public Room
Directory") every ``discovery.crawl_interval`` plus a random jitter. Tests
and the CLI drive it with :meth:`Discovery.probe_once` and
:meth:`Discovery.crawl_once`; all timing reads the injected Clock, and the
jitter the injected ``rng``.

A peer's state also follows the node's delivery queue: the sender calls
:meth:`Discovery.delivery_changed` when a backoff towards a destination
begins or ends, and the peer is re-judged from the probes already stored.

What a tenant's users find is what their tenant would find as a server of
its own (:meth:`Discovery._visible_to`): its own rooms, servers of its trust
domain, and another hosted name only if that one trusts it back.

Which servers are crawled (:meth:`Discovery.targets`):

- every server name hosted on this node (read in-process);
- every literal server name (no wildcard) in a hosted name's trust domain
  (``federation.trusted_servers``, ``tenants[].trusted_servers`` or their
  admin API overrides): a pattern like ``*.example.org`` cannot be listed;
- ``discovery.peers`` and peers added through the admin API or CLI, when
  some hosted name's trust domain allows them (the federation client refuses
  anything else).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from federation.event_format import is_valid_server_name
from federation.transport.client import FederationClient, FederationClientError
from federation.trust import TrustPolicy
from homeserver.config import DiscoveryConfig
from homeserver.discovery.directory import PublishedDirectory
from homeserver.discovery.health import STATES, HealthSettings, evaluate
from storage.stores.discovery import DiscoveryStore, IndexedRoom, ProbeRecord, SortKey

__all__ = [
    "Discovery", "DiscoveryMetrics", "Target", "build_discovery", "discovery_for", "parse_room",
]

logger = logging.getLogger(__name__)

FED = "/_matrix/federation"
#: Rooms asked for per ``publicRooms`` request while crawling.
PAGE_SIZE = 250
PROBE_TIMEOUT_S = 10.0
CRAWL_TIMEOUT_S = 30.0
MAX_SEARCH_LIMIT = 100
DEFAULT_SEARCH_LIMIT = 20
MAX_QUERY_LENGTH = 200
#: Longest name/topic kept from a peer's directory (longer ones are cut).
MAX_FIELD_LENGTH = 1000
LOCAL_SOURCE = "hosted on this node"
#: What an operator runs to index fuzzy search after installing pg_trgm
#: (docs/usage/room_discovery.md, "PostgreSQL and pg_trgm").
TRIGRAM_INDEX_SQL = (
    "CREATE INDEX CONCURRENTLY discovery_rooms_trgm "
    "ON discovery_rooms USING GIN (search_text gin_trgm_ops);"
)


class DiscoveryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rooms_indexed = Gauge(
            "concord_discovery_rooms_indexed",
            "Public rooms in the discovery index, by the server whose directory lists them.",
            ["server"], registry=registry,
        )
        self.crawl_duration = Histogram(
            "concord_discovery_crawl_duration_seconds",
            "Time to crawl one peer's published room directory.",
            ["server"], registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
        )
        self.crawl_failures = Counter(
            "concord_discovery_crawl_failures",
            "Crawls of a peer's directory that failed (the index keeps its previous rooms).",
            ["server"], registry=registry,
        )
        self.peers = Gauge(
            "concord_discovery_peers",
            "Crawled peers by health state (unknown, online, degraded, offline).",
            ["state"], registry=registry,
        )


@dataclass(frozen=True)
class Target:
    """A server whose directory is indexed; ``origin`` is the hosted name that
    asks (None: no hosted name's trust domain allows it: not crawled)."""

    server_name: str
    source: str
    origin: str | None
    local: bool = False


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value[:MAX_FIELD_LENGTH]
    return None


def parse_room(server_name: str, entry: Any) -> IndexedRoom | None:
    """One ``PublishedRoomsChunk`` from a peer, or None if it is malformed
    (no ``room_id`` starting with ``!``, or no integer ``num_joined_members``)."""
    if not isinstance(entry, Mapping):
        return None
    room_id = entry.get("room_id")
    members = entry.get("num_joined_members")
    if not isinstance(room_id, str) or not room_id.startswith("!") or len(room_id) > 255:
        return None
    if type(members) is not int or members < 0:
        return None
    alias = _text(entry.get("canonical_alias"))
    avatar = _text(entry.get("avatar_url"))
    return IndexedRoom(
        server_name=server_name,
        room_id=room_id,
        num_joined_members=members,
        world_readable=entry.get("world_readable") is True,
        guest_can_join=entry.get("guest_can_join") is True,
        name=_text(entry.get("name")),
        topic=_text(entry.get("topic")),
        canonical_alias=alias if alias and alias.startswith("#") else None,
        avatar_url=avatar if avatar and avatar.startswith("mxc://") else None,
        join_rule=_text(entry.get("join_rule")),
        room_type=_text(entry.get("room_type")),
    )


def literal_names(policy: TrustPolicy) -> list[str]:
    """The server names a trust policy lists exactly (no wildcard, not ``*``)."""
    out = []
    for p in policy.patterns or ():
        if not p.everything and p.single == 0 and not p.deep:
            out.append(p.text)
    return out


# -- cursors -------------------------------------------------------------------------------------


def encode_cursor(sort: str, query: str | None, key: tuple[Any, str, str]) -> str:
    raw = json.dumps({"s": sort, "q": query or "", "k": list(key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str, query: str | None) -> tuple[Any, str, str]:
    bad = MatrixError(400, Codes.INVALID_PARAM, "since is not a cursor of this search")
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        value, server, room = raw["k"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise bad from None
    if raw.get("s") != sort or raw.get("q") != (query or ""):
        raise bad
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad
    if not isinstance(server, str) or not isinstance(room, str):
        raise bad
    return value, server, room


class Discovery:
    def __init__(
        self,
        *,
        config: DiscoveryConfig,
        clock: Clock,
        store: DiscoveryStore,
        client: FederationClient,
        hosted_names: Callable[[], list[str]],
        trust: Any,
        local_directory: Callable[[str], Awaitable[list[dict[str, Any]]]],
        delivery_error: Callable[[str], Awaitable[str | None]] | None = None,
        metrics: DiscoveryMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self.store = store
        self._client = client
        self._hosted_names = hosted_names
        self._trust = trust
        self._local_directory = local_directory
        self._delivery_error = delivery_error
        self.metrics = metrics or DiscoveryMetrics(CollectorRegistry())
        self._rng = rng or random.Random()
        self._health = HealthSettings(
            degraded_latency_ms=config.health_degraded_latency,
            offline_failures=config.health_offline_failures,
        )
        self._lock = asyncio.Lock()
        #: Held from reading a peer's probes and delivery view to storing the
        #: state they give, so a probe and a delivery change evaluating at
        #: once cannot store a state from stale inputs last.
        self._state_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._warned_capability = False

    # -- who is crawled -----------------------------------------------------------------------

    def _policy(self, name: str) -> TrustPolicy | None:
        if self._trust is None:
            return None
        policy: TrustPolicy = self._trust.policy_for(name)
        return policy

    def _origin_for(self, server: str) -> str | None:
        hosted = self._hosted_names()
        for name in hosted:
            policy = self._policy(name)
            if policy is None or policy.allows(server):
                return name
        return None

    async def targets(self) -> dict[str, Target]:
        hosted = self._hosted_names()
        out: dict[str, Target] = {
            n: Target(n, LOCAL_SOURCE, n, local=True) for n in hosted
        }
        for name in hosted:
            policy = self._policy(name)
            if policy is None:
                continue
            for server in literal_names(policy):
                if server not in out:
                    out[server] = Target(server, f"trust domain of {name} ({policy.source})",
                                         name)
        extra = [(s, "discovery.peers") for s in self.config.peers]
        extra += [(p.server_name, "added by an admin")
                  for p in await self.store.list_peers() if p.added_by_admin]
        for server, source in extra:
            if server not in out:
                out[server] = Target(server, source, self._origin_for(server))
        return out

    async def _reconcile(self) -> dict[str, Target]:
        """Make the peer table match the targets; forget peers no longer crawled."""
        targets = await self.targets()
        now = self._clock.time_ms()
        for peer in await self.store.list_peers():
            if peer.server_name not in targets:
                logger.info("Discovery: %s is no longer crawled; its rooms leave the index",
                            peer.server_name)
                await self.store.forget_peer(peer.server_name)
        for t in targets.values():
            await self.store.ensure_peer(t.server_name, now)
            if t.local:
                await self.store.set_state(t.server_name, "online", LOCAL_SOURCE, now)
        # Not under the crawl lock (an admin's remove_peer does not wait for a
        # round): a crawl that was under way may have written a forgotten
        # peer's rooms back; they go on the next reconcile.
        await self.store.forget_orphan_rooms()
        for server in self._metric_servers() - set(targets):
            self._forget_metrics(server)
        return targets

    def _per_server_metrics(self) -> tuple[Gauge, Histogram, Counter]:
        return (self.metrics.rooms_indexed, self.metrics.crawl_duration,
                self.metrics.crawl_failures)

    def _forget_metrics(self, server_name: str) -> None:
        """A forgotten peer's series go too (peers come and go through the
        admin API: their labels must not pile up)."""
        for metric in self._per_server_metrics():
            metric.remove(server_name)

    def _metric_servers(self) -> set[str]:
        """Every server some per-server series is labelled with."""
        return {
            s.labels["server"] for metric in self._per_server_metrics()
            for m in metric.collect() for s in m.samples
        }

    def _gauge_servers(self) -> set[str]:
        return {
            s.labels["server"] for m in self.metrics.rooms_indexed.collect() for s in m.samples
        }

    async def add_peer(self, server_name: str) -> None:
        if not is_valid_server_name(server_name):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{server_name!r} is not a server name")
        await self.store.set_admin_peer(server_name, True, self._clock.time_ms())

    async def remove_peer(self, server_name: str) -> bool:
        """Stop crawling a peer added through the admin API; False if it was not one.
        A peer crawled for another reason (trust domain, config) stays."""
        peer = await self.store.get_peer(server_name)
        if peer is None or not peer.added_by_admin:
            return False
        await self.store.set_admin_peer(server_name, False, self._clock.time_ms())
        await self._reconcile()
        await self._refresh_gauges()
        return True

    # -- health -------------------------------------------------------------------------------

    async def probe_once(self) -> dict[str, str]:
        """Probe every remote target now; returns each one's state."""
        async with self._lock:
            targets = await self._reconcile()
            out: dict[str, str] = {}
            for t in targets.values():
                if t.local:
                    out[t.server_name] = "online"
                elif t.origin is None:
                    out[t.server_name] = await self._untrusted(t)
                else:
                    out[t.server_name] = await self._probe(t)
            await self._refresh_gauges()
            return out

    async def _untrusted(self, t: Target) -> str:
        now = self._clock.time_ms()
        await self.store.set_state(
            t.server_name, "unknown", "outside the trust domain of every hosted name", now
        )
        return "unknown"

    async def _probe(self, t: Target) -> str:
        assert t.origin is not None
        now = self._clock.time_ms()
        started = self._clock.monotonic()
        ok, fresh, error = True, True, None
        try:
            version = await self._client.get_json(
                t.server_name, f"{FED}/v1/version", origin=t.origin, timeout_s=PROBE_TIMEOUT_S
            )
            if not isinstance(version, dict) or not isinstance(version.get("server"), dict):
                raise ValueError("the version answer has no server object")
            keys = await self._client.get_json(
                t.server_name, "/_matrix/key/v2/server", origin=t.origin,
                timeout_s=PROBE_TIMEOUT_S,
            )
            valid_until = keys.get("valid_until_ts") if isinstance(keys, dict) else None
            fresh = type(valid_until) is int and valid_until > now
        except (TimeoutError, FederationClientError, ValueError, OSError) as e:
            ok, fresh, error = False, False, str(e) or type(e).__name__
        latency = int((self._clock.monotonic() - started) * 1000)
        await self.store.record_probe(
            t.server_name, ProbeRecord(now, ok, fresh, latency, error),
            keep_after_ts=now - self.config.health_window,
        )
        # The window ends at this probe, however long it took.
        found = await self._evaluate(t.server_name, now)
        assert found is not None  # the probe just stored is in the window
        return found[0]

    async def _evaluate(
        self, server_name: str, now: int | None = None
    ) -> tuple[str, bool] | None:
        """Store the state the probes of the window ending at ``now`` (default:
        the clock's time) and the delivery queue give ``server_name``:
        ``(state, changed)``; None (nothing stored) when no probe is in the
        window, since only a probe can say a peer is up."""
        async with self._state_lock:
            if now is None:
                now = self._clock.time_ms()
            probes = await self.store.probes_since(server_name, now - self.config.health_window)
            if not probes:
                return None
            delivery = None
            if self._delivery_error is not None:
                delivery = await self._delivery_error(server_name)
            state, reason = evaluate(probes, self._health, delivery_error=delivery)
            changed = await self.store.set_state(server_name, state, reason, now)
        if changed:
            logger.info("Discovery: %s is now %s (%s)", server_name, state, reason)
        return state, changed

    async def delivery_changed(self, server_name: str) -> None:
        """The delivery queue began, ended or moved a backoff towards
        ``server_name`` (a :class:`FederationSender` destination listener):
        fold it into the peer's state now, from the probes already in the
        window, rather than at the next probe. Not a peer, a hosted name, a
        peer outside every trust domain or one without a recent probe: nothing
        changes (the next probe decides)."""
        peer = await self.store.get_peer(server_name)
        if peer is None or peer.state == "unknown":
            return
        t = (await self.targets()).get(server_name)
        if t is None or t.local or t.origin is None:
            return
        found = await self._evaluate(server_name)
        if found is not None and found[1]:
            await self._refresh_gauges()

    def _dropped(self, state: str, since_ts: int, now: int) -> bool:
        return state == "offline" and now - since_ts >= self.config.offline_threshold

    # -- crawling -----------------------------------------------------------------------------

    async def crawl_once(self, *, force: bool = True) -> dict[str, dict[str, Any]]:
        """Crawl every target (``force=False``: only those whose next crawl is
        due). A peer never probed is probed first; an offline one is skipped."""
        async with self._lock:
            targets = await self._reconcile()
            out: dict[str, dict[str, Any]] = {}
            for t in targets.values():
                peer = await self.store.get_peer(t.server_name)
                now = self._clock.time_ms()
                if peer is None:
                    continue
                if not force and peer.next_crawl_ts is not None and now < peer.next_crawl_ts:
                    continue
                if t.origin is None:
                    await self._untrusted(t)
                    out[t.server_name] = {"skipped": "outside the trust domain"}
                    continue
                state = peer.state
                if not t.local and state == "unknown":
                    state = await self._probe(t)
                if state == "offline":
                    await self.store.record_crawl(
                        t.server_name, now_ms=now, ok=False, duration_ms=0,
                        error="skipped: the peer is offline", rooms=None,
                        next_crawl_ts=self._next_crawl(now),
                    )
                    out[t.server_name] = {"skipped": "offline"}
                    continue
                out[t.server_name] = await self._crawl(t)
            await self._refresh_gauges()
            return out

    def _next_crawl(self, now: int) -> int:
        jitter = self._rng.randint(0, max(0, self.config.crawl_jitter))
        return now + self.config.crawl_interval + jitter

    async def _crawl(self, t: Target) -> dict[str, Any]:
        now = self._clock.time_ms()
        started = self._clock.monotonic()
        try:
            if t.local:
                entries = await self._local_directory(t.server_name)
            else:
                entries = await self._fetch_directory(t)
        except (TimeoutError, FederationClientError, ValueError, OSError, MatrixError) as e:
            seconds = self._clock.monotonic() - started
            error = str(e) or type(e).__name__
            logger.warning("Discovery: crawling %s failed: %s", t.server_name, error)
            self.metrics.crawl_failures.labels(t.server_name).inc()
            self.metrics.crawl_duration.labels(t.server_name).observe(seconds)
            await self.store.record_crawl(
                t.server_name, now_ms=now, ok=False, duration_ms=int(seconds * 1000),
                error=error, rooms=None, next_crawl_ts=self._next_crawl(now),
            )
            return {"error": error}
        rooms: dict[str, IndexedRoom] = {}
        for entry in entries:
            room = parse_room(t.server_name, entry)
            if room is not None and len(rooms) < self.config.max_rooms_per_peer:
                rooms.setdefault(room.room_id, room)
        expired = await self.store.replace_rooms(t.server_name, list(rooms.values()), now)
        seconds = self._clock.monotonic() - started
        self.metrics.crawl_duration.labels(t.server_name).observe(seconds)
        await self.store.record_crawl(
            t.server_name, now_ms=now, ok=True, duration_ms=int(seconds * 1000), error=None,
            rooms=len(rooms), next_crawl_ts=self._next_crawl(now),
        )
        logger.info("Discovery: crawled %s: %d public rooms (%d expired)",
                    t.server_name, len(rooms), expired)
        return {"rooms": len(rooms), "expired": expired}

    async def _fetch_directory(self, t: Target) -> list[Any]:
        """Every page of the peer's ``GET /publicRooms`` (up to ``max_rooms_per_peer``)."""
        entries: list[Any] = []
        since: str | None = None
        seen_tokens: set[str] = set()
        while len(entries) < self.config.max_rooms_per_peer:
            query = {"limit": str(PAGE_SIZE), "include_all_networks": "false"}
            if since is not None:
                query["since"] = since
            resp = await self._client.get_json(
                t.server_name, f"{FED}/v1/publicRooms", query=query, origin=t.origin,
                timeout_s=CRAWL_TIMEOUT_S,
            )
            if not isinstance(resp, dict) or not isinstance(resp.get("chunk"), list):
                raise ValueError("the publicRooms answer has no chunk list")
            entries.extend(resp["chunk"])
            token = resp.get("next_batch")
            if not isinstance(token, str) or not token or not resp["chunk"]:
                break
            if token in seen_tokens:
                raise ValueError("the publicRooms pagination repeats a token")
            seen_tokens.add(token)
            since = token
        return entries

    async def _refresh_gauges(self) -> None:
        counts = await self.store.count_rooms()
        for server in self._gauge_servers() - set(counts):
            self.metrics.rooms_indexed.remove(server)
        for server, n in counts.items():
            self.metrics.rooms_indexed.labels(server).set(n)
        by_state: dict[str, int] = dict.fromkeys(STATES, 0)
        for p in await self.store.list_peers():
            by_state[p.state] = by_state.get(p.state, 0) + 1
        for state, n in by_state.items():
            self.metrics.peers.labels(state).set(n)

    # -- search -------------------------------------------------------------------------------

    def _visible_to(self, tenant: str, server: str, hosted: set[str]) -> bool:
        """Whether ``tenant``'s users may see ``server``'s rooms: as if the
        tenant were a server of its own, which finds a room directory only
        where it may send a request and the other side answers it.

        - its own name: always;
        - any other server only in the tenant's trust domain;
        - another hosted name also only if that name's trust domain has the
          tenant (its directory is read in-process, so its inbound check,
          which would refuse the tenant's request, is made here).
        """
        if server == tenant:
            return True
        policy = self._policy(tenant)
        if policy is not None and not policy.allows(server):
            return False
        if server in hosted:
            other = self._policy(server)
            return other is None or other.allows(tenant)
        return True

    async def _visible_servers(self, tenant: str | None) -> dict[str, str]:
        """Indexed servers whose rooms a user of ``tenant`` may see (None:
        every one), with their health: not dropped (offline past the
        threshold), and visible to the tenant (:meth:`_visible_to`)."""
        now = self._clock.time_ms()
        hosted = set(self._hosted_names())
        out = {}
        for p in await self.store.list_peers():
            if self._dropped(p.state, p.state_since_ts, now):
                continue
            if tenant is not None and not self._visible_to(tenant, p.server_name, hosted):
                continue
            out[p.server_name] = p.state
        return out

    async def search(
        self,
        *,
        tenant: str | None,
        query: str | None,
        limit: int | None,
        since: str | None,
        server: str | None,
        sort: str | None,
    ) -> dict[str, Any]:
        """``GET /_concord/client/v1/discovery/rooms``."""
        if query is not None:
            query = " ".join(query.split())[:MAX_QUERY_LENGTH] or None
        if sort is None:
            sort = "relevance" if query else "members"
        if sort not in ("members", "recent", "relevance"):
            raise MatrixError(400, Codes.INVALID_PARAM,
                              "sort must be members, recent or relevance")
        if sort == "relevance" and not query:
            sort = "members"
        if limit is None:
            limit = DEFAULT_SEARCH_LIMIT
        if limit < 1:
            raise MatrixError(400, Codes.INVALID_PARAM, "limit must be at least 1")
        limit = min(limit, MAX_SEARCH_LIMIT)
        after = decode_cursor(since, sort, query) if since else None
        health = await self._visible_servers(tenant)
        servers = sorted(health)
        if server is not None:
            servers = [s for s in servers if s == server]
        await self._warn_capability()
        sort_key: SortKey = sort  # type: ignore[assignment]
        rows, total = await self.store.search(
            servers=servers, query=query, sort=sort_key, after=after, limit=limit + 1
        )
        chunk = []
        for room, _ in rows[:limit]:
            entry: dict[str, Any] = {
                "room_id": room.room_id,
                "num_joined_members": room.num_joined_members,
                "world_readable": room.world_readable,
                "guest_can_join": room.guest_can_join,
            }
            for k in ("name", "topic", "canonical_alias", "avatar_url", "join_rule",
                      "room_type"):
                v = getattr(room, k)
                if v is not None:
                    entry[k] = v
            entry["server"] = room.server_name
            entry["server_health"] = health.get(room.server_name, "unknown")
            entry["last_seen_ts"] = room.last_seen_ts
            chunk.append(entry)
        out: dict[str, Any] = {"chunk": chunk, "total_room_count_estimate": total}
        if len(rows) > limit:
            last_room, last_key = rows[limit - 1]
            out["next_batch"] = encode_cursor(
                sort, query, (last_key, last_room.server_name, last_room.room_id)
            )
        return out

    async def _warn_capability(self) -> None:
        if self._warned_capability:
            return
        self._warned_capability = True
        capability = await self.store.search_capability()
        if capability == "fulltext":
            logger.warning(
                "Room discovery: the PostgreSQL extension pg_trgm is not installed, so search "
                "finds exact words only (no fuzzy matches). As a superuser: "
                "CREATE EXTENSION pg_trgm; %s then restart.", TRIGRAM_INDEX_SQL,
            )
        elif capability == "fulltext+trigram" and not await self.store.trigram_indexed():
            logger.warning(
                "Room discovery: pg_trgm is installed but the trigram index is missing, so "
                "every fuzzy search tests every indexed room. As a superuser: %s then restart.",
                TRIGRAM_INDEX_SQL,
            )

    # -- admin view ---------------------------------------------------------------------------

    async def describe_peers(self) -> list[dict[str, Any]]:
        targets = await self.targets()
        counts = await self.store.count_rooms()
        now = self._clock.time_ms()
        out = []
        for p in await self.store.list_peers():
            t = targets.get(p.server_name)
            out.append({
                "server_name": p.server_name,
                "source": t.source if t else "added by an admin",
                "crawled": t is not None and t.origin is not None,
                "state": p.state,
                "state_since_ts": p.state_since_ts,
                "state_reason": p.state_reason,
                "dropped_from_results": self._dropped(p.state, p.state_since_ts, now),
                "last_probe_ts": p.last_probe_ts,
                "last_latency_ms": p.last_latency_ms,
                "last_crawl_ts": p.last_crawl_ts,
                "last_crawl_ok_ts": p.last_crawl_ok_ts,
                "last_crawl_duration_ms": p.last_crawl_duration_ms,
                "last_crawl_error": p.last_crawl_error,
                "next_crawl_ts": p.next_crawl_ts,
                "rooms_indexed": counts.get(p.server_name, 0),
                "added_by_admin": p.added_by_admin,
            })
        return out

    async def describe_peer(self, server_name: str) -> dict[str, Any] | None:
        for p in await self.describe_peers():
            if p["server_name"] == server_name:
                p["history"] = [
                    {"ts": ts, "state": state, "reason": reason}
                    for ts, state, reason in await self.store.history(server_name)
                ]
                return p
        return None

    # -- background task ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the one background task of this node (idempotent)."""
        if self._task is None and self.config.enabled:
            self._task = asyncio.create_task(self._run(), name="room-discovery")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        next_probe = 0
        tick_s = min(self.config.health_probe_interval, 60_000) / 1000
        while True:
            try:
                now = self._clock.time_ms()
                if now >= next_probe:
                    await self.probe_once()
                    next_probe = now + self.config.health_probe_interval
                await self.crawl_once(force=False)
                await self.store.prune_history(now - 30 * 86_400_000)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Room discovery round failed")
            await self._clock.sleep(tick_s)


def discovery_for(hs: Any) -> Discovery:
    """The node's :class:`Discovery`, built on first use and kept on ``hs``;
    it follows the node's delivery queue (a destination listener of
    ``hs.federation_sender``, when the node sends)."""
    found = getattr(hs, "_discovery", None)
    if isinstance(found, Discovery):
        return found
    from homeserver.federation_sender.sender import FederationSender

    discovery = build_discovery(hs, metrics=DiscoveryMetrics(hs.metrics.registry))
    sender = getattr(hs, "federation_sender", None)
    if isinstance(sender, FederationSender):
        sender.destination_listeners.append(discovery.delivery_changed)
    hs._discovery = discovery
    return discovery


def build_discovery(
    hs: Any,
    *,
    config: DiscoveryConfig | None = None,
    metrics: DiscoveryMetrics | None = None,
    rng: random.Random | None = None,
) -> Discovery:
    """A :class:`Discovery` over ``hs``'s database, federation client, hosted
    names, trust domain and delivery queue (``config`` defaults to
    ``hs.config.discovery``). A node has one, from :func:`discovery_for`;
    tests build others with a seeded ``rng``."""
    from homeserver.federation_sender.admin import DeliveryAdmin, tenant_databases
    from homeserver.keys import key_service_for
    from storage.database import Database
    from storage.stores.events import EventStore
    from storage.stores.room_directory import RoomDirectoryStore
    from storage.stores.state import StateStore

    keys = key_service_for(hs)
    tenants = getattr(hs, "tenants", None)

    def hosted() -> list[str]:
        if tenants is None:
            return [hs.server_name]
        return [t.server_name for t in tenants.all() if t.is_active]

    async def local_directory(name: str) -> list[dict[str, Any]]:
        db = hs.database
        if tenants is not None and (tenant := tenants.get(name)) is not None:
            db = await tenants.database(tenant)
        shared = getattr(hs, "event_store", None)
        events = shared if shared is not None and db is hs.database else EventStore(
            db, StateStore(db))
        return await PublishedDirectory(events, RoomDirectoryStore(db)).summaries(name)

    if tenants is not None:
        origins, database_for = tenant_databases(tenants, hs.database)
    else:
        def origins() -> list[str]:
            return [hs.server_name]

        async def database_for(name: str) -> Database:
            db: Database = hs.database
            return db

    # The delivery queue's view of a destination, over every database holding
    # an outbox (a dedicated tenant's backoff lives in its own), exactly as
    # the delivery admin API shows it.
    delivery = DeliveryAdmin(clock=hs.clock, origins=origins, database_for=database_for,
                             sender=getattr(hs, "federation_sender", None))
    return Discovery(
        config=config or hs.config.discovery,
        clock=hs.clock,
        store=DiscoveryStore(hs.database),
        client=keys.client,
        hosted_names=hosted,
        trust=getattr(hs, "trust", None),
        local_directory=local_directory,
        delivery_error=delivery.backing_off,
        metrics=metrics,
        rng=rng,
    )
