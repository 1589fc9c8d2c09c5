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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
from storage.stores.events import EventStore, NewEvent
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

        # Step 6: the current state, unless the event builds on all of it.
        soft_failed = False
        if rejected is None and event.type != "m.room.create":
            extremities = await events.get_forward_extremities(tenant, room_id, txn=txn)
            if set(extremities) - set(prev_ids):
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

    async def _check_own_auth_events(
        self, txn: Transaction, tenant: str, event: Event
    ) -> str | None:
        """Step 4; the rejection reason, or ``None`` if the event passes."""
        wanted = list(event.auth_event_ids)
        if event.room_version.room_id_from_create_event and event.type != "m.room.create":
            wanted.append(create_event_id_for_room(event.room_id))
        auth_events = await self._events.get_events(tenant, wanted, txn=txn)
        missing = set(wanted) - set(auth_events)
        if missing:
            raise MissingEventsError(event.event_id, missing, "auth_events")
        for auth_event in auth_events.values():
            # Synapse does the same: an event authorised by a rejected event
            # is rejected (v12 rule 2 says so of the create event).
            if auth_event.rejected_reason is not None:
                return f"auth event {auth_event.event_id} was rejected"
        try:
            keyed = check_auth_events_selection(event, auth_events)
            check_auth(event, keyed)
        except AuthError as e:
            return e.msg
        return None

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


def _outcome_of(rejected_reason: str | None, soft_failed: bool) -> Outcome:
    if rejected_reason is not None:
        return Outcome.REJECTED
    return Outcome.SOFT_FAILED if soft_failed else Outcome.ACCEPTED
