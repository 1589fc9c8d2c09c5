"""Receiving transactions: ``PUT /_matrix/federation/v1/send/{txnId}``.

Spec: ``server-server-api.md`` "Transactions" (at most 50 PDUs and 100
EDUs; the response lists a result per PDU, and "the server is to use this
response even in the event of one or more PDUs failing to be processed"),
"Checks performed on receipt of a PDU" (steps 1-6), "EDUs".

Every PDU of a transaction is processed before the response is sent, so a
200 means each one is durably stored (accepted, soft failed or rejected) or
was refused with an error in the response. Transactions from one origin to
one tenant are handled one at a time, and the response to each is recorded
with a hash of its body, so a retried ``txnId`` within the idempotency window
(``federation.inbound_transaction_window``, at least a day) gets the recorded
response and changes nothing, while the same ``txnId`` with other content is
refused (400 ``M_INVALID_PARAM``). Duplicate PDUs (in one transaction or
across transactions) are no-ops in the event store. PDUs of one room are
processed one at a time, whichever origin sent them, so concurrent
transactions for a room do not race (docs/usage/delivery.md).

Per PDU: the room version comes from our copy of the room (a PDU for a room
this tenant does not know is refused), then the keyring checks format,
signatures and content hash (fetching the signers' keys), then
:class:`~homeserver.handlers.missing_events.MissingEventsFetcher` runs
receipt checks 4-6, fetching missing prev and auth events from the origin.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from federation.events import Event
from federation.hashes import compute_event_id
from federation.keyring import Keyring
from federation.room_versions import DEFAULT_ROOM_VERSION, RoomVersion, get_room_version
from homeserver.handlers.event_receipt import Outcome, ReceiptOutcome
from homeserver.handlers.missing_events import MissingEventsFetcher, internal_pdu_error
from homeserver.handlers.room_acl import RoomServerAcls
from homeserver.handlers.room_joins import RoomJoins
from homeserver.metrics import FederationMetrics
from storage.stores.events import EventStore
from storage.stores.federation_inbound import FederationInboundStore

__all__ = ["EduHandler", "TransactionHandler", "MAX_PDUS", "MAX_EDUS"]

logger = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100
DEFAULT_TRANSACTION_WINDOW_MS = 86_400_000
#: How often old transaction records are pruned.
_PRUNE_INTERVAL_MS = 3_600_000

#: ``handler(tenant, origin, content)``: one EDU of a type, already checked
#: to be an object. Raise nothing for bad content: log and drop it.
EduHandler = Callable[[str, str, Mapping[str, Any]], Awaitable[None]]

# EDUs a peer may send that need no work from us yet (spec: presence and
# device lists may be ignored).
_IGNORED_EDUS = frozenset({
    "m.presence", "m.device_list_update", "m.signing_key_update",
    "org.matrix.signing_key_update", "m.direct_to_device",
})


def _user_of(origin: str, user_id: object) -> bool:
    return isinstance(user_id, str) and user_id.split(":", 1)[-1] == origin


class TransactionHandler:
    def __init__(
        self,
        events: EventStore,
        store: FederationInboundStore,
        keyring: Keyring,
        fetcher: MissingEventsFetcher,
        clock: Clock,
        acls: RoomServerAcls | None = None,
        *,
        window_ms: int = DEFAULT_TRANSACTION_WINDOW_MS,
        metrics: FederationMetrics | None = None,
    ) -> None:
        self._window_ms = window_ms
        self._metrics = metrics or FederationMetrics.unregistered()
        self._last_prune_ms = 0
        #: Per (tenant, room_id): [lock, users], removed when unused.
        self._room_locks: dict[tuple[str, str], list[Any]] = {}
        self._events = events
        # Spec "Server Access Control Lists": applied per PDU and to the
        # room-scoped EDUs (m.typing, m.receipt).
        self._acls = acls if acls is not None else RoomServerAcls(events)
        self._store = store
        self._keyring = keyring
        self._fetcher = fetcher
        self._clock = clock
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._edu_handlers: dict[str, EduHandler] = {
            "m.typing": self._on_typing,
            "m.receipt": self._on_receipt,
        }
        #: The latest typing state per (tenant, room_id, user_id): until the
        #: client API takes typing EDUs (``register_edu_handler``), kept here.
        self.typing: dict[tuple[str, str, str], bool] = {}
        #: Receipts seen per (tenant, room_id, receipt_type, user_id) -> event IDs.
        self.receipts: dict[tuple[str, str, str, str], list[str]] = {}
        #: ``pdu_refusal(tenant, pdu)``: why a PDU is refused before any check
        #: (the trust domain, docs/usage/trust_domain.md), or None.
        self.pdu_refusal: Callable[[str, Mapping[str, Any]], str | None] | None = None
        #: Remote joins in progress: a PDU for a room being joined waits for
        #: the join instead of being refused as for an unknown room.
        self.joins: RoomJoins | None = None
        #: Called with ``(tenant, [event])`` for each PDU accepted (wakes /sync).
        self.on_events: list[Callable[[str, list[Event]], None]] = []
        #: Called after each transaction from ``origin`` with ``(tenant, origin)``:
        #: an inbound request shows the peer is up (the outbound queue may retry).
        self.on_origin_seen: list[Callable[[str, str], Awaitable[None]]] = []

    def register_edu_handler(self, edu_type: str, handler: EduHandler) -> None:
        """Route EDUs of ``edu_type`` to ``handler`` (the client API's typing, receipts)."""
        self._edu_handlers[edu_type] = handler

    async def on_send(
        self, tenant: str, origin: str, txn_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Handle one transaction; the ``{"pdus": {...}}`` response."""
        try:
            return await self._on_send(tenant, origin, txn_id, body)
        except MatrixError:
            self._metrics.inbound_transactions.labels("refused").inc()
            raise

    async def _on_send(
        self, tenant: str, origin: str, txn_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        pdus = body.get("pdus", [])
        edus = body.get("edus", [])
        if not isinstance(pdus, list):
            raise MatrixError(400, Codes.BAD_JSON, "pdus must be an array")
        if not isinstance(edus, list):
            raise MatrixError(400, Codes.BAD_JSON, "edus must be an array")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise MatrixError(
                400, Codes.TOO_LARGE,
                f"a transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs "
                f"(got {len(pdus)} and {len(edus)})",
            )
        sender = body.get("origin")
        if sender is not None and sender != origin:
            raise MatrixError(
                400, Codes.INVALID_PARAM,
                f"transaction origin {sender!r} is not the authenticated origin {origin}",
            )
        body_hash = hashlib.sha256(json.dumps(
            body, sort_keys=True, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")).hexdigest()
        lock = self._locks.setdefault((tenant, origin), asyncio.Lock())
        async with lock:
            now = self._clock.time_ms()
            done = await self._store.get_transaction_record(tenant, origin, txn_id)
            if done is not None and done.received_ts < now - self._window_ms:
                await self._store.forget_transaction(tenant, origin, txn_id)
                done = None
            if done is not None:
                if done.body_hash is not None and done.body_hash != body_hash:
                    logger.info("RX [%s] txn %s to %s: known txnId, other content: refused",
                                origin, txn_id, tenant)
                    raise MatrixError(
                        400, Codes.INVALID_PARAM,
                        f"transaction {txn_id} from {origin} was already received with "
                        "different content; a new transaction needs a new txnId",
                    )
                logger.info("RX [%s] txn %s to %s: replayed, answering as before",
                            origin, txn_id, tenant)
                self._metrics.inbound_transactions.labels("replayed").inc()
                return done.response
            results = await self._process_pdus(tenant, origin, pdus)
            for edu in edus:
                await self._process_edu(tenant, origin, edu)
            response = {"pdus": results}
            await self._store.record_transaction_response(
                tenant, origin, txn_id, response, self._clock.time_ms(), body_hash
            )
            if now - self._last_prune_ms >= _PRUNE_INTERVAL_MS:
                self._last_prune_ms = now
                await self._store.prune_transactions(now - self._window_ms)
        self._metrics.inbound_transactions.labels("processed").inc()
        failed = sum(1 for r in results.values() if r)
        logger.info("RX [%s] txn %s to %s: %d PDUs (%d failed), %d EDUs",
                    origin, txn_id, tenant, len(pdus), failed, len(edus))
        for hook in self.on_origin_seen:
            try:
                await hook(tenant, origin)
            except Exception:
                logger.exception("origin-seen hook failed for %s", origin)
        return response

    # -- PDUs ------------------------------------------------------------------------

    async def _process_pdus(
        self, tenant: str, origin: str, pdus: list[Any]
    ) -> dict[str, dict[str, str]]:
        results: dict[str, dict[str, str]] = {}
        prepared: list[tuple[int, int, str, Any, RoomVersion | None, str | None]] = []
        # Room versions never change; an unknown room is looked up again.
        versions: dict[str, RoomVersion] = {}
        for n, pdu in enumerate(pdus):
            if not isinstance(pdu, dict):
                logger.info("RX [%s] PDU %d is not an object; dropped", origin, n)
                continue
            rv, error = await self._room_version_of(tenant, pdu, versions)
            event_id = _event_id_or_none(pdu, rv)
            if event_id is None:
                logger.info("RX [%s] PDU %d has no computable event ID; dropped", origin, n)
                continue
            depth = pdu.get("depth")
            prepared.append((depth if type(depth) is int else 0, n, event_id, pdu, rv, error))
        # Oldest first, so events of one transaction that build on each other
        # do not each trigger a fetch of the other. Consecutive PDUs of one
        # room are processed as a run (one database transaction when nothing
        # needs fetching); the room's ACL is read once per run, and a run ends
        # after an ACL event so the PDUs after it are judged by it.
        run: list[tuple[str, dict[str, Any], RoomVersion]] = []
        run_room: str | None = None
        run_allowed = True
        for _, _, event_id, pdu, rv, error in sorted(prepared, key=lambda p: (p[0], p[1])):
            if error is not None or rv is None:
                self._metrics.inbound_pdus.labels("refused").inc()
                results[event_id] = {"error": error or "unknown room version"}
                continue
            refused = self.pdu_refusal(tenant, pdu) if self.pdu_refusal is not None else None
            if refused is not None:
                # Trust domain: an event originated by a server outside it,
                # relayed by a trusted one; refused before any key lookup.
                logger.info("RX [%s] %s refused: %s", origin, event_id, refused)
                self._metrics.inbound_pdus.labels("refused").inc()
                results[event_id] = {"error": refused}
                continue
            room_id = pdu["room_id"]
            if room_id != run_room:
                if run:
                    results.update(await self._process_run(tenant, origin, run))
                    run = []
                run_room = room_id
                run_allowed = await self._acls.allows(tenant, room_id, origin)
            if not run_allowed:
                logger.info("RX [%s] %s refused: server ACL of %s", origin, event_id, room_id)
                self._metrics.inbound_pdus.labels("refused").inc()
                results[event_id] = {"error": f"{origin} is denied by the server ACL of {room_id}"}
                continue
            run.append((event_id, pdu, rv))
            if pdu.get("type") == "m.room.server_acl" and "state_key" in pdu:
                results.update(await self._process_run(tenant, origin, run))
                run, run_room = [], None
        if run:
            results.update(await self._process_run(tenant, origin, run))
        return results

    async def _process_run(
        self, tenant: str, origin: str, run: list[tuple[str, dict[str, Any], RoomVersion]]
    ) -> dict[str, dict[str, str]]:
        """PDUs of one room, in order, under the room's lock."""
        results: dict[str, dict[str, str]] = {}
        room_id = run[0][1]["room_id"]
        async with self._room_lock(tenant, room_id):
            events: list[Event] = []
            for event_id, pdu, rv in run:
                try:
                    verified = await self._keyring.verify_pdu(pdu, rv)  # receipt checks 1-3
                except MatrixError as e:
                    results[event_id] = self._refused(origin, event_id, e)
                    continue
                except Exception:
                    # One PDU's failure never fails the transaction (spec
                    # "Transactions"); it is this PDU's error, logged in full.
                    logger.exception("RX [%s] %s: unexpected error while verifying it",
                                     origin, event_id)
                    results[event_id] = self._refused(origin, event_id, internal_pdu_error())
                    continue
                if verified.redacted:
                    logger.info("RX [%s] %s: content hash mismatch; processing it redacted",
                                origin, event_id)
                events.append(verified.event)
            try:
                outcomes: list[ReceiptOutcome | MatrixError] = (
                    await self._fetcher.receive_batch_with_fetching(tenant, origin, events)
                )
            except Exception:
                # receive_batch_with_fetching isolates each event; this is the
                # last guard, so that a bug still answers per PDU, not with a 500.
                logger.exception("RX [%s] PDUs of %s: unexpected error", origin, room_id)
                outcomes = [internal_pdu_error() for _ in events]
        for event, outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, MatrixError):
                results[event.event_id] = self._refused(origin, event.event_id, outcome)
            else:
                results[event.event_id] = self._outcome_result(tenant, origin, event, outcome)
        return results

    def _refused(self, origin: str, event_id: str, e: MatrixError) -> dict[str, str]:
        logger.info("RX [%s] %s refused: %s", origin, event_id, e.msg)
        self._metrics.inbound_pdus.labels("refused").inc()
        return {"error": e.msg}

    @asynccontextmanager
    async def _room_lock(self, tenant: str, room_id: str) -> AsyncIterator[None]:
        """One PDU of a room at a time, whichever origin sent it (a PDU's gap
        filling included), so the room's graph is built in one order."""
        key = (tenant, room_id)
        entry = self._room_locks.get(key)
        if entry is None:
            entry = self._room_locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._room_locks[key]

    async def _room_version_of(
        self, tenant: str, pdu: Mapping[str, Any], known: dict[str, RoomVersion]
    ) -> tuple[RoomVersion | None, str | None]:
        room_id = pdu.get("room_id")
        if not isinstance(room_id, str):
            return None, "PDU has no room_id"
        if room_id in known:
            return known[room_id], None
        rv_id = await self._events.state.get_room_version_id(tenant, room_id)
        if rv_id is None and self.joins is not None and await self.joins.wait(
            tenant, room_id, self._clock
        ):
            # Sent on by the resident that just accepted our join (spec
            # "Joining Rooms") before that join was stored here.
            rv_id = await self._events.state.get_room_version_id(tenant, room_id)
        if rv_id is None:
            return None, f"unknown room {room_id}"
        rv = known[room_id] = get_room_version(rv_id)
        return rv, None

    def _outcome_result(
        self, tenant: str, origin: str, event: Event, outcome: ReceiptOutcome
    ) -> dict[str, str]:
        event_id = event.event_id
        if not outcome.newly_persisted:
            self._metrics.inbound_pdus.labels("duplicate").inc()
        else:
            self._metrics.inbound_pdus.labels(outcome.outcome.value).inc()
        if outcome.outcome is Outcome.REJECTED:
            logger.info("RX [%s] %s rejected: %s", origin, event_id, outcome.reason)
            return {"error": f"rejected: {outcome.reason}"}
        if outcome.outcome is Outcome.SOFT_FAILED:
            logger.info("RX [%s] %s soft failed: %s", origin, event_id, outcome.reason)
        elif outcome.newly_persisted:
            for hook in self.on_events:
                hook(tenant, [event])
        return {}

    # -- EDUs ------------------------------------------------------------------------

    async def _process_edu(self, tenant: str, origin: str, edu: Any) -> None:
        if not isinstance(edu, dict):
            return
        edu_type = edu.get("edu_type")
        content = edu.get("content")
        if not isinstance(edu_type, str) or not isinstance(content, dict):
            logger.info("RX [%s] malformed EDU dropped", origin)
            return
        handler = self._edu_handlers.get(edu_type)
        if handler is None:
            if edu_type not in _IGNORED_EDUS:
                logger.debug("RX [%s] EDU %s ignored", origin, edu_type)
            return
        allowed = await self._acl_filter_edu(tenant, origin, edu_type, content)
        if allowed is None:
            return
        content = allowed
        try:
            await handler(tenant, origin, content)
        except Exception:
            # An EDU is best effort: never fail the transaction for one.
            logger.exception("RX [%s] EDU %s failed", origin, edu_type)

    async def _acl_filter_edu(
        self, tenant: str, origin: str, edu_type: str, content: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The EDU's content without what the rooms' ACLs deny ``origin``
        (``None``: nothing is left). Only ``m.typing`` and ``m.receipt`` are
        room-scoped among the EDUs we act on."""
        if edu_type == "m.typing":
            room_id = content.get("room_id")
            if isinstance(room_id, str) and not await self._acls.allows(tenant, room_id, origin):
                logger.info("RX [%s] m.typing for %s ignored: server ACL", origin, room_id)
                return None
            return content
        if edu_type == "m.receipt":
            kept = {}
            for room_id, by_type in content.items():
                if await self._acls.allows(tenant, room_id, origin):
                    kept[room_id] = by_type
                else:
                    logger.info("RX [%s] m.receipt for %s ignored: server ACL", origin, room_id)
            return kept or None
        return content

    async def _on_typing(self, tenant: str, origin: str, content: Mapping[str, Any]) -> None:
        """``m.typing`` (spec "Typing Notifications"): the user must be the origin's."""
        room_id, user_id, typing = (content.get(k) for k in ("room_id", "user_id", "typing"))
        if not isinstance(room_id, str) or not _user_of(origin, user_id) or not isinstance(
            typing, bool
        ):
            logger.info("RX [%s] m.typing refused: bad content or foreign user", origin)
            return
        assert isinstance(user_id, str)
        self.typing[(tenant, room_id, user_id)] = typing

    async def _on_receipt(self, tenant: str, origin: str, content: Mapping[str, Any]) -> None:
        """``m.receipt`` (spec "Receipts"): ``{room_id: {type: {user_id: {event_ids}}}}``."""
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict):
                continue
            for receipt_type, by_user in by_type.items():
                if not isinstance(by_user, dict):
                    continue
                for user_id, receipt in by_user.items():
                    ids = receipt.get("event_ids") if isinstance(receipt, dict) else None
                    if not _user_of(origin, user_id) or not isinstance(ids, list):
                        continue
                    self.receipts[(tenant, room_id, receipt_type, user_id)] = [
                        i for i in ids if isinstance(i, str)
                    ]


def _event_id_or_none(pdu: Mapping[str, Any], rv: RoomVersion | None) -> str | None:
    """The PDU's event ID under its room's version; for a PDU of an unknown
    room, under the newest version (only to name it in the response)."""
    version = rv or DEFAULT_ROOM_VERSION
    try:
        return compute_event_id(pdu, version)
    except Exception:
        return None
