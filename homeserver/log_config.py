"""Logging set up from the ``logging`` config section: standard error, one format."""

from __future__ import annotations

import logging
import sys

from homeserver.config import LoggingConfig

__all__ = ["setup_logging"]

_HANDLER_NAME = "concord"


def setup_logging(cfg: LoggingConfig) -> None:
    """Route every logger to standard error at ``cfg.level`` (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter(cfg.format))
    root.addHandler(handler)
    root.setLevel(cfg.level)
    for name, level in cfg.loggers.items():
        logging.getLogger(name).setLevel(level)
    # aiohttp's own access logger is disabled; ours is homeserver.access.
    logging.captureWarnings(True)
