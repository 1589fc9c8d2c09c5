"""Fetching the events a received PDU refers to but this tenant does not hold.

Spec: ``server-server-api.md`` "Backfilling and retrieving missing events"
(``POST /get_missing_events``), "Retrieving events" (``GET /event``,
``GET /state_ids``), "Retrieving event authorisation information"
(``GET /event_auth``).

Three tools, used by :mod:`homeserver.handlers.federation_receiver` in this
order (as Synapse's ``FederationEventHandler`` does):

1. :meth:`MissingEventsFetcher.get_missing_events`: ask the origin for the
   events between our forward extremities and the new event, bounded by
   ``limit`` and ``min_depth`` (the shallowest of our extremities), and
   receive them oldest first;
2. :meth:`MissingEventsFetcher.fill_gap_with_state`: when the gap is larger
   than that, take each still-missing prev event, its state (``state_ids``)
   and every state or auth event we lack (``GET /event``, one by one), store
   those as *outliers* (events without known state, checked against their
   own auth events only), then the prev event itself with the fetched state
   as its state before (receipt checks 4 and 5 against it);
3. :meth:`MissingEventsFetcher.fetch_auth_chain`: for an event whose own
   auth events are unknown, its auth chain (``event_auth``), as outliers.

Every fetched event passes receipt checks 1-3 (format, signatures through
the keyring, content hash) before anything is stored; one that does not is
left out, and whatever needed it fails in turn with its own error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

from federation.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth,
)
from federation.errors import Codes, MatrixError
from federation.events import Event
from federation.keyring import Keyring
from federation.room_versions import RoomVersion
from federation.transport.client import FederationClientError
from homeserver.handlers.event_receipt import (
    EventReceiptHandler,
    MissingEventsError,
    ReceiptOutcome,
    own_auth_event_ids,
    own_auth_failure,
)
from homeserver.handlers.room_state import update_current_state_txn
from storage.database import Database
from storage.stores.events import EventStore, NewEvent
from storage.stores.state import ResolvedState

__all__ = ["FederationRequester", "MissingEventsFetcher"]

logger = logging.getLogger(__name__)

FEDERATION_V1 = "/_matrix/federation/v1"

# get_missing_events: Synapse asks for 10 and so do we.
MISSING_EVENTS_LIMIT = 10
# Prev events filled from their state per received event; more means the
# sender is far ahead and the room is better caught up by backfill.
MAX_GAP_PREVS = 10
# Events fetched one by one with GET /event for one gap (state + auth chain).
MAX_EVENTS_PER_GAP = 5000
FETCH_CONCURRENCY = 10


class FederationRequester(Protocol):
    """What is needed of :class:`~federation.transport.client.FederationClient`."""

    async def get_json(
        self, destination: str, path: str, *, query: Mapping[str, Any] | None = None,
        origin: str | None = None, timeout_s: float | None = None,
    ) -> Any: ...

    async def post_json(
        self, destination: str, path: str, body: Any, *,
        query: Mapping[str, Any] | None = None, origin: str | None = None,
        timeout_s: float | None = None,
    ) -> Any: ...


def _room_path(endpoint: str, room_id: str) -> str:
    return f"{FEDERATION_V1}/{endpoint}/{quote(room_id, safe='')}"


class MissingEventsFetcher:
    def __init__(
        self,
        db: Database,
        events: EventStore,
        receipt: EventReceiptHandler,
        keyring: Keyring,
        client: FederationRequester,
    ) -> None:
        self._db = db
        self._events = events
        self._receipt = receipt
        self._keyring = keyring
        self._client = client

    # -- fetching and checking single events ---------------------------------------

    async def verify(
        self, pdu: Any, rv: RoomVersion, room_id: str, *, what: str = "Fetched"
    ) -> Event | None:
        """Receipt checks 1-3 on a PDU another server sent us, and that it is
        in ``room_id``; ``None`` (logged as ``what`` event) if it fails."""
        if not isinstance(pdu, dict):
            return None
        try:
            verified = await self._keyring.verify_pdu(pdu, rv)
        except MatrixError as e:
            logger.info("%s event in %s dropped: %s", what, room_id, e.msg)
            return None
        ev = verified.event
        if ev.room_id != room_id:
            logger.info("%s event %s is not in %s; dropped", what, ev.event_id, room_id)
            return None
        return ev

    async def fetch_event(
        self, tenant: str, origin: str, event_id: str, rv: RoomVersion, room_id: str
    ) -> Event | None:
        """``GET /event/{eventId}`` from ``origin``, checked; ``None`` if unavailable."""
        try:
            body = await self._client.get_json(
                origin, f"{FEDERATION_V1}/event/{quote(event_id, safe='')}", origin=tenant
            )
        except FederationClientError as e:
            logger.info("Fetching %s from %s failed: %s", event_id, origin, e.reason)
            return None
        pdus = body.get("pdus") if isinstance(body, dict) else None
        if not isinstance(pdus, list) or len(pdus) != 1:
            logger.info("%s answered GET /event/%s without one PDU", origin, event_id)
            return None
        ev = await self.verify(pdus[0], rv, room_id)
        if ev is not None and ev.event_id != event_id:
            logger.info("%s answered GET /event/%s with %s", origin, event_id, ev.event_id)
            return None
        return ev

    async def fetch_many(
        self, tenant: str, origin: str, event_ids: Iterable[str], rv: RoomVersion,
        room_id: str,
    ) -> dict[str, Event]:
        """:meth:`fetch_event` for each of ``event_ids``, a few at a time; the
        events that could be fetched and checked."""
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(eid: str) -> Event | None:
            async with gate:
                return await self.fetch_event(tenant, origin, eid, rv, room_id)

        got = await asyncio.gather(*(one(e) for e in event_ids))
        return {ev.event_id: ev for ev in got if ev is not None}

    # -- outliers ---------------------------------------------------------------------

    async def persist_outliers(self, tenant: str, fetched: Mapping[str, Event]) -> set[str]:
        """Store events of unknown state as outliers, each checked against its
        own auth events (receipt check 4: rejected if it fails); returns the IDs
        stored. Events whose auth events are neither stored nor given are left out.
        """
        if not fetched:
            return set()
        async with self._db.transaction("persist_outliers") as txn:
            await txn.lock(f"event_graph:{tenant}")
            have = await self._events.have_events(tenant, fetched, txn=txn)
            pending = {eid: ev for eid, ev in fetched.items() if eid not in have}
            needed_ids = {a for ev in pending.values() for a in own_auth_event_ids(ev)}
            known = await self._events.get_events(
                tenant, needed_ids - set(pending), txn=txn
            )
            stored: set[str] = set()
            to_write: list[NewEvent] = []
            progress = True
            while pending and progress:
                progress = False
                for eid, ev in sorted(pending.items(), key=lambda kv: kv[1].depth):
                    auth_ids = own_auth_event_ids(ev)
                    if any(a in pending for a in auth_ids):
                        continue  # its auth events first
                    del pending[eid]
                    progress = True
                    if any(a not in known for a in auth_ids):
                        logger.info("Outlier %s dropped: auth events unknown", eid)
                        continue
                    rejected = own_auth_failure(ev, {a: known[a] for a in auth_ids})
                    if rejected is not None:
                        ev = Event(ev.pdu, ev.event_id, ev.room_version, rejected)
                    known[eid] = ev
                    to_write.append(NewEvent(ev, outlier=True, rejected_reason=rejected))
                    stored.add(eid)
            if pending:
                logger.info("Outliers in an auth cycle dropped: %s", sorted(pending))
            await self._events.persist_events_txn(txn, tenant, to_write)
        return stored

    async def fetch_auth_chain(self, tenant: str, origin: str, event: Event) -> None:
        """``GET /event_auth`` for ``event`` and store the chain as outliers."""
        room_id = event.room_id
        try:
            body = await self._client.get_json(
                origin,
                f"{FEDERATION_V1}/event_auth/{quote(room_id, safe='')}/"
                f"{quote(event.event_id, safe='')}",
                origin=tenant,
            )
        except FederationClientError as e:
            logger.info("event_auth for %s from %s failed: %s", event.event_id, origin, e.reason)
            return
        chain = body.get("auth_chain") if isinstance(body, dict) else None
        if not isinstance(chain, list):
            return
        fetched: dict[str, Event] = {}
        for pdu in chain[:MAX_EVENTS_PER_GAP]:
            ev = await self.verify(pdu, event.room_version, room_id)
            if ev is not None:
                fetched[ev.event_id] = ev
        await self.persist_outliers(tenant, fetched)

    # -- get_missing_events ---------------------------------------------------------------

    async def get_missing_events(
        self, tenant: str, origin: str, event: Event,
        receive: Any,
    ) -> int:
        """Ask ``origin`` for the events between our extremities and ``event``.

        ``receive(event)`` takes each returned event (oldest first) through
        the receipt path. Returns how many events were returned.
        """
        room_id = event.room_id
        extremities = await self._events.get_forward_extremities(tenant, room_id)
        ext = await self._events.get_events(tenant, extremities)
        min_depth = min((e.depth for e in ext.values()), default=0)
        body = {
            "earliest_events": extremities,
            "latest_events": [event.event_id],
            "limit": MISSING_EVENTS_LIMIT,
            "min_depth": min_depth,
        }
        try:
            resp = await self._client.post_json(
                origin, _room_path("get_missing_events", room_id), body, origin=tenant
            )
        except FederationClientError as e:
            logger.info("get_missing_events for %s from %s failed: %s",
                        event.event_id, origin, e.reason)
            return 0
        pdus = resp.get("events") if isinstance(resp, dict) else None
        if not isinstance(pdus, list):
            return 0
        got: list[Event] = []
        for pdu in pdus[: MISSING_EVENTS_LIMIT * 2]:
            ev = await self.verify(pdu, event.room_version, room_id)
            if ev is not None and ev.event_id != event.event_id:
                got.append(ev)
        logger.info("get_missing_events for %s from %s: %d events",
                    event.event_id, origin, len(got))
        for ev in sorted(got, key=lambda e: (e.depth, e.event_id)):
            try:
                await receive(ev)
            except MatrixError as e:
                logger.info("Missing event %s not taken: %s", ev.event_id, e.msg)
        return len(got)

    # -- state_ids gap filling --------------------------------------------------------------

    async def fill_gap_with_state(
        self, tenant: str, origin: str, event: Event, missing_prevs: Iterable[str]
    ) -> None:
        """Make each missing prev event of ``event`` known with its state."""
        for prev_id in list(missing_prevs)[:MAX_GAP_PREVS]:
            await self._fill_one(tenant, origin, event.room_version, event.room_id, prev_id)

    async def _fill_one(
        self, tenant: str, origin: str, rv: RoomVersion, room_id: str, prev_id: str
    ) -> None:
        stored = await self._events.get_event(tenant, prev_id)
        if stored is not None and not stored.outlier:
            return
        try:
            ids = await self._client.get_json(
                origin, _room_path("state_ids", room_id), query={"event_id": prev_id},
                origin=tenant,
            )
        except FederationClientError as e:
            logger.info("state_ids at %s from %s failed: %s", prev_id, origin, e.reason)
            return
        pdu_ids = ids.get("pdu_ids") if isinstance(ids, dict) else None
        chain_ids = ids.get("auth_chain_ids") if isinstance(ids, dict) else None
        if not (_str_list(pdu_ids) and _str_list(chain_ids)):
            logger.info("state_ids at %s from %s is malformed", prev_id, origin)
            return
        assert isinstance(pdu_ids, list) and isinstance(chain_ids, list)
        prev = stored.event if stored is not None else await self.fetch_event(
            tenant, origin, prev_id, rv, room_id
        )
        if prev is None:
            return
        wanted = set(pdu_ids) | set(chain_ids) | set(own_auth_event_ids(prev))
        wanted.discard(prev_id)
        missing = wanted - await self._events.have_events(tenant, wanted)
        if len(missing) > MAX_EVENTS_PER_GAP:
            logger.info("Gap at %s needs %d events; not filled", prev_id, len(missing))
            return
        logger.info("Filling the gap at %s in %s from %s: state of %d, fetching %d events",
                    prev_id, room_id, origin, len(pdu_ids), len(missing))
        fetched = await self.fetch_many(tenant, origin, sorted(missing), rv, room_id)
        await self.persist_outliers(tenant, fetched)

        async with self._db.transaction("persist_gap_event") as txn:
            await txn.lock(f"event_graph:{tenant}")
            state_events = await self._events.get_events(tenant, pdu_ids, txn=txn)
            if len(state_events) != len(set(pdu_ids)):
                logger.info("State at %s incomplete; gap not filled", prev_id)
                return
            state: dict[tuple[str, str], str] = {}
            for sev in state_events.values():
                if not sev.is_state() or sev.room_id != room_id:
                    logger.info("state_ids at %s lists %s, not a state event of the room",
                                prev_id, sev.event_id)
                    return
                state[sev.state_tuple] = sev.event_id
            auth_ids = own_auth_event_ids(prev)
            auth = await self._events.get_events(tenant, auth_ids, txn=txn)
            if len(auth) != len(set(auth_ids)):
                logger.info("Auth events of %s unknown; gap not filled", prev_id)
                return
            rejected = own_auth_failure(prev, auth)  # receipt check 4
            if rejected is None:  # receipt check 5, against the fetched state
                rejected = await _check_against_state(self._events, tenant, prev, state, txn)
            await self._events.persist_events_txn(
                txn, tenant,
                [NewEvent(prev, state_before=ResolvedState(state), rejected_reason=rejected)],
            )
            if rejected is None:
                await update_current_state_txn(txn, self._events, tenant, room_id, rv)

    # -- the whole receipt with fetching -------------------------------------------------

    async def receive_batch_with_fetching(
        self, tenant: str, origin: str, events: list[Event]
    ) -> list[ReceiptOutcome | MatrixError]:
        """:meth:`receive_with_fetching` for each of ``events`` (one room), in
        order; an event's ``MatrixError`` is its result.

        The events that need nothing fetched go through in one database
        transaction (:meth:`EventReceiptHandler.receive_verified_batch`); from
        the first that does, one by one.
        """
        done: list[ReceiptOutcome | MatrixError] = []
        if len(events) > 1:
            try:
                done.extend(await self._receipt.receive_verified_batch(tenant, events))
            except Exception:
                # A bug, not a verdict on the events: the batch's database
                # transaction kept nothing, so each event takes the per-event
                # path, where a failure is that event's alone.
                logger.exception("RX [%s] batch of %d PDUs in %s failed; one by one",
                                 origin, len(events), events[0].room_id)
                done = []
        for ev in events[len(done):]:
            try:
                done.append(await self.receive_with_fetching(tenant, origin, ev))
            except MatrixError as e:
                done.append(e)
            except Exception:
                # Server-Server API "Transactions": one PDU's failure never
                # fails the others; it becomes this PDU's error.
                logger.exception("RX [%s] %s: unexpected error while processing it",
                                 origin, ev.event_id)
                done.append(internal_pdu_error())
        return done

    async def receive_with_fetching(
        self, tenant: str, origin: str, event: Event, *, allow_missing_events: bool = True
    ) -> ReceiptOutcome:
        """Receipt checks 4-6 for a verified event, fetching what it refers to.

        Raises :class:`MissingEventsError` if the events stay unknown.
        """

        async def pulled(ev: Event) -> ReceiptOutcome:
            return await self.receive_with_fetching(
                tenant, origin, ev, allow_missing_events=False
            )

        tried_auth = tried_missing = tried_gap = False
        while True:
            try:
                return await self._receipt.receive_verified_pdu(tenant, event)
            except MissingEventsError as e:
                if e.msg.startswith("auth_events") and not tried_auth:
                    tried_auth = True
                    await self.fetch_auth_chain(tenant, origin, event)
                elif allow_missing_events and not tried_missing and not e.msg.startswith(
                    "auth_events"
                ):
                    tried_missing = True
                    await self.get_missing_events(tenant, origin, event, pulled)
                elif not tried_gap and not e.msg.startswith("auth_events"):
                    tried_gap = True
                    await self.fill_gap_with_state(tenant, origin, event, e.missing)
                else:
                    raise


def internal_pdu_error() -> MatrixError:
    """A PDU's result when processing it raised something unexpected (logged)."""
    return MatrixError(500, Codes.UNKNOWN, "internal error while processing this PDU")


def _str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


async def _check_against_state(
    events: EventStore, tenant: str, ev: Event, state: Mapping[tuple[str, str], str],
    txn: Any,
) -> str | None:
    keys = auth_types_for_event(ev, ev.room_version) | {("m.room.create", "")}
    ids = {k: state[k] for k in keys if k in state}
    loaded = await events.get_events(tenant, ids.values(), txn=txn)
    try:
        check_auth(ev, {k: loaded[e] for k, e in ids.items() if e in loaded})
    except AuthError as e:
        return e.msg
    return None
