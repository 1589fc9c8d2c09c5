"""Answering other servers: events, state, backfill, joins, leaves, invites, queries.

Spec: ``server-server-api.md`` "Retrieving events" (``/event``, ``/state``,
``/state_ids``), "Retrieving event authorisation information"
(``/event_auth``), "Backfilling and retrieving missing events"
(``/backfill``, ``/get_missing_events``), "Joining Rooms" (``make_join``,
``send_join`` v2), "Leaving Rooms" (``make_leave``, ``send_leave`` v2),
"Inviting to a room" (``invite`` v2), "Querying for information"
(``query/directory``, ``query/profile``), "Published Room Directory"
(``publicRooms``).

Every method takes the tenant the request was addressed to and the
authenticated origin. Requests about a room are answered only to servers
that may see it (:class:`~homeserver.handlers.visibility.ServerVisibility`);
events a server may not see at their point in history are served redacted.
Bad input is refused with a Matrix error before anything is stored.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import signedjson.sign
from signedjson.types import SigningKey

from federation.auth_rules import AuthError, auth_types_for_event, check_auth
from federation.auth_rules.selection import create_event_id_for_room
from federation.clock import Clock
from federation.errors import Codes, MatrixError
from federation.event_format import is_valid_user_id, server_name_of
from federation.events import Event
from federation.hashes import compute_room_id
from federation.keyring import Keyring
from federation.redaction import redact
from federation.room_versions import RoomVersion, get_room_version
from homeserver.discovery.directory import DirectoryRequest, PublishedDirectory
from homeserver.handlers.event_creation import MAX_PREV_EVENTS
from homeserver.handlers.event_receipt import (
    EventReceiptHandler,
    Outcome,
    own_auth_event_ids,
    own_auth_failure,
)
from homeserver.handlers.profile import default_displayname
from homeserver.handlers.room_acl import RoomServerAcls
from homeserver.handlers.server_visibility import ServerVisibility
from homeserver.http.json import EncodedJsonList
from storage.database import Database, Transaction
from storage.stores.events import EventStore, NewEvent
from storage.stores.federation_inbound import FederationInboundStore
from storage.stores.users import UserStore

__all__ = ["FederationServer", "sign_event_as"]

logger = logging.getLogger(__name__)

CREATE_KEY = ("m.room.create", "")
MAX_BACKFILL = 100
MAX_MISSING_EVENTS = 50
#: Most event IDs a backfill (``v``) or get_missing_events (``earliest_events``,
#: ``latest_events``) request may name; real peers send their few extremities.
MAX_REQUEST_EVENT_IDS = 100
#: Most events one backfill/get_missing_events walk may load: rejected events
#: are walked through without counting towards ``limit``, so ``limit`` alone
#: does not bound the work a request can cause.
MAX_WALK_VISITS = 1000

#: Called with ``(tenant, event)`` after an event this server accepted on
#: another server's behalf (``send_join``/``send_leave``) was committed.
EventHook = Callable[[str, Event], Awaitable[None]]
#: Called with ``(txn, tenant, event)`` inside the transaction that persists
#: such an event: the spec says the resident server sends it to the other
#: servers in the room, and the outbox rows for that commit with the event or
#: not at all.
TxnEventHook = Callable[[Transaction, str, Event], Awaitable[None]]


class AliasLookup(Protocol):
    async def get_alias(self, tenant: str, room_alias: str) -> Any: ...


class ProfileLookup(Protocol):
    async def get_profile(self, tenant: str, user_id: str) -> Any: ...


class PublishedRooms(Protocol):
    async def public_room_ids(self, tenant: str) -> list[str]: ...


def sign_event_as(
    pdu: Mapping[str, Any], rv: RoomVersion, server_name: str, key: SigningKey
) -> dict[str, Any]:
    """``pdu`` with ``server_name``'s signature added over its redacted form
    (server-server-api.md "Signing Events"); hashes and other signatures kept,
    so the event ID does not change."""
    redacted = redact(pdu, rv)
    redacted.pop("signatures", None)
    signed = signedjson.sign.sign_json(redacted, server_name, key)
    out = dict(pdu)
    sigs = {n: dict(s) for n, s in (pdu.get("signatures") or {}).items()}
    sigs.setdefault(server_name, {}).update(signed["signatures"][server_name])
    out["signatures"] = sigs
    return out


def _invalid(msg: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, msg)


def _stripped(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A stripped state event (client-server-api "Stripped state")."""
    return {k: entry[k] for k in ("type", "state_key", "content", "sender") if k in entry}


