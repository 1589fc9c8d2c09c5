"""User profiles (client-server-api "Profiles"): displayname and avatar_url.

A change of a user's profile is also sent as a new ``m.room.member`` event
(same membership, new ``displayname``/``avatar_url``) in every room they are
joined to, as the spec's "Events on Change of Profile Information" asks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from federation.errors import Codes, MatrixError
from homeserver.handlers.client_stores import TenantStores
from homeserver.handlers.message import MessageHandler
from homeserver.handlers.remote_rooms import RemoteRooms
from homeserver.handlers.room_access import check_user_id, get_membership

__all__ = ["PROFILE_FIELDS", "ProfileHandler"]

logger = logging.getLogger(__name__)

PROFILE_FIELDS = ("displayname", "avatar_url")
MAX_DISPLAYNAME_LEN = 256
MAX_AVATAR_URL_LEN = 1000

UserExists = Callable[[str, str], Awaitable[bool]]


def default_displayname(user_id: str) -> str:
    return user_id[1:].split(":", 1)[0]


class ProfileHandler:
    def __init__(
        self, messages: MessageHandler, remote: RemoteRooms,
        user_exists: UserExists | None = None,
    ) -> None:
        self._messages = messages
        self._remote = remote
        self._user_exists = user_exists

    def set_user_exists(self, fn: UserExists) -> None:
        self._user_exists = fn

    async def get_profile(self, ts: TenantStores, user_id: str) -> dict[str, Any]:
        check_user_id(user_id)
        if not user_id.endswith(":" + ts.server_name):
            return await self._remote.query_profile(ts.server_name, user_id)
        stored = await ts.s.profiles.get_profile(ts.server_name, user_id)
        if stored is None:
            if self._user_exists is not None and not await self._user_exists(
                ts.server_name, user_id
            ):
                raise MatrixError(404, Codes.NOT_FOUND, f"Profile of {user_id} not found")
            return {"displayname": default_displayname(user_id)}
        out: dict[str, Any] = {}
        if stored.displayname is not None:
            out["displayname"] = stored.displayname
        if stored.avatar_url is not None:
            out["avatar_url"] = stored.avatar_url
        return out

    async def set_field(
        self, ts: TenantStores, requester_id: str, user_id: str, field: str, value: Any,
        *, is_admin: bool = False,
    ) -> None:
        check_user_id(user_id)
        if field not in PROFILE_FIELDS:
            raise MatrixError(400, Codes.INVALID_PARAM, f"Unknown profile field {field!r}")
        if user_id != requester_id and not is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "You cannot change another user's profile")
        if not user_id.endswith(":" + ts.server_name):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{user_id} is not a local user")
        if value is not None and not isinstance(value, str):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{field} must be a string")
        limit = MAX_DISPLAYNAME_LEN if field == "displayname" else MAX_AVATAR_URL_LEN
        if value is not None and len(value) > limit:
            raise MatrixError(400, Codes.INVALID_PARAM,
                              f"{field} is longer than {limit} characters")
        if value == "":
            value = None
        await ts.s.profiles.set_field(
            ts.server_name, user_id, field, value,
            default_displayname=default_displayname(user_id),
        )
        await self._update_member_events(ts, user_id)

    async def member_content(self, ts: TenantStores, user_id: str) -> dict[str, Any]:
        """``displayname``/``avatar_url`` for a new member event of a local user."""
        stored = await ts.s.profiles.get_profile(ts.server_name, user_id)
        out: dict[str, Any] = {}
        if stored is None:
            out["displayname"] = default_displayname(user_id)
            return out
        if stored.displayname is not None:
            out["displayname"] = stored.displayname
        if stored.avatar_url is not None:
            out["avatar_url"] = stored.avatar_url
        return out

    async def _update_member_events(self, ts: TenantStores, user_id: str) -> None:
        profile = await self.member_content(ts, user_id)
        for room_id in await self._messages.joined_rooms(ts, user_id):
            membership, eid = await get_membership(ts, room_id, user_id)
            if membership != "join" or eid is None:
                continue
            ev = (await ts.s.events.get_events(ts.server_name, [eid])).get(eid)
            content = dict(ev.content) if ev is not None else {"membership": "join"}
            content.pop("displayname", None)
            content.pop("avatar_url", None)
            content.update(profile)
            content["membership"] = "join"
            if ev is not None and dict(ev.content) == content:
                continue
            try:
                await self._messages.create_event(
                    ts, user_id, room_id, "m.room.member", content, state_key=user_id
                )
            except MatrixError as e:
                # One room refusing (say, power levels) must not stop the rest.
                logger.info("Profile update of %s in %s refused: %s", user_id, room_id, e)
