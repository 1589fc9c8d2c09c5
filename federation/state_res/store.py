"""What state resolution needs from storage, and a dict-backed fake.

State resolution only reads events. :class:`StateResolutionStore` is the one
method it needs; :class:`AuthChainDifferenceStore` is an optional faster path
that storage can provide (e.g. from a chain-cover index) instead of the
in-memory walk done in :mod:`federation.state_res.graph`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Protocol, runtime_checkable

from federation.events import Event


class StateResolutionStore(Protocol):
    """The events state resolution reads.

    ``get_events`` returns the known events among ``event_ids``, keyed by event
    ID, and simply omits unknown ones. Rejected events must be returned too
    (with ``rejected_reason`` set): the algorithm decides how to treat them.
    """

    async def get_events(self, event_ids: Iterable[str]) -> Mapping[str, Event]: ...


@runtime_checkable
class AuthChainDifferenceStore(Protocol):
    """Optional: a store that computes the auth difference itself.

    ``state_sets`` are the event IDs of each state set. The auth chain of a
    state set is taken to include the set's own events (as Synapse does, see
    :func:`federation.state_res.graph.auth_chain_difference`); the answer is
    the union of those chains minus their intersection.
    """

    async def get_auth_chain_difference(
        self, state_sets: Sequence[AbstractSet[str]]
    ) -> set[str]: ...


class InMemoryStateResStore:
    """A :class:`StateResolutionStore` over a plain mapping of events.

    For tests, benchmarks and callers that already hold every event in memory.
    """

    __slots__ = ("_events",)

    def __init__(self, events: Mapping[str, Event] | Iterable[Event] = ()) -> None:
        if isinstance(events, Mapping):
            self._events: dict[str, Event] = dict(events)
        else:
            self._events = {ev.event_id: ev for ev in events}

    def add(self, event: Event) -> None:
        self._events[event.event_id] = event

    async def get_events(self, event_ids: Iterable[str]) -> Mapping[str, Event]:
        events = self._events
        return {eid: events[eid] for eid in event_ids if eid in events}


class EventCache:
    """Events fetched so far during one resolution, fetched in batches.

    Remembers misses too, so an unknown auth event is asked for only once.
    """

    __slots__ = ("_store", "_events", "_missing")

    def __init__(self, store: StateResolutionStore) -> None:
        self._store = store
        self._events: dict[str, Event] = {}
        self._missing: set[str] = set()

    async def fetch(self, event_ids: Iterable[str]) -> None:
        want = {eid for eid in event_ids if eid not in self._events and eid not in self._missing}
        if not want:
            return
        # Sorted so the store sees the same request whatever order we hold
        # the IDs in; the answer is read by key, never by iteration order.
        got = await self._store.get_events(sorted(want))
        for eid in want:
            ev = got.get(eid)
            if ev is None:
                self._missing.add(eid)
            else:
                self._events[eid] = ev

    def get(self, event_id: str) -> Event | None:
        return self._events.get(event_id)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._events