class FederationServer:
    def __init__(
        self,
        *,
        db: Database,
        events: EventStore,
        receipt: EventReceiptHandler,
        visibility: ServerVisibility,
        keyring: Keyring,
        store: FederationInboundStore,
        clock: Clock,
        signing_key_for: Callable[[str], SigningKey],
        aliases: AliasLookup | None = None,
        profiles: ProfileLookup | None = None,
        published: PublishedRooms | None = None,
        acls: RoomServerAcls | None = None,
    ) -> None:
        self._db = db
        self._events = events
        self._receipt = receipt
        self._visibility = visibility
        self._keyring = keyring
        self._store = store
        self._clock = clock
        self._signing_key_for = signing_key_for
        self._aliases = aliases
        self._profiles = profiles
        self._published = published
        #: The rooms' m.room.server_acl, applied to every room-scoped request.
        self._acls = acls if acls is not None else RoomServerAcls(events)
        #: Run in the transaction that persists an event send_join/send_leave
        #: accepted (the outbox); an exception rolls the event back.
        self.on_event_accepted_txn: list[TxnEventHook] = []
        #: Run after that transaction committed (client /sync wake-ups).
        self.on_event_accepted: list[EventHook] = []
        #: Run after an invite for a local user was recorded (client /sync).
        self.on_invite: list[EventHook] = []

    def _transaction(self, tenant: str, pdus: Sequence[Event]) -> dict[str, Any]:
        """The Transaction shape ``/event`` and ``/backfill`` answer with."""
        return {
            "origin": tenant,
            "origin_server_ts": self._clock.time_ms(),
            "pdus": [dict(e.pdu) for e in pdus],
        }

    async def _room_version(self, tenant: str, room_id: str) -> RoomVersion:
        rv_id = await self._events.state.get_room_version_id(tenant, room_id)
        if rv_id is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Unknown room {room_id}")
        return get_room_version(rv_id)

    # -- events and state ----------------------------------------------------------------

    async def get_event(self, tenant: str, origin: str, event_id: str) -> dict[str, Any]:
        """``GET /event/{eventId}``: the event, redacted if ``origin`` may not see it."""
        stored = await self._events.get_event(tenant, event_id)
        if stored is None or stored.rejected_reason is not None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Event {event_id} not found")
        await self._acls.check(tenant, stored.event.room_id, origin)
        await self._visibility.check_room(tenant, stored.event.room_id, origin)
        shown = await self._visibility.filter_events(tenant, [stored.event], origin)
        return self._transaction(tenant, shown)

    async def _state_at(
        self, tenant: str, origin: str, room_id: str, event_id: str | None
    ) -> tuple[list[str], list[str]]:
        """State before ``event_id`` and its auth chain, as event IDs."""
        await self._acls.check(tenant, room_id, origin)
        await self._visibility.check_room(tenant, room_id, origin)
        if not event_id:
            raise MatrixError(400, Codes.MISSING_PARAM, "event_id is required")
        stored = await self._events.get_event(tenant, event_id)
        if stored is None or stored.event.room_id != room_id:
            raise MatrixError(404, Codes.NOT_FOUND, f"Event {event_id} not found in {room_id}")
        before = await self._events.get_state_before(tenant, event_id)
        if before is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"State at {event_id} is not known here")
        state_ids = sorted(before.values())
        return state_ids, await self._auth_chain(tenant, room_id, state_ids)

    async def _auth_chain(
        self, tenant: str, room_id: str, event_ids: Sequence[str]
    ) -> list[str]:
        """The auth chain of ``event_ids``. From v12 on, events do not list the
        create event but are authorised by it, so it is part of every chain
        (as Synapse serves it: the corpus's v12 ``state.json``)."""
        chain = await self._events.get_auth_chain_ids(tenant, event_ids)
        rv = await self._room_version(tenant, room_id)
        if rv.room_id_from_create_event:
            create_id = create_event_id_for_room(room_id)
            if any(e != create_id for e in [*event_ids, *chain]):
                chain.add(create_id)
        return sorted(chain)

    async def _load(self, tenant: str, ids: Sequence[str]) -> list[Event]:
        loaded = await self._events.get_events(tenant, ids)
        return [loaded[i] for i in ids if i in loaded]

    async def get_state(
        self, tenant: str, origin: str, room_id: str, event_id: str | None
    ) -> dict[str, Any]:
        """``GET /state/{roomId}?event_id=``: the state before the event, and its auth chain."""
        state_ids, chain_ids = await self._state_at(tenant, origin, room_id, event_id)
        return {
            "pdus": [dict(e.pdu) for e in await self._load(tenant, state_ids)],
            "auth_chain": [dict(e.pdu) for e in await self._load(tenant, chain_ids)],
        }

    async def get_state_ids(
        self, tenant: str, origin: str, room_id: str, event_id: str | None
    ) -> dict[str, Any]:
        """``GET /state_ids/{roomId}?event_id=``."""
        state_ids, chain_ids = await self._state_at(tenant, origin, room_id, event_id)
        return {"pdu_ids": state_ids, "auth_chain_ids": chain_ids}

    async def get_event_auth(
        self, tenant: str, origin: str, room_id: str, event_id: str
    ) -> dict[str, Any]:
        """``GET /event_auth/{roomId}/{eventId}``: the event's full auth chain."""
        await self._acls.check(tenant, room_id, origin)
        await self._visibility.check_room(tenant, room_id, origin)
        stored = await self._events.get_event(tenant, event_id)
        if stored is None or stored.event.room_id != room_id:
            raise MatrixError(404, Codes.NOT_FOUND, f"Event {event_id} not found in {room_id}")
        chain = await self._auth_chain(tenant, room_id, [event_id])
        return {"auth_chain": [dict(e.pdu) for e in await self._load(tenant, chain)]}

    async def _walk_back(
        self,
        tenant: str,
        room_id: str,
        start: Sequence[str],
        *,
        limit: int,
        include_start: bool,
        stop: set[str] | frozenset[str] = frozenset(),
        min_depth: int = 0,
    ) -> list[Event]:
        """Events reached from ``start`` through prev_events, deepest first,
        at most ``limit``; rejected events are walked through, never returned."""
        seen: set[str] = set(stop)
        heap: list[tuple[int, str]] = []
        out: list[Event] = []

        async def push(ids: Sequence[str]) -> None:
            fresh = [i for i in ids if i not in seen]
            seen.update(fresh)
            loaded = await self._events.get_stored_events(tenant, fresh)
            for eid, s in loaded.items():
                if s.event.room_id == room_id and s.event.depth >= min_depth:
                    heapq.heappush(heap, (-s.event.depth, eid))

        if include_start:
            await push(start)
        else:
            starts = await self._events.get_events(tenant, start)
            seen.update(start)
            await push([p for e in starts.values() if e.room_id == room_id
                        for p in e.prev_event_ids])
        visits = 0
        while heap and len(out) < limit and visits < MAX_WALK_VISITS:
            visits += 1
            _, eid = heapq.heappop(heap)
            stored = await self._events.get_event(tenant, eid)
            if stored is None:
                continue
            if stored.rejected_reason is None:
                out.append(stored.event)
            await push(stored.event.prev_event_ids)
        return out

    async def backfill(
        self, tenant: str, origin: str, room_id: str, v: Sequence[str], limit: int
    ) -> dict[str, Any]:
        """``GET /backfill/{roomId}?v=&limit=``: events before and including ``v``."""
        await self._acls.check(tenant, room_id, origin)
        await self._visibility.check_room(tenant, room_id, origin)
        if not v:
            raise MatrixError(400, Codes.MISSING_PARAM, "at least one v is required")
        if len(v) > MAX_REQUEST_EVENT_IDS:
            raise MatrixError(
                400, Codes.INVALID_PARAM, f"at most {MAX_REQUEST_EVENT_IDS} v are allowed"
            )
        if limit < 1:
            raise MatrixError(400, Codes.INVALID_PARAM, "limit must be positive")
        found = await self._walk_back(
            tenant, room_id, v, limit=min(limit, MAX_BACKFILL), include_start=True
        )
        shown = await self._visibility.filter_events(tenant, found, origin)
        return self._transaction(tenant, shown)

    async def get_missing_events(
        self, tenant: str, origin: str, room_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``POST /get_missing_events/{roomId}``: the prev_events of
        ``latest_events``, back to ``earliest_events``, oldest first."""
        await self._acls.check(tenant, room_id, origin)
        await self._visibility.check_room(tenant, room_id, origin)
        earliest, latest = body.get("earliest_events"), body.get("latest_events")
        limit, min_depth = body.get("limit", 10), body.get("min_depth", 0)
        for name, value in (("earliest_events", earliest), ("latest_events", latest)):
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise MatrixError(400, Codes.BAD_JSON, f"{name} must be an array of event IDs")
            if len(value) > MAX_REQUEST_EVENT_IDS:
                raise MatrixError(
                    400, Codes.INVALID_PARAM,
                    f"{name} may name at most {MAX_REQUEST_EVENT_IDS} events",
                )
        for name, value in (("limit", limit), ("min_depth", min_depth)):
            if type(value) is not int:
                raise MatrixError(400, Codes.BAD_JSON, f"{name} must be an integer")
        assert isinstance(earliest, list) and isinstance(latest, list)
        assert isinstance(limit, int) and isinstance(min_depth, int)
        found = await self._walk_back(
            tenant, room_id, latest, limit=max(0, min(limit, MAX_MISSING_EVENTS)),
            include_start=False, stop=set(earliest), min_depth=min_depth,
        )
        found.reverse()
        shown = await self._visibility.filter_events(tenant, found, origin)
        return {"events": [dict(e.pdu) for e in shown]}

    # -- make_join / make_leave -----------------------------------------------------------

    async def make_membership(
        self,
        tenant: str,
        origin: str,
        room_id: str,
        user_id: str,
        membership: str,
        versions: Sequence[str] | None,
    ) -> dict[str, Any]:
        """``GET /make_join`` (``versions``: the ``ver`` parameters) and ``GET /make_leave``
        (``versions=None``): the event template and the room version."""
        if not is_valid_user_id(user_id) or server_name_of(user_id) != origin:
            raise MatrixError(403, Codes.FORBIDDEN, f"{user_id} is not a user of {origin}")
        rv = await self._room_version(tenant, room_id)
        await self._acls.check(tenant, room_id, origin)
        if versions is not None and rv.identifier not in versions:
            raise MatrixError(
                400, Codes.INCOMPATIBLE_ROOM_VERSION,
                f"Room {room_id} is version {rv.identifier}, which your server does not "
                f"support (offered: {', '.join(versions) or 'none'})",
                extra={"room_version": rv.identifier},
            )
        if not await self._visibility.server_in_room(tenant, room_id, tenant):
            raise MatrixError(404, Codes.NOT_FOUND, f"{tenant} is not in room {room_id}")
        extremities = (await self._events.get_forward_extremities(tenant, room_id))
        prev_ids = extremities[:MAX_PREV_EVENTS]
        prevs = await self._events.get_events(tenant, prev_ids)
        depth = max((p.depth for p in prevs.values()), default=0) + 1
        # Synapse's templates carry no `origin` (absent from the v10-v12
        # formats' required fields); the joining server fills the rest.
        template: dict[str, Any] = {
            "type": "m.room.member",
            "room_id": room_id,
            "sender": user_id,
            "state_key": user_id,
            "content": {"membership": membership},
            "prev_events": prev_ids,
            "depth": min(depth, 2**63 - 1),
            "origin_server_ts": self._clock.time_ms(),
        }
        auth = await self._auth_from_current_state(tenant, room_id, rv, template)
        try:
            check_auth(Event(template, "$template", rv), auth)
        except AuthError as e:
            raise MatrixError(
                403, Codes.FORBIDDEN,
                f"{user_id} may not have membership {membership} in {room_id}: {e.msg}",
            ) from None
        template["auth_events"] = sorted(
            e.event_id for k, e in auth.items()
            if k != CREATE_KEY or not rv.room_id_from_create_event
        )
        return {"event": template, "room_version": rv.identifier}

    async def _auth_from_current_state(
        self, tenant: str, room_id: str, rv: RoomVersion, pdu: Mapping[str, Any]
    ) -> dict[tuple[str, str], Event]:
        current = await self._events.state.get_current_state(tenant, room_id)
        keys = auth_types_for_event(pdu, rv) | {CREATE_KEY}
        ids = {k: current[k] for k in keys if k in current}
        loaded = await self._events.get_events(tenant, ids.values())
        return {k: loaded[e] for k, e in ids.items() if e in loaded}

    # -- send_join / send_leave -----------------------------------------------------------

    async def _accept_membership(
        self, tenant: str, origin: str, room_id: str, event_id: str, pdu: Any,
        membership: str,
    ) -> tuple[Event, bool]:
        """Check, countersign and persist a join/leave sent by its user's server.

        Returns the event as stored and whether it was new.
        """
        if not isinstance(pdu, dict):
            raise MatrixError(400, Codes.BAD_JSON, "the body must be the event")
        rv = await self._room_version(tenant, room_id)
        # Before the signature checks: a denied server gets no key fetches.
        await self._acls.check(tenant, room_id, origin)
        try:
            verified = await self._keyring.verify_pdu(pdu, rv)
        except MatrixError as e:
            raise _invalid(f"the event fails the checks on receipt: {e.msg}") from None
        event = verified.event
        if verified.redacted:
            raise _invalid("the event's content hash does not match its content")
        if event.event_id != event_id:
            raise _invalid(f"the event's ID is {event.event_id}, not {event_id}")
        if event.room_id != room_id:
            raise _invalid(f"the event is in {event.room_id}, not {room_id}")
        if event.type != "m.room.member":
            raise _invalid("the event is not an m.room.member event")
        if event.membership != membership:
            raise _invalid(f"the event's membership is not {membership}")
        if server_name_of(event.sender) != origin:
            raise _invalid(f"the sender {event.sender} is not a user of {origin}")
        if event.state_key != event.sender:
            raise _invalid("the state_key is not the sender")
        if not await self._visibility.server_in_room(tenant, room_id, tenant):
            raise MatrixError(404, Codes.NOT_FOUND, f"{tenant} is not in room {room_id}")

        known = await self._events.get_event(tenant, event_id)
        if known is not None and not known.outlier:
            if known.rejected_reason is not None or known.soft_failed:
                raise MatrixError(403, Codes.FORBIDDEN, f"{event_id} was not accepted")
            return known.event, False
        # Nothing is stored for an event the room's current state refuses
        # (spec: a failed join is 403 M_FORBIDDEN to the joining server).
        auth = await self._auth_from_current_state(tenant, room_id, rv, event.pdu)
        try:
            check_auth(event, auth)
        except AuthError as e:
            raise MatrixError(403, Codes.FORBIDDEN, e.msg) from None
        # Receipt check 4 (the event's own auth events) too, before anything is
        # stored: otherwise an event failing it would be kept as rejected, and a
        # corrected retry of the same join refused (Synapse checks both first).
        own_ids = own_auth_event_ids(event)
        own = await self._events.get_events(tenant, own_ids)
        if len(own) != len(own_ids):
            raise MatrixError(403, Codes.FORBIDDEN, f"{event_id} names auth events not known here")
        refused = own_auth_failure(event, own)
        if refused is not None:
            raise MatrixError(403, Codes.FORBIDDEN, refused)
        signed = Event(
            sign_event_as(event.pdu, rv, tenant, self._signing_key_for(tenant)),
            event.event_id, rv,
        )
        async with self._db.transaction(f"accept_{membership}") as txn:
            outcome = await self._receipt.receive_verified_pdu_txn(txn, tenant, signed)
            new = outcome.outcome is Outcome.ACCEPTED and outcome.newly_persisted
            if new:
                for txn_hook in self.on_event_accepted_txn:
                    await txn_hook(txn, tenant, signed)
        if outcome.outcome is not Outcome.ACCEPTED:
            raise MatrixError(403, Codes.FORBIDDEN, f"{event_id} {outcome.outcome}: "
                              f"{outcome.reason}")
        if not new:
            # Persisted meanwhile by a concurrent request for the same event,
            # which ran the hooks.
            return signed, False
        logger.info("Accepted %s of %s into %s for %s", membership, event.sender, room_id, origin)
        for hook in self.on_event_accepted:
            try:
                await hook(tenant, signed)
            except Exception:
                logger.exception("event hook failed for %s", event_id)
        return signed, True

    async def send_join(
        self, tenant: str, origin: str, room_id: str, event_id: str, pdu: Any
    ) -> dict[str, Any]:
        """``PUT /v2/send_join/{roomId}/{eventId}``: the room state before the join.

        ``omit_members`` is not implemented: the full state is returned and
        ``members_omitted`` says so (the spec allows that).
        """
        servers_before = await self._visibility.joined_servers(tenant, room_id)
        event, _ = await self._accept_membership(tenant, origin, room_id, event_id, pdu, "join")
        before = await self._events.get_state_before(tenant, event.event_id)
        state_ids = sorted((before or {}).values())
        chain = await self._auth_chain(tenant, room_id, [*state_ids, event.event_id])
        # The events go out as stored (a large room's state is megabytes of
        # JSON: parsing it only to encode it again was most of the work).
        texts = await self._events.get_event_json(tenant, [*state_ids, *chain])
        return {
            "origin": tenant,
            "state": EncodedJsonList(texts[i] for i in state_ids if i in texts),
            "auth_chain": EncodedJsonList(texts[i] for i in chain if i in texts),
            "event": dict(event.pdu),
            "members_omitted": False,
            "servers_in_room": servers_before,
        }

    async def send_leave(
        self, tenant: str, origin: str, room_id: str, event_id: str, pdu: Any
    ) -> dict[str, Any]:
        """``PUT /v2/send_leave/{roomId}/{eventId}``."""
        await self._accept_membership(tenant, origin, room_id, event_id, pdu, "leave")
        return {}

    # -- invites ------------------------------------------------------------------------------

    async def on_invite_request(
        self, tenant: str, origin: str, room_id: str, event_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``PUT /v2/invite/{roomId}/{eventId}``: countersign an invite of a local user.

        The invite is recorded (with its stripped room state) for the
        invitee's ``/sync``, and stored as an outlier event of the room.
        """
        version = body.get("room_version")
        pdu = body.get("event")
        if not isinstance(version, str):
            raise MatrixError(400, Codes.MISSING_PARAM, "room_version is required")
        if not isinstance(pdu, dict):
            raise MatrixError(400, Codes.MISSING_PARAM, "event is required")
        try:
            rv = get_room_version(version)
        except MatrixError:
            raise MatrixError(
                400, Codes.INCOMPATIBLE_ROOM_VERSION,
                f"This server does not support room version {version}",
                extra={"room_version": version},
            ) from None
        # A room we are in has its ACL here; of one we are not in we know none.
        await self._acls.check(tenant, room_id, origin)
        state = body.get("invite_room_state", [])
        if not isinstance(state, list) or not all(isinstance(s, dict) for s in state):
            raise _invalid("invite_room_state must be an array of events")
        try:
            verified = await self._keyring.verify_pdu(pdu, rv)
        except MatrixError as e:
            raise _invalid(f"the invite fails the checks on receipt: {e.msg}") from None
        event = verified.event
        if verified.redacted:
            raise _invalid("the invite's content hash does not match its content")
        if event.event_id != event_id:
            raise _invalid(f"the event's ID is {event.event_id}, not {event_id}")
        if event.room_id != room_id:
            raise _invalid(f"the event is in {event.room_id}, not {room_id}")
        if event.type != "m.room.member" or event.membership != "invite":
            raise _invalid("the event is not an invite")
        if server_name_of(event.sender) != origin:
            raise _invalid(f"the sender {event.sender} is not a user of {origin}")
        invitee = event.state_key or ""
        if not is_valid_user_id(invitee) or server_name_of(invitee) != tenant:
            raise _invalid(f"the invitee {invitee} is not a user of {tenant}")
        self._check_invite_room_state(rv, room_id, state)

        signed = sign_event_as(event.pdu, rv, tenant, self._signing_key_for(tenant))
        stored_event = Event(signed, event.event_id, rv)
        async with self._db.transaction("receive_invite") as txn:
            await self._store.store_invite_txn(
                txn, tenant, event_id=event_id, room_id=room_id, invitee=invitee,
                sender=event.sender, room_version=rv.identifier, event=signed,
                invite_room_state=[_stripped(s) for s in state],
                now_ms=self._clock.time_ms(),
            )
            # As Synapse: the invite joins the graph as an outlier (its state
            # is not known here); received again over /send, it gets its state.
            await self._events.persist_events_txn(
                txn, tenant, [NewEvent(stored_event, outlier=True)]
            )
        logger.info("Invite of %s to %s from %s recorded", invitee, room_id, event.sender)
        for hook in self.on_invite:
            try:
                await hook(tenant, stored_event)
            except Exception:
                logger.exception("invite hook failed for %s", event_id)
        return {"event": signed}

    @staticmethod
    def _check_invite_room_state(
        rv: RoomVersion, room_id: str, state: Sequence[Mapping[str, Any]]
    ) -> None:
        """The ``invite_room_state`` rules of ``invites-v2.yaml``, which the spec
        says SHOULD be applied from v12 on (and MAY before): the create event
        is present and every entry is of this room."""
        if not rv.room_id_from_create_event:
            return
        if not any(s.get("type") == "m.room.create" and s.get("state_key") == "" for s in state):
            raise _invalid("invite_room_state lacks the m.room.create event")
        for s in state:
            if "signatures" not in s:
                raise _invalid("invite_room_state entries must be full events in this version")
            own = s.get("room_id")
            if s.get("type") == "m.room.create" and own is None:
                own = compute_room_id(s, rv)
            if own != room_id:
                raise _invalid(f"an invite_room_state entry is in {own}, not {room_id}")

    # -- queries ------------------------------------------------------------------------------

    async def query_directory(
        self, tenant: str, room_alias: str | None, origin: str | None = None
    ) -> dict[str, Any]:
        """``GET /query/directory?room_alias=``; refused (403) to an ``origin``
        the room's server ACL denies, which could not join it anyway."""
        if not room_alias:
            raise MatrixError(400, Codes.MISSING_PARAM, "room_alias is required")
        if not room_alias.startswith("#") or ":" not in room_alias:
            raise MatrixError(400, Codes.INVALID_PARAM, f"{room_alias!r} is not a room alias")
        if room_alias.split(":", 1)[1] != tenant or self._aliases is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room alias not found")
        entry = await self._aliases.get_alias(tenant, room_alias)
        if entry is None:
            raise MatrixError(404, Codes.NOT_FOUND, "Room alias not found")
        room_id = str(entry.room_id)
        if origin is not None:
            await self._acls.check(tenant, room_id, origin)
        servers = await self._visibility.joined_servers(tenant, room_id)
        # Ourselves first: we answered, so we are the likeliest to be resident.
        ordered = [tenant] + [s for s in servers if s != tenant]
        return {"room_id": room_id, "servers": ordered}

    async def query_profile(
        self, tenant: str, user_id: str | None, field: str | None
    ) -> dict[str, Any]:
        """``GET /query/profile?user_id=&field=``."""
        if not user_id:
            raise MatrixError(400, Codes.MISSING_PARAM, "user_id is required")
        if field is not None and field not in ("displayname", "avatar_url"):
            raise MatrixError(400, Codes.INVALID_PARAM, f"unknown profile field {field!r}")
        if not is_valid_user_id(user_id) or server_name_of(user_id) != tenant:
            raise MatrixError(400, Codes.INVALID_PARAM, f"{user_id} is not a user of {tenant}")
        profile = None if self._profiles is None else await self._profiles.get_profile(
            tenant, user_id
        )
        if profile is None:
            # As the client API answers (ProfileHandler.get_profile): a user
            # who never set a profile has the default displayname, their
            # localpart; only a user who does not exist has no profile.
            if await UserStore(self._db, tenant).get_user(user_id) is None:
                raise MatrixError(404, Codes.NOT_FOUND, "Profile was not found")
            default = {"displayname": default_displayname(user_id)}
            return default if field in (None, "displayname") else {}
        out: dict[str, Any] = {}
        for name in ("displayname", "avatar_url"):
            value = getattr(profile, name, None)
            if value is not None and (field is None or field == name):
                out[name] = value
        return out

    # -- public rooms ---------------------------------------------------------------------------

    async def public_rooms(self, tenant: str, request: DirectoryRequest) -> dict[str, Any]:
        """``GET``/``POST /publicRooms``: the tenant's published rooms, largest
        first, with keyset pagination tokens (homeserver/discovery/directory.py)."""
        return await PublishedDirectory(self._events, self._published).page(tenant, request)
