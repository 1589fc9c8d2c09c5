"""Concord nodes that a real Synapse can federate with.

A node is named ``127.0.0.1:PORT`` and serves federation over TLS on exactly
that port, which is what Synapse resolves the name to (Server-Server API,
"Resolving server names", step 2: IP literal with a port). The port must be
in the name before the node binds it, so it is picked first with
:func:`free_port` and the start retried if another process took it meanwhile.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from aiohttp import web
from aiohttp.typedefs import Handler
from signedjson.key import generate_signing_key, write_signing_keys

from federation.clock import Clock, RealClock
from homeserver.cli.generate_config import write_self_signed_certificate
from homeserver.config import ListenerType, parse_config
from homeserver.http.x_matrix import authenticated_origin
from homeserver.rest import REGISTRARS, Registrar
from homeserver.server import HomeServer, StartupError
from tests.interop.synapse import free_port

__all__ = [
    "START_ATTEMPTS",
    "AuthenticatedRequest",
    "ConcordFactory",
    "node_config",
    "recording_authenticated",
    "start_concord_node",
    "with_federation_registrars",
]

START_ATTEMPTS = 5

#: What the ``concord_nodes`` fixture yields: ``await start(name=..., **kwargs)``.
ConcordFactory = Callable[..., Awaitable[HomeServer]]


def node_config(
    d: Path,
    port: int,
    *,
    database_url: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Raw config of a node named ``127.0.0.1:port`` with a TLS federation listener.

    Writes the node's signing key and self-signed certificate into ``d``. The
    database is ``database_url`` (e.g. a throwaway PostgreSQL database), else
    a SQLite file in ``d``.
    """
    d.mkdir(parents=True, exist_ok=True)
    key = generate_signing_key(secrets.token_hex(3))
    buf = io.StringIO()
    write_signing_keys(buf, [key])
    (d / "signing.key").write_text(buf.getvalue())
    write_self_signed_certificate("127.0.0.1", d / "tls.crt", d / "tls.key")
    raw: dict[str, Any] = {
        "server_name": f"127.0.0.1:{port}",
        "data_dir": str(d),
        "signing_key_path": str(d / "signing.key"),
        "database": {"url": database_url or f"sqlite://{d / 'concord.db'}"},
        "listeners": [
            {
                "type": "federation",
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "tls": True,
                "tls_certificate_path": str(d / "tls.crt"),
                "tls_private_key_path": str(d / "tls.key"),
            },
            {"type": "client", "port": 0, "bind_addresses": ["127.0.0.1"]},
        ],
        # Synapse's certificate is self-signed too.
        "federation": {"verify_certificates": False, "trusted_key_servers": []},
    }
    raw.update(extra or {})
    return raw


class AuthenticatedRequest(NamedTuple):
    method: str
    path: str
    origin: str


def recording_authenticated(records: list[AuthenticatedRequest]) -> Registrar:
    """A federation registrar noting every request that passed X-Matrix authentication.

    Its middleware goes last, inside the X-Matrix one, so a request reaches it
    only once its signature has been checked, whether or not a servlet exists
    for the path.
    """

    def register(app: web.Application, hs: HomeServer) -> None:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith("/_matrix/federation/"):
                records.append(
                    AuthenticatedRequest(
                        request.method, request.path, authenticated_origin(request)
                    )
                )
            return await handler(request)

        app.middlewares.append(record)

    return register


def with_federation_registrars(
    *extra: Registrar,
) -> Mapping[ListenerType, Sequence[Registrar]]:
    """The default registrars with ``extra`` appended to the federation listener's."""
    return {**REGISTRARS, "federation": (*REGISTRARS["federation"], *extra)}


async def start_concord_node(
    d: Path,
    *,
    clock: Clock | None = None,
    database_url: str | None = None,
    extra: Mapping[str, Any] | None = None,
    registrars: Mapping[ListenerType, Sequence[Registrar]] | None = None,
) -> HomeServer:
    """Start a node in ``d`` named ``127.0.0.1:PORT``; the caller stops it.

    Real time by default: Synapse checks ``valid_until_ts`` against its own
    clock, so a fake one would make our keys look expired to it. The database
    is ``database_url`` if given, else a SQLite file in ``d``.
    """
    last: StartupError | None = None
    for _ in range(START_ATTEMPTS):
        cfg = parse_config(node_config(d, free_port(), database_url=database_url, extra=extra), base_dir=str(d))
        try:
            return await HomeServer.start(cfg, clock=clock or RealClock(), registrars=registrars)
        except StartupError as e:
            if "cannot listen" not in str(e):
                raise
            # Lost the port race to another process; pick another.
            last = e
    assert last is not None
    raise last
