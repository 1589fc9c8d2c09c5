"""``POST /createRoom`` (client-server-api "Creation").

The events, in the spec's order: ``m.room.create`` (with
``creation_content``), the creator's join, ``m.room.power_levels`` (preset
defaults, then ``power_level_content_override``), ``m.room.canonical_alias``
for ``room_alias_name``, the preset's join rules, history visibility and
guest access, ``initial_state``, ``m.room.name``, ``m.room.topic``, then the
invites. All of them, the alias and the directory entry are written in one
transaction: a refused event (bad override, bad initial state) leaves nothing.

Presets: ``private_chat`` (invite-only, shared history, guests can join),
``trusted_private_chat`` (as private, invitees get the creator's power),
``public_chat`` (public join rule, shared history, no guests). Without a
preset, ``visibility: public`` picks ``public_chat``, else ``private_chat``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from federation.events import Event
from federation.room_versions import get_room_version
from homeserver.handlers.client_stores import TenantStores
from homeserver.handlers.directory import parse_room_alias
from homeserver.handlers.event_creation import default_power_levels
from homeserver.handlers.message import MessageHandler, check_event_type
from homeserver.handlers.profile import ProfileHandler
from homeserver.handlers.remote_rooms import RemoteRooms
from homeserver.handlers.room_access import check_user_id
from storage.database import Transaction
from storage.errors import UniqueViolation

__all__ = ["PRESETS", "RoomCreationClientHandler"]

logger = logging.getLogger(__name__)

PRESETS = {
    "private_chat": {"join_rule": "invite", "history_visibility": "shared",
                     "guest_access": "can_join", "invitees_admin": False},
    "trusted_private_chat": {"join_rule": "invite", "history_visibility": "shared",
                             "guest_access": "can_join", "invitees_admin": True},
    "public_chat": {"join_rule": "public", "history_visibility": "shared",
                    "guest_access": "forbidden", "invitees_admin": False},
}

#: Refuses a room over the tenant's ``max_rooms``, counting inside the given
#: transaction (which holds the tenant's ``rooms:`` lock).
RoomQuota = Callable[[str, Transaction], Awaitable[None]]


def _bad(msg: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, msg)


def _opt_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad(f"{key} must be a string")
    return value


def _opt_obj(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(f"{key} must be an object")
    return dict(value)


class RoomCreationClientHandler:
    def __init__(
        self, clock: Clock, messages: MessageHandler, profiles: ProfileHandler,
        remote: RemoteRooms, *, default_room_version: str = "12",
        check_can_create_room: RoomQuota | None = None,
    ) -> None:
        self._clock = clock
        self._messages = messages
        self._profiles = profiles
        self._remote = remote
        self._default_rv = default_room_version
        self._check_can_create_room = check_can_create_room

    async def create_room(
        self, ts: TenantStores, creator: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        tenant = ts.server_name
        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise _bad('visibility must be "public" or "private"')
        preset_name = body.get("preset")
        if preset_name is None:
            preset_name = "public_chat" if visibility == "public" else "private_chat"
        if preset_name not in PRESETS:
            raise _bad(f"Unknown preset {preset_name!r}")
        preset = PRESETS[preset_name]
        rv_id = body.get("room_version", self._default_rv)
        if not isinstance(rv_id, str):
            raise MatrixError(400, Codes.BAD_JSON, "room_version must be a string")
        rv = get_room_version(rv_id)
        name = _opt_str(body, "name")
        topic = _opt_str(body, "topic")
        if name is not None and len(name) > 255:
            raise _bad("name is longer than 255 characters")
        alias_name = _opt_str(body, "room_alias_name")
        alias: str | None = None
        if alias_name is not None:
            if not alias_name or any(c in alias_name for c in ": \t\n#"):
                raise _bad(f"Invalid room_alias_name {alias_name!r}")
            alias = f"#{alias_name}:{tenant}"
            parse_room_alias(alias)
            if await ts.s.aliases.get_alias(tenant, alias) is not None:
                raise MatrixError(400, Codes.ROOM_IN_USE, f"Room alias {alias} already taken")
        invitees_raw = body.get("invite", [])
        if not isinstance(invitees_raw, list):
            raise _bad("invite must be a list of user IDs")
        invitees = list(dict.fromkeys(check_user_id(u) for u in invitees_raw))
        invitees = [u for u in invitees if u != creator]
        is_direct = body.get("is_direct", False)
        if not isinstance(is_direct, bool):
            raise _bad("is_direct must be a boolean")
        creation_content = _opt_obj(body, "creation_content")
        pl_override = _opt_obj(body, "power_level_content_override")
        initial_state = body.get("initial_state", [])
        if not isinstance(initial_state, list):
            raise _bad("initial_state must be a list")
        state_events: list[tuple[str, str, dict[str, Any]]] = []
        for item in initial_state:
            if not isinstance(item, Mapping):
                raise _bad("initial_state entries must be objects")
            etype, skey, content = item.get("type"), item.get("state_key", ""), item.get(
                "content")
            if not isinstance(etype, str) or not isinstance(skey, str):
                raise _bad("initial_state entries need a string type and state_key")
            if not isinstance(content, Mapping):
                raise _bad("initial_state entries need an object content")
            check_event_type(etype)
            state_events.append((etype, skey, dict(content)))

        now = self._clock.time_ms()
        created: list[Event] = []
        creation = ts.s.creation

        async def send(etype: str, content: Mapping[str, Any], state_key: str = "") -> None:
            created.append(await creation.create_event_txn(
                txn, tenant, room_id, event_type=etype, sender=creator,
                content=content, state_key=state_key,
            ))

        member_content = {"membership": "join",
                          **await self._profiles.member_content(ts, creator)}
        invitee_contents = {
            u: {"membership": "invite", **({"is_direct": True} if is_direct else {}),
                **(await self._profiles.member_content(ts, u)
                   if u.endswith(":" + tenant) else {})}
            for u in invitees
        }
        async with ts.db.transaction("create_room") as txn:
            if self._check_can_create_room is not None:
                # Count and create under one lock: concurrent createRooms
                # cannot both see the last free slot.
                await txn.lock(f"rooms:{tenant}")
                await self._check_can_create_room(tenant, txn)
            room_id = await creation.create_room_start_txn(
                txn, tenant, creator, rv, extra_content=creation_content
            )
            await send("m.room.member", member_content, creator)
            extra_users = {u: 100 for u in invitees} if preset["invitees_admin"] else None
            pl = default_power_levels(creator, rv, extra_users)
            pl.update(pl_override)
            await send("m.room.power_levels", pl)
            if alias is not None:
                await send("m.room.canonical_alias", {"alias": alias})
            await send("m.room.join_rules", {"join_rule": preset["join_rule"]})
            await send("m.room.history_visibility",
                       {"history_visibility": preset["history_visibility"]})
            if preset["guest_access"] == "can_join":
                await send("m.room.guest_access", {"guest_access": "can_join"})
            for etype, skey, content in state_events:
                await send(etype, content, skey)
            if name is not None:
                await send("m.room.name", {"name": name})
            if topic is not None:
                # m.topic is a TopicContentBlock (spec v1.15): an object
                # holding the m.text representations, not a bare list.
                await send("m.room.topic", {
                    "topic": topic,
                    "m.topic": {"m.text": [{"body": topic, "mimetype": "text/plain"}]},
                })
            for u in invitees:
                if u.endswith(":" + tenant):
                    await send("m.room.member", invitee_contents[u], u)
            if alias is not None:
                try:
                    await ts.s.aliases.create_alias_txn(txn, tenant, alias, room_id, creator, now)
                except UniqueViolation:
                    raise MatrixError(400, Codes.ROOM_IN_USE,
                                      f"Room alias {alias} already taken") from None
            if visibility == "public":
                await ts.s.directory.publish_txn(txn, tenant, room_id, now)
        create = (await ts.s.events.state.get_current_state(tenant, room_id)).get(
            ("m.room.create", ""))
        all_events = list(created)
        if create is not None:
            got = (await ts.s.events.get_events(tenant, [create])).get(create)
            if got is not None:
                all_events.insert(0, got)
        self._messages.new_events(tenant, all_events)
        for u in invitees:
            if not u.endswith(":" + tenant):
                try:
                    await self._remote.remote_invite(
                        tenant, creator, room_id, u, invitee_contents[u]
                    )
                except MatrixError as e:
                    # The room exists: report it; the invite can be retried.
                    logger.warning("createRoom %s: inviting %s failed: %s", room_id, u, e)
        out: dict[str, Any] = {"room_id": room_id}
        if alias is not None:
            out["room_alias"] = alias
        return out
