"""The graph parts of state resolution v2: conflicts, auth chains, subgraphs, sorting.

Spec: ``rooms/fragments/v2-state-res.md`` "Definitions" (unconflicted state
map and conflicted state set, auth chain, auth difference, reverse topological
power ordering) and ``rooms/v12.md`` "State resolution" (the conflicted state
subgraph, added in v12).

The auth graph is the DAG whose edges are each event's ``auth_events``. Walks
here fetch from the store one frontier at a time (a batched BFS), so a store
backed by a database answers a few large queries instead of one per event.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, TypeAlias

from federation.state_res._loop import Ticker
from federation.state_res.errors import StateResolutionError
from federation.state_res.store import EventCache

StateKey: TypeAlias = tuple[str, str]
StateMap: TypeAlias = Mapping[StateKey, str]


def separate(
    state_sets: Sequence[StateMap],
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split the state sets into the unconflicted state map and the conflicted state.

    Spec, "Unconflicted state map and conflicted state set": a key is
    unconflicted only if it is present in *every* set with the same value; a
    key missing from some set is conflicted (its present values are the
    conflicted events).
    """
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    keys: set[StateKey] = set()
    for s in state_sets:
        keys.update(s)
    for key in keys:
        values = {s.get(key) for s in state_sets}
        if len(values) == 1:
            (only,) = values
            assert only is not None  # the key came from some set
            unconflicted[key] = only
        else:
            conflicted[key] = {v for v in values if v is not None}
    return unconflicted, conflicted


async def load_auth_closure(cache: EventCache, roots: Iterable[str], ticker: Ticker) -> None:
    """Fetch ``roots`` and everything in their auth chains into ``cache``.

    A batched breadth-first walk: one store call per layer of the auth DAG.
    Unknown events are skipped (their own auth chain cannot be followed).
    """
    seen: set[str] = set(roots)
    frontier = set(seen)
    while frontier:
        await cache.fetch(frontier)
        nxt: set[str] = set()
        for eid in frontier:
            ev = cache.get(eid)
            if ev is None:
                continue
            for aid in ev.auth_event_ids:
                if aid not in seen:
                    seen.add(aid)
                    nxt.add(aid)
            await ticker.tick()
        frontier = nxt


def closure(
    cache: EventCache, starts: Iterable[str], stop: AbstractSet[str] = frozenset()
) -> set[str]:
    """``starts`` and every event reachable from them by ``auth_events`` edges.

    Walks only events already in ``cache``. Events in ``stop`` are neither
    included nor walked through: callers pass a set that is already closed
    under the auth relation, so nothing beyond it is missed.
    """
    out: set[str] = set()
    stack = [eid for eid in starts if eid not in stop]
    while stack:
        eid = stack.pop()
        if eid in out:
            continue
        out.add(eid)
        ev = cache.get(eid)
        if ev is None:
            continue
        for aid in ev.auth_event_ids:
            if aid not in out and aid not in stop:
                stack.append(aid)
    return out


async def auth_chain_difference(
    cache: EventCache,
    state_sets: Sequence[AbstractSet[str]],
    ticker: Ticker,
) -> set[str]:
    """The auth difference: ∪ Cᵢ − ∩ Cᵢ over the full auth chains Cᵢ of the sets.

    Spec, "Auth difference". The chain of a set is taken to include the set's
    own events, as Synapse computes it (its ``get_auth_chain_difference``), so
    that Concord and Synapse agree on the full conflicted set; the difference
    this makes is only for events every set contains, which that reading keeps
    out of the auth difference.

    Events in every set are in every chain, and so is their whole closure: it
    is walked once and the per-set walks stop at it.
    """
    if not state_sets:
        return set()
    everywhere = set(state_sets[0]).intersection(*state_sets[1:])
    await load_auth_closure(cache, set().union(*state_sets), ticker)
    common = closure(cache, everywhere)
    chains = [closure(cache, set(s) - everywhere, stop=common) for s in state_sets]
    union: set[str] = set().union(*chains)
    inter: set[str] = set(chains[0]).intersection(*chains[1:])
    return union - inter


async def conflicted_subgraph(
    cache: EventCache, conflicted: AbstractSet[str], ticker: Ticker
) -> set[str]:
    """Events on ``auth_events`` paths between conflicted events, endpoints included.

    Spec, ``rooms/v12.md`` "Conflicted state subgraph". An event is on such a
    path iff it is reachable from a conflicted event (it is in their auth
    closure) and some conflicted event is reachable from it. The second half is
    found by walking the closure's edges backwards from the conflicted events;
    every event on a path lies inside the closure, so that walk is exact.
    """
    await load_auth_closure(cache, conflicted, ticker)
    below = closure(cache, conflicted)
    cited_by: dict[str, list[str]] = {}
    for eid in below:
        ev = cache.get(eid)
        if ev is None:
            continue
        for aid in ev.auth_event_ids:
            cited_by.setdefault(aid, []).append(eid)
    out: set[str] = set()
    stack = [eid for eid in conflicted if eid in below]
    while stack:
        eid = stack.pop()
        if eid in out:
            continue
        out.add(eid)
        stack.extend(p for p in cited_by.get(eid, ()) if p not in out)
    return out


def lexicographical_topological_sort(
    graph: Mapping[str, AbstractSet[str]], key: Callable[[str], Any]
) -> list[str]:
    """Kahn's algorithm, earliest first, choosing the smallest ``key`` among candidates.

    Spec, "Reverse topological power ordering". ``graph`` maps each node to the
    nodes it points at (its auth events, restricted to the graph); a node is a
    candidate once everything it points at has been output. ``key`` must be a
    total order (the spec's ends in the event ID), which makes the result
    independent of how ``graph`` happens to be ordered.
    """
    outdegree = {node: len(edges) for node, edges in graph.items()}
    pointed_by: dict[str, list[str]] = {node: [] for node in graph}
    for node, edges in graph.items():
        for target in edges:
            pointed_by[target].append(node)
    heap = [(key(node), node) for node, n in outdegree.items() if n == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        _, node = heapq.heappop(heap)
        out.append(node)
        for parent in pointed_by[node]:
            outdegree[parent] -= 1
            if outdegree[parent] == 0:
                heapq.heappush(heap, (key(parent), parent))
    if len(out) != len(graph):
        raise StateResolutionError("the auth graph has a cycle")
    return out
