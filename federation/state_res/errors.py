"""The error state resolution raises when its input cannot be resolved."""

from __future__ import annotations


class StateResolutionError(Exception):
    """The state sets cannot be resolved: an unknown or cross-room event, a cycle.

    These are caller bugs or corrupt data, never a normal outcome of the
    algorithm (events that fail auth are simply left out of the result).
    """
