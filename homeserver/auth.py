"""Who is calling: access tokens to :class:`Requester`.

Client-Server API "Client Authentication" (``_index.md``, "Using access
tokens"): the token comes in ``Authorization: Bearer <token>``. The
``access_token`` query parameter was deprecated in v1.11 and is still
accepted here for older clients (Synapse does the same); the header wins when
both are present.

A token is looked up in the database of the tenant the request was routed
to (:func:`homeserver.http.tenant_routing.request_tenant`), so a token of
tenant A presented to tenant B is simply unknown there: 401
``M_UNKNOWN_TOKEN``. Tokens are stored as SHA-256 hashes.

For servlets::

    requester = await hs.auth.get_user_by_req(request)
    requester.user_id, requester.device_id, requester.tenant, requester.token_id
    hs.auth.require_tenant_admin(requester)   # 403 M_FORBIDDEN unless admin
    hs.auth.require_server_admin(requester)   # admin of the node's own server name
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from federation.errors import Codes, MatrixError
from homeserver.http.tenant_routing import request_tenant
from homeserver.tenants import Tenant

__all__ = ["Auth", "Requester", "access_token_from"]


@dataclass(frozen=True)
class Requester:
    """An authenticated client request.

    ``token_id`` identifies the access token (stable for its lifetime; use it
    to scope transaction IDs, Client-Server API "Transaction identifiers").
    ``is_admin``: an admin of ``tenant``.
    """

    user_id: str
    device_id: str | None
    tenant: Tenant
    is_admin: bool
    token_id: int

    @property
    def is_server_admin(self) -> bool:
        """An admin of the node itself (its primary tenant): may manage tenants."""
        return self.is_admin and self.tenant.is_primary


def access_token_from(request: web.Request) -> str | None:
    """The request's access token (header first, then the deprecated query param)."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        raise MatrixError(
            401, Codes.MISSING_TOKEN, "Authorization header is not 'Bearer <access token>'"
        )
    query_token = request.query.get("access_token")
    return query_token or None


def _unknown_token() -> MatrixError:
    # soft_logout false: the session is gone for good, the client must log in again.
    return MatrixError(
        401,
        Codes.UNKNOWN_TOKEN,
        "Unrecognised access token",
        extra={"soft_logout": False},
    )


class Auth:
    """Resolves access tokens against the tenant a request was routed to."""

    async def get_user_by_req(
        self, request: web.Request, *, allow_guest: bool = False
    ) -> Requester:
        """The caller, or 401 ``M_MISSING_TOKEN`` / ``M_UNKNOWN_TOKEN``.

        Concord has no guest accounts, so ``allow_guest`` changes nothing yet.
        """
        tenant = request_tenant(request)
        token = access_token_from(request)
        if token is None:
            raise MatrixError(401, Codes.MISSING_TOKEN, "Missing access token")
        store = await tenant.user_store()
        info = await store.get_token(token)
        if info is None:
            raise _unknown_token()
        return Requester(
            user_id=info.user_id,
            device_id=info.device_id,
            tenant=tenant,
            is_admin=info.admin,
            token_id=info.token_id,
        )

    @staticmethod
    def require_tenant_admin(requester: Requester) -> None:
        if not requester.is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")

    @staticmethod
    def require_server_admin(requester: Requester) -> None:
        if not requester.is_server_admin:
            raise MatrixError(
                403,
                Codes.FORBIDDEN,
                "Managing tenants needs an admin of the node's own server name",
            )
