"""``homeserver run``: run the node in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from homeserver import __version__
from homeserver.config import ConfigError, HomeserverConfig, find_file_problems, load_config
from homeserver.log_config import setup_logging

__all__ = ["add_parser", "run"]

logger = logging.getLogger("homeserver.run")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="Run the homeserver in the foreground.",
        description="Run the homeserver described by FILE in the foreground until SIGTERM or "
        "SIGINT (SIGHUP re-reads FILE: the trust domain and rotated keys apply at once); "
        "then finish in-flight requests (up to shutdown_timeout), close the "
        "database and exit 0. Exits 1 if the config is invalid or the server cannot start.",
    )
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="the YAML config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    problems = find_file_problems(config)
    if problems:
        print(f"{args.config}: cannot start:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    setup_logging(config.logging)
    return asyncio.run(serve(config, config_path=args.config))


async def serve(config: HomeserverConfig, *, config_path: str | None = None) -> int:
    # Imported here so `homeserver --help` stays fast and independent of storage.
    from homeserver.server import HomeServer, StartupError

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    logger.info("Concord %s starting for %s", __version__, config.server_name)
    try:
        hs = await HomeServer.start(config)
    except StartupError as e:
        logger.error("Cannot start: %s", e)
        return 1
    if config_path is not None:
        # SIGHUP re-reads the config: the trust domain and rotated signing
        # keys apply at once, other changes at the next restart (homeserver/reload.py).
        from homeserver.reload import reload_config

        reloads: set[asyncio.Task[Any]] = set()

        def on_hup() -> None:
            task = asyncio.ensure_future(reload_config(hs, config_path))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    logger.info("Received %s: shutting down", received[0])
    await hs.stop()
    logger.info("Shutdown complete")
    return 0
