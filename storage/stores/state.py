"""Room state as state groups: deltas over shared snapshots.

Spec: ``server-server-api.md`` "Room State Resolution" and "PDUs": every event
has a state before it and a state after it (the state before, plus the event
itself if it is an accepted state event). Most events share those states, and
consecutive states differ by one key, so a state is stored once, as a *state
group*: a delta (``(type, state_key) -> event_id``, or absent) over another
group, its *delta base*.

Choosing the delta base. A group evolves from a predecessor (``prev_group``)
and sits ``seq`` steps from a root. Its delta base is the ancestor at
``seq & (seq - 1)`` (the lowest set bit cleared), which is always on the
predecessor's base chain. Resolving any group therefore reads at most
``log2(seq) + 1`` groups, and a room whose state changes ``N`` times stores
about ``N * log2(N) / 2`` delta rows instead of a full copy per change. A group
whose delta would be as large as the state itself is stored as a full
snapshot (no base), which also ends every chain. See
docs/development/event_graph.md for the figures.

Caches. Committed groups never change, so resolved states and deltas are kept
in bounded LRU caches (bounded by the number of state entries held, not by
the number of groups, because one group of a large room holds 10,000 keys).
A group created by a transaction that has not committed must never enter a
cache (its ID could be reused after a rollback), so groups are remembered per
open transaction and only read through it.
"""

from __future__ import annotations

import json
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from federation.event_format import server_name_of
from storage.engines import Row

__all__ = [
    "Queryable",
    "ResolvedState",
    "StateGroupStats",
    "StateKey",
    "StateMap",
    "StateStore",
    "allocate_counter",
    "fetch_event_json",
    "in_list",
    "values_list",
]

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]

MEMBER_TYPE = "m.room.member"

# Placeholders per IN (...) list; well under both engines' parameter limits.
IN_LIST_CHUNK = 500


