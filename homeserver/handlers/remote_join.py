"""Joining a room held by other servers, and catching up on its history.

Spec: ``server-server-api.md`` "Joining Rooms": ``GET /v1/make_join`` to a
resident server (``ver`` = every room version we support; on failure the
next candidate), fill in the template and sign it ("Signing Events"), ``PUT
/v2/send_join``; the response's ``state`` (the state before the join) and
``auth_chain`` are checked like any received PDU ("Checks performed on
receipt of a PDU", steps 1-4: format, signatures through the keyring,
content hashes, auth rules against each event's own auth events) before
anything is stored. Then "Backfilling and retrieving missing events":
``GET /v1/backfill`` from the resident server, so the client sees recent
history.

What is stored, in one transaction: the state and auth chain as *outliers*
(their own state is unknown), the history fetched by backfill as ordinary
events (in stream order before the join, so ``/messages`` pages back through
them), then the join itself with the returned state as its state before;
the room's current state follows from the join.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from signedjson.types import SigningKey

from federation.auth_rules import AuthError, check_auth, check_auth_events_selection
from federation.auth_rules.selection import create_event_id_for_room
from federation.clock import Clock
from federation.errors import Codes, MatrixError
from federation.events import Event
from federation.hashes import compute_event_id
from federation.keyring import Keyring
from federation.room_versions import SUPPORTED_ROOM_VERSIONS, RoomVersion, get_room_version
from federation.signing import add_hashes_and_signatures
from federation.transport.client import FederationClient, FederationClientError
from homeserver.handlers.room_joins import room_joins
from homeserver.handlers.room_state import update_current_state_txn
from storage.database import Database
from storage.stores.events import EventStore, NewEvent
from storage.stores.state import ResolvedState

__all__ = ["JoinResult", "RemoteJoiner", "candidate_servers", "server_of"]

logger = logging.getLogger(__name__)

#: History fetched at join time (events), in backfill requests of BACKFILL_BATCH.
JOIN_BACKFILL_LIMIT = 300
BACKFILL_BATCH = 100
#: Missing auth events of backfilled history fetched one by one, at most.
MAX_AUTH_FETCHES = 100
CREATE_KEY = ("m.room.create", "")

FED = "/_matrix/federation"


def server_of(user_or_room_id: str) -> str:
    return user_or_room_id.split(":", 1)[1] if ":" in user_or_room_id else ""


def candidate_servers(room_id: str, servers: Sequence[str], tenant: str) -> list[str]:
    """The servers to ask, in order: the given ones, then the room ID's server
    (v10/v11 IDs carry one), never ourselves."""
    out = list(dict.fromkeys(s for s in servers if s))
    own = server_of(room_id)
    if own and own not in out:
        out.append(own)
    return [s for s in out if s != tenant]


def _q(s: str) -> str:
    return quote(s, safe="")


@dataclass(frozen=True)
class JoinResult:
    room_id: str
    event_id: str
    via: str
    backfilled: int


class _Pool:
    """Events received for one room, checked on demand (steps 1-4), memoised."""

    def __init__(self, keyring: Keyring, rv: RoomVersion, room_id: str) -> None:
        self._keyring = keyring
        self.rv = rv
        self.room_id = room_id
        self.raw: dict[str, Mapping[str, Any]] = {}
        self.ok: dict[str, Event] = {}
        self.bad: dict[str, str] = {}

    def add_raw(self, pdus: Iterable[Any]) -> None:
        for pdu in pdus:
            if not isinstance(pdu, Mapping):
                continue
            try:
                eid = compute_event_id(pdu, self.rv)
            except Exception:  # malformed beyond hashing: just not usable
                continue
            self.raw.setdefault(eid, pdu)

    async def signature_checked(self, eid: str) -> Event | None:
        """Steps 1-3 (format, signatures, content hash)."""
        if eid in self.ok:
            return self.ok[eid]
        if eid in self.bad or eid not in self.raw:
            return None
        try:
            verified = await self._keyring.verify_pdu(self.raw[eid], self.rv)
        except MatrixError as e:
            self.bad[eid] = f"fails signature/format checks: {e.msg}"
            return None
        ev = verified.event
        if ev.room_id != self.room_id:
            self.bad[eid] = f"is in {ev.room_id}"
            return None
        self.ok[eid] = ev
        return ev


class RemoteJoiner:
    """make_join/send_join and join-time backfill for the tenants of one database."""

    def __init__(
        self,
        *,
        db: Database,
        events: EventStore,
        keyring: Keyring,
        client: FederationClient,
        clock: Clock,
        signing_key_for: Callable[[str], SigningKey],
        backfill_limit: int = JOIN_BACKFILL_LIMIT,
    ) -> None:
        self._db = db
        self._events = events
        self._keyring = keyring
        self._client = client
        self._clock = clock
        self._signing_key_for = signing_key_for
        self._backfill_limit = backfill_limit

    async def join(
        self,
        tenant: str,
        user_id: str,
        room_id: str,
        servers: Sequence[str],
        content: Mapping[str, Any] | None = None,
    ) -> JoinResult:
        """Join ``user_id`` to ``room_id`` through the first of ``servers`` that
        works. Raises the last server's error (a MatrixError) if none does."""
        candidates = candidate_servers(room_id, servers, tenant)
        if not candidates:
            raise MatrixError(404, Codes.NOT_FOUND,
                              f"No server to join {room_id} through; give one with via")
        last: MatrixError | None = None
        # Once a resident accepts our join it sends us the room's events; those
        # that arrive before the room is stored wait for it (RoomJoins).
        async with room_joins(self._db).joining(tenant, room_id):
            for server in candidates:
                try:
                    return await self._join_via(tenant, user_id, room_id, server, content or {})
                except FederationClientError as e:
                    logger.info("Joining %s via %s failed: %s", room_id, server, e)
                    last = _as_matrix_error(e, f"join {room_id} via {server}")
                except MatrixError as e:
                    logger.info("Joining %s via %s failed: %s", room_id, server, e.msg)
                    last = e
        assert last is not None
        raise last

    async def _join_via(
        self, tenant: str, user_id: str, room_id: str, server: str, content: Mapping[str, Any]
    ) -> JoinResult:
        client = self._client
        made = await client.get_json(
            server, f"{FED}/v1/make_join/{_q(room_id)}/{_q(user_id)}",
            query={"ver": list(SUPPORTED_ROOM_VERSIONS)}, origin=tenant,
        )
        if not isinstance(made, dict) or not isinstance(made.get("event"), dict):
            raise MatrixError(502, Codes.UNKNOWN, f"{server}: make_join answer has no event")
        rv = get_room_version(made.get("room_version", "1"))
        template = made["event"]
        pdu = self._fill_template(template, user_id, room_id, "join", content)
        signed = add_hashes_and_signatures(pdu, rv, tenant, self._signing_key_for(tenant))
        event_id = compute_event_id(signed, rv)
        resp = await client.put_json(
            server, f"{FED}/v2/send_join/{_q(room_id)}/{_q(event_id)}", signed,
            query={"omit_members": "false"}, origin=tenant,
        )
        if not isinstance(resp, dict):
            raise MatrixError(502, Codes.UNKNOWN, f"{server}: send_join answer is not an object")
        join_pdu: Mapping[str, Any] = signed
        returned = resp.get("event")
        # The resident may countersign (restricted joins): keep its copy if it
        # is the same event and passes the signature and hash checks, since a
        # copy with other content keeps the event ID (server-server API
        # "Joining Rooms", send_join response ``event``).
        if isinstance(returned, dict) and _event_id_or_none(returned, rv) == event_id:
            try:
                countersigned = await self._keyring.verify_pdu(returned, rv)
            except MatrixError as e:
                raise MatrixError(502, Codes.UNKNOWN, f"{server}: send_join returned our join "
                                  f"with bad signatures: {e.msg}") from None
            if countersigned.redacted:
                raise MatrixError(502, Codes.UNKNOWN, f"{server}: send_join returned our join "
                                  "with altered content")
            join_pdu = returned
        join = Event(dict(join_pdu), event_id, rv)

        pool = _Pool(self._keyring, rv, room_id)
        pool.add_raw(resp.get("auth_chain") or [])
        pool.add_raw(resp.get("state") or [])
        state_ids = [eid for eid in (
            _event_id_or_none(p, rv) for p in resp.get("state") or [] if isinstance(p, dict)
        ) if eid is not None]
        accepted, rejected = await self._check_all(pool)
        state: dict[tuple[str, str], str] = {}
        for eid in state_ids:
            ev = accepted.get(eid)
            if ev is not None and ev.is_state():
                state[ev.state_tuple] = eid
        if CREATE_KEY not in state:
            raise MatrixError(502, Codes.UNKNOWN,
                              f"{server}: send_join state has no valid m.room.create event")
        create = accepted[state[CREATE_KEY]]
        if create.content.get("room_version", "1") != rv.identifier:
            raise MatrixError(502, Codes.UNKNOWN,
                              f"{server}: the room's create event is not of version "
                              f"{rv.identifier}")
        # The join must pass the auth rules against the state it was made on.
        try:
            check_auth(join, _auth_from_state(join, state, accepted))
        except AuthError as e:
            raise MatrixError(403, Codes.FORBIDDEN,
                              f"{server}: our join fails against the room state: {e.msg}") from None

        history = await self._backfill_history(tenant, server, pool, join, accepted)
        await self._persist_join(tenant, rv, room_id, accepted, rejected, history, join, state)
        logger.info("Joined %s to %s via %s (%d state events, %d backfilled)", user_id,
                    room_id, server, len(state), len(history))
        return JoinResult(room_id, event_id, server, len(history))

    @staticmethod
    def _fill_template(
        template: Mapping[str, Any], user_id: str, room_id: str, membership: str,
        content: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Check a make_join/make_leave template and complete it for signing."""
        if (template.get("type") != "m.room.member" or template.get("sender") != user_id
                or template.get("state_key") != user_id or template.get("room_id") != room_id):
            raise MatrixError(502, Codes.UNKNOWN,
                              "the resident server's template is not our membership event")
        pdu = {k: v for k, v in template.items()
               if k not in ("signatures", "hashes", "unsigned", "event_id")}
        merged = dict(content)
        tcontent = template.get("content")
        if isinstance(tcontent, Mapping):
            # The template's keys (membership; join_authorised_via_users_server)
            # are the resident's decision.
            merged.update(tcontent)
        merged["membership"] = membership
        pdu["content"] = merged
        return pdu

    async def _check_all(
        self, pool: _Pool
    ) -> tuple[dict[str, Event], dict[str, str]]:
        """Steps 1-4 for every event of the pool, auth events before the
        events they authorise. Returns (accepted, rejected: reason)."""
        accepted: dict[str, Event] = {}
        rejected: dict[str, str] = {}
        # Depth order is a topological order of auth edges in a valid room.
        checked = [ev for eid in list(pool.raw)
                   if (ev := await pool.signature_checked(eid)) is not None]
        rejected.update(pool.bad)
        for ev in sorted(checked, key=lambda e: (e.depth, e.event_id)):
            reason = self._check_own_auth(ev, accepted, rejected)
            if reason is None:
                accepted[ev.event_id] = ev
            else:
                rejected[ev.event_id] = reason
        return accepted, rejected

    @staticmethod
    def _check_own_auth(
        ev: Event, known: Mapping[str, Event], rejected: Mapping[str, str]
    ) -> str | None:
        wanted = list(ev.auth_event_ids)
        if ev.room_version.room_id_from_create_event and ev.type != "m.room.create":
            wanted.append(create_event_id_for_room(ev.room_id))
        for a in wanted:
            if a in rejected:
                return f"auth event {a} was rejected"
            if a not in known:
                return f"auth event {a} is missing"
        try:
            check_auth(ev, check_auth_events_selection(ev, {a: known[a] for a in wanted}))
        except AuthError as e:
            return e.msg
        return None

    async def _backfill_history(
        self, tenant: str, server: str, pool: _Pool, join: Event, accepted: dict[str, Event]
    ) -> list[Event]:
        """Recent events before the join from ``server`` (``/backfill``), each
        checked (steps 1-4; missing auth events fetched with ``/event``).
        Best effort: a failure leaves what was fetched so far."""
        if self._backfill_limit <= 0:
            return []
        history: dict[str, Event] = {}
        frontier = list(join.prev_event_ids)
        fetched_auth = 0
        while frontier and len(history) < self._backfill_limit:
            try:
                resp = await self._client.get_json(
                    server, f"{FED}/v1/backfill/{_q(pool.room_id)}",
                    query={"v": frontier,
                           "limit": str(min(BACKFILL_BATCH, self._backfill_limit - len(history)))},
                    origin=tenant,
                )
            except FederationClientError as e:
                logger.info("Backfill of %s from %s failed: %s", pool.room_id, server, e)
                break
            pdus = resp.get("pdus") if isinstance(resp, dict) else None
            if not isinstance(pdus, list):
                break
            before = len(pool.raw)
            pool.add_raw(pdus)
            new = [eid for eid in list(pool.raw)[before:]]
            if not new:
                break
            events = [ev for eid in new if (ev := await pool.signature_checked(eid)) is not None]
            # Auth events of old history may predate the current state.
            for ev in events:
                for a in ev.auth_event_ids:
                    if a in accepted or a in pool.raw or fetched_auth >= MAX_AUTH_FETCHES:
                        continue
                    fetched_auth += 1
                    try:
                        got = await self._client.get_json(
                            server, f"{FED}/v1/event/{_q(a)}", origin=tenant)
                    except FederationClientError:
                        continue
                    if isinstance(got, dict):
                        pool.add_raw(got.get("pdus") or [])
            for eid in sorted(pool.raw, key=lambda e: _depth(pool.raw[e])):
                if eid in accepted and eid in new:
                    # A state event of the recent history: shown in the timeline too.
                    history[eid] = accepted[eid]
                    continue
                if eid in accepted or eid in pool.bad:
                    continue
                ev = await pool.signature_checked(eid)
                if ev is None:
                    continue
                if self._check_own_auth(ev, accepted, {}) is None:
                    accepted[eid] = ev
                    if eid in new:
                        history[eid] = ev
            known = set(history) | set(accepted)
            frontier = sorted({p for ev in history.values() for p in ev.prev_event_ids
                               if p not in known})[:20]
        return sorted(history.values(), key=lambda e: (e.depth, e.event_id))

    async def _persist_join(
        self,
        tenant: str,
        rv: RoomVersion,
        room_id: str,
        accepted: Mapping[str, Event],
        rejected: Mapping[str, str],
        history: Sequence[Event],
        join: Event,
        state: Mapping[tuple[str, str], str],
    ) -> None:
        events = self._events
        history_ids = {e.event_id for e in history}
        outliers = [NewEvent(ev, outlier=True)
                    for eid, ev in sorted(accepted.items(), key=lambda kv: kv[1].depth)
                    if eid not in history_ids]
        async with self._db.transaction("remote_join") as txn:
            await txn.lock(f"event_graph:{tenant}")
            known_rv = await events.state.get_room_version_id(tenant, room_id, txn=txn)
            if known_rv is None:
                await events.state.set_current_state_group_txn(
                    txn, tenant, room_id, rv.identifier, None
                )
            await events.persist_events_txn(txn, tenant, outliers)
            if history:
                # History before the join, as the client will page through it:
                # its exact state is unknown, so each event whose predecessor
                # we lack is given the state the join was made on (it only
                # decides what the client is shown; the room's current state
                # comes from the join).
                have = await events.have_events(
                    tenant, {p for e in history for p in e.prev_event_ids}, txn=txn)
                in_batch: set[str] = set()
                items: list[NewEvent] = []
                for ev in history:
                    prevs = ev.prev_event_ids
                    implied = not prevs or (len(prevs) == 1 and (prevs[0] in in_batch or (
                        prevs[0] in have and await events.get_state_groups_for_event(
                            tenant, prevs[0], txn=txn) is not None)))
                    items.append(NewEvent(ev, state_before=None if implied
                                          else ResolvedState(dict(state))))
                    in_batch.add(ev.event_id)
                await events.persist_events_txn(txn, tenant, items)
            await events.persist_event_txn(
                txn, tenant, NewEvent(join, state_before=ResolvedState(dict(state)))
            )
            await update_current_state_txn(txn, events, tenant, room_id, rv)


def _depth(pdu: Mapping[str, Any]) -> int:
    d = pdu.get("depth")
    return d if type(d) is int else 0


def _event_id_or_none(pdu: Mapping[str, Any], rv: RoomVersion) -> str | None:
    try:
        return compute_event_id(pdu, rv)
    except Exception:
        return None


def _auth_from_state(
    event: Event, state: Mapping[tuple[str, str], str], events: Mapping[str, Event]
) -> dict[tuple[str, str], Event]:
    from federation.auth_rules import auth_types_for_event

    keys = auth_types_for_event(event, event.room_version) | {CREATE_KEY}
    return {k: events[state[k]] for k in keys if k in state and state[k] in events}


def _as_matrix_error(e: FederationClientError, what: str) -> MatrixError:
    from federation.transport.client import FederationHttpError

    if isinstance(e, FederationHttpError) and e.errcode and 400 <= e.status < 500:
        extra: dict[str, Any] = {}
        body = e.body if isinstance(e.body, dict) else {}
        if "room_version" in body:
            extra["room_version"] = body["room_version"]
        return MatrixError(e.status, e.errcode, f"Cannot {what}: {e.reason}", extra=extra)
    return MatrixError(502, Codes.UNKNOWN, f"Cannot {what}: {e.reason}")
