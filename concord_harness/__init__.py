"""concord_harness: federation tests against real Concord nodes.

Start N nodes on loopback (SQLite or PostgreSQL, in-process or as
subprocesses), break the links between them at the HTTP level, and wait for
rooms to converge. Faces: the library (:class:`Federation`), a pytest plugin
(fixtures ``concord_federation`` and ``concord_node``), a Twisted trial base
class (``concord_harness.trial.FederationTestCase``) and the
``homeserver federation-test`` command. Documentation: docs/harness.md.

The harness is versioned with the homeserver (:data:`__version__`); its
public API is what ``__all__`` lists here and in the modules it names.
"""

from __future__ import annotations

from concord_harness.client import Client, MatrixRequestError
from concord_harness.clock import SkewableClock
from concord_harness.convergence import ConvergenceError, RoomSnapshot, diff_snapshots
from concord_harness.faults import FaultProxy, LinkFaults, LinkStats
from concord_harness.federation import ExternalPeer, Federation
from concord_harness.nodes import Node, NodeStartError
from homeserver import __version__

__all__ = [
    "Client",
    "ConvergenceError",
    "ExternalPeer",
    "FaultProxy",
    "Federation",
    "LinkFaults",
    "LinkStats",
    "MatrixRequestError",
    "Node",
    "NodeStartError",
    "RoomSnapshot",
    "SkewableClock",
    "__version__",
    "diff_snapshots",
]
