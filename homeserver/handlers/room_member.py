"""Room membership for local users: join, invite, leave, kick, ban, unban, forget.

Spec: client-server-api "Room membership" (``POST /join/{roomIdOrAlias}``,
``/rooms/{roomId}/join``, ``/invite``, ``/leave``, ``/kick``, ``/ban``,
``/unban``, ``/forget``). Every change is an ``m.room.member`` event checked
by the room version's auth rules (a refusal is ``403 M_FORBIDDEN``). Rooms
this tenant holds no state of, and invites of users of other servers, go
through :class:`~homeserver.handlers.remote_rooms.RemoteRooms`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from federation.errors import Codes, MatrixError
from federation.event_format import is_valid_server_name
from homeserver.handlers.client_stores import TenantStores
from homeserver.handlers.directory import DirectoryHandler
from homeserver.handlers.message import MessageHandler
from homeserver.handlers.profile import ProfileHandler
from homeserver.handlers.remote_rooms import RemoteRooms
from homeserver.handlers.room_access import (
    check_room_id,
    check_user_id,
    get_membership,
    require_joined,
)

__all__ = ["RoomMemberHandler"]


def _server_of(identifier: str) -> str | None:
    return identifier.split(":", 1)[1] if ":" in identifier else None


def _reason(content: dict[str, Any], reason: Any) -> None:
    if reason is None:
        return
    if not isinstance(reason, str):
        raise MatrixError(400, Codes.INVALID_PARAM, "reason must be a string")
    content["reason"] = reason


class RoomMemberHandler:
    def __init__(
        self, messages: MessageHandler, profiles: ProfileHandler,
        directory: DirectoryHandler, remote: RemoteRooms,
    ) -> None:
        self._messages = messages
        self._profiles = profiles
        self._directory = directory
        self._remote = remote

    async def _known(self, ts: TenantStores, room_id: str) -> bool:
        return await ts.s.events.state.get_room_version_id(ts.server_name, room_id) is not None

    async def join(
        self, ts: TenantStores, user_id: str, room_id_or_alias: str,
        servers: Sequence[str] = (), reason: Any = None,
    ) -> str:
        """Join by room ID or alias; returns the room ID."""
        for s in servers:
            if not is_valid_server_name(s):
                raise MatrixError(400, Codes.INVALID_PARAM, f"Invalid server name {s!r}")
        content: dict[str, Any] = {"membership": "join"}
        _reason(content, reason)
        content.update(await self._profiles.member_content(ts, user_id))
        if room_id_or_alias.startswith("#"):
            room_id, alias_servers = await self._directory.resolve_alias(ts, room_id_or_alias)
            servers = [*servers, *alias_servers]
        elif room_id_or_alias.startswith("!"):
            room_id = check_room_id(room_id_or_alias)
        else:
            raise MatrixError(400, Codes.INVALID_PARAM,
                              f"{room_id_or_alias!r} is neither a room ID nor a room alias")
        if not await self._known(ts, room_id):
            remote_servers = [s for s in servers if s != ts.server_name]
            origin = _server_of(room_id)
            if origin is not None and origin != ts.server_name:
                remote_servers.append(origin)
            if not remote_servers:
                raise MatrixError(404, Codes.NOT_FOUND,
                                  f"Unknown room {room_id} and no server to join it through")
            joined = await self._remote.remote_join(
                ts.server_name, user_id, room_id, list(dict.fromkeys(remote_servers)), content
            )
            await ts.s.memberships.unforget(ts.server_name, user_id, joined)
            return joined
        membership, eid = await get_membership(ts, room_id, user_id)
        if membership == "join" and eid is not None:
            current = (await ts.s.events.get_events(ts.server_name, [eid])).get(eid)
            if current is not None and dict(current.content) == content:
                return room_id
        await self._messages.create_event(
            ts, user_id, room_id, "m.room.member", content, state_key=user_id
        )
        await ts.s.memberships.unforget(ts.server_name, user_id, room_id)
        return room_id

    async def invite(
        self, ts: TenantStores, sender: str, room_id: str, target: Any, reason: Any = None
    ) -> None:
        check_room_id(room_id)
        target = check_user_id(target)
        content: dict[str, Any] = {"membership": "invite"}
        _reason(content, reason)
        state = await require_joined(ts, room_id, sender)
        membership, _ = await get_membership(ts, room_id, target, state)
        if membership == "join":
            raise MatrixError(403, Codes.FORBIDDEN, f"{target} is already in the room")
        if membership == "ban":
            raise MatrixError(403, Codes.FORBIDDEN, f"{target} is banned from the room")
        if not target.endswith(":" + ts.server_name):
            await self._remote.remote_invite(ts.server_name, sender, room_id, target, content)
            return
        content.update(await self._profiles.member_content(ts, target))
        await self._messages.create_event(
            ts, sender, room_id, "m.room.member", content, state_key=target
        )

    async def leave(self, ts: TenantStores, user_id: str, room_id: str, reason: Any = None) -> None:
        check_room_id(room_id)
        content: dict[str, Any] = {"membership": "leave"}
        _reason(content, reason)
        if not await self._known(ts, room_id):
            await self._remote.remote_leave(ts.server_name, user_id, room_id, content)
            return
        membership, _ = await get_membership(ts, room_id, user_id)
        if membership in (None, "leave"):
            # Leaving a room one is not in is a no-op (Synapse answers 200 too).
            return
        if membership == "ban":
            raise MatrixError(403, Codes.FORBIDDEN, "You are banned from this room")
        await self._messages.create_event(
            ts, user_id, room_id, "m.room.member", content, state_key=user_id
        )

    async def kick(
        self, ts: TenantStores, sender: str, room_id: str, target: Any, reason: Any = None
    ) -> None:
        await self._change_other(ts, sender, room_id, target, "leave", reason,
                                 require=("join", "invite", "knock"))

    async def ban(
        self, ts: TenantStores, sender: str, room_id: str, target: Any, reason: Any = None
    ) -> None:
        await self._change_other(ts, sender, room_id, target, "ban", reason, require=None)

    async def unban(
        self, ts: TenantStores, sender: str, room_id: str, target: Any, reason: Any = None
    ) -> None:
        await self._change_other(ts, sender, room_id, target, "leave", reason,
                                 require=("ban",))

    async def _change_other(
        self, ts: TenantStores, sender: str, room_id: str, target: Any, membership: str,
        reason: Any, *, require: tuple[str, ...] | None,
    ) -> None:
        check_room_id(room_id)
        target = check_user_id(target)
        content: dict[str, Any] = {"membership": membership}
        _reason(content, reason)
        state = await require_joined(ts, room_id, sender)
        current, _ = await get_membership(ts, room_id, target, state)
        if require is not None and current not in require:
            raise MatrixError(403, Codes.FORBIDDEN,
                              f"{target} is not {' or '.join(require)} in the room")
        if current == membership == "ban":
            return
        await self._messages.create_event(
            ts, sender, room_id, "m.room.member", content, state_key=target
        )

    async def forget(self, ts: TenantStores, user_id: str, room_id: str) -> None:
        """Spec: the user must have left the room first (else ``400 M_UNKNOWN``)."""
        check_room_id(room_id)
        membership, _ = await get_membership(ts, room_id, user_id)
        if membership in ("join", "invite", "knock"):
            raise MatrixError(400, Codes.UNKNOWN, "You must leave the room before forgetting it")
        if membership is None:
            raise MatrixError(404, Codes.NOT_FOUND, f"You have no membership in {room_id}")
        await ts.s.memberships.forget(ts.server_name, user_id, room_id)
