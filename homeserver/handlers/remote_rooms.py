"""What the client API asks of federation: the rooms of other servers.

A room whose state this tenant does not hold (a room on another server, or
on another tenant of this node: tenants federate like separate servers) is
joined, left, invited to and listed through :class:`RemoteRooms`, which the
federation code implements (make_join/send_join, make_leave/send_leave,
invite, the remote ``publicRooms`` and alias queries) and wires in as
``hs.remote_rooms``. Until then :class:`FederationUnavailable` answers every
call with a clear error rather than pretending success.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from federation.errors import Codes, MatrixError

__all__ = ["FederationUnavailable", "RemoteRooms"]


class RemoteRooms(Protocol):
    async def remote_join(
        self, tenant: str, user_id: str, room_id_or_alias: str, servers: Sequence[str],
        content: Mapping[str, Any],
    ) -> str:
        """Join ``user_id`` (a user of ``tenant``) to a room held by other
        servers, trying ``servers`` (or the alias's server). Persists the
        room's state and the join; returns the room ID."""

    async def remote_leave(
        self, tenant: str, user_id: str, room_id: str, content: Mapping[str, Any]
    ) -> str:
        """Leave (or reject an invite to) a room this tenant holds no state
        of; returns the leave event's ID."""

    async def remote_invite(
        self, tenant: str, sender: str, room_id: str, target: str, content: Mapping[str, Any]
    ) -> str:
        """Invite ``target``, a user of another server, into a room of
        ``tenant`` (the invite event is countersigned by the target's
        server); returns the invite event's ID."""

    async def remote_public_rooms(
        self, tenant: str, server: str, *, limit: int | None, since: str | None,
        search_filter: Mapping[str, Any] | None, include_all_networks: bool,
        third_party_instance_id: str | None,
    ) -> dict[str, Any]:
        """``server``'s public room directory (federation ``publicRooms``),
        in the client response shape."""

    async def query_alias(self, tenant: str, room_alias: str) -> tuple[str, list[str]]:
        """Resolve an alias of another server: ``(room_id, servers)``."""

    async def query_profile(self, tenant: str, user_id: str) -> dict[str, Any]:
        """The profile of a user of another server (federation ``query/profile``)."""


def _unavailable(what: str) -> MatrixError:
    return MatrixError(
        502, Codes.UNKNOWN, f"Federation is not available on this server: cannot {what}"
    )


class FederationUnavailable:
    """The :class:`RemoteRooms` of a node without federation: every call fails."""

    async def remote_join(
        self, tenant: str, user_id: str, room_id_or_alias: str, servers: Sequence[str],
        content: Mapping[str, Any],
    ) -> str:
        raise _unavailable(f"join {room_id_or_alias} through other servers")

    async def remote_leave(
        self, tenant: str, user_id: str, room_id: str, content: Mapping[str, Any]
    ) -> str:
        raise _unavailable(f"leave {room_id}, a room held by other servers")

    async def remote_invite(
        self, tenant: str, sender: str, room_id: str, target: str, content: Mapping[str, Any]
    ) -> str:
        raise _unavailable(f"invite {target}, a user of another server")

    async def remote_public_rooms(
        self, tenant: str, server: str, *, limit: int | None, since: str | None,
        search_filter: Mapping[str, Any] | None, include_all_networks: bool,
        third_party_instance_id: str | None,
    ) -> dict[str, Any]:
        raise _unavailable(f"list the public rooms of {server}")

    async def query_alias(self, tenant: str, room_alias: str) -> tuple[str, list[str]]:
        raise _unavailable(f"resolve {room_alias}, an alias of another server")

    async def query_profile(self, tenant: str, user_id: str) -> dict[str, Any]:
        raise _unavailable(f"read the profile of {user_id}, a user of another server")
