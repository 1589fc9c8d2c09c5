"""A scheduler yield for long state resolutions.

Resolving a big fork is CPU-bound; without an occasional yield it would stall
every other request on the event loop (Synapse's ``state/v2.py`` yields every
100 iterations for the same reason).
"""

from __future__ import annotations

import types
from collections.abc import Generator


@types.coroutine
def _yield_once() -> Generator[None, None, None]:
    # A bare ``yield`` inside a task hands control back to the event loop for
    # one turn, which is exactly what ``asyncio.sleep(0)`` does internally.
    # It is a scheduler yield, not a timer, so it needs no Clock.
    yield


class Ticker:
    """Counts iterations and yields to the event loop every ``every`` of them."""

    __slots__ = ("_every", "_count")

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"yield_every must be >= 1, got {every}")
        self._every = every
        self._count = 0

    async def tick(self) -> None:
        self._count += 1
        if self._count % self._every == 0:
            await _yield_once()
