"""The ``homeserver`` command line.

Each subcommand lives in its own module under ``homeserver/cli/`` and exposes
``add_parser(subparsers)``, which registers the subcommand and sets
``func(args) -> int`` as its entry point. The subcommands and their flags are a
contract operators script against: add, never rename.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from homeserver import __version__

# Module names under homeserver.cli, in the order --help lists them.
SUBCOMMAND_MODULES = (
    "run",
    "generate_config",
    "generate_keys",
    "check_config",
    "migrate",
    "federation_test",
    "register_user",
    "tenant",
    "keys",
    "discovery",
    "federation",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="homeserver",
        description="Concord, a federated Matrix homeserver.",
    )
    parser.add_argument("--version", action="version", version=f"concord {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"homeserver.cli.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    result: int = args.func(args)
    return result
