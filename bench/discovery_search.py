"""Room discovery search over a large index, on both engines.

Fills the discovery index with ``--rooms`` rooms spread over ``--servers``
peers, written through ``DiscoveryStore.replace_rooms`` as crawls would (two
crawls of every server: the first inserts the rooms, the second rewrites
them, as every later crawl does, for their last-seen time; both timed), then
times ``DiscoveryStore.search`` (the count and the first page of 21, as the
client API asks for a page of 20) over every server for a few kinds of query,
ordered by relevance unless said otherwise:

* ``exact, common``: one word in about 1 % of the rooms;
* ``exact, rare``: one word in a handful of rooms;
* ``misspelled``: the common word with a letter missing (a fuzzy match only
  with pg_trgm; nothing on SQLite or without it);
* ``multi-word``: two words that each appear in about 0.5 % of the rooms;
* ``rare, by members``: the rare word again, most joined rooms first.

Room names, topics and aliases are drawn, seeded, from a Zipf-distributed
vocabulary of made-up words and a few real ones, so every run builds the same
index. Runs on SQLite (a temporary file) and on PostgreSQL (a throwaway
database created on ``$CONCORD_TEST_POSTGRES_URL``'s server, default
``postgresql://postgres@127.0.0.1:5432/postgres``, and dropped afterwards). On PostgreSQL the
searches run twice: just after the crawls (and an ANALYZE, as autovacuum
would soon run after so many writes), while any GIN pending lists hold the
new entries, then after a VACUUM has merged them into the indexes. Prints
the median and p99 of ``--repeats`` searches per query, after a few warm-up
searches; ``--explain`` prints each search's plans too. Usage::

    .venv/bin/python bench/discovery_search.py [--rooms 100000] [--servers 100]
        [--repeats 100] [--engine sqlite|postgres|both] [--explain]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from concord_harness.nodes import create_postgres_database, drop_postgres_database  # noqa: E402
from storage.database import Database  # noqa: E402
from storage.migrations import apply_migrations  # noqa: E402
from storage.stores.discovery import DiscoveryStore, IndexedRoom, SortKey  # noqa: E402

SEED = 20261124
PAGE = 21
WARM_UP = 3

# Real words planted at fixed frequencies (fraction of rooms whose text holds
# them), so the queries below match a known share of the index.
PLANTED = {
    "photography": 0.01,
    "rust": 0.005,
    "programming": 0.005,
    "astronomy": 0.00005,
}
# (what, query, sort)
QUERIES: list[tuple[str, str, SortKey]] = [
    ("exact, common", "photography", "relevance"),
    ("exact, rare", "astronomy", "relevance"),
    ("misspelled", "photgraphy", "relevance"),
    ("multi-word", "rust programming", "relevance"),
    ("rare, by members", "astronomy", "members"),
]

_ONSETS = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "cl", "dr", "fl", "gr", "pl", "st", "tr", "sh", "ch"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
_CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "x"]


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.randint(2, 4)
        words.add("".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                          for _ in range(syllables)))
    return sorted(words - set(PLANTED))


def make_rooms(rooms: int, servers: int) -> dict[str, list[IndexedRoom]]:
    """``rooms`` rooms over ``servers`` server names, the same on every run."""
    rng = random.Random(SEED)
    vocab = _vocabulary(rng, 20_000)
    rng.shuffle(vocab)
    # Zipf: the word of rank r is drawn with weight 1 / r.
    cum: list[float] = []
    total = 0.0
    for rank in range(1, len(vocab) + 1):
        total += 1 / rank
        cum.append(total)

    def words(n: int) -> list[str]:
        return rng.choices(vocab, cum_weights=cum, k=n)

    out: dict[str, list[IndexedRoom]] = {}
    for i in range(rooms):
        server = f"s{i % servers:03d}.bench"
        name = words(rng.randint(1, 4))
        topic = words(rng.randint(3, 15)) if rng.random() < 0.6 else []
        for word, share in PLANTED.items():
            if rng.random() < share:
                target = name if rng.random() < 0.5 else topic
                target.insert(rng.randrange(len(target) + 1), word)
        alias = f"#{'-'.join(name[:2])}:{server}" if rng.random() < 0.5 else None
        out.setdefault(server, []).append(IndexedRoom(
            server, f"!r{i}:{server}", rng.randint(1, 5000), False, False,
            name=" ".join(name).title(), topic=" ".join(topic) or None, canonical_alias=alias,
            join_rule="public",
        ))
    return out


async def _search(store: DiscoveryStore, servers: list[str], query: str, sort: SortKey) -> int:
    hits, total = await store.search(servers=servers, query=query, sort=sort, after=None,
                                     limit=PAGE)
    assert len(hits) == min(total, PAGE)
    return total


async def _run_queries(store: DiscoveryStore, servers: list[str], repeats: int,
                       explain: bool) -> None:
    for what, query, sort in QUERIES:
        for _ in range(WARM_UP):
            matches = await _search(store, servers, query, sort)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            await _search(store, servers, query, sort)
            times.append(time.perf_counter() - t0)
        times.sort()
        p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
        print(f"  {what:<16} {query!r:<19} {matches:>6,} matches: "
              f"median {statistics.median(times) * 1000:7.2f} ms, p99 {p99 * 1000:7.2f} ms")
        if explain:
            plans = await store.explain_search(servers=servers, query=query, sort=sort,
                                               limit=PAGE)
            for name, plan in plans.items():
                print(f"    {name} plan:")
                for line in plan:
                    print(f"      {line if len(line) <= 110 else line[:107] + '...'}")


async def measure(url: str, label: str, rooms: int, servers: int, repeats: int,
                  maintenance: asyncpg.Connection | None, explain: bool) -> None:
    db = await Database.open(url)
    try:
        await apply_migrations(db)
        store = DiscoveryStore(db)
        by_server = make_rooms(rooms, servers)
        crawls = []
        for crawl in range(2):
            started = time.perf_counter()
            for server, batch in by_server.items():
                await store.replace_rooms(server, batch, 1_700_000_000_000 + crawl)
            crawls.append(time.perf_counter() - started)
        if maintenance is not None:
            await maintenance.execute("ANALYZE discovery_rooms")
        capability = await store.search_capability()
        print(f"{label} ({capability}): {rooms:,} rooms over {servers} servers; first crawl "
              f"of every server (inserts) {crawls[0]:.1f} s, second (updates) {crawls[1]:.1f} s")
        names = sorted(by_server)
        if maintenance is None:
            await _run_queries(store, names, repeats, explain)
            return
        # Just after the crawls, the GIN indexes' pending lists hold the new
        # entries (every search reads them) until a VACUUM moves them into
        # the index proper.
        print(" just crawled:")
        await _run_queries(store, names, repeats, explain)
        await maintenance.execute("VACUUM discovery_rooms")
        print(" after VACUUM:")
        await _run_queries(store, names, repeats, explain)
    finally:
        await db.close()


async def with_postgres(rooms: int, servers: int, repeats: int, explain: bool) -> None:
    url = await create_postgres_database()
    try:
        maintenance = await asyncpg.connect(url)
        try:
            await measure(url, "PostgreSQL", rooms, servers, repeats, maintenance, explain)
        finally:
            await maintenance.close()
    finally:
        await drop_postgres_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rooms", type=int, default=100_000)
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--explain", action="store_true",
                        help="print the plans of each search (DiscoveryStore.explain_search)")
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.engine in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(measure(f"sqlite://{tmp}/bench.db", "SQLite", args.rooms,
                                args.servers, args.repeats, None, args.explain))
    if args.engine in ("postgres", "both"):
        asyncio.run(with_postgres(args.rooms, args.servers, args.repeats, args.explain))


if __name__ == "__main__":
    main()
