"""Password hashing: bcrypt, run off the event loop.

Issue "Client-server API and tenants", Security: passwords are stored with a
slow, salted hash. bcrypt is what Synapse uses (``$2b$`` hashes), so hashes
carried over from Synapse verify unchanged. The cost factor comes from config
``password_hash_rounds`` (12 by default; tests lower it). Hashing takes tens
to hundreds of milliseconds, so it runs in a worker thread.
"""

from __future__ import annotations

import asyncio

import bcrypt

__all__ = ["MAX_PASSWORD_BYTES", "PasswordHasher"]

#: bcrypt uses the first 72 bytes of a password (as in Synapse); bcrypt 5
#: raises on longer input instead of ignoring the rest, so it is cut here.
MAX_PASSWORD_BYTES = 72


def _prepare(password: str) -> bytes:
    return password.encode("utf-8")[:MAX_PASSWORD_BYTES]


class PasswordHasher:
    def __init__(self, rounds: int = 12) -> None:
        self._rounds = rounds
        # A hash to check against when the user does not exist, so a login for
        # an unknown account takes as long as one with a wrong password.
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hash_sync, password)

    def _hash_sync(self, password: str) -> str:
        return bcrypt.hashpw(_prepare(password), bcrypt.gensalt(self._rounds)).decode("ascii")

    async def check(self, password: str, stored_hash: str | None) -> bool:
        """True if ``password`` matches ``stored_hash``; None (no password) never does."""
        if stored_hash is None and self._dummy is None:
            self._dummy = await self.hash("concord-dummy")
        target = stored_hash or self._dummy
        assert target is not None
        ok = await asyncio.to_thread(_check_sync, password, target)
        return ok and stored_hash is not None


def _check_sync(password: str, stored_hash: str) -> bool:
    try:
        return bcrypt.checkpw(_prepare(password), stored_hash.encode("ascii"))
    except ValueError:
        # Not a bcrypt hash (a corrupt row): no password matches it.
        return False
