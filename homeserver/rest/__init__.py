"""Which servlets each listener type serves: the one extension point for HTTP.

To add endpoints, write a module with ``register(app, hs)`` that builds its
servlets from the exact collaborators they need (``hs.database``,
``hs.clock``, ``hs.config``, ...) and registers them on ``app``; then add one
line to the matching tuple below. Nothing else in the HTTP core changes.

Per listener type:

* ``client``: the Client-Server API (``/_matrix/client``, ``/_matrix/media``)
  and Concord's admin API (``/_concord/admin``); CORS is applied.
* ``federation``: the Server-Server API (``/_matrix/federation``,
  ``/_matrix/key``).
* ``metrics``: ``/metrics`` is always served; add nothing here normally.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.http import tenant_routing, x_matrix
from homeserver.http import trust as trust_check
from homeserver.rest import admin, federation, federation_version, health, keys
from homeserver.rest.client import account, capabilities, login, profile, rooms, sync, versions
from homeserver.rest.client import client_api as client_api_module
from homeserver.rest.client import directory as client_directory
from homeserver.rest.client import discovery as client_discovery
from homeserver.rest.client import register as client_register

if TYPE_CHECKING:
    from homeserver.config import ListenerType
    from homeserver.server import HomeServer

__all__ = ["REGISTRARS", "Registrar"]

Registrar = Callable[[web.Application, "HomeServer"], None]

CLIENT: tuple[Registrar, ...] = (
    tenant_routing.register_client,
    health.register,
    versions.register,
    client_register.register,
    login.register,
    account.register,
    admin.register,
    rooms.register,
    sync.register,
    client_directory.register,
    profile.register,
    capabilities.register,
    client_discovery.register,
)

FEDERATION: tuple[Registrar, ...] = (
    health.register,
    trust_check.register,
    x_matrix.register,
    tenant_routing.register_federation,
    keys.register,
    federation_version.register,
    client_api_module.register_early,
    federation.register,
)

METRICS: tuple[Registrar, ...] = ()

REGISTRARS: Mapping[ListenerType, Sequence[Registrar]] = {
    "client": CLIENT,
    "federation": FEDERATION,
    "metrics": METRICS,
}
