"""How close full PDU verification gets to the raw ed25519 verify rate, on one core.

Prints three figures: raw PyNaCl ``VerifyKey.verify`` calls per second over
the same signed bytes the events carry, full ``federation.signing.verify_pdu``
calls per second (format, content hash, redaction, reference hash/event ID,
signature), and their ratio. Target: verify_pdu at >= 60% of raw.

Input: the 90 real events of the Synapse corpus (room versions 10-12), cycled.
The process pins itself to one CPU where the OS allows it.

    .venv/bin/python bench/verify.py [--seconds 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import platform
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


def _round(fn: Callable[[], None], batch: int, seconds: float) -> float:
    """Calls per second over one round of about ``seconds``; ``fn`` makes ``batch`` calls."""
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls / elapsed


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
    # Rounds alternate, and the best of each counts, so that load from other
    # processes hits both figures alike rather than skewing the ratio.
    raw_rate = full_rate = 0.0
    for _ in range(args.rounds):
        raw_rate = max(raw_rate, _round(raw, len(cases), args.seconds))
        full_rate = max(full_rate, _round(full, len(cases), args.seconds))

    print(f"python {platform.python_version()} on {platform.machine()}, pinned: {pinned}")
    print(f"events: {len(cases)} corpus PDUs (v10, v11, v12), best of {args.rounds} x "
          f"{args.seconds:g}s")
    print(f"raw ed25519 verify (PyNaCl):     {raw_rate:10.0f} /s")
    print(f"full verify_pdu:                 {full_rate:10.0f} /s")
    print(f"ratio full/raw:                  {full_rate / raw_rate:10.1%}  (target >= 60%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
