"""Creating events for local users, and the events that make a new room.

Spec: ``server-server-api.md`` "PDUs" (prev_events: the events with no child
yet), "Auth events selection", "Signing Events" ("Adding hashes and
signatures to outgoing events"); ``client-server-api/_index.md`` "Creation"
(the events ``createRoom`` sends: create, the creator's join, power levels,
join rules, history visibility); ``rooms/v12.md`` (the create event has no
``room_id``: the room ID is derived from it).

Each event is chosen, checked, signed and persisted in one transaction, under
the tenant's event-graph lock, so two events of one room never pick the same
prev_events from a stale view.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import Any

from signedjson.types import SigningKey

from federation.auth_rules import auth_types_for_event, check_auth
from federation.clock import Clock
from federation.errors import Codes, MatrixError
from federation.events import Event
from federation.hashes import compute_event_id
from federation.room_versions import RoomVersion, get_room_version
from federation.signing import add_hashes_and_signatures
from homeserver.federation_sender.outbox import OutboxWriter
from homeserver.handlers.room_state import state_after_events_txn, update_current_state_txn
from storage.database import Database, Transaction
from storage.stores.events import EventStore, NewEvent
from storage.stores.state import ResolvedState, StateMap

__all__ = ["MAX_PREV_EVENTS", "EventCreationHandler"]

# Synapse's cap (``synapse/handlers/message.py``); the spec asks for "all"
# forward extremities but a room with hundreds would make huge events.
MAX_PREV_EVENTS = 10

CREATE_KEY = ("m.room.create", "")


class EventCreationHandler:
    """Builds, authorises, signs and persists events of local users.

    ``signing_key_for(server_name)`` gives the key a tenant signs with.
    Every event is queued for the other servers in its room by ``outbox``
    in the transaction that persists it (attach it to the node's
    ``FederationSender`` so the queues wake at once).
    """

    def __init__(
        self,
        db: Database,
        events: EventStore,
        clock: Clock,
        signing_key_for: Callable[[str], SigningKey],
        outbox: OutboxWriter | None = None,
    ) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self._signing_key_for = signing_key_for
        self.outbox = outbox or OutboxWriter(db, events, clock)

    async def create_event(
        self,
        tenant: str,
        room_id: str,
        *,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Event:
        """Create, persist and return an event in an existing room."""
        async with self._db.transaction("create_event") as txn:
            return await self.create_event_txn(
                txn, tenant, room_id, event_type=event_type, sender=sender, content=content,
                state_key=state_key, extra=extra,
            )

    async def create_event_txn(
        self,
        txn: Transaction,
        tenant: str,
        room_id: str,
        *,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        state_key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Event:
        """As :meth:`create_event`, inside the caller's transaction.

        ``extra`` adds top-level PDU keys (v10's top-level ``redacts``).
        Raises ``M_FORBIDDEN`` (an :class:`~federation.auth_rules.AuthError`)
        if the auth rules refuse the event against the room's current state,
        and ``M_NOT_FOUND`` for a room the tenant does not know.
        """
        if not sender.endswith(":" + tenant):
            raise MatrixError(400, Codes.INVALID_PARAM,
                              f"{sender} is not a user of {tenant}")
        await txn.lock(f"event_graph:{tenant}")
        events = self._events
        rv_id = await events.state.get_room_version_id(tenant, room_id, txn=txn)
        if rv_id is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Unknown room {room_id}")
        rv = get_room_version(rv_id)

        extremities = await events.get_forward_extremities(tenant, room_id, txn=txn)
        prev_ids = extremities[:MAX_PREV_EVENTS]
        current_group = await events.state.get_current_state_group(tenant, room_id, txn=txn)
        state_before: ResolvedState | None
        if len(prev_ids) == len(extremities) and current_group is not None:
            # The current state is the resolution across all the extremities.
            current = await events.state.get_state_group(tenant, current_group, txn=txn)
            state_before = ResolvedState(current, group=current_group)
        else:
            state_before = await state_after_events_txn(txn, events, tenant, rv, prev_ids)
        if state_before is None:
            raise MatrixError(500, Codes.UNKNOWN, f"state of {room_id} is not known")
        prevs = await events.get_stored_events(tenant, prev_ids, txn=txn)
        depth = max((p.event.depth for p in prevs.values()), default=0) + 1

        pdu: dict[str, Any] = {
            "type": event_type,
            "room_id": room_id,
            "sender": sender,
            "content": dict(content),
            "prev_events": prev_ids,
            "depth": min(depth, 2**63 - 1),
            "origin_server_ts": self._clock.time_ms(),
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if extra:
            pdu.update(extra)
        auth = await self._select_auth_events(txn, tenant, rv, pdu, state_before.state)
        pdu["auth_events"] = sorted(e.event_id for k, e in auth.items()
                                    if k != CREATE_KEY or not rv.room_id_from_create_event)
        event = self._sign(tenant, rv, pdu)
        check_auth(event, auth)
        await events.persist_event_txn(txn, tenant, NewEvent(event, state_before=state_before))
        await update_current_state_txn(txn, events, tenant, room_id, rv)
        await self.outbox.write_event_txn(txn, tenant, event)
        return event

    async def create_room(
        self,
        tenant: str,
        creator: str,
        room_version: RoomVersion,
        *,
        join_rule: str = "public",
        history_visibility: str = "shared",
        extra_power_users: Mapping[str, int] | None = None,
    ) -> str:
        """Create a room: create event, the creator's join, power levels, join
        rules and history visibility, in one transaction. Returns the room ID."""
        async with self._db.transaction("create_room") as txn:
            room_id = await self.create_room_start_txn(txn, tenant, creator, room_version)
            await self.create_event_txn(
                txn, tenant, room_id, event_type="m.room.member", sender=creator,
                state_key=creator, content={"membership": "join"},
            )
            await self.create_event_txn(
                txn, tenant, room_id, event_type="m.room.power_levels", sender=creator,
                state_key="",
                content=default_power_levels(creator, room_version, extra_power_users),
            )
            await self.create_event_txn(
                txn, tenant, room_id, event_type="m.room.join_rules", sender=creator,
                state_key="", content={"join_rule": join_rule},
            )
            await self.create_event_txn(
                txn, tenant, room_id, event_type="m.room.history_visibility", sender=creator,
                state_key="", content={"history_visibility": history_visibility},
            )
        return room_id

    async def create_room_start_txn(
        self, txn: Transaction, tenant: str, creator: str, rv: RoomVersion,
        *, extra_content: Mapping[str, Any] | None = None,
    ) -> str:
        """Persist the ``m.room.create`` event of a new room; returns its room ID.

        v10/v11: a fresh ``!opaque:tenant`` ID, and (v10) ``creator`` in the
        content. v12: no ``room_id`` in the event; the ID is ``!`` + its
        reference hash (``rooms/v12.md``, "Room IDs").
        """
        if not creator.endswith(":" + tenant):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{creator} is not a user of {tenant}")
        await txn.lock(f"event_graph:{tenant}")
        # createRoom's creation_content; the server's own keys win over it.
        content: dict[str, Any] = dict(extra_content or {})
        content["room_version"] = rv.identifier
        if not rv.implicit_room_creator:
            content["creator"] = creator
        pdu: dict[str, Any] = {
            "type": "m.room.create",
            "sender": creator,
            "state_key": "",
            "content": content,
            "prev_events": [],
            "auth_events": [],
            "depth": 1,
            "origin_server_ts": self._clock.time_ms(),
        }
        if not rv.room_id_from_create_event:
            pdu["room_id"] = f"!{secrets.token_urlsafe(18)}:{tenant}"
        event = self._sign(tenant, rv, pdu)
        # v12 derives the room ID from the create event: the same creator and
        # content in the same millisecond would name an existing room. Move
        # the timestamp on until the ID is new.
        while rv.room_id_from_create_event and await self._events.state.get_room_version_id(
            tenant, event.room_id, txn=txn
        ) is not None:
            pdu["origin_server_ts"] += 1
            event = self._sign(tenant, rv, pdu)
        check_auth(event, {})
        room_id = event.room_id
        await self._events.state.set_current_state_group_txn(
            txn, tenant, room_id, rv.identifier, None
        )
        await self._events.persist_event_txn(txn, tenant, NewEvent(event))
        await update_current_state_txn(txn, self._events, tenant, room_id, rv)
        return room_id

    def _sign(self, tenant: str, rv: RoomVersion, pdu: dict[str, Any]) -> Event:
        signed = add_hashes_and_signatures(pdu, rv, tenant, self._signing_key_for(tenant))
        return Event(signed, compute_event_id(signed, rv), rv)

    async def _select_auth_events(
        self,
        txn: Transaction,
        tenant: str,
        rv: RoomVersion,
        pdu: Mapping[str, Any],
        state: StateMap,
    ) -> dict[tuple[str, str], Event]:
        """The auth events for ``pdu`` from ``state`` (spec: "Auth events
        selection"), keyed for ``check_auth``; always holding the create event,
        which v12 reads without listing it."""
        keys = auth_types_for_event(pdu, rv) | {CREATE_KEY}
        ids = {k: state[k] for k in keys if k in state}
        loaded = await self._events.get_events(tenant, ids.values(), txn=txn)
        return {k: loaded[eid] for k, eid in ids.items() if eid in loaded}


def default_power_levels(
    creator: str, rv: RoomVersion, extra_users: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Power levels like Synapse's ``public_chat`` preset.

    v12 leaves the creator out of ``users``: creators have infinite power
    (``rooms/v12.md``, MSC4289) and listing them is refused.
    """
    users: dict[str, int] = {} if rv.privileged_room_creators else {creator: 100}
    users.update(extra_users or {})
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 150 if rv.privileged_room_creators else 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "notifications": {"room": 50},
    }
