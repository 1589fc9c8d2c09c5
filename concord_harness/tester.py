"""The federation tester as a library: ``await run_checks("example.org")``.

The checks live with the ``homeserver federation-test`` command
(:mod:`homeserver.cli.federation_test`), so the server package never imports
the harness; this module re-exports them for harness users.
"""

from __future__ import annotations

from homeserver.cli.federation_test import Check, Report, run_checks

__all__ = ["Check", "Report", "run_checks"]
