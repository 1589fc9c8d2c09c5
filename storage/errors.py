"""Errors raised by the storage layer.

Each carries what an operator needs to act on it: which database (its URL with
the password hidden), which migration file, what to do next. Callers outside
``storage/`` catch these, never a driver's exceptions, so no code above this
package needs to know which engine is underneath.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "DatabaseTooNew",
    "DatabaseUnavailable",
    "IntegrityError",
    "InvalidDatabaseURL",
    "MigrationFailed",
    "StorageError",
    "TransactionFailed",
    "UniqueViolation",
    "redact_url",
]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to log or show."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{userinfo}@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class StorageError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidDatabaseURL(StorageError):
    """The database URL names no engine Concord supports, or is malformed."""


class DatabaseUnavailable(StorageError):
    """The database did not answer: refused, unreachable, or silent past the timeout.

    Raised by :meth:`storage.database.Database.open` within ``connect_timeout``
    seconds; never a hang.
    """

    def __init__(self, url: str, timeout: float, reason: str) -> None:
        self.url = redact_url(url)
        self.timeout = timeout
        self.reason = reason
        super().__init__(
            f"Database {self.url} is unavailable (connect timeout {timeout:g} s): {reason}"
        )


class DatabaseTooNew(StorageError):
    """The database records a schema migration this code does not have.

    A newer Concord has upgraded it; running older code against it could
    corrupt data, so we refuse to start.
    """

    def __init__(self, unknown_versions: list[int], latest_known: int) -> None:
        self.unknown_versions = sorted(unknown_versions)
        self.latest_known = latest_known
        listed = ", ".join(f"{v:04d}" for v in self.unknown_versions)
        super().__init__(
            f"The database records schema migration(s) {listed}, which this version of "
            f"Concord does not have (it knows migrations up to {latest_known:04d}). A newer "
            "Concord has upgraded this database: run that version, or restore a backup "
            "taken before the upgrade."
        )


class MigrationFailed(StorageError):
    """A migration file could not be applied; nothing of it was kept."""

    def __init__(self, filename: str, reason: str) -> None:
        self.filename = filename
        self.reason = reason
        super().__init__(
            f"Migration {filename} failed and was rolled back, nothing of it applied: {reason}"
        )


class IntegrityError(StorageError):
    """A statement broke a constraint (NOT NULL, CHECK, FOREIGN KEY, ...)."""


class UniqueViolation(IntegrityError):
    """A statement broke a UNIQUE or PRIMARY KEY constraint.

    Inside a transaction this dooms the transaction on both engines; to insert
    "unless present", write ``INSERT ... ON CONFLICT DO NOTHING`` instead.
    """


class TransactionFailed(StorageError):
    """A statement was issued on a transaction after an earlier one in it failed.

    PostgreSQL refuses every statement after an error in a transaction; we
    make SQLite refuse too, so code that works in SQLite tests works in
    production.
    """
