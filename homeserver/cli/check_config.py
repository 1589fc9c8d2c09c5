"""``homeserver check-config``: validate a config without starting anything."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from homeserver.config import ConfigError, find_file_problems, load_config

__all__ = ["add_parser", "check_config"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "check-config",
        help="Validate a config file and the files it names.",
        description="Load FILE, check every option and the files it names (signing key, "
        "TLS certificate and key, CA bundle, secret files), print every problem found. "
        "Exits 0 when the config is usable, 1 otherwise.",
    )
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="the YAML config")
    p.set_defaults(func=check_config)


def check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        problems = find_file_problems(config)
    except ConfigError as e:
        problems = e.problems
    if problems:
        print(f"{args.config}: {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{args.config}: OK")
    return 0
