"""Admin APIs: Concord's under ``/_concord/admin/v1/``, plus Synapse's
shared-secret registration path (docs/usage/administration/admin_api.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.rest.admin import discovery, federation, tenants, trust, users
from homeserver.rest.admin import register as shared_secret

if TYPE_CHECKING:
    from homeserver.server import HomeServer

__all__ = ["register"]


def register(app: web.Application, hs: HomeServer) -> None:
    shared_secret.register(app, hs)
    tenants.register(app, hs)
    users.register(app, hs)
    federation.register(app, hs)
    trust.register(app, hs)
    discovery.register(app, hs)
