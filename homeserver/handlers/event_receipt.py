"""Accepting an event from a remote server.

Spec: ``server-server-api.md`` "Checks performed on receipt of a PDU". Steps
1-3 (format, signatures, content hash) are :func:`federation.signing.verify_pdu`
with keys from the keyring; :meth:`EventReceiptHandler.receive_verified_pdu`
takes an event that passed them and runs steps 4-6:

4. auth rules against the event's own auth events, else *rejected*;
5. auth rules against the state before the event (resolved across its
   prev_events when there are several), else *rejected*;
6. auth rules against the room's current state, else *soft failed*.

A rejected or soft-failed event is still stored, marked ("Rejection", "Soft
failure"): it answers federation requests and takes part in later state
resolution, but clients never see it and it never becomes a prev event.
Rejection is an outcome, not an error: the transaction it came in still
succeeds.

:meth:`EventReceiptHandler.receive_verified_batch` runs the same checks on
the events of one transaction for one room in a single database
transaction: the common case (an event not yet stored, building on one
known prev event that is the room's only forward extremity, passing every
check) is checked against states and auth events held in memory and
persisted with the others in one batched write; anything else is flushed up
to that point and takes the per-event path above, unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from nacl.signing import VerifyKey

from federation.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth,
    check_auth_events_selection,
)
from federation.auth_rules.selection import create_event_id_for_room
from federation.errors import Codes, MatrixError
from federation.events import Event
from federation.room_versions import RoomVersion, get_room_version
from federation.signing import verify_pdu
from homeserver.handlers.room_state import state_after_events_txn, update_current_state_txn
from storage.database import Database, Transaction
from storage.stores.events import EventStore, NewEvent, StoredEvent
from storage.stores.state import StateMap

__all__ = ["EventReceiptHandler", "MissingEventsError", "Outcome", "ReceiptOutcome"]

CREATE_KEY = ("m.room.create", "")


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    SOFT_FAILED = "soft_failed"


@dataclass(frozen=True)
class ReceiptOutcome:
    event_id: str
    outcome: Outcome
    # Why it was rejected or soft failed (the failed auth rule).
    reason: str | None
    stream_ordering: int
    # False when the event was already stored: nothing was checked or changed.
    newly_persisted: bool


class MissingEventsError(MatrixError):
    """The event refers to events (or states) this tenant does not hold.

    The caller fetches them (``/get_missing_events``, ``/event``,
    ``/state_ids``) and tries again; nothing was stored.
    """

    def __init__(self, event_id: str, missing: Iterable[str], what: str) -> None:
        self.event_id = event_id
        self.missing = sorted(missing)
        super().__init__(
            400, Codes.BAD_STATE,
            f"{what} of {event_id} not known here: {', '.join(self.missing)}",
        )


class EventReceiptHandler:
    """Runs receipt checks 4-6 and persists remote events with their outcome."""

    def __init__(self, db: Database, events: EventStore) -> None:
        self._db = db
        self._events = events

    async def receive_pdu(
        self,
        tenant: str,
        pdu: Mapping[str, Any],
        rv: RoomVersion,
        keys: Mapping[str, Mapping[str, VerifyKey]],
    ) -> ReceiptOutcome:
        """Steps 1-6 for a PDU: ``verify_pdu`` (raises: drop), then the rest.

        ``keys`` are the verify keys valid for the event, from the keyring.
        An event whose content hash fails goes on redacted (step 3).
        """
        verified = verify_pdu(pdu, rv, keys)
        return await self.receive_verified_pdu(tenant, verified.event)

    async def receive_verified_pdu(self, tenant: str, event: Event) -> ReceiptOutcome:
        """Steps 4-6 for an event that passed steps 1-3; see the module docstring."""
        async with self._db.transaction("receive_pdu") as txn:
            return await self.receive_verified_pdu_txn(txn, tenant, event)

    async def receive_verified_pdu_txn(
        self, txn: Transaction, tenant: str, event: Event
    ) -> ReceiptOutcome:
        events = self._events
        await txn.lock(f"event_graph:{tenant}")
        known = await events.get_event(tenant, event.event_id, txn=txn)
        if known is not None and not known.outlier:
            return ReceiptOutcome(
                event.event_id, _outcome_of(known.rejected_reason, known.soft_failed),
                known.rejected_reason, known.stream_ordering, False,
            )
        rv = event.room_version
        room_id = event.room_id
        known_rv = await events.state.get_room_version_id(tenant, room_id, txn=txn)
        if known_rv is None and event.type == "m.room.create" and event.state_key == "":
            await events.state.set_current_state_group_txn(
                txn, tenant, room_id, rv.identifier, None
            )
        elif known_rv is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Unknown room {room_id}")
        elif get_room_version(known_rv) is not rv:
            raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION,
                              f"{room_id} is a version {known_rv} room, not {rv.identifier}")

        rejected = await self._check_own_auth_events(txn, tenant, event)  # step 4

        # Step 5: the state before the event.
        prev_ids = event.prev_event_ids
        if prev_ids:
            state_before = await state_after_events_txn(txn, events, tenant, rv, prev_ids)
            if state_before is None:
                have = await events.get_stored_events(tenant, prev_ids, txn=txn)
                missing = [p for p in prev_ids if p not in have or have[p].outlier]
                raise MissingEventsError(event.event_id, missing, "prev_events (or their state)")
            before: StateMap = state_before.state
        else:
            state_before = None
            before = {}
        if rejected is None:
            rejected = await self._check_against_state(txn, tenant, event, before)

        # Step 6: the current state, unless the event builds on exactly it.
        soft_failed = False
        if rejected is None and event.type != "m.room.create":
            extremities = await events.get_forward_extremities(tenant, room_id, txn=txn)
            # Only prev_events equal to the extremities make the state before
            # the event the current state (Synapse: ``_check_for_soft_fail``);
            # a superset that also names an older event can resolve otherwise.
            if set(extremities) != set(prev_ids):
                current = await events.state.get_current_state(tenant, room_id, txn=txn)
                soft_failed = await self._check_against_state(
                    txn, tenant, event, current
                ) is not None

        persisted = await events.persist_event_txn(
            txn, tenant,
            NewEvent(event, state_before=state_before, rejected_reason=rejected,
                     soft_failed=soft_failed),
        )
        if rejected is None and not soft_failed:
            await update_current_state_txn(txn, events, tenant, room_id, rv)
        reason = rejected
        if soft_failed:
            reason = "fails auth against the current state"
        return ReceiptOutcome(
            event.event_id, _outcome_of(rejected, soft_failed), reason,
            persisted.stream_ordering, persisted.newly_persisted,
        )

    async def receive_verified_batch(
        self, tenant: str, events: Sequence[Event]
    ) -> list[ReceiptOutcome]:
        """Steps 4-6 for events of one room that passed steps 1-3, in order, in
        one database transaction.

        Returns the outcomes of the longest prefix of ``events`` that could be
        decided without fetching anything: at the first event that raises
        (:class:`MissingEventsError`, an unknown room...), what came before it
        is committed and the caller takes that event and the rest one by one
        (:meth:`receive_verified_pdu`, which raises the same error again).
        Each outcome is the one the per-event path gives in the same order.
        """
        if not events:
            return []
        async with self._db.transaction("receive_pdus") as txn:
            return await _Batch(self, txn, tenant, events[0].room_id).run(events)

    async def _check_own_auth_events(
        self, txn: Transaction, tenant: str, event: Event
    ) -> str | None:
        """Step 4; the rejection reason, or ``None`` if the event passes."""
        wanted = own_auth_event_ids(event)
        auth_events = await self._events.get_events(tenant, wanted, txn=txn)
        missing = set(wanted) - set(auth_events)
        if missing:
            raise MissingEventsError(event.event_id, missing, "auth_events")
        return own_auth_failure(event, auth_events)

    async def _check_against_state(
        self, txn: Transaction, tenant: str, event: Event, state: StateMap
    ) -> str | None:
        """``check_auth`` against the auth events ``state`` selects; reason or ``None``."""
        keys = auth_types_for_event(event, event.room_version) | {CREATE_KEY}
        ids = {k: state[k] for k in keys if k in state}
        loaded = await self._events.get_events(tenant, ids.values(), txn=txn)
        try:
            check_auth(event, {k: loaded[e] for k, e in ids.items() if e in loaded})
        except AuthError as e:
            return e.msg
        return None


def own_auth_event_ids(event: Event) -> list[str]:
    """The event's auth events, plus (v12) the create event it reads without listing."""
    ids = list(event.auth_event_ids)
    if event.room_version.room_id_from_create_event and event.type != "m.room.create":
        ids.append(create_event_id_for_room(event.room_id))
    return list(dict.fromkeys(ids))


