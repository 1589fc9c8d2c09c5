"""Signing key files, in Synapse's format so keys move between the two servers.

A file holds one key per line, ``ed25519 <version> <unpadded base64 seed>``
(read and written by ``signedjson.key``). The seed is the server's identity:
it is written with mode 0600 and never logged.
"""

from __future__ import annotations

import os
import re
import secrets
import string
from typing import Any

from signedjson.key import generate_signing_key, read_signing_keys, write_signing_keys

__all__ = [
    "SigningKeyError",
    "generate_signing_key_file",
    "key_id_of",
    "random_key_version",
    "read_signing_key_file",
]

_VERSION_RE = re.compile(r"^[A-Za-z0-9_]+$")


class SigningKeyError(Exception):
    """A signing key file is missing, unreadable or malformed (message safe to show)."""


def key_id_of(key: Any) -> str:
    """``ed25519:<version>``, the key ID other servers see."""
    return f"{key.alg}:{key.version}"


def random_key_version() -> str:
    """A fresh key version like Synapse's (``a_`` and four random letters)."""
    return "a_" + "".join(secrets.choice(string.ascii_letters) for _ in range(4))


def parse_key_version(key_id: str) -> str:
    """Accept ``ed25519:abc`` or ``abc``; return ``abc``."""
    version = key_id.split(":", 1)[1] if key_id.startswith("ed25519:") else key_id
    if not _VERSION_RE.match(version):
        raise SigningKeyError(
            f"invalid key ID {key_id!r}: use letters, digits and underscores (e.g. ed25519:a_1)"
        )
    return version


def read_signing_key_file(path: str) -> list[Any]:
    """The keys in ``path`` (first one signs); raises SigningKeyError with a clear reason."""
    try:
        with open(path, encoding="utf-8") as fh:
            keys = read_signing_keys(fh)
    except FileNotFoundError:
        raise SigningKeyError(
            f"{path} does not exist; create it with `homeserver generate-keys --config FILE`"
        ) from None
    except OSError as e:
        raise SigningKeyError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception:
        # signedjson raises bare ValueError/binascii errors; their text could echo the seed.
        raise SigningKeyError(
            f"{path} is not a signing key file (expected lines 'ed25519 <version> <seed>')"
        ) from None
    if not keys:
        raise SigningKeyError(f"{path} holds no signing key")
    return list(keys)


def generate_signing_key_file(path: str, key_id: str | None = None) -> Any:
    """Create ``path`` (mode 0600) holding a new ed25519 key; refuse to overwrite."""
    version = parse_key_version(key_id) if key_id else random_key_version()
    key = generate_signing_key(version)
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError(f"{path} already exists; not overwriting a signing key") from None
    except OSError as e:
        raise SigningKeyError(f"cannot create {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        write_signing_keys(fh, [key])
    return key
