"""``homeserver generate-keys``: create an ed25519 signing key file."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from homeserver.config import ConfigError, load_config
from homeserver.signing_key import SigningKeyError, generate_signing_key_file, key_id_of

__all__ = ["add_parser", "generate_keys"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate-keys",
        help="Create an ed25519 signing key file.",
        description="Write a new ed25519 signing key in Synapse's format "
        "('ed25519 <version> <seed>', mode 0600). With --output, write FILE (never "
        "overwriting). With --config, write the config's signing_key_path if it does "
        "not exist yet (doing nothing if it does).",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--output", "-o", metavar="FILE", help="where to write the key")
    target.add_argument(
        "--config", "-c", metavar="FILE", help="write the signing_key_path of this config"
    )
    p.add_argument(
        "--key-id",
        metavar="ID",
        help="key ID, 'ed25519:VERSION' or 'VERSION' (default: random, like Synapse)",
    )
    p.set_defaults(func=generate_keys)


def generate_keys(args: argparse.Namespace) -> int:
    if args.config is not None:
        try:
            path = load_config(args.config).signing_key_path
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 1
        if os.path.exists(path):
            print(f"{path} already exists; leaving it unchanged")
            return 0
    else:
        path = args.output
    try:
        key = generate_signing_key_file(path, args.key_id)
    except SigningKeyError as e:
        print(f"generate-keys: {e}", file=sys.stderr)
        return 1
    print(f"Wrote signing key {key_id_of(key)} to {path}")
    return 0