class Queryable(Protocol):
    """A Database or a Transaction: what read paths need."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...


class Writer(Queryable, Protocol):
    """A Transaction: what write paths need."""

    async def execute(self, sql: str, *args: Any) -> None: ...

    async def executemany(self, sql: str, args_seq: Iterable[Sequence[Any]]) -> None: ...

    async def lock(self, key: str) -> None: ...


async def fetch_event_json(
    conn: Queryable, tenant: str, event_ids: Iterable[str]
) -> dict[str, str]:
    """The stored JSON text of the stored events among ``event_ids`` (here,
    below :class:`~storage.stores.events.EventStore`, because keeping the
    current members reads their events too)."""
    ids = list(dict.fromkeys(event_ids))
    found: dict[str, str] = {}
    for part in chunks(ids):
        rows = await conn.fetch(
            f"SELECT event_id, json FROM events WHERE tenant = $1 AND event_id IN "
            f"({in_list(part, 2)})",
            tenant,
            *part,
        )
        for r in rows:
            eid, text = r.values()
            found[eid] = text
    return found


async def _memberships_of(
    conn: Queryable, tenant: str, event_ids: Sequence[str]
) -> dict[str, str | None]:
    """``content.membership`` of stored events (``None`` if not a string)."""
    out: dict[str, str | None] = {}
    for eid, text in (await fetch_event_json(conn, tenant, event_ids)).items():
        content = json.loads(text).get("content")
        m = content.get("membership") if isinstance(content, dict) else None
        out[eid] = m if isinstance(m, str) else None
    return out


def in_list(values: Sequence[Any], first: int) -> str:
    """``$first, $first+1, ...`` for ``IN (...)``: portable to both engines."""
    return ", ".join(f"${i}" for i in range(first, first + len(values)))


def values_list(values: Sequence[Any], first: int) -> str:
    """``($first), ($first+1), ...``: a ``VALUES`` table of one column
    (``column1`` on both engines) to join against.

    For a large ID list at the start of a recursive query: PostgreSQL plans a
    statement prepared again and again generically after five runs, and with
    stale statistics that plan tests every row of the table against all of an
    ``IN (...)`` list (500 comparisons a row: 0.2 s for the auth chain of a
    2,000-member room's state, against 5 ms); a join with ``VALUES`` is linear
    whatever the plan.
    """
    return ", ".join(f"(${i})" for i in range(first, first + len(values)))


def chunks(values: Sequence[Any], size: int = IN_LIST_CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


async def allocate_counter(txn: Writer, tenant: str, name: str, n: int) -> int:
    """Reserve ``n`` consecutive values of a per-tenant counter; returns the first.

    The UPDATE takes the counter row's lock, so concurrent transactions of one
    tenant allocate in turn (on PostgreSQL; SQLite has one writer anyway).
    """
    await txn.execute(
        "INSERT INTO event_graph_counters (tenant, name, value) VALUES ($1, $2, 0) "
        "ON CONFLICT (tenant, name) DO NOTHING",
        tenant,
        name,
    )
    rows = await txn.fetch(
        "UPDATE event_graph_counters SET value = value + $3 "
        "WHERE tenant = $1 AND name = $2 RETURNING value",
        tenant,
        name,
        n,
    )
    return int(rows[0][0]) - n + 1


@dataclass(frozen=True)
class ResolvedState:
    """A room state handed to the stores to persist.

    ``group`` names an existing group that holds exactly ``state`` (no new
    group is written). Otherwise a new group is written as a delta that
    evolved from ``predecessor`` (any group of the room, ideally the one
    closest to ``state``; ``None`` writes a full snapshot).
    """

    state: StateMap
    group: int | None = None
    predecessor: int | None = None


@dataclass(frozen=True)
class StateGroupStats:
    groups: int
    snapshots: int
    entries: int
    # Upper bound on the groups read to resolve any group of the room.
    chain_bound: int


@dataclass
class _Group:
    """One stored group: its delta base, position and delta."""

    id: int
    base: int | None
    seq: int
    prev: int | None
    delta: dict[StateKey, str | None]


class _LRU:
    """An LRU of values with a size each, bounded by the total size."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.size = 0
        self._items: OrderedDict[tuple[str, int], tuple[Any, int]] = OrderedDict()

    def get(self, key: tuple[str, int]) -> Any:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: tuple[str, int], value: Any, size: int) -> None:
        size = max(size, 1)
        if size > self.max_size:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= old[1]
        self._items[key] = (value, size)
        self.size += size
        while self.size > self.max_size:
            _, (_, evicted) = self._items.popitem(last=False)
            self.size -= evicted

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items


@dataclass
class GroupPlan:
    """Groups computed for one write, before their rows are inserted.

    Shared by the writes of one batch so later events can build on groups
    earlier events created; :meth:`StateStore.write_plan_txn` inserts the rows.
    """

    tenant: str
    room_ids: dict[int, str] = field(default_factory=dict)
    groups: dict[int, _Group] = field(default_factory=dict)
    # The full state of the most recent new group, kept to save a resolution
    # when the next event of the batch builds on it (the common, linear case).
    # The dict belongs to the plan (never a cached one), so the next event may
    # update it in place.
    last_full: tuple[int, dict[StateKey, str]] | None = None


