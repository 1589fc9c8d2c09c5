"""What the client API asks of other servers: :class:`RemoteRooms` over federation.

Spec: ``server-server-api.md`` "Joining Rooms" (:mod:`.remote_join`),
"Leaving Rooms (Rejecting Invites)" (``make_leave``/``send_leave`` v2, also
how a user who was only invited declines), "Inviting to a room" (``PUT
/v2/invite``: the target's server countersigns the invite before it enters
the room), "Querying for information" (``query/directory``,
``query/profile``) and "Published Room Directory" (``publicRooms``).

Other tenants of this node are reached the same way, over the signed
protocol, exactly like any remote server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from signedjson.types import SigningKey

from federation.clock import Clock
from federation.errors import Codes, MatrixError
from federation.event_format import is_valid_user_id
from federation.events import Event
from federation.hashes import compute_event_id
from federation.keyring import Keyring
from federation.room_versions import get_room_version
from federation.signing import add_hashes_and_signatures
from federation.transport.client import FederationClient, FederationClientError
from homeserver.handlers.event_creation import EventCreationHandler
from homeserver.handlers.event_receipt import EventReceiptHandler, Outcome
from homeserver.handlers.remote_join import (
    RemoteJoiner,
    _as_matrix_error,
    candidate_servers,
    server_of,
)
from storage.database import Database
from storage.stores.events import EventStore, NewEvent
from storage.stores.federation_inbound import FederationInboundStore

__all__ = ["FederationRemoteRooms"]

logger = logging.getLogger(__name__)

FED = "/_matrix/federation"
#: invites-v2.yaml: the stripped state a client sees with an invite; from v12
#: on these are full events (the receiver checks their signatures).
INVITE_STATE_KEYS = (
    ("m.room.create", ""), ("m.room.join_rules", ""), ("m.room.name", ""),
    ("m.room.avatar", ""), ("m.room.canonical_alias", ""), ("m.room.encryption", ""),
    ("m.room.topic", ""),
)


def _q(s: str) -> str:
    return quote(s, safe="")


class _Abort(Exception):
    """Rolls back a transaction used only to build an event."""


class FederationRemoteRooms:
    """:class:`~homeserver.handlers.remote_rooms.RemoteRooms` for the tenants of one database."""

    def __init__(
        self,
        *,
        db: Database,
        events: EventStore,
        creation: EventCreationHandler,
        keyring: Keyring,
        client: FederationClient,
        clock: Clock,
        signing_key_for: Callable[[str], SigningKey],
    ) -> None:
        self._db = db
        self._events = events
        self._creation = creation
        self._client = client
        self._clock = clock
        self._signing_key_for = signing_key_for
        self._receipt = EventReceiptHandler(db, events)
        self._invites = FederationInboundStore(db)
        self.joiner = RemoteJoiner(
            db=db, events=events, keyring=keyring, client=client, clock=clock,
            signing_key_for=signing_key_for,
        )

    # -- joins --------------------------------------------------------------------------------

    async def remote_join(
        self, tenant: str, user_id: str, room_id_or_alias: str, servers: Sequence[str],
        content: Mapping[str, Any],
    ) -> str:
        room_id, via = room_id_or_alias, list(servers)
        if room_id_or_alias.startswith("#"):
            room_id, alias_servers = await self.query_alias(tenant, room_id_or_alias)
            via = [*via, *alias_servers]
        result = await self.joiner.join(tenant, user_id, room_id, via, content)
        return result.room_id

    # -- leaves and invite rejections ---------------------------------------------------------

    async def remote_leave(
        self, tenant: str, user_id: str, room_id: str, content: Mapping[str, Any]
    ) -> str:
        """make_leave/send_leave through the servers that may know the room:
        the inviter's (from a stored invite), then the room ID's."""
        servers = await self._servers_for_leave(tenant, user_id, room_id)
        candidates = candidate_servers(room_id, servers, tenant)
        if not candidates:
            raise MatrixError(404, Codes.NOT_FOUND, f"No server to leave {room_id} through")
        last: MatrixError | None = None
        for server in candidates:
            try:
                return await self._leave_via(tenant, user_id, room_id, server, content)
            except FederationClientError as e:
                logger.info("Leaving %s via %s failed: %s", room_id, server, e)
                last = _as_matrix_error(e, f"leave {room_id} via {server}")
            except MatrixError as e:
                last = e
        assert last is not None
        raise last

    async def _servers_for_leave(self, tenant: str, user_id: str, room_id: str) -> list[str]:
        """The servers of whoever invited ``user_id`` here, latest first."""
        invites = await self._invites.get_invites_for_user(tenant, user_id)
        return [server_of(i.sender) for i in reversed(invites) if i.room_id == room_id]

    async def _leave_via(
        self, tenant: str, user_id: str, room_id: str, server: str, content: Mapping[str, Any]
    ) -> str:
        made = await self._client.get_json(
            server, f"{FED}/v1/make_leave/{_q(room_id)}/{_q(user_id)}", origin=tenant
        )
        if not isinstance(made, dict) or not isinstance(made.get("event"), dict):
            raise MatrixError(502, Codes.UNKNOWN, f"{server}: make_leave answer has no event")
        rv = get_room_version(made.get("room_version", "1"))
        pdu = RemoteJoiner._fill_template(made["event"], user_id, room_id, "leave", content)
        signed = add_hashes_and_signatures(pdu, rv, tenant, self._signing_key_for(tenant))
        event_id = compute_event_id(signed, rv)
        await self._client.put_json(
            server, f"{FED}/v2/send_leave/{_q(room_id)}/{_q(event_id)}", signed, origin=tenant
        )
        # Kept as an outlier: it supersedes the invite for this user's /sync;
        # the room's state is not held here.
        async with self._db.transaction("remote_leave") as txn:
            await self._events.persist_events_txn(
                txn, tenant, [NewEvent(Event(signed, event_id, rv), outlier=True)]
            )
        logger.info("%s left %s via %s", user_id, room_id, server)
        return event_id

    # -- invites ------------------------------------------------------------------------------

    async def remote_invite(
        self, tenant: str, sender: str, room_id: str, target: str, content: Mapping[str, Any]
    ) -> str:
        """Build the invite as for any local event, have the target's server
        countersign it (``PUT /v2/invite``), then persist it (with its outbox
        rows, so the other servers of the room get it) in one transaction."""
        if not is_valid_user_id(target):
            raise MatrixError(400, Codes.INVALID_PARAM, f"{target} is not a user ID")
        destination = server_of(target)
        event = await self._build_unpersisted(
            tenant, room_id, sender=sender, target=target,
            content={**content, "membership": "invite"},
        )
        rv = event.room_version
        body = {
            "event": event.pdu,
            "room_version": rv.identifier,
            "invite_room_state": await self._invite_room_state(tenant, room_id, sender),
        }
        try:
            resp = await self._client.put_json(
                destination, f"{FED}/v2/invite/{_q(room_id)}/{_q(event.event_id)}", body,
                origin=tenant,
            )
        except FederationClientError as e:
            raise _as_matrix_error(e, f"invite {target}") from None
        signed = resp.get("event") if isinstance(resp, dict) else None
        if not isinstance(signed, dict) or _id_or_none(signed, rv) != event.event_id:
            raise MatrixError(502, Codes.UNKNOWN,
                              f"{destination} answered the invite with a different event")
        sigs = signed.get("signatures")
        if not isinstance(sigs, dict) or destination not in sigs:
            raise MatrixError(502, Codes.UNKNOWN, f"{destination} did not sign the invite")
        final = Event(signed, event.event_id, rv)
        async with self._db.transaction("remote_invite") as txn:
            outcome = await self._receipt.receive_verified_pdu_txn(txn, tenant, final)
            if outcome.outcome is not Outcome.ACCEPTED:
                raise MatrixError(403, Codes.FORBIDDEN,
                                  f"the invite was {outcome.outcome}: {outcome.reason}")
            await self._creation.outbox.write_event_txn(txn, tenant, final)
        return event.event_id

    async def _build_unpersisted(
        self, tenant: str, room_id: str, *, sender: str, target: str, content: dict[str, Any]
    ) -> Event:
        """The event ``create_event`` would make (selected, authorised and
        signed), from a transaction rolled back so that nothing is stored yet."""
        built: list[Event] = []
        try:
            async with self._db.transaction("build_invite") as txn:
                built.append(await self._creation.create_event_txn(
                    txn, tenant, room_id, event_type="m.room.member", sender=sender,
                    state_key=target, content=content,
                ))
                raise _Abort
        except _Abort:
            pass
        return built[0]

    async def _invite_room_state(
        self, tenant: str, room_id: str, sender: str
    ) -> list[dict[str, Any]]:
        state = await self._events.state.get_current_state(tenant, room_id)
        keys = [*INVITE_STATE_KEYS, ("m.room.member", sender)]
        ids = [state[k] for k in keys if k in state]
        loaded = await self._events.get_events(tenant, ids)
        return [dict(loaded[i].pdu) for i in ids if i in loaded]

    # -- queries ------------------------------------------------------------------------------

    async def remote_public_rooms(
        self, tenant: str, server: str, *, limit: int | None, since: str | None,
        search_filter: Mapping[str, Any] | None, include_all_networks: bool,
        third_party_instance_id: str | None,
    ) -> dict[str, Any]:
        try:
            if search_filter:
                body: dict[str, Any] = {"filter": dict(search_filter),
                                        "include_all_networks": include_all_networks}
                if limit is not None:
                    body["limit"] = limit
                if since is not None:
                    body["since"] = since
                if third_party_instance_id is not None:
                    body["third_party_instance_id"] = third_party_instance_id
                resp = await self._client.post_json(
                    server, f"{FED}/v1/publicRooms", body, origin=tenant)
            else:
                query: dict[str, str] = {
                    "include_all_networks": "true" if include_all_networks else "false"}
                if limit is not None:
                    query["limit"] = str(limit)
                if since is not None:
                    query["since"] = since
                if third_party_instance_id is not None:
                    query["third_party_instance_id"] = third_party_instance_id
                resp = await self._client.get_json(
                    server, f"{FED}/v1/publicRooms", query=query, origin=tenant)
        except FederationClientError as e:
            raise _as_matrix_error(e, f"list the public rooms of {server}") from None
        if not isinstance(resp, dict) or not isinstance(resp.get("chunk"), list):
            raise MatrixError(502, Codes.UNKNOWN, f"{server}: publicRooms answer has no chunk")
        return resp

    async def query_alias(self, tenant: str, room_alias: str) -> tuple[str, list[str]]:
        server = server_of(room_alias)
        try:
            resp = await self._client.get_json(
                server, f"{FED}/v1/query/directory", query={"room_alias": room_alias},
                origin=tenant,
            )
        except FederationClientError as e:
            raise _as_matrix_error(e, f"resolve {room_alias}") from None
        room_id = resp.get("room_id") if isinstance(resp, dict) else None
        servers = resp.get("servers") if isinstance(resp, dict) else None
        if not isinstance(room_id, str):
            raise MatrixError(502, Codes.UNKNOWN, f"{server}: directory answer has no room_id")
        return room_id, [s for s in (servers or []) if isinstance(s, str)]

    async def query_profile(self, tenant: str, user_id: str) -> dict[str, Any]:
        server = server_of(user_id)
        try:
            resp = await self._client.get_json(
                server, f"{FED}/v1/query/profile", query={"user_id": user_id}, origin=tenant,
            )
        except FederationClientError as e:
            raise _as_matrix_error(e, f"read the profile of {user_id}") from None
        if not isinstance(resp, dict):
            raise MatrixError(502, Codes.UNKNOWN, f"{server}: profile answer is not an object")
        return {k: v for k, v in resp.items() if k in ("displayname", "avatar_url")}


def _id_or_none(pdu: Mapping[str, Any], rv: Any) -> str | None:
    try:
        return compute_event_id(pdu, rv)
    except Exception:
        return None
