"""Rotating and revoking a hosted server name's signing key.

Docs: docs/usage/key_rotation.md. Spec: server-server API "Retrieving
server keys": a server publishes its current keys in ``verify_keys`` and the
keys it no longer uses in ``old_verify_keys`` with ``expired_ts``; peers
accept an old key only for events sent before ``expired_ts``.

:func:`rotate_signing_key` writes the new key file (the old seed is gone
afterwards: it never signs again) and records the change in
``local_signing_keys`` in one transaction: the new key current, the old one
retired with ``expired_ts = now + overlap``. The overlap covers events the
running node signed with the old key before it noticed the rotation and
clock skew between us and peers. A running node picks the change up through
:meth:`homeserver.keys.KeyService.refresh_local` (a poll every
:data:`homeserver.keys.KEY_REFRESH_INTERVAL_S` seconds, and SIGHUP).

:func:`revoke_signing_key` takes a key out of publication for good; a
current key is rotated out first (overlap 0).

Order of writes: the new file goes to a temporary file first, then the
database transaction, then an atomic rename over the key file. A crash
in between leaves the old file with a database that already names the new
key; the next start re-syncs from the file (the old key current again, the
new one retired), so the node always starts with a key it holds.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from signedjson.key import generate_signing_key, write_signing_keys
from signedjson.types import SigningKey

from federation.server_keys import key_id_of, verify_key_of
from homeserver.signing_key import random_key_version, read_signing_key_file
from storage.database import Database
from storage.stores.key_rotation import KeyRecord, KeyRotationStore

__all__ = [
    "KeyInfo",
    "KeyRotationError",
    "RotationResult",
    "list_signing_keys",
    "revoke_signing_key",
    "rotate_signing_key",
]


class KeyRotationError(Exception):
    """The rotation or revocation was refused; the message is for the operator."""


@dataclass(frozen=True)
class RotationResult:
    server_name: str
    new_key_id: str
    retired_key_ids: tuple[str, ...]
    expired_ts: int


@dataclass(frozen=True)
class KeyInfo:
    """One key as ``homeserver keys list`` shows it."""

    server_name: str
    key_id: str
    state: str  # current | old | revoked
    created_ts: int | None
    expired_ts: int | None
    revoked_ts: int | None
    public_key: str

    def to_json(self) -> dict[str, object]:
        return {
            "server_name": self.server_name,
            "key_id": self.key_id,
            "state": self.state,
            "created_ts": self.created_ts,
            "expired_ts": self.expired_ts,
            "revoked_ts": self.revoked_ts,
            "public_key": self.public_key,
        }


def _write_key_file_tmp(path: str, key: SigningKey) -> str:
    tmp = f"{path}.rotating-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        write_signing_keys(fh, [key])
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


async def rotate_signing_key(
    db: Database, server_name: str, key_path: str, *, now_ms: int, overlap_ms: int
) -> RotationResult:
    """Make a new key ``server_name``'s signing key; retire the ones in ``key_path``.

    Raises :class:`KeyRotationError` (key file unreadable, negative overlap).
    """
    if overlap_ms < 0:
        raise KeyRotationError("the overlap cannot be negative")
    try:
        old_keys = read_signing_key_file(key_path)
    except Exception as e:
        raise KeyRotationError(str(e)) from None
    store = KeyRotationStore(db)
    used = {k.key_id for k in await store.get_keys(server_name)}
    used |= {key_id_of(k) for k in old_keys}
    while True:
        new_key = generate_signing_key(random_key_version())
        new_id = key_id_of(new_key)
        if new_id not in used:
            break
    retired = {key_id_of(k): verify_key_of(k) for k in old_keys}
    expired_ts = now_ms + overlap_ms
    try:
        tmp = _write_key_file_tmp(key_path, new_key)
    except OSError as e:
        raise KeyRotationError(f"cannot write next to {key_path}: {e.strerror or e}") from None
    try:
        await store.rotate(server_name, retired, new_id, verify_key_of(new_key), now_ms, expired_ts)
        os.replace(tmp, key_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return RotationResult(server_name, new_id, tuple(sorted(retired)), expired_ts)


async def revoke_signing_key(
    db: Database, server_name: str, key_path: str, key_id: str, *, now_ms: int
) -> RotationResult | None:
    """Stop publishing ``key_id`` for good. A current key is rotated out first
    (the returned rotation; None when the key was already retired)."""
    store = KeyRotationStore(db)
    records = {k.key_id: k for k in await store.get_keys(server_name)}
    try:
        in_file = {key_id_of(k) for k in read_signing_key_file(key_path)}
    except Exception as e:
        raise KeyRotationError(str(e)) from None
    rec = records.get(key_id)
    if key_id not in in_file and (rec is None or rec.revoked_ts is not None):
        if rec is not None:
            raise KeyRotationError(f"{key_id} of {server_name} is already revoked")
        raise KeyRotationError(f"{key_id} is not a key of {server_name}")
    rotation = None
    if key_id in in_file:
        rotation = await rotate_signing_key(db, server_name, key_path, now_ms=now_ms, overlap_ms=0)
    if not await store.revoke(server_name, key_id, now_ms):
        raise KeyRotationError(f"{key_id} is not a key of {server_name}")
    return rotation


async def list_signing_keys(db: Database, server_name: str, key_path: str) -> list[KeyInfo]:
    """Every key of ``server_name``: recorded ones, plus key-file keys the
    node has not recorded yet (never started since)."""
    from federation.server_keys import encode_verify_key

    records: list[KeyRecord] = await KeyRotationStore(db).get_keys(server_name)
    out = [
        KeyInfo(
            server_name,
            r.key_id,
            r.state,
            r.created_ts,
            r.expired_ts,
            r.revoked_ts,
            encode_verify_key(r.verify_key),
        )
        for r in records
    ]
    known = {r.key_id for r in records}
    try:
        file_keys = read_signing_key_file(key_path)
    except Exception:
        file_keys = []
    for k in file_keys:
        if key_id_of(k) not in known:
            out.append(
                KeyInfo(
                    server_name,
                    key_id_of(k),
                    "current",
                    None,
                    None,
                    None,
                    encode_verify_key(verify_key_of(k)),
                )
            )
    return out


def wire_key_rotation(hs: Any) -> None:
    """Let the running node follow ``homeserver keys rotate|revoke``: key file
    paths from the tenant registry, new keys into the registry (client API
    signing) and ``hs.signing_keys``, and the periodic look."""
    keys = hs.keys

    def key_path_for(name: str) -> str | None:
        tenant = hs.tenants.get(name) if hs.tenants is not None else None
        if tenant is not None:
            path: str = tenant.signing_key_path
            return path
        return str(hs.config.signing_key_path) if name == hs.server_name else None

    def changed(name: str, new_keys: list[Any]) -> None:
        if hs.tenants is not None:
            hs.tenants.set_signing_keys(name, new_keys)
        if name == hs.server_name:
            hs.signing_keys = list(new_keys)

    keys.key_path_for = key_path_for
    keys.on_keys_changed.append(changed)
    keys.start_refreshing()
