"""How close full PDU verification gets to the raw ed25519 verify rate, on one core.

Prints three figures: raw PyNaCl ``VerifyKey.verify`` calls per second over
the same signed bytes the events carry, full ``federation.signing.verify_pdu``
calls per second (format, content hash, redaction, reference hash/event ID,
signature), and their ratio, median and best over the rounds. Rates are per
CPU second of this process (wall-clock rates are printed too, but swing with
other load). Target: verify_pdu at >= 60% of raw.

Input: the 90 real events of the Synapse corpus (room versions 10-12), cycled.
The process pins itself to one CPU where the OS allows it.

    .venv/bin/python bench/verify.py [--seconds 3] [--rounds 5]  # rounds alternate raw/full
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unpaddedbase64 import decode_base64  # noqa: E402

from federation.hashes import reference_hash_input  # noqa: E402
from federation.room_versions import get_room_version  # noqa: E402
from federation.signing import verify_pdu  # noqa: E402
from tests.vectors.loader import (  # noqa: E402
    CORPUS_VERSIONS,
    corpus_events,
    corpus_verify_keys,
)


def _round(fn: Callable[[], None], batch: int, seconds: float) -> tuple[float, float]:
    """(calls per CPU second, calls per wall second) over one round of about ``seconds``.

    ``fn`` makes ``batch`` calls. CPU time (``time.process_time``) is the
    primary figure: on a shared machine other processes stretch wall time by
    however long they hold the core, which says nothing about our code.
    """
    calls = 0
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    while True:
        fn()
        calls += batch
        cpu = time.process_time() - cpu_start
        if cpu >= seconds:
            return calls / cpu, calls / (time.perf_counter() - wall_start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure; best counts")
    args = parser.parse_args()

    pinned = "no"
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        pinned = f"CPU {min(os.sched_getaffinity(0))}"

    keys = corpus_verify_keys()
    cases = []  # (pdu, rv, signing bytes, signature, verify key)
    for version in CORPUS_VERSIONS:
        rv = get_room_version(version)
        for pdu in corpus_events(version):
            (server, sigs), = pdu["signatures"].items()
            (key_id, sig), = sigs.items()
            cases.append((pdu, rv, reference_hash_input(pdu, rv), decode_base64(sig),
                          keys[server][key_id]))

    def raw() -> None:
        for _, _, message, signature, verify_key in cases:
            verify_key.verify(message, signature)

    def full() -> None:
        for pdu, rv, _, _, _ in cases:
            verify_pdu(pdu, rv, keys)

    raw()
    full()  # warm up, and fail loudly if anything does not verify
    # Rounds alternate so that what load remains hits both figures alike.
    raw_cpu: list[float] = []
    raw_wall: list[float] = []
    full_cpu: list[float] = []
    full_wall: list[float] = []
    for _ in range(args.rounds):
        cpu, wall = _round(raw, len(cases), args.seconds)
        raw_cpu.append(cpu)
        raw_wall.append(wall)
        cpu, wall = _round(full, len(cases), args.seconds)
        full_cpu.append(cpu)
        full_wall.append(wall)

    def line(label: str, rates: list[float]) -> str:
        return f"{label:<34}{statistics.median(rates):10.0f} /s{max(rates):10.0f} /s"

    print(f"python {platform.python_version()} on {platform.machine()}, pinned: {pinned}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"events: {len(cases)} corpus PDUs (v10, v11, v12), {args.rounds} rounds x "
          f"{args.seconds:g} CPU s each")
    print(f"{'':<34}{'median':>13}{'best':>13}")
    print(line("raw ed25519 verify, CPU time:", raw_cpu))
    print(line("full verify_pdu, CPU time:", full_cpu))
    print(line("raw ed25519 verify, wall time:", raw_wall))
    print(line("full verify_pdu, wall time:", full_wall))
    median_ratio = statistics.median(full_cpu) / statistics.median(raw_cpu)
    best_ratio = max(full_cpu) / max(raw_cpu)
    print(f"ratio full/raw, CPU time:         median {median_ratio:6.1%}, best {best_ratio:6.1%}"
          "  (target >= 60%)")
    wall_ratio = statistics.median(full_wall) / statistics.median(raw_wall)
    print(f"ratio full/raw, wall time:        median {wall_ratio:6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