class StateStore:
    """State groups of every room of every tenant; see the module docstring."""

    def __init__(self, db: Queryable, *, cache_max_entries: int = 200_000) -> None:
        self._db = db
        # Resolved full states and raw deltas of committed groups.
        self._full_cache = _LRU(cache_max_entries)
        self._delta_cache = _LRU(cache_max_entries)
        # Groups written by transactions that may not have committed yet.
        self._uncommitted: weakref.WeakKeyDictionary[Any, set[tuple[str, int]]] = (
            weakref.WeakKeyDictionary()
        )

    # Reading

    def _conn(self, txn: Queryable | None) -> Queryable:
        return self._db if txn is None else txn

    async def get_state_group(
        self, tenant: str, group: int | None, *, txn: Queryable | None = None
    ) -> StateMap:
        """The full state of ``group`` (``None``: the empty state).

        The mapping returned may be shared with the cache: never mutate it.
        """
        if group is None:
            return {}
        return await self._resolve(self._conn(txn), tenant, group, None)

    async def get_state_groups(
        self, tenant: str, groups: Iterable[int], *, txn: Queryable | None = None
    ) -> dict[int, StateMap]:
        conn = self._conn(txn)
        return {g: await self._resolve(conn, tenant, g, None) for g in set(groups)}

    async def get_current_state_group(
        self, tenant: str, room_id: str, *, txn: Queryable | None = None
    ) -> int | None:
        rows = await self._conn(txn).fetch(
            "SELECT state_group FROM room_current_state WHERE tenant = $1 AND room_id = $2",
            tenant,
            room_id,
        )
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def get_current_state(
        self, tenant: str, room_id: str, *, txn: Queryable | None = None
    ) -> StateMap:
        """The room's current state (empty if the tenant knows no state of it)."""
        group = await self.get_current_state_group(tenant, room_id, txn=txn)
        return await self.get_state_group(tenant, group, txn=txn)

    async def get_room_version_id(
        self, tenant: str, room_id: str, *, txn: Queryable | None = None
    ) -> str | None:
        """The room version recorded with the room's current state, if any."""
        rows = await self._conn(txn).fetch(
            "SELECT room_version FROM room_current_state WHERE tenant = $1 AND room_id = $2",
            tenant,
            room_id,
        )
        return str(rows[0][0]) if rows else None

    async def stats(
        self, tenant: str, room_id: str, *, txn: Queryable | None = None
    ) -> StateGroupStats:
        """Row counts of a room's state groups, for reports and benchmarks."""
        conn = self._conn(txn)
        rows = await conn.fetch(
            "SELECT COUNT(*), SUM(CASE WHEN delta_base IS NULL THEN 1 ELSE 0 END) "
            "FROM state_groups WHERE tenant = $1 AND room_id = $2",
            tenant,
            room_id,
        )
        groups, snapshots = int(rows[0][0]), int(rows[0][1] or 0)
        rows = await conn.fetch(
            "SELECT COUNT(*) FROM state_group_entries e JOIN state_groups g "
            "ON g.tenant = e.tenant AND g.id = e.state_group "
            "WHERE g.tenant = $1 AND g.room_id = $2",
            tenant,
            room_id,
        )
        entries = int(rows[0][0])
        rows = await conn.fetch(
            "SELECT MAX(seq) FROM state_groups WHERE tenant = $1 AND room_id = $2",
            tenant,
            room_id,
        )
        max_seq = int(rows[0][0] or 0)
        return StateGroupStats(groups, snapshots, entries, max_seq.bit_length() + 1)

    # Writing

    def new_plan(self, tenant: str) -> GroupPlan:
        return GroupPlan(tenant)

    async def plan_group(
        self,
        conn: Queryable,
        plan: GroupPlan,
        group_id: int,
        room_id: str,
        state: Mapping[StateKey, str],
        *,
        predecessor: int | None,
        changed: Iterable[StateKey] | None = None,
    ) -> None:
        """Add a new group holding ``state`` to ``plan``, with ID ``group_id``.

        ``changed`` lists the keys in which ``state`` differs from the
        predecessor's state, when the caller knows them (one event's key);
        otherwise they are found by comparing the two states.
        """
        tenant = plan.tenant
        if predecessor is None:
            plan.groups[group_id] = _Group(group_id, None, 0, None, dict(state))
            plan.room_ids[group_id] = room_id
            return
        if changed is None:
            before = await self._resolve(conn, tenant, predecessor, plan)
            changed = {k for k in before.keys() | state.keys() if before.get(k) != state.get(k)}
        chain = await self._chain(conn, tenant, predecessor, plan)
        seq = chain[0].seq + 1
        target = seq & (seq - 1)
        keys: set[StateKey] = set(changed)
        base: _Group = chain[0]
        for g in chain:
            if g.seq < target:
                break
            base = g
        for g in chain:
            if g is base:
                break
            keys.update(g.delta)
        delta: dict[StateKey, str | None] = {k: state.get(k) for k in keys}
        if len(delta) >= len(state):
            group = _Group(group_id, None, seq, predecessor, dict(state))
        else:
            group = _Group(group_id, base.id, seq, predecessor, delta)
        plan.groups[group_id] = group
        plan.room_ids[group_id] = room_id

    async def get_plan_state(
        self, conn: Queryable, plan: GroupPlan, group: int | None
    ) -> StateMap:
        """The full state of ``group``, which may be a group of ``plan`` not yet written."""
        if group is None:
            return {}
        return await self._resolve(conn, plan.tenant, group, plan)

    async def write_plan_txn(self, txn: Writer, plan: GroupPlan) -> None:
        """Insert the rows of every group in ``plan`` (batched)."""
        if not plan.groups:
            return
        tenant = plan.tenant
        await txn.executemany(
            "INSERT INTO state_groups (tenant, id, room_id, prev_group, delta_base, seq) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (tenant, g.id, plan.room_ids[g.id], g.prev, g.base, g.seq)
                for g in plan.groups.values()
            ],
        )
        await txn.executemany(
            "INSERT INTO state_group_entries (tenant, state_group, type, state_key, event_id) "
            "VALUES ($1, $2, $3, $4, $5)",
            [
                (tenant, g.id, k[0], k[1], v)
                for g in plan.groups.values()
                for k, v in g.delta.items()
            ],
        )
        pending = self._uncommitted.setdefault(txn, set())
        pending.update((tenant, gid) for gid in plan.groups)

    async def store_state_txn(
        self, txn: Writer, tenant: str, room_id: str, state: ResolvedState
    ) -> int | None:
        """The group holding ``state``, writing a new one unless ``state.group`` is set.

        Returns ``None`` for an empty state with no group.
        """
        if state.group is not None:
            return state.group
        if not state.state and state.predecessor is None:
            return None
        group_id = await allocate_counter(txn, tenant, "state_group", 1)
        plan = self.new_plan(tenant)
        await self.plan_group(
            txn, plan, group_id, room_id, state.state, predecessor=state.predecessor
        )
        await self.write_plan_txn(txn, plan)
        return group_id

    async def set_current_state_group_txn(
        self,
        txn: Writer,
        tenant: str,
        room_id: str,
        room_version: str,
        group: int | None,
        *,
        state: StateMap | None = None,
    ) -> None:
        """Make ``group`` the room's current state, and its member entries
        the room's rows in ``room_current_members``.

        ``state``, when the caller has it at hand, is the full state of
        ``group`` (saves resolving it again). The caller holds the tenant's
        ``event_graph`` lock, as for any read-modify-write of the room's
        state: the members are updated by the difference between the old and
        the new current state.
        """
        rows = await txn.fetch(
            "SELECT state_group FROM room_current_state WHERE tenant = $1 AND room_id = $2",
            tenant,
            room_id,
        )
        old = None if not rows or rows[0][0] is None else int(rows[0][0])
        if rows and old == group:
            return
        await txn.execute(
            "INSERT INTO room_current_state (tenant, room_id, room_version, state_group) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, room_id) "
            "DO UPDATE SET state_group = excluded.state_group",
            tenant,
            room_id,
            room_version,
            group,
        )
        old_state = await self.get_state_group(tenant, old, txn=txn)
        if state is None:
            state = await self.get_state_group(tenant, group, txn=txn)
        await self._update_current_members_txn(txn, tenant, room_id, old_state, state)

    async def _update_current_members_txn(
        self, txn: Writer, tenant: str, room_id: str, old: StateMap, new: StateMap
    ) -> None:
        changed = {
            key[1]: eid
            for key, eid in new.items()
            if key[0] == MEMBER_TYPE and old.get(key) != eid
        }
        removed = [key[1] for key in old if key[0] == MEMBER_TYPE and key not in new]
        if removed:
            await txn.executemany(
                "DELETE FROM room_current_members WHERE tenant = $1 AND room_id = $2 "
                "AND user_id = $3",
                [(tenant, room_id, user) for user in removed],
            )
        if not changed:
            return
        memberships = await _memberships_of(txn, tenant, list(changed.values()))
        await txn.executemany(
            "INSERT INTO room_current_members (tenant, room_id, user_id, server, membership, "
            "event_id) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, room_id, user_id) "
            "DO UPDATE SET server = excluded.server, membership = excluded.membership, "
            "event_id = excluded.event_id",
            [
                (tenant, room_id, user, server_name_of(user), memberships.get(eid), eid)
                for user, eid in changed.items()
            ],
        )

    # The current members (room_current_members)

    async def get_joined_servers(
        self, tenant: str, room_id: str, *, txn: Queryable | None = None
    ) -> list[str]:
        """Servers with a joined member in the room's current state, sorted."""
        rows = await self._conn(txn).fetch(
            "SELECT DISTINCT server FROM room_current_members WHERE tenant = $1 "
            "AND room_id = $2 AND membership = 'join' ORDER BY server",
            tenant,
            room_id,
        )
        return [str(r[0]) for r in rows]

    async def count_joined_members(
        self, tenant: str, room_id: str, *, txn: Queryable | None = None
    ) -> int:
        """How many users are joined in the room's current state."""
        rows = await self._conn(txn).fetch(
            "SELECT COUNT(*) FROM room_current_members WHERE tenant = $1 AND room_id = $2 "
            "AND membership = 'join'",
            tenant,
            room_id,
        )
        return int(rows[0][0]) if rows else 0

    async def is_server_joined(
        self, tenant: str, room_id: str, server: str, *, txn: Queryable | None = None
    ) -> bool:
        """Whether ``server`` has a joined member in the room's current state."""
        rows = await self._conn(txn).fetch(
            "SELECT 1 FROM room_current_members WHERE tenant = $1 AND room_id = $2 "
            "AND membership = 'join' AND server = $3 LIMIT 1",
            tenant,
            room_id,
            server,
        )
        return bool(rows)

    async def get_joined_users(
        self,
        tenant: str,
        room_id: str,
        *,
        server: str | None = None,
        txn: Queryable | None = None,
    ) -> list[str]:
        """Users joined in the room's current state (of ``server`` only, if
        given), sorted."""
        sql = (
            "SELECT user_id FROM room_current_members WHERE tenant = $1 AND room_id = $2 "
            "AND membership = 'join'"
        )
        args: list[Any] = [tenant, room_id]
        if server is not None:
            sql += " AND server = $3"
            args.append(server)
        rows = await self._conn(txn).fetch(sql + " ORDER BY user_id", *args)
        return [str(r[0]) for r in rows]

    async def get_current_membership(
        self, tenant: str, room_id: str, user_id: str, *, txn: Queryable | None = None
    ) -> str | None:
        """``user_id``'s membership in the room's current state (``None``: none)."""
        rows = await self._conn(txn).fetch(
            "SELECT membership FROM room_current_members WHERE tenant = $1 AND room_id = $2 "
            "AND user_id = $3",
            tenant,
            room_id,
            user_id,
        )
        return None if not rows or rows[0][0] is None else str(rows[0][0])

    # Resolution

    def _cacheable(self, conn: Queryable, tenant: str, group: int) -> bool:
        try:
            pending = self._uncommitted.get(conn)
        except TypeError:
            return False
        return pending is None or (tenant, group) not in pending

    async def _chain(
        self, conn: Queryable, tenant: str, group: int, plan: GroupPlan | None
    ) -> list[_Group]:
        """``group`` and its delta bases down to a snapshot, nearest first."""
        chain: list[_Group] = []
        gid: int | None = group
        while gid is not None:
            g = self._known(tenant, gid, plan)
            if g is None:
                chain.extend((await self._load_chain(conn, tenant, gid))[0])
                break
            chain.append(g)
            gid = g.base
        return chain

    def _known(self, tenant: str, gid: int, plan: GroupPlan | None) -> _Group | None:
        if plan is not None and gid in plan.groups:
            return plan.groups[gid]
        cached: _Group | None = self._delta_cache.get((tenant, gid))
        return cached

    async def _load_chain(
        self, conn: Queryable, tenant: str, group: int, *, stop_at_cached_state: bool = False
    ) -> tuple[list[_Group], StateMap | None]:
        """Read ``group``'s chain (one recursive query) and the deltas of its groups.

        With ``stop_at_cached_state``, the chain ends at the first group whose
        full state is cached, and deeper deltas are not read; that state is
        returned with the chain (which then ends above it).
        """
        rows = await conn.fetch(
            "WITH RECURSIVE chain(id, delta_base, seq, prev_group) AS ("
            " SELECT id, delta_base, seq, prev_group FROM state_groups"
            " WHERE tenant = $1 AND id = $2"
            " UNION ALL"
            " SELECT g.id, g.delta_base, g.seq, g.prev_group FROM state_groups g"
            " JOIN chain c ON g.id = c.delta_base WHERE g.tenant = $1"
            ") SELECT id, delta_base, seq, prev_group FROM chain",
            tenant,
            group,
        )
        if not rows:
            raise KeyError(f"no state group {group} for tenant {tenant}")
        groups = {
            int(r[0]): _Group(
                int(r[0]),
                None if r[1] is None else int(r[1]),
                int(r[2]),
                None if r[3] is None else int(r[3]),
                {},
            )
            for r in rows
        }
        ordered = sorted(groups.values(), key=lambda g: -g.seq)
        start: StateMap | None = None
        if stop_at_cached_state:
            for n, g in enumerate(ordered):
                start = self._full_cache.get((tenant, g.id))
                if start is not None:
                    ordered = ordered[:n]
                    break
        ids = [g.id for g in ordered]
        for part in chunks(ids):
            entries = await conn.fetch(
                "SELECT state_group, type, state_key, event_id FROM state_group_entries "
                f"WHERE tenant = $1 AND state_group IN ({in_list(part, 2)})",
                tenant,
                *part,
            )
            for e in entries:
                groups[int(e[0])].delta[(str(e[1]), str(e[2]))] = e[3]
        chain = ordered
        for g in chain:
            if self._cacheable(conn, tenant, g.id):
                self._delta_cache.put((tenant, g.id), g, len(g.delta))
        return chain, start

    async def _resolve(
        self, conn: Queryable, tenant: str, group: int, plan: GroupPlan | None
    ) -> StateMap:
        if plan is not None and plan.last_full is not None and plan.last_full[0] == group:
            return plan.last_full[1]
        cached: StateMap | None = self._full_cache.get((tenant, group))
        if cached is not None:
            return cached
        # Walk down until a group whose full state is cached (or a snapshot),
        # then apply the deltas above it.
        pending: list[_Group] = []
        gid: int | None = group
        start: StateMap = {}
        while gid is not None:
            hit: StateMap | None = self._full_cache.get((tenant, gid))
            if hit is not None:
                start = hit
                break
            g = self._known(tenant, gid, plan)
            if g is None:
                loaded, hit = await self._load_chain(
                    conn, tenant, gid, stop_at_cached_state=True
                )
                pending.extend(loaded)
                if hit is not None:
                    start = hit
                break
            pending.append(g)
            gid = g.base
        state: dict[StateKey, str] = dict(start)
        for n, g in enumerate(reversed(pending)):
            if n == len(pending) - 1 and n > 0 and plan is None:
                # Also keep the delta base's state: its other descendants
                # (every group up to the base's next power of two) start there.
                base = pending[1]
                if self._cacheable(conn, tenant, base.id):
                    self._full_cache.put((tenant, base.id), dict(state), len(state))
            for k, v in g.delta.items():
                if v is None:
                    state.pop(k, None)
                else:
                    state[k] = v
        in_plan = plan is not None and group in plan.groups
        if not in_plan and self._cacheable(conn, tenant, group):
            self._full_cache.put((tenant, group), state, len(state))
        return state
