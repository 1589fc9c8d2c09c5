"""Has a room converged? Snapshots of each server's view, and a readable diff.

A server's view of a room is read through its Client-Server API by a user
joined there: every event it shows (``GET /rooms/{id}/messages``, paged to
the start) and the current state (``GET /rooms/{id}/state``). This works the
same for in-process nodes, subprocess nodes and external servers (Synapse),
and it is what users see. Events a server rejected or soft-failed are not in
its timeline, so two servers that agree on what was accepted compare equal.

Converged means: every server shows the same set of event IDs and maps every
current-state key ``(type, state_key)`` to the same event ID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConvergenceError", "RoomSnapshot", "diff_snapshots", "snapshot"]

#: How many missing events to list per server before summarising.
MAX_LISTED = 10


class ConvergenceError(AssertionError):
    """The room did not converge in time; the message is the last diff."""

    def __init__(self, message: str, snapshots: Sequence[RoomSnapshot]) -> None:
        super().__init__(message)
        self.snapshots = list(snapshots)


@dataclass
class RoomSnapshot:
    """One server's view of one room."""

    server: str
    #: event ID → the event as the server shows it.
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``(type, state_key)`` → event ID of the current state.
    state: dict[tuple[str, str], str] = field(default_factory=dict)
    #: Why the view could not be read (the server is down, the user is not joined...).
    error: str | None = None
    #: Event IDs in timeline order, oldest first.
    order: list[str] = field(default_factory=list)
    #: Event IDs the timeline showed more than once (always a bug).
    duplicates: list[str] = field(default_factory=list)


async def snapshot(server: str, client: Any, room_id: str) -> RoomSnapshot:
    """Read ``server``'s view of ``room_id`` through ``client`` (a
    :class:`~concord_harness.client.Client` joined to the room)."""
    snap = RoomSnapshot(server)
    try:
        for ev in await client.all_events(room_id):
            if ev["event_id"] in snap.events:
                snap.duplicates.append(ev["event_id"])
            else:
                snap.order.append(ev["event_id"])
            snap.events[ev["event_id"]] = ev
        for ev in await client.get_state(room_id):
            snap.state[(ev["type"], ev["state_key"])] = ev["event_id"]
    except Exception as e:  # any failure is part of the diff, not a crash
        snap.error = f"{type(e).__name__}: {e}"
    return snap


def _describe(ev: dict[str, Any] | None) -> str:
    if ev is None:
        return ""
    what = ev.get("type", "?")
    if "state_key" in ev:
        what += f"[{ev['state_key']!r}]"
    elif isinstance(ev.get("content"), dict) and isinstance(ev["content"].get("body"), str):
        body = ev["content"]["body"]
        what += f" {body[:30]!r}"
    return f" ({what} from {ev.get('sender', '?')})"


def _before_horizon(s: RoomSnapshot, others: Sequence[RoomSnapshot]) -> set[str]:
    """Events older than the first event ``s`` shows, as ordered by servers that
    show that event too: history from before ``s`` joined, which a server
    that joined later legitimately lacks (it has the state, not the timeline)."""
    if not s.order:
        return set()
    first = s.order[0]
    older: set[str] = set()
    for o in others:
        if first in o.events:
            older.update(o.order[: o.order.index(first)])
    return older


def diff_snapshots(
    room_id: str, snapshots: Sequence[RoomSnapshot], *, history: str = "from_join"
) -> str | None:
    """``None`` if every snapshot agrees; else a report naming, per server, the
    events it lacks, each state key whose value differs, and duplicates.

    ``history="from_join"`` (default) compares each server's timeline from the
    first event it shows onwards (a server that joined later has the room's
    state but not necessarily its earlier timeline, unless it backfills);
    ``history="full"`` requires every server to show every event.
    """
    if history not in ("from_join", "full"):
        raise ValueError(f"history must be 'from_join' or 'full', got {history!r}")
    if not snapshots:
        return f"room {room_id}: no server to compare (no harness user is joined anywhere)"
    lines: list[str] = []
    for s in snapshots:
        if s.error is not None:
            lines.append(f"  {s.server}: cannot read the room: {s.error}")
    ok = [s for s in snapshots if s.error is None]
    all_events: dict[str, dict[str, Any]] = {}
    for s in ok:
        all_events.update(s.events)
    for s in ok:
        if s.duplicates:
            lines.append(
                f"  {s.server} shows {len(s.duplicates)} event(s) twice: "
                + ", ".join(s.duplicates[:MAX_LISTED])
            )
        skip = _before_horizon(s, ok) if history == "from_join" else set()
        missing = [e for e in all_events if e not in s.events and e not in skip]
        if missing:
            listed = ", ".join(f"{e}{_describe(all_events[e])}" for e in missing[:MAX_LISTED])
            more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
            lines.append(
                f"  {s.server} has {len(s.events)}/{len(all_events)} events; "
                f"lacks {len(missing)}: {listed}{more}"
            )
    keys = sorted({k for s in ok for k in s.state})
    state_lines = []
    for key in keys:
        values = {s.server: s.state.get(key) for s in ok}
        if len(set(values.values())) > 1:
            shown = ", ".join(
                f"{server} → {eid or 'absent'}{_describe(all_events.get(eid or ''))}"
                for server, eid in values.items()
            )
            state_lines.append(f"    ({key[0]}, {key[1]!r}): {shown}")
    if state_lines:
        lines.append(f"  current state differs on {len(state_lines)} key(s):")
        lines.extend(state_lines)
    if not lines:
        return None
    servers = ", ".join(s.server for s in snapshots)
    return f"room {room_id} differs between {servers}:\n" + "\n".join(lines)
