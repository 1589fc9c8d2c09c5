"""The one loader for protocol test vectors: our JSON files and the Synapse corpus.

``load_vector("spec_appendix")`` reads ``tests/vectors/spec_appendix.json``.
The corpus helpers read ``/work/shared/synapse-corpus`` (override with
``CONCORD_SYNAPSE_CORPUS``), described in its INDEX.md; JSON is parsed and
never hashed as file bytes.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from nacl.signing import VerifyKey
from signedjson.key import decode_signing_key_base64, decode_verify_key_base64
from signedjson.types import SigningKey

VECTORS = Path(__file__).resolve().parent
CORPUS = Path(os.environ.get("CONCORD_SYNAPSE_CORPUS", "/work/shared/synapse-corpus"))
CORPUS_VERSIONS = ("10", "11", "12")
CORPUS_SERVERS = ("corpus-a.test:8521", "corpus-b.test:8522", "corpus-c.test:8523")


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def _load_cached(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def load_vector(name: str) -> Any:
    """A fresh copy of ``tests/vectors/<name>.json`` (safe to mutate)."""
    return json.loads(_load_cached(VECTORS / f"{name}.json"))


def corpus_file(version: str, name: str) -> Any:
    """A fresh parse of ``vNN/<name>.json`` from the Synapse corpus."""
    return json.loads(_load_cached(CORPUS / f"v{version}" / f"{name}.json"))


def corpus_events(version: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = corpus_file(version, "events")
    return events


def corpus_expected(version: str) -> list[dict[str, Any]]:
    expected: list[dict[str, Any]] = corpus_file(version, "expected")
    return expected


def corpus_key_response(server: str) -> dict[str, Any]:
    """The server's ``GET /_matrix/key/v2/server`` response."""
    data: dict[str, Any] = _read(CORPUS / "keys" / (server.replace(":", "_") + ".key_v2_server.json"))
    return data


def corpus_verify_keys() -> dict[str, dict[str, VerifyKey]]:
    """server name -> key ID -> verify key, from the three key responses."""
    keys: dict[str, dict[str, VerifyKey]] = {}
    for server in CORPUS_SERVERS:
        response = corpus_key_response(server)
        keys[response["server_name"]] = {
            key_id: decode_verify_key_base64("ed25519", key_id.split(":", 1)[1], k["key"])
            for key_id, k in response["verify_keys"].items()
        }
    return keys


def corpus_signing_keys() -> dict[str, SigningKey]:
    """server name -> the throwaway signing key (never trust these anywhere else)."""
    data = _read(CORPUS / "keys" / "signing_keys_THROWAWAY.json")
    return {
        server: decode_signing_key_base64("ed25519", entry["key_id"].split(":", 1)[1], entry["seed"])
        for server, entry in data["keys"].items()
    }
