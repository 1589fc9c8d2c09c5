"""Room aliases and the public room directory.

Spec: client-server-api "Room aliases" (``PUT/GET/DELETE
/directory/room/{roomAlias}``, ``GET /rooms/{roomId}/aliases``), "Listing
rooms" (``GET/PUT /directory/list/room/{roomId}``, ``GET/POST
/publicRooms``). A tenant only creates aliases of its own server name; an
alias or directory of another server is asked over federation
(:class:`~homeserver.handlers.remote_rooms.RemoteRooms`).
"""

from __future__ import annotations

from typing import Any

from federation.auth_rules import get_power_level, get_send_level
from federation.clock import Clock
from federation.errors import Codes, MatrixError
from federation.event_format import is_valid_server_name
from homeserver.discovery.directory import DirectoryRequest, PublishedDirectory
from homeserver.handlers.client_stores import TenantStores
from homeserver.handlers.remote_rooms import RemoteRooms
from homeserver.handlers.room_access import check_room_id, require_joined

__all__ = ["DirectoryHandler", "parse_room_alias"]

JsonDict = dict[str, Any]
MAX_ALIAS_BYTES = 255
#: Rooms in one page of this server's own directory for a client, whatever it asks.
MAX_PUBLIC_ROOMS_LIMIT = 500


def parse_room_alias(alias: str) -> tuple[str, str]:
    """``#localpart:server`` -> ``(localpart, server)``; 400 M_INVALID_PARAM otherwise."""
    bad = MatrixError(400, Codes.INVALID_PARAM, f"Invalid room alias {alias!r}")
    if not alias.startswith("#") or len(alias.encode()) > MAX_ALIAS_BYTES or ":" not in alias:
        raise bad
    local, server = alias[1:].split(":", 1)
    if not local or not is_valid_server_name(server):
        raise bad
    return local, server


class DirectoryHandler:
    def __init__(self, clock: Clock, remote: RemoteRooms) -> None:
        self._clock = clock
        self._remote = remote

    # Aliases

    async def create_alias(
        self, ts: TenantStores, user_id: str, alias: str, room_id: str
    ) -> None:
        _, server = parse_room_alias(alias)
        check_room_id(room_id)
        if server != ts.server_name:
            raise MatrixError(400, Codes.INVALID_PARAM,
                              f"Room alias must be on this server ({ts.server_name})")
        if await ts.s.events.state.get_room_version_id(ts.server_name, room_id) is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Unknown room {room_id}")
        await require_joined(ts, room_id, user_id)
        created = await ts.s.aliases.create_alias(
            ts.server_name, alias, room_id, user_id, self._clock.time_ms()
        )
        if not created:
            raise MatrixError(409, Codes.UNKNOWN, f"Room alias {alias} already exists")

    async def resolve_alias(self, ts: TenantStores, alias: str) -> tuple[str, list[str]]:
        """``(room_id, servers)`` for an alias, local or (over federation) remote."""
        _, server = parse_room_alias(alias)
        if server != ts.server_name:
            return await self._remote.query_alias(ts.server_name, alias)
        entry = await ts.s.aliases.get_alias(ts.server_name, alias)
        if entry is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Room alias {alias} not found")
        return entry.room_id, await self._servers_in_room(ts, entry.room_id)

    async def _servers_in_room(self, ts: TenantStores, room_id: str) -> list[str]:
        state = await ts.s.events.state.get_current_state(ts.server_name, room_id)
        ids = [eid for (t, _), eid in state.items() if t == "m.room.member"]
        events = await ts.s.events.get_events(ts.server_name, ids)
        servers = {
            (ev.state_key or "").split(":", 1)[-1]
            for ev in events.values() if ev.content.get("membership") == "join"
        }
        servers.discard(ts.server_name)
        return [ts.server_name, *sorted(servers)]

    async def delete_alias(
        self, ts: TenantStores, user_id: str, alias: str, *, is_admin: bool
    ) -> None:
        """Only the alias's creator or a server admin may delete it (the spec
        lets servers restrict this; Synapse does the same)."""
        _, server = parse_room_alias(alias)
        if server != ts.server_name:
            raise MatrixError(400, Codes.INVALID_PARAM,
                              f"Room alias must be on this server ({ts.server_name})")
        entry = await ts.s.aliases.get_alias(ts.server_name, alias)
        if entry is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Room alias {alias} not found")
        if entry.creator != user_id and not is_admin:
            raise MatrixError(403, Codes.FORBIDDEN,
                              "Only the alias's creator or a server admin may delete it")
        await ts.s.aliases.delete_alias(ts.server_name, alias)

    async def room_aliases(self, ts: TenantStores, user_id: str, room_id: str) -> list[str]:
        check_room_id(room_id)
        await require_joined(ts, room_id, user_id)
        return await ts.s.aliases.get_aliases_for_room(ts.server_name, room_id)

    # Visibility in the directory

    async def get_visibility(self, ts: TenantStores, room_id: str) -> str:
        check_room_id(room_id)
        if await ts.s.events.state.get_room_version_id(ts.server_name, room_id) is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Unknown room {room_id}")
        public = await ts.s.directory.is_public(ts.server_name, room_id)
        return "public" if public else "private"

    async def set_visibility(
        self, ts: TenantStores, user_id: str, room_id: str, visibility: Any
    ) -> None:
        """Publishing needs the power to set ``m.room.canonical_alias`` (Synapse's rule)."""
        check_room_id(room_id)
        if visibility not in ("public", "private"):
            raise MatrixError(400, Codes.INVALID_PARAM,
                              'visibility must be "public" or "private"')
        if await ts.s.events.state.get_room_version_id(ts.server_name, room_id) is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"Unknown room {room_id}")
        state = await require_joined(ts, room_id, user_id)
        keys = [k for k in (("m.room.create", ""), ("m.room.power_levels", "")) if k in state]
        loaded = await ts.s.events.get_events(ts.server_name, [state[k] for k in keys])
        auth = {k: loaded[state[k]] for k in keys if state[k] in loaded}
        if get_power_level(user_id, auth) < get_send_level("m.room.canonical_alias", True, auth):
            raise MatrixError(403, Codes.FORBIDDEN,
                              "You need the power to set m.room.canonical_alias")
        await ts.s.directory.set_visibility(
            ts.server_name, room_id, visibility == "public", self._clock.time_ms()
        )

    # publicRooms

    async def public_rooms(
        self, ts: TenantStores, server: str | None, request: DirectoryRequest
    ) -> JsonDict:
        """This tenant's directory, or (``server`` another server) that
        server's, asked live over federation with the request as checked here."""
        if server is not None and server != ts.server_name:
            if not is_valid_server_name(server):
                raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid server name {server!r}")
            return await self._remote.remote_public_rooms(
                ts.server_name, server, limit=request.limit, since=request.since,
                search_filter=request.search_filter(),
                include_all_networks=request.include_all_networks,
                third_party_instance_id=request.third_party_instance_id,
            )
        return await PublishedDirectory(ts.s.events, ts.s.directory).page(
            ts.server_name, request, max_limit=MAX_PUBLIC_ROOMS_LIMIT)