def own_auth_failure(event: Event, auth_events: Mapping[str, Event]) -> str | None:
    """Receipt check 4 on loaded auth events: the rejection reason, or ``None``.

    Synapse does the same: an event authorised by a rejected event is
    rejected (v12 rule 2 says so of the create event).
    """
    for auth_event in auth_events.values():
        if auth_event.rejected_reason is not None:
            return f"auth event {auth_event.event_id} was rejected"
    try:
        check_auth(event, check_auth_events_selection(event, auth_events))
    except AuthError as e:
        return e.msg
    return None


class _Batch:
    """One :meth:`EventReceiptHandler.receive_verified_batch` call.

    Holds, for one room, what the per-event path would read again for every
    event: the room version, the forward extremities, the state after the
    events at hand, the events loaded so far; and the accepted events not yet
    written (``pending``). Whatever the fast path cannot decide exactly as
    the per-event path would is handed to that path after a flush, and the
    in-memory view is dropped (it is read again from the database).
    """

    def __init__(
        self, handler: EventReceiptHandler, txn: Transaction, tenant: str, room_id: str
    ) -> None:
        self._handler = handler
        self._events = handler._events
        self._txn = txn
        self._tenant = tenant
        self._room_id = room_id
        self._stored: dict[str, StoredEvent] = {}
        self._followed: set[str] = set()
        self._seen: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        self._room_version: str | None = None
        self._extremities: list[str] | None = None
        self._state_after: dict[str, StateMap] = {}
        self._loaded: dict[str, Event] = {}
        self._pending: list[Event] = []

    async def run(self, events: Sequence[Event]) -> list[ReceiptOutcome]:
        txn, tenant, store = self._txn, self._tenant, self._events
        await txn.lock(f"event_graph:{tenant}")
        ids = [e.event_id for e in events]
        self._stored = await store.get_stored_events(tenant, ids, txn=txn)
        # Events some stored, accepted event already builds on: persisting one
        # does not make it a forward extremity (``_update_extremities_txn``).
        self._followed = await store.get_ids_followed_by_accepted(tenant, ids, txn=txn)
        outcomes: list[ReceiptOutcome] = []
        for event in events:
            if await self._fast(event):
                continue
            outcomes.extend(await self._flush())
            try:
                outcomes.append(
                    await self._handler.receive_verified_pdu_txn(txn, tenant, event)
                )
            except MatrixError:
                # Nothing of this event was written (every check that raises
                # comes before the first write): commit the prefix.
                return outcomes
            self._seen.add(event.event_id)
        outcomes.extend(await self._flush())
        return outcomes

    async def _fast(self, event: Event) -> bool:
        """Check and queue ``event`` as the per-event path would accept it;
        False (nothing queued) unless that is certain."""
        txn, tenant, store = self._txn, self._tenant, self._events
        eid = event.event_id
        prev_ids = event.prev_event_ids
        if (
            eid in self._stored or eid in self._seen or eid in self._followed
            or event.room_id != self._room_id or len(prev_ids) != 1
            or (event.type == "m.room.create" and event.state_key == "")
        ):
            return False
        rv = event.room_version
        if self._room_version is None:
            self._room_version = await store.state.get_room_version_id(
                tenant, self._room_id, txn=txn
            )
        if self._room_version is None or get_room_version(self._room_version) is not rv:
            return False
        # Step 6 holds trivially only when the event builds on exactly the
        # room's forward extremities.
        prev = prev_ids[0]
        if self._extremities is None:
            self._extremities = await store.get_forward_extremities(
                tenant, self._room_id, txn=txn
            )
        if set(self._extremities) != {prev}:
            return False
        # Step 4.
        wanted = own_auth_event_ids(event)
        auth_events = await self._load(wanted)
        if len(auth_events) != len(wanted) or own_auth_failure(event, auth_events):
            return False
        # Step 5: the state after the only prev event.
        before = self._state_after.get(prev)
        if before is None:
            groups = await store.get_state_groups_for_event(tenant, prev, txn=txn)
            if groups is None:
                return False
            before = await store.state.get_state_group(tenant, groups[1], txn=txn)
            self._state_after[prev] = before
        keys = auth_types_for_event(event, rv) | {CREATE_KEY}
        by_key = {k: before[k] for k in keys if k in before}
        loaded = await self._load(by_key.values())
        try:
            check_auth(event, {k: loaded[e] for k, e in by_key.items() if e in loaded})
        except AuthError:
            return False
        # Accepted: what persisting it now would do to the in-memory view.
        after = before
        if event.is_state():
            after = dict(before)
            after[event.state_tuple] = eid
        self._state_after[eid] = after
        self._loaded[eid] = event
        self._extremities = [eid]
        self._pending.append(event)
        self._seen.add(eid)
        return True

    async def _load(self, event_ids: Iterable[str]) -> dict[str, Event]:
        ids = list(dict.fromkeys(event_ids))
        missing = [e for e in ids if e not in self._loaded]
        if missing:
            self._loaded.update(
                await self._events.get_events(self._tenant, missing, txn=self._txn)
            )
        return {e: self._loaded[e] for e in ids if e in self._loaded}

    async def _flush(self) -> list[ReceiptOutcome]:
        """Persist the queued events (one batched write), then the room's
        current state, as the per-event path does after each of them."""
        pending = self._pending
        if not pending:
            self._reset()
            return []
        txn, tenant, store = self._txn, self._tenant, self._events
        persisted = await store.persist_events_txn(
            txn, tenant, [NewEvent(e) for e in pending]
        )
        rv = pending[0].room_version
        await update_current_state_txn(txn, store, tenant, self._room_id, rv)
        self._reset()
        return [
            ReceiptOutcome(p.event_id, Outcome.ACCEPTED, None, p.stream_ordering,
                           p.newly_persisted)
            for p in persisted
        ]


def _outcome_of(rejected_reason: str | None, soft_failed: bool) -> Outcome:
    if rejected_reason is not None:
        return Outcome.REJECTED
    return Outcome.SOFT_FAILED if soft_failed else Outcome.ACCEPTED
