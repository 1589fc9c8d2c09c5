"""The operator's view of delivery: destinations, dead letters, replay windows.

One service behind the admin API (``homeserver/rest/admin/federation.py``)
and the CLI (``homeserver federation ...``), over every database holding an
outbox (the node's and each dedicated tenant's). With a running
:class:`~homeserver.federation_sender.FederationSender` (the admin API) the
queues concerned are woken at once; without one (the CLI) a running node
picks the rows up at its next sweep. docs/usage/delivery.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from federation.clock import Clock
from homeserver.federation_sender.outbox import joined_servers_txn
from homeserver.federation_sender.sender import FederationSender
from storage.database import Database
from storage.stores.dead_letters import DeadLetter, DeadLetterFilter, DeadLetterStore
from storage.stores.events import EventStore
from storage.stores.outbox import DestinationState, OutboxStore
from storage.stores.state import StateStore

__all__ = [
    "DeliveryAdmin",
    "DestinationInfo",
    "ReplayScopeError",
    "parse_age",
    "parse_since",
    "tenant_databases",
]

#: Events queued per database transaction by a replay window.
REPLAY_BATCH = 500

#: ``progress(done, total)`` during a replay window.
Progress = Callable[[int, int], None]


class ReplayScopeError(Exception):
    """A replay window names nothing that can be sent (unknown room, peer not in it)."""


@dataclass(frozen=True)
class DestinationInfo:
    destination: str
    #: ``idle`` (nothing queued), ``sending`` or ``backing_off``.
    state: str
    queue_depth: int
    dead_letters: int
    failure_count: int
    retry_interval_ms: int
    next_retry_ts: int | None
    last_success_ts: int | None
    last_failure_ts: int | None
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "state": self.state,
            "queue_depth": self.queue_depth,
            "dead_letters": self.dead_letters,
            "failure_count": self.failure_count,
            "retry_interval_ms": self.retry_interval_ms,
            "next_retry_ts": self.next_retry_ts,
            "last_success_ts": self.last_success_ts,
            "last_failure_ts": self.last_failure_ts,
            "last_error": self.last_error,
        }


class DeliveryAdmin:
    """``origins()`` lists the server names hosted; ``database_for(origin)``
    gives the database holding a name's events and outbox."""

    def __init__(
        self,
        *,
        clock: Clock,
        origins: Callable[[], Sequence[str]],
        database_for: Callable[[str], Awaitable[Database]],
        sender: FederationSender | None = None,
    ) -> None:
        self._clock = clock
        self._origins = origins
        self._database_for = database_for
        self._sender = sender

    async def databases(self) -> list[Database]:
        found: dict[int, Database] = {}
        for origin in self._origins():
            db = await self._database_for(origin)
            found.setdefault(id(db), db)
        if self._sender is not None:
            for db in self._sender.databases():
                found.setdefault(id(db), db)
        return list(found.values())

    # Destinations

    async def destinations(self) -> list[DestinationInfo]:
        """Every destination with a backoff record, queued rows or dead letters."""
        now = self._clock.time_ms()
        states: dict[str, list[DestinationState]] = {}
        depth: dict[str, int] = {}
        dead: dict[str, int] = {}
        for db in await self.databases():
            outbox = OutboxStore(db)
            for st in await outbox.list_destinations():
                states.setdefault(st.destination, []).append(st)
            for (_, d), n in (await outbox.queue_depths()).items():
                depth[d] = depth.get(d, 0) + n
            for d, n in (await DeadLetterStore(db).count_by("destination")).items():
                dead[d] = dead.get(d, 0) + n
        out = []
        for name in sorted(set(states) | set(depth) | set(dead)):
            out.append(_merge(name, states.get(name, []), depth.get(name, 0),
                              dead.get(name, 0), now))
        return out

    async def destination(self, name: str) -> DestinationInfo | None:
        for info in await self.destinations():
            if info.destination == name:
                return info
        return None

    async def backing_off(self, name: str) -> str | None:
        """Why deliveries to ``name`` are backing off (its last error), or None
        when they are not: the ``backing_off`` state of :meth:`destination`,
        read without counting queues and dead letters (room discovery asks
        it on every probe)."""
        states = []
        for db in await self.databases():
            found = await OutboxStore(db).get_destination(name)
            if found is not None:
                states.append(found)
        _, failure, backing_off = _backoff(states, self._clock.time_ms())
        if not backing_off:
            return None
        if failure is not None and failure.last_error:
            return failure.last_error
        return f"{max(s.failure_count for s in states)} failed deliveries"

    async def reset_backoff(self, name: str) -> bool:
        """Retry ``name`` now; False if nothing is known of it."""
        if await self.destination(name) is None:
            return False
        for db in await self.databases():
            await OutboxStore(db).reset_backoff([name])
        if self._sender is not None:
            await self._sender.reset_destination(name)
        return True

    # Dead letters

    async def dead_letters(
        self, filt: DeadLetterFilter, *, limit: int, after: tuple[int, int, str] | None = None
    ) -> tuple[list[DeadLetter], int]:
        """The oldest ``limit`` matches after the key, and how many match in all."""
        found: list[DeadLetter] = []
        total = 0
        for db in await self.databases():
            store = DeadLetterStore(db)
            found += await store.list_dead_letters(filt, limit=limit, after=after)
            total += await store.count(filt)
        found.sort(key=lambda d: (d.dead_ts, d.seq, d.dead_letter_id))
        return found[:limit], total

    async def dead_letter(self, dead_letter_id: str) -> tuple[DeadLetter, Database] | None:
        for db in await self.databases():
            found = await DeadLetterStore(db).get(dead_letter_id)
            if found is not None:
                return found, db
        return None

    async def event_of(self, letter: DeadLetter, db: Database) -> dict[str, Any] | None:
        if letter.kind != "pdu" or letter.event_id is None:
            return None
        return await DeadLetterStore(db).get_event_json(letter.origin, letter.event_id)

    async def replay_dead_letters(self, filt: DeadLetterFilter) -> int:
        """Queue the matches again; returns how many."""
        now = self._clock.time_ms()
        total = 0
        for db in await self.databases():
            done = await DeadLetterStore(db).replay(filt, now)
            total += sum(done.values())
            await self._wake(done)
        await self._refresh()
        return total

    async def purge_dead_letters(self, filt: DeadLetterFilter) -> int:
        total = 0
        for db in await self.databases():
            total += await DeadLetterStore(db).purge(filt)
        await self._refresh()
        return total

    # Replay windows

    async def replay_window(
        self,
        destination: str,
        since_ts: int,
        *,
        room_id: str | None = None,
        origin: str | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Queue again, for ``destination``, every event our users sent since
        ``since_ts`` in the rooms ``destination`` is joined to (or ``room_id``
        only), from every hosted name (or ``origin`` only). Events still
        queued and unsent are not queued twice; the receiver drops any it
        already has. Returns how many were queued."""
        scopes: list[tuple[str, DeadLetterStore, str]] = []
        for name in self._origins():
            if origin is not None and name != origin or name == destination:
                continue
            db = await self._database_for(name)
            store = DeadLetterStore(db)
            events = EventStore(db, StateStore(db))
            rooms = [room_id] if room_id is not None else await store.rooms_of(name)
            for room in rooms:
                joined = await joined_servers_txn(None, events, name, room)
                if destination in joined:
                    scopes.append((name, store, room))
        if not scopes:
            where = f" in {room_id}" if room_id is not None else ""
            raise ReplayScopeError(
                f"{destination} has no joined member in any room{where} of "
                f"{origin or 'this node'}: nothing to replay"
            )
        total = 0
        for name, store, room in scopes:
            total += await store.count_local_events_since(name, room, since_ts)
        done = queued = 0
        if progress is not None:
            progress(0, total)
        now = self._clock.time_ms()
        for name, store, room in scopes:
            after = -1
            while True:
                batch = await store.local_events_since(
                    name, room, since_ts, after_stream=after, limit=REPLAY_BATCH
                )
                if not batch:
                    break
                after = batch[-1][0]
                queued += await store.enqueue_replay(
                    name, destination, [(e, room) for _, e in batch], now
                )
                done += len(batch)
                if progress is not None:
                    progress(min(done, total), total)
            await self._wake({(name, destination): 1})
        await self._refresh()
        return queued

    async def pending(self, destination: str) -> int:
        """Rows queued for ``destination`` (a replay's progress as they drain)."""
        n = 0
        for db in await self.databases():
            for (_, d), c in (await OutboxStore(db).queue_depths()).items():
                if d == destination:
                    n += c
        return n

    async def _wake(self, done: dict[tuple[str, str], int]) -> None:
        """Rows were queued again by an operator who expects them sent: the
        destinations' backoff ends (docs/usage/delivery.md, "Replay")."""
        destinations = sorted({d for _, d in done})
        if not destinations:
            return
        for db in await self.databases():
            await OutboxStore(db).reset_backoff(destinations)
        if self._sender is None:
            return
        for d in destinations:
            await self._sender.reset_destination(d)
        for origin, destination in done:
            await self._sender.wake(origin, [destination])

    async def _refresh(self) -> None:
        if self._sender is not None:
            await self._sender.refresh_gauges()


def _latest(values: list[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _backoff(
    states: list[DestinationState], now: int
) -> tuple[int | None, DestinationState | None, bool]:
    """``(next retry, latest failure, backing off)`` over every database's
    state of one destination: it backs off while some retry time is ahead."""
    next_retry = _latest([s.next_retry_ts for s in states])
    failure = max(states, key=lambda s: s.last_failure_ts or 0) if states else None
    return next_retry, failure, next_retry is not None and next_retry > now


def _merge(
    name: str, states: list[DestinationState], depth: int, dead: int, now: int
) -> DestinationInfo:
    """One destination as every database sees it (they share nothing)."""
    next_retry, failure, backing_off = _backoff(states, now)
    if backing_off:
        state = "backing_off"
    elif depth:
        state = "sending"
    else:
        state = "idle"
    return DestinationInfo(
        destination=name,
        state=state,
        queue_depth=depth,
        dead_letters=dead,
        failure_count=max((s.failure_count for s in states), default=0),
        retry_interval_ms=max((s.retry_interval_ms for s in states), default=0),
        next_retry_ts=next_retry,
        last_success_ts=_latest([s.last_success_ts for s in states]),
        last_failure_ts=_latest([s.last_failure_ts for s in states]),
        last_error=failure.last_error if failure is not None else None,
    )


def parse_age(text: str) -> int:
    """An age for filters: a duration (``"90s"``, ``"2h"``, ``"7d"``) or plain
    milliseconds. Raises ValueError."""
    from homeserver.config import parse_duration

    text = text.strip()
    if text.isdigit():
        return int(text)
    return parse_duration(text)


def parse_since(text: str, now_ms: int) -> int:
    """A replay window's start: milliseconds since the epoch (13 digits or
    fewer), an ISO 8601 time (``2026-01-31T12:00:00Z``; UTC when no offset is
    given) or an age (``"2h"``: two hours ago). Raises ValueError."""
    import datetime

    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        return now_ms - parse_age(text)
    except ValueError:
        pass
    when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1000)


def tenant_databases(registry: Any, default: Database) -> tuple[
    Callable[[], list[str]], Callable[[str], Awaitable[Database]]
]:
    """``(origins, database_for)`` over a :class:`~homeserver.tenants.TenantRegistry`."""
    def origins() -> list[str]:
        return [t.server_name for t in registry.all()]

    async def database_for(name: str) -> Database:
        tenant = registry.get(name)
        if tenant is None:
            return default
        db: Database = await registry.database(tenant)
        return db

    return origins, database_for
