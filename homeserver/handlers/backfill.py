"""Fetching a room's older history when a client pages back past what we hold.

Spec: ``server-server-api.md`` "Backfilling and retrieving missing events"
(``GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=``: the events
named by ``v`` and those before them, walked back from ``v``), "Checks
performed on receipt of a PDU", "Rejection".

:class:`PaginationBackfiller` is what ``/messages`` calls (through
:class:`~homeserver.handlers.pagination.RoomBackfiller`) when a page reaches
a *backward extremity*: a prev event of the room's timeline that this tenant
does not hold (``EventStore.get_backward_extremities``). It asks a server
with a joined member in the room (most members first, the next on failure)
for the history before those extremities, then for each returned event:

1. format, signatures (keys through the keyring) and content hash (receipt
   checks 1-3, ``Keyring.verify_pdu``): an event failing them is dropped;
2. its own auth events, fetched when unknown (``GET /event``, then
   ``GET /event_auth``) and stored as outliers;
3. the auth rules against those auth events (check 4): an event failing
   them is stored *rejected* and never shown.

Accepted events are stored as backfilled history (``NewEvent.backfilled``):
negative stream orderings, so they sort before everything held and an
incremental ``/sync`` never reports them as new; no forward extremity or
current state changes, nothing is sent to other servers. The state before
an event comes from its prev events when we hold them with their state;
otherwise (the oldest events of a batch) the state before the room's
earliest timeline event stands in for it, as for join-time history
(:mod:`homeserver.handlers.remote_join`): it decides what clients are
shown, never the room's current state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from urllib.parse import quote

from federation.clock import Clock
from federation.event_format import server_name_of
from federation.events import Event
from federation.keyring import Keyring
from federation.room_versions import RoomVersion, get_room_version
from federation.transport.client import FederationClientError
from homeserver.handlers.event_receipt import (
    EventReceiptHandler,
    own_auth_event_ids,
    own_auth_failure,
)
from homeserver.handlers.missing_events import FederationRequester, MissingEventsFetcher
from homeserver.handlers.room_state import state_after_events_txn
from storage.database import Database
from storage.stores.events import EventStore, NewEvent
from storage.stores.room_timeline import RoomTimelineStore
from storage.stores.state import ResolvedState

__all__ = ["PaginationBackfiller"]

logger = logging.getLogger(__name__)

FED_V1 = "/_matrix/federation/v1"
#: Events asked for per /backfill request (our own /backfill answers at most 100).
MAX_BACKFILL_BATCH = 100
#: Backward extremities named in one request (``v``), deepest first.
MAX_BACKFILL_POINTS = 5
#: Unknown auth events fetched one by one per batch; past that, GET /event_auth.
MAX_AUTH_FETCHES = 50
#: Events whose whole auth chain is fetched (GET /event_auth) per batch.
MAX_AUTH_CHAIN_FETCHES = 3
#: After every server failed for a set of extremities, the seconds before
#: a page asks again (each page would otherwise ask every server anew).
RETRY_AFTER_S = 60.0


class PaginationBackfiller:
    """Backfill on pagination for the tenants of one database."""

    def __init__(
        self,
        *,
        db: Database,
        events: EventStore,
        keyring: Keyring,
        client: FederationRequester,
        clock: Clock,
    ) -> None:
        self._db = db
        self._events = events
        self._client = client
        self._clock = clock
        self._timeline = RoomTimelineStore(db)
        self._fetcher = MissingEventsFetcher(
            db, events, EventReceiptHandler(db, events), keyring, client
        )
        #: (tenant, room, extremities) -> monotonic time before which not to ask again.
        self._failed: dict[tuple[str, str, frozenset[str]], float] = {}
        #: One backfill per room at a time: concurrent pages wait and reuse it.
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def backfill(
        self, tenant: str, room_id: str, *, max_depth: int | None, limit: int
    ) -> int:
        """Fetch history before the room's backward extremities at most
        ``max_depth`` deep; returns how many events were stored as history
        (accepted or rejected). Never raises for a peer's failure."""
        lock = self._locks.setdefault((tenant, room_id), asyncio.Lock())
        async with lock:
            return await self._backfill(tenant, room_id, max_depth, limit)

    async def _backfill(
        self, tenant: str, room_id: str, max_depth: int | None, limit: int
    ) -> int:
        extremities = await self._events.get_backward_extremities(
            tenant, room_id, max_depth=max_depth)
        if not extremities:
            return 0
        points = [eid for eid, _ in extremities[:MAX_BACKFILL_POINTS]]
        key = (tenant, room_id, frozenset(points))
        now = self._clock.monotonic()
        if self._failed.get(key, 0.0) > now:
            return 0
        rv_id = await self._events.state.get_room_version_id(tenant, room_id)
        if rv_id is None:
            return 0
        rv = get_room_version(rv_id)
        batch = max(1, min(limit, MAX_BACKFILL_BATCH))
        for server in await self._servers(tenant, room_id):
            try:
                resp = await self._client.get_json(
                    server, f"{FED_V1}/backfill/{quote(room_id, safe='')}",
                    query={"v": points, "limit": str(batch)}, origin=tenant,
                )
            except FederationClientError as e:
                logger.info("Backfill of %s from %s failed: %s", room_id, server, e)
                continue
            pdus = resp.get("pdus") if isinstance(resp, dict) else None
            if not isinstance(pdus, list):
                logger.info("Backfill of %s from %s: no pdus array", room_id, server)
                continue
            got: dict[str, Event] = {}
            for pdu in pdus[:batch]:
                ev = await self._fetcher.verify(pdu, rv, room_id, what="Backfilled")
                if ev is not None:
                    got[ev.event_id] = ev
            stored = await self._store(tenant, server, rv, room_id, got)
            logger.info("Backfill of %s from %s before %s: %d events returned, %d stored",
                        room_id, server, points, len(pdus), stored)
            if stored:
                self._failed.pop(key, None)
                return stored
        if len(self._failed) >= 1000:
            self._failed = {k: t for k, t in self._failed.items() if t > now}
        self._failed[key] = now + RETRY_AFTER_S
        return 0

    async def _servers(self, tenant: str, room_id: str) -> list[str]:
        """Servers with joined members in the room's current state, most members
        first (the likeliest to hold its history), never ourselves."""
        counts: dict[str, int] = {}
        for user in await self._events.state.get_joined_users(tenant, room_id):
            server = server_name_of(user)
            if server:
                counts[server] = counts.get(server, 0) + 1
        counts.pop(tenant, None)
        return sorted(counts, key=lambda s: (-counts[s], s))

    async def _fetch_auth(
        self, tenant: str, server: str, rv: RoomVersion, room_id: str,
        events: Iterable[Event],
    ) -> None:
        """Store the unknown auth events of ``events`` as outliers (checked)."""
        events = list(events)
        batch_ids = {ev.event_id for ev in events}
        needed = {a for ev in events for a in own_auth_event_ids(ev)} - batch_ids
        missing = needed - await self._events.have_events(tenant, needed)
        if not missing:
            return
        wanted = sorted(missing)[:MAX_AUTH_FETCHES]
        fetched = await self._fetcher.fetch_many(tenant, server, wanted, rv, room_id)
        await self._fetcher.persist_outliers(tenant, fetched)
        # Auth events whose own auth chain is unknown too: the whole chain.
        still = needed - await self._events.have_events(tenant, needed)
        if still:
            lacking = [ev for ev in events if set(own_auth_event_ids(ev)) & still]
            for ev in lacking[:MAX_AUTH_CHAIN_FETCHES]:
                await self._fetcher.fetch_auth_chain(tenant, server, ev)

    async def _stand_in_state(self, tenant: str, room_id: str) -> ResolvedState | None:
        """The state before the room's earliest timeline event (see the module
        docstring); ``None`` if the room has no timeline event yet."""
        first = await self._timeline.get_room_events_topo(
            tenant, room_id, from_pos=None, to_pos=None, backwards=False, limit=1)
        if not first:
            return None
        group = first[0].state_group_before
        state = await self._events.state.get_state_group(tenant, group)
        return ResolvedState(state, group=group)

    async def _store(
        self, tenant: str, server: str, rv: RoomVersion, room_id: str,
        got: Mapping[str, Event],
    ) -> int:
        existing = await self._events.get_stored_events(tenant, got)
        fresh = {eid: ev for eid, ev in got.items()
                 if eid not in existing or existing[eid].outlier}
        if not fresh:
            return 0
        await self._fetch_auth(tenant, server, rv, room_id, fresh.values())
        stand_in = await self._stand_in_state(tenant, room_id)
        events = self._events
        stored = 0
        async with self._db.transaction("backfill") as txn:
            await txn.lock(f"event_graph:{tenant}")
            auth_ids = {a for ev in fresh.values() for a in own_auth_event_ids(ev)}
            known = dict(await events.get_events(tenant, auth_ids, txn=txn))
            # Oldest first: prev events (and usually auth events) come before
            # the events that refer to them.
            for ev in sorted(fresh.values(), key=lambda e: (e.depth, e.event_id)):
                wanted = own_auth_event_ids(ev)
                lacking = [a for a in wanted if a not in known]
                if lacking:
                    logger.info("Backfilled %s dropped: auth events %s unknown",
                                ev.event_id, lacking)
                    continue
                rejected = own_auth_failure(ev, {a: known[a] for a in wanted})
                if rejected is not None:
                    logger.info("Backfilled %s rejected: %s", ev.event_id, rejected)
                    ev = Event(ev.pdu, ev.event_id, ev.room_version, rejected)
                state_before: ResolvedState | None = None
                if ev.prev_event_ids:
                    state_before = await state_after_events_txn(
                        txn, events, tenant, rv, ev.prev_event_ids)
                    if state_before is None:
                        state_before = stand_in or ResolvedState({})
                persisted = await events.persist_event_txn(
                    txn, tenant,
                    NewEvent(ev, state_before=state_before, rejected_reason=rejected,
                             backfilled=True),
                )
                known[ev.event_id] = ev
                if persisted.newly_persisted:
                    stored += 1
        return stored
