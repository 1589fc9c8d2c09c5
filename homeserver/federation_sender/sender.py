"""One queue per (origin, destination): transactions out, in order, with retries.

Spec: ``server-server-api.md`` "Transactions" (``PUT
/_matrix/federation/v1/send/{txnId}``; at most 50 PDUs and 100 EDUs; the
same ``txnId`` when retrying the same transaction) and "PDUs"/"EDUs".

A queue has a task only while it has work: woken by a write to the outbox
(or :meth:`FederationSender.send_edu`), it sends transactions one at a time
until the outbox is empty, then its task ends, so idle tenants and
destinations cost nothing. After a failure it records the destination's
backoff (persisted, shared by every origin of the database) and sleeps on
the :class:`~federation.clock.Clock` until the retry time, unless
:meth:`FederationSender.on_peer_seen` wakes it first. A sweep at start-up,
then every ``sweep_interval_s``, wakes queues whose rows were written by an
earlier run (or by a writer not attached to this sender).

Nothing leaves the outbox unacknowledged except into the dead letters
(:mod:`storage.stores.dead_letters`, docs/usage/delivery.md): a transaction
that failed ``DeliveryLimits.max_attempts`` times or whose oldest row is older
than ``max_age_ms`` when an attempt fails, rows never sent that are that old,
a transaction the peer refuses with a 4xx other than 429 (retrying the same
``txnId`` cannot change the answer), a PDU the peer answers an error for in a
200 response, and a PDU whose event is no longer stored (the rest of a
transaction already in flight then goes out under a new ``txnId``: a
receiver refuses one ``txnId`` with two bodies).

Log lines start ``TX [destination]`` (Synapse's prefix) so one peer's
history is one grep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any
from urllib.parse import quote

import aiohttp

from federation.clock import Clock
from federation.transport.client import (
    FederationClient,
    FederationClientError,
    FederationHttpError,
)
from homeserver.federation_sender.backoff import BackoffPolicy, DeliveryLimits
from homeserver.federation_sender.outbox import OutboxWriter, joined_servers_txn, register_waker
from homeserver.metrics import FederationMetrics
from storage.database import Database
from storage.errors import StorageError
from storage.stores.dead_letters import DeadLetterReason, DeadLetterStore
from storage.stores.events import EventStore
from storage.stores.outbox import OutboundTransaction, OutboxStore, QueuedEdu
from storage.stores.state import StateStore

__all__ = ["FederationSender", "failure_reason"]

logger = logging.getLogger(__name__)

DEFAULT_SWEEP_INTERVAL_S = 60.0


def failure_reason(e: FederationClientError) -> str:
    """The ``reason`` label of a failed attempt; ``http_4xx`` and ``untrusted`` are final."""
    if getattr(e, "dead_letter_reason", None) == DeadLetterReason.UNTRUSTED.value:
        return "untrusted"  # refused locally: outside the trust domain, nothing was sent
    if isinstance(e, FederationHttpError):
        if e.status == 429:
            return "http_429"
        if e.status >= 500:
            return "http_5xx"
        if 400 <= e.status < 500:
            return "http_4xx"
        return "error"
    # The client raises ``from None``; the original exception is still the context.
    cause = e.__context__
    if isinstance(cause, TimeoutError) or "timed out" in e.reason:
        return "timeout"
    if isinstance(cause, (aiohttp.ClientConnectionError, OSError)):
        return "connection"
    return "error"


class _Queue:
    def __init__(self, sender: FederationSender, store: OutboxStore, origin: str,
                 destination: str) -> None:
        self.sender = sender
        self.store = store
        self.origin = origin
        self.destination = destination
        self.dead = DeadLetterStore(store.database)
        self.task: asyncio.Task[None] | None = None
        self.woken = False
        #: Set while sleeping out a backoff; resolving it ends the sleep early.
        self.backoff_wake: asyncio.Future[None] | None = None
        #: True once the backoff sleep is registered with the clock.
        self.sleeping = False
        #: The retry time (ms) the backoff sleep ends at, while sleeping.
        self.sleep_until: int | None = None

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.sleeping

    def wake(self) -> None:
        self.woken = True
        if self.task is None and not self.sender.origin_paused(self.origin):
            self.task = asyncio.ensure_future(self._run())
            self.sender._changed()

    def end_backoff(self) -> None:
        if self.backoff_wake is not None and not self.backoff_wake.done():
            self.backoff_wake.set_result(None)

    async def _run(self) -> None:
        log_prefix = f"TX [{self.destination}]"
        try:
            while not self.sender._stopping:
                if self.sender.origin_paused(self.origin):
                    # Suspended: the rows stay queued; a sweep after resume
                    # picks them up.
                    return
                self.woken = False
                clock = self.sender.clock
                state = await self.store.get_destination(self.destination)
                if state is not None and state.next_retry_ts is not None:
                    wait_ms = state.next_retry_ts - clock.time_ms()
                    if wait_ms > 0:
                        self.sleep_until = state.next_retry_ts
                        await self._sleep(wait_ms / 1000)
                        continue
                txn = await self.store.next_transaction(
                    self.origin, self.destination, clock.time_ms()
                )
                if txn is None:
                    self.sender._set_depth(self.origin, self.destination, 0)
                    if self.woken:
                        continue
                    return
                await self._send(txn, log_prefix)
        except asyncio.CancelledError:
            raise
        except StorageError as e:
            # The database is gone (shutting down) or failing: the rows stay
            # and the next wake or sweep picks them up.
            logger.warning("%s queue of %s stopped: %s", log_prefix, self.origin, e)
        except Exception:
            logger.exception("%s queue of %s failed", log_prefix, self.origin)
        finally:
            self.task = None
            self.backoff_wake = None
            self.sleeping = False
            self.sender._changed()

    async def _sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        wake = self.backoff_wake = loop.create_future()
        sleeper = asyncio.ensure_future(self.sender.clock.sleep(seconds))
        try:
            # One turn of the loop lets the sleeper register with the clock
            # before the queue counts as idle (a test's FakeClock.advance
            # after wait_until_idle must reach it).
            await asyncio.wait({sleeper, wake}, timeout=0)
            self.sleeping = True
            self.sender._changed()
            await asyncio.wait({sleeper, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            self.backoff_wake = None
            self.sleeping = False
            self.sleep_until = None
            self.sender._changed()

    async def _send(self, txn: OutboundTransaction, log_prefix: str) -> None:
        sender = self.sender
        metrics = sender.metrics
        if txn.missing_event_ids:
            n = await self.dead.dead_letter_events_of_transaction(
                self.origin, self.destination, txn.txn_id,
                {e: "the event is no longer stored here" for e in txn.missing_event_ids},
                DeadLetterReason.EVENT_MISSING, sender.clock.time_ms(),
            )
            metrics.dead_lettered.labels(DeadLetterReason.EVENT_MISSING.value).inc(n)
            logger.warning("%s %s: events no longer stored, moved to dead letters: %s",
                           log_prefix, txn.txn_id, ", ".join(txn.missing_event_ids))
            await sender.refresh_dead_letter_gauge()
            if not txn.pdus and not txn.edus:
                await self.store.complete_transaction(self.origin, self.destination, txn.txn_id)
                return
            if txn.in_flight:
                # The peer may hold this txnId with the old body; the rest goes
                # out under a new one (one txnId, one body, always).
                now = sender.clock.time_ms()
                new_id = await self.store.reissue_transaction(
                    self.origin, self.destination, txn.txn_id, now
                )
                logger.info("%s %s: the rest is sent again as %s", log_prefix, txn.txn_id,
                            new_id)
                txn = dataclasses.replace(txn, txn_id=new_id, origin_server_ts=now)
        logger.debug("%s sending %s (%d PDUs, %d EDUs, attempt %d) from %s", log_prefix,
                     txn.txn_id, len(txn.pdus), len(txn.edus), txn.attempts + 1, self.origin)
        if txn.attempts:
            metrics.retries.inc()
        try:
            response = await sender.client.put_json(
                self.destination,
                f"/_matrix/federation/v1/send/{quote(txn.txn_id, safe='')}",
                txn.body,
                origin=self.origin,
            )
        except FederationClientError as e:
            await self._failed(txn, e, log_prefix)
        else:
            await self._delivered(txn, response, log_prefix)
        await sender._refresh_depth(self.store, self.origin, self.destination)

    async def _failed(
        self, txn: OutboundTransaction, e: FederationClientError, log_prefix: str
    ) -> None:
        sender = self.sender
        metrics = sender.metrics
        now = sender.clock.time_ms()
        reason = failure_reason(e)
        metrics.transactions_failed.labels(reason).inc()
        if reason in ("http_4xx", "untrusted"):
            # The peer is up and said no (or we may not talk to it at all):
            # the same txnId would get the same answer.
            why = (DeadLetterReason.UNTRUSTED if reason == "untrusted"
                   else DeadLetterReason.REJECTED)
            n = await self.dead.dead_letter_transaction(
                self.origin, self.destination, txn.txn_id, why, now, e.reason,
            )
            metrics.dead_lettered.labels(why.value).inc(n)
            logger.warning("%s %s refused (%s): %d deliveries moved to dead letters",
                           log_prefix, txn.txn_id, e.reason, n)
            await sender.refresh_dead_letter_gauge()
            return
        retry_after = None
        if isinstance(e, FederationHttpError) and isinstance(e.body, dict):
            ra = e.body.get("retry_after_ms")
            retry_after = ra if isinstance(ra, int) and ra > 0 else None
        state = await self.store.get_destination(self.destination)
        previous = state.retry_interval_ms if state is not None else 0
        interval = sender.policy.next_interval_ms(previous, sender.rng, retry_after)
        await self.store.record_attempt_failure(
            self.origin, self.destination, txn.txn_id, now, e.reason
        )
        await self.store.record_failure(self.destination, now, interval, e.reason)
        logger.warning("%s %s failed (%s); retrying in %.1f s", log_prefix, txn.txn_id,
                       e.reason, interval / 1000)
        limits = sender.limits
        gave_up: DeadLetterReason | None = None
        if txn.attempts + 1 >= limits.max_attempts:
            gave_up = DeadLetterReason.MAX_ATTEMPTS
        elif now - txn.oldest_queued_ts >= limits.max_age_ms:
            gave_up = DeadLetterReason.MAX_AGE
        moved = 0
        if gave_up is not None:
            n = await self.dead.dead_letter_transaction(
                self.origin, self.destination, txn.txn_id, gave_up, now, e.reason
            )
            metrics.dead_lettered.labels(gave_up.value).inc(n)
            moved += n
            logger.warning("%s %s: gave up after %d attempts (%s): %d deliveries moved to "
                           "dead letters", log_prefix, txn.txn_id, txn.attempts + 1,
                           gave_up.value, n)
        expired = await self.dead.dead_letter_expired(
            self.origin, self.destination, now - limits.max_age_ms, now
        )
        if expired:
            metrics.dead_lettered.labels(DeadLetterReason.MAX_AGE.value).inc(expired)
            logger.warning("%s %d queued deliveries older than the maximum age moved to "
                           "dead letters", log_prefix, expired)
        if moved or expired:
            await sender.refresh_dead_letter_gauge()
        await sender.refresh_backoff_gauge()
        await sender._destination_changed(self.destination)

    async def _delivered(
        self, txn: OutboundTransaction, response: Any, log_prefix: str
    ) -> None:
        sender = self.sender
        metrics = sender.metrics
        now = sender.clock.time_ms()
        rejected = _pdu_errors(log_prefix, txn, response)
        n = await self.dead.complete_transaction(
            self.origin, self.destination, txn.txn_id, rejected, now
        )
        state = await self.store.get_destination(self.destination)
        was_failing = state is not None and (
            state.failure_count > 0 or state.next_retry_ts is not None)
        if state is None or was_failing:
            await self.store.record_success(self.destination, now)
        if was_failing:
            await sender.refresh_backoff_gauge()
            await sender._destination_changed(self.destination)
        sender.sent_transactions += 1
        sender.sent_pdus += len(txn.pdus)
        metrics.transactions_sent.inc()
        metrics.pdus_sent.inc(len(txn.pdus))
        metrics.edus_sent.inc(len(txn.edus))
        for event_id, queued in txn.queued_ts.items():
            if event_id not in txn.missing_event_ids:
                metrics.delivery_latency.observe(max(0, now - queued) / 1000)
        if n:
            metrics.dead_lettered.labels(DeadLetterReason.PDU_REJECTED.value).inc(n)
            await sender.refresh_dead_letter_gauge()
        logger.debug("%s %s delivered", log_prefix, txn.txn_id)


def _pdu_errors(log_prefix: str, txn: OutboundTransaction, response: Any) -> dict[str, str]:
    """The peer took the transaction; the PDUs of it that the peer answered an
    error for (spec: the ``pdus`` map of the response) are its final decision."""
    pdus = response.get("pdus") if isinstance(response, dict) else None
    if not isinstance(pdus, dict):
        return {}
    out: dict[str, str] = {}
    for event_id, result in pdus.items():
        if isinstance(result, dict) and "error" in result and event_id in txn.queued_ts:
            out[event_id] = str(result["error"])
            logger.info("%s %s: peer refused %s: %s", log_prefix, txn.txn_id, event_id,
                        result["error"])
    return out


class FederationSender:
    """The node's outbound federation queues.

    ``database_for(origin)`` gives the database a tenant's outbox lives in
    (its events' database). Attach every :class:`OutboxWriter` with
    :meth:`attach` so writes wake queues at once; :meth:`start` begins the
    sweep, :meth:`stop` ends every task.
    """

    def __init__(
        self,
        client: FederationClient,
        clock: Clock,
        database_for: Callable[[str], Awaitable[Database]],
        *,
        policy: BackoffPolicy | None = None,
        limits: DeliveryLimits | None = None,
        metrics: FederationMetrics | None = None,
        rng: random.Random | None = None,
        sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
    ) -> None:
        self.client = client
        self.clock = clock
        self.policy = policy or BackoffPolicy()
        self.limits = limits or DeliveryLimits()
        self.metrics = metrics or FederationMetrics.unregistered()
        #: Rows queued per (origin, destination), for the queue-depth gauge.
        self._depths: dict[tuple[str, str], int] = {}
        self.rng = rng or random.Random()
        self._database_for = database_for
        self._sweep_interval_s = sweep_interval_s
        self._stores: dict[int, OutboxStore] = {}
        self._origin_stores: dict[str, OutboxStore] = {}
        self._queues: dict[tuple[str, str], _Queue] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False
        self._change = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self.sent_transactions = 0
        self.sent_pdus = 0
        #: The trust domain (docs/usage/trust_domain.md): ``filter(origin,
        #: destinations) -> allowed``. EDUs (ephemeral) are not queued for the
        #: others; PDUs queued for them are dead-lettered ``untrusted`` unsent
        #: (the client's guard refuses them, see :func:`failure_reason`).
        self.destination_filter: Callable[[str, Collection[str]], set[str]] | None = None
        #: Called with a destination whose backoff may have begun, ended or
        #: moved: after a failed attempt that backs off, after a delivery that
        #: ends a run of failures, and when the peer is seen or reset (room
        #: discovery folds this into the peer's health at once). Awaited by
        #: the queue's task (or the request that saw the peer), so keep it
        #: short; an exception is logged, never raised.
        self.destination_listeners: list[Callable[[str], Awaitable[None]]] = []
        #: Whether ``origin`` may not send now (a suspended tenant): its
        #: queues stop without dead-lettering anything and start again on
        #: the next sweep once it answers False.
        self.origin_paused: Callable[[str], bool] = lambda origin: False

    def _store(self, db: Database) -> OutboxStore:
        store = self._stores.get(id(db))
        if store is None:
            store = self._stores[id(db)] = OutboxStore(db)
        return store

    def attach(self, writer: OutboxWriter) -> None:
        """Wake queues when ``writer`` queues events; sweep its database."""
        self._store(writer.store.database)
        writer.on_enqueued = self._on_enqueued

    def serve(self, db: Database) -> None:
        """Sweep ``db`` and wake queues for every :class:`OutboxWriter` over it
        that has no sender attached (the client API builds its own)."""
        self._store(db)
        register_waker(db, self._on_enqueued)

    def databases(self) -> list[Database]:
        """Every database whose outbox this sender serves."""
        return [s.database for s in self._stores.values()]

    def _on_enqueued(self, db: Database, origin: str, destinations: Collection[str]) -> None:
        if self._stopping:
            return
        store = self._store(db)
        self._origin_stores[origin] = store
        for d in destinations:
            self._set_depth(origin, d, self._depths.get((origin, d), 0) + 1)
            self._queue(store, origin, d).wake()

    # Gauges

    def _set_depth(self, origin: str, destination: str, depth: int) -> None:
        if depth:
            self._depths[(origin, destination)] = depth
        else:
            self._depths.pop((origin, destination), None)
        total = sum(n for (_, d), n in self._depths.items() if d == destination)
        self.metrics.queue_depth.labels(destination).set(total)

    async def _refresh_depth(self, store: OutboxStore, origin: str, destination: str) -> None:
        self._set_depth(origin, destination, await store.queue_depth(origin, destination))

    async def refresh_gauges(self) -> None:
        """Queue depths, destinations backing off and dead letters, from the databases."""
        depths: dict[tuple[str, str], int] = {}
        for store in list(self._stores.values()):
            for key, n in (await store.queue_depths()).items():
                depths[key] = depths.get(key, 0) + n
        for dest in {d for _, d in self._depths} | {d for _, d in depths}:
            self.metrics.queue_depth.labels(dest).set(
                sum(n for (_, d), n in depths.items() if d == dest)
            )
        self._depths = depths
        await self.refresh_backoff_gauge()
        await self.refresh_dead_letter_gauge()

    async def refresh_backoff_gauge(self) -> None:
        now = self.clock.time_ms()
        names: set[str] = set()
        for store in list(self._stores.values()):
            names.update(await store.backing_off(now))
        self.metrics.destinations_backing_off.set(len(names))

    async def refresh_dead_letter_gauge(self) -> None:
        counts = {r.value: 0 for r in DeadLetterReason}
        for store in list(self._stores.values()):
            for reason, n in (await DeadLetterStore(store.database).count_by("reason")).items():
                counts[reason] = counts.get(reason, 0) + n
        for reason, n in counts.items():
            self.metrics.dead_letters.labels(reason).set(n)

    def _queue(self, store: OutboxStore, origin: str, destination: str) -> _Queue:
        q = self._queues.get((origin, destination))
        if q is None or q.store is not store:
            q = self._queues[(origin, destination)] = _Queue(self, store, origin, destination)
        return q

    async def _store_for(self, origin: str) -> OutboxStore:
        store = self._origin_stores.get(origin)
        if store is None:
            store = self._origin_stores[origin] = self._store(await self._database_for(origin))
        return store

    async def wake(self, origin: str, destinations: Iterable[str]) -> None:
        """Look at these queues' outbox now (no-op for empty ones)."""
        if self._stopping:
            return
        store = await self._store_for(origin)
        for d in destinations:
            self._queue(store, origin, d).wake()

    async def send_edu(
        self, origin: str, destinations: Iterable[str], edu_type: str, content: dict[str, Any]
    ) -> None:
        """Queue an EDU (``m.typing``, ``m.receipt``...) from ``origin`` to each
        destination (ours and ``origin`` itself are skipped) and wake their queues."""
        dests = sorted({d for d in destinations if d and d != origin})
        if self.destination_filter is not None and dests:
            dests = sorted(self.destination_filter(origin, dests))
        if not dests:
            return
        store = await self._store_for(origin)
        async with store.database.transaction("federation_send_edu") as txn:
            await store.enqueue_edus_txn(
                txn, origin, [QueuedEdu(d, edu_type, content) for d in dests],
                self.clock.time_ms(),
            )
        await self.wake(origin, dests)

    async def send_edu_to_room(
        self, origin: str, room_id: str, edu_type: str, content: dict[str, Any]
    ) -> None:
        """:meth:`send_edu` to every server with a joined member in the room
        (as ``origin`` sees it): what ``m.typing`` and ``m.receipt`` need."""
        store = await self._store_for(origin)
        db = store.database
        events = EventStore(db, StateStore(db))
        servers = await joined_servers_txn(None, events, origin, room_id)
        await self.send_edu(origin, servers, edu_type, content)

    def notify_new_events(self, origin: str, events: Iterable[Any]) -> None:
        """Called by the client API after it committed events of ``origin``.

        Their outbox rows already woke the queues (through the waker this
        sender registered for the database); the first time an origin's
        database is seen here it is served and swept, so a tenant database
        opened after start-up is covered too.
        """
        if self._stopping or origin in self._origin_stores:
            return
        task = asyncio.ensure_future(self._serve_origin(origin))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _serve_origin(self, origin: str) -> None:
        try:
            db = await self._database_for(origin)
            self.serve(db)
            self._origin_stores[origin] = store = self._store(db)
            for o, destination in await store.pending_queues():
                if o == origin:
                    self._queue(store, o, destination).wake()
        except Exception:
            logger.exception("Could not serve the outbox of %s", origin)

    def backing_off_towards(self, destination: str) -> bool:
        """Whether a queue to ``destination`` is asleep in its backoff (so a
        request from it must wake the queue, however recently it was seen)."""
        return any(q.destination == destination and q.backoff_wake is not None
                   for q in self._queues.values())

    async def on_peer_seen(self, destination: str) -> None:
        """``destination`` just reached us: it is up, so retry it now."""
        backing_off = [q for q in self._queues.values()
                       if q.destination == destination and q.backoff_wake is not None]
        for store in list(self._stores.values()):
            await store.reset_backoff([destination])
        for q in backing_off:
            q.end_backoff()
        await self._destination_changed(destination)

    async def _destination_changed(self, destination: str) -> None:
        for listener in list(self.destination_listeners):
            try:
                await listener(destination)
            except asyncio.CancelledError:
                raise
            except StorageError as e:
                logger.warning("TX [%s] destination listener: %s", destination, e)
            except Exception:
                logger.exception("TX [%s] destination listener failed", destination)

    async def reset_destination(self, destination: str) -> None:
        """An operator's "retry now": end the backoff and wake every queue to it."""
        await self.on_peer_seen(destination)
        for store in list(self._stores.values()):
            for origin, d in await store.pending_queues():
                if d == destination:
                    self._queue(store, origin, d).wake()
        await self.refresh_backoff_gauge()

    async def start(self) -> None:
        """Wake every queue left with rows, then keep sweeping."""
        if self._sweeper is None:
            await self.sweep()
            self._sweeper = asyncio.ensure_future(self._sweep_loop())

    async def sweep(self) -> None:
        """Wake queues with rows but no task, and end the backoff sleep of
        queues whose persisted retry time was cleared or brought forward
        since they fell asleep (``homeserver federation destinations --reset``
        and ``dead-letters replay`` write the database only)."""
        for store in list(self._stores.values()):
            for origin, destination in await store.pending_queues():
                q = self._queue(store, origin, destination)
                if q.task is None:
                    q.wake()
        now = self.clock.time_ms()
        for q in list(self._queues.values()):
            until = q.sleep_until
            if q.backoff_wake is None or until is None:
                continue
            state = await q.store.get_destination(q.destination)
            retry = state.next_retry_ts if state is not None else None
            if retry is None or retry < until or retry <= now:
                # The queue re-reads the state when it wakes and sleeps again
                # if a (shorter) backoff still applies.
                q.end_backoff()
        await self.refresh_gauges()

    async def _sweep_loop(self) -> None:
        while not self._stopping:
            await self.clock.sleep(self._sweep_interval_s)
            try:
                await self.sweep()
            except StorageError as e:
                logger.warning("Outbox sweep failed: %s", e)

    async def stop(self) -> None:
        """End every task (their rows stay queued for the next start)."""
        self._stopping = True
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        tasks += list(self._background)
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def running_queues(self) -> int:
        """Queues with a task (busy or backing off): idle ones have none."""
        return sum(1 for q in self._queues.values() if q.task is not None)

    def _changed(self) -> None:
        self._change.set()

    async def wait_until_idle(self) -> None:
        """Until every queue is empty or backing off (for tests and shutdown)."""
        while any(q.busy for q in self._queues.values()):
            self._change.clear()
            await self._change.wait()
