"""Benchmark: state resolution of two forks in a 10,000-member room.

Run: ``.venv/bin/python bench/state_res.py [--members N] [--conflicted N] [--runs N]``

Builds a synthetic room in memory (create, power levels, join rules, the
creator, then N members joining) and two forks off it that each change the
same keys: member profile updates, plus a few kicks on one side (power
events). With the defaults that is 1,000 conflicted events over 500 keys and
10,004 unconflicted state entries. Resolves with the in-memory store and
prints the time per resolution for room versions 11 (v2) and 12 (v2.1).

The second figure of the "Rooms" issue, the state at a new event in a
10,000-member room, is measured on real storage by ``bench/state_at_new_event.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from federation.events import Event
from federation.room_versions import ROOM_V11, ROOM_V12, RoomVersion
from federation.state_res import InMemoryStateResStore, resolve_state

CREATOR = "@creator:example.com"
KICKS = 10


class Room:
    def __init__(self, rv: RoomVersion) -> None:
        self.rv = rv
        self.room_id = "!CREATE" if rv.room_id_from_create_event else "!bench:example.com"
        self.events: dict[str, Event] = {}
        self.ts = 0

    def add(
        self,
        eid: str,
        type: str,
        sender: str,
        state_key: str,
        content: dict[str, Any],
        auth: list[str],
    ) -> str:
        if self.rv.room_id_from_create_event:
            auth = [a for a in auth if a != "$CREATE"]
        pdu: dict[str, Any] = {
            "type": type,
            "sender": sender,
            "state_key": state_key,
            "content": content,
            "auth_events": auth,
            "prev_events": [],
            "origin_server_ts": self.ts,
            "depth": self.ts,
        }
        if not (self.rv.room_id_from_create_event and type == "m.room.create"):
            pdu["room_id"] = self.room_id
        self.ts += 1
        self.events[eid] = Event(pdu, eid, self.rv)
        return eid


def build(
    rv: RoomVersion, members: int, conflicted_keys: int
) -> tuple[list[dict[tuple[str, str], str]], dict[str, Event]]:
    room = Room(rv)
    base: dict[tuple[str, str], str] = {}
    base[("m.room.create", "")] = room.add(
        "$CREATE", "m.room.create", CREATOR, "", {"room_version": rv.identifier}, []
    )
    base[("m.room.member", CREATOR)] = room.add(
        "$J-creator", "m.room.member", CREATOR, CREATOR, {"membership": "join"}, ["$CREATE"]
    )
    users = {} if rv.privileged_room_creators else {CREATOR: 100}
    base[("m.room.power_levels", "")] = room.add(
        "$PL", "m.room.power_levels", CREATOR, "", {"users": users}, ["$CREATE", "$J-creator"]
    )
    base[("m.room.join_rules", "")] = room.add(
        "$JR", "m.room.join_rules", CREATOR, "", {"join_rule": "public"},
        ["$CREATE", "$PL", "$J-creator"],
    )  # fmt: skip
    user_ids = [f"@user{i:05d}:example.com" for i in range(members)]
    for u in user_ids:
        base[("m.room.member", u)] = room.add(
            f"$J-{u}", "m.room.member", u, u, {"membership": "join"}, ["$CREATE", "$PL", "$JR"]
        )

    fork_a, fork_b = dict(base), dict(base)
    for i, u in enumerate(user_ids[:conflicted_keys]):
        own = f"$J-{u}"
        key = ("m.room.member", u)
        if i < KICKS:
            fork_a[key] = room.add(
                f"$K-{u}", "m.room.member", CREATOR, u, {"membership": "leave"},
                ["$CREATE", "$PL", "$J-creator", own],
            )  # fmt: skip
        else:
            fork_a[key] = room.add(
                f"$A-{u}", "m.room.member", u, u, {"membership": "join", "displayname": "a"},
                ["$CREATE", "$PL", "$JR", own],
            )  # fmt: skip
        fork_b[key] = room.add(
            f"$B-{u}", "m.room.member", u, u, {"membership": "join", "displayname": "b"},
            ["$CREATE", "$PL", "$JR", own],
        )  # fmt: skip
    return [fork_a, fork_b], room.events


async def measure(rv: RoomVersion, members: int, conflicted_keys: int, runs: int) -> None:
    sets, events = build(rv, members, conflicted_keys)
    store = InMemoryStateResStore(events)
    unconflicted = sum(1 for k, v in sets[0].items() if sets[1].get(k) == v)
    times = []
    result: dict[tuple[str, str], str] = {}
    for _ in range(runs):
        t0 = time.perf_counter()
        result = await resolve_state(rv, sets, store)
        times.append(time.perf_counter() - t0)
    kicked = sum(1 for v in result.values() if v.startswith("$K-"))
    print(
        f"room v{rv.identifier} ({rv.state_res}): {2 * conflicted_keys} conflicted events, "
        f"{unconflicted} unconflicted entries, {len(result)} resolved entries "
        f"({kicked} kicks kept): median {statistics.median(times) * 1000:.1f} ms, "
        f"min {min(times) * 1000:.1f} ms over {runs} runs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_500)
    parser.add_argument("--conflicted", type=int, default=500, help="conflicted keys")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for rv in (ROOM_V11, ROOM_V12):
        asyncio.run(measure(rv, args.members, args.conflicted, args.runs))


if __name__ == "__main__":
    main()
