"""What peers sent this node that is not an event of a room graph.

Tables of migration 0007: ``federation_received_transactions`` (the answer
given to each ``PUT /send/{txnId}``, per tenant and origin, so a retried
transaction is answered the same and changes nothing: server-server-api
"Transactions") and ``federation_received_invites`` (invites of local users
received with ``PUT /v2/invite``, with the stripped room state to show them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage.database import Database
from storage.stores.state import Queryable, Writer, allocate_counter

__all__ = ["FederationInboundStore", "ReceivedInvite", "ReceivedTransaction"]


@dataclass(frozen=True)
class ReceivedTransaction:
    """The record of a handled ``PUT /send/{txnId}`` (migrations 0007, 0008)."""

    response: dict[str, Any]
    received_ts: int
    #: SHA-256 of the body's canonical JSON; ``None`` if recorded before 0008.
    body_hash: str | None


@dataclass(frozen=True)
class ReceivedInvite:
    """An invite of ``invitee`` (a local user) received over federation."""

    event_id: str
    room_id: str
    invitee: str
    sender: str
    room_version: str
    event: dict[str, Any]
    invite_room_state: list[dict[str, Any]]
    received_ts: int
    stream_id: int


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class FederationInboundStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def _conn(self, txn: Queryable | None) -> Queryable:
        return self._db if txn is None else txn

    # Transactions

    async def get_transaction_response(
        self, tenant: str, origin: str, txn_id: str, *, txn: Queryable | None = None
    ) -> dict[str, Any] | None:
        """The response given to ``origin``'s transaction ``txn_id``, if it was handled."""
        rows = await self._conn(txn).fetch(
            "SELECT response_json FROM federation_received_transactions "
            "WHERE tenant = $1 AND origin = $2 AND txn_id = $3",
            tenant, origin, txn_id,
        )
        if not rows:
            return None
        value = json.loads(rows[0][0])
        assert isinstance(value, dict)
        return value

    async def get_transaction_record(
        self, tenant: str, origin: str, txn_id: str
    ) -> ReceivedTransaction | None:
        """The record of ``origin``'s transaction ``txn_id``, with its body hash."""
        row = await self._db.fetchrow(
            "SELECT response_json, received_ts, body_hash FROM federation_received_transactions "
            "WHERE tenant = $1 AND origin = $2 AND txn_id = $3",
            tenant, origin, txn_id,
        )
        if row is None:
            return None
        value = json.loads(row[0])
        assert isinstance(value, dict)
        return ReceivedTransaction(value, int(row[1]), row[2])

    async def forget_transaction(self, tenant: str, origin: str, txn_id: str) -> None:
        """Drop one record (older than the idempotency window)."""
        await self._db.execute(
            "DELETE FROM federation_received_transactions "
            "WHERE tenant = $1 AND origin = $2 AND txn_id = $3",
            tenant, origin, txn_id,
        )

    async def record_transaction_response(
        self, tenant: str, origin: str, txn_id: str, response: Mapping[str, Any], now_ms: int,
        body_hash: str | None = None,
    ) -> None:
        """Remember the response; a second record of the same transaction keeps the first."""
        await self._db.execute(
            "INSERT INTO federation_received_transactions "
            "(tenant, origin, txn_id, response_json, received_ts, body_hash) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            tenant, origin, txn_id, _dumps(dict(response)), now_ms, body_hash,
        )

    async def prune_transactions(self, older_than_ms: int) -> None:
        """Forget transactions received before ``older_than_ms`` (senders retry for
        far less long; Synapse keeps them a day)."""
        await self._db.execute(
            "DELETE FROM federation_received_transactions WHERE received_ts < $1", older_than_ms
        )

    # Invites

    async def store_invite_txn(
        self,
        txn: Writer,
        tenant: str,
        *,
        event_id: str,
        room_id: str,
        invitee: str,
        sender: str,
        room_version: str,
        event: Mapping[str, Any],
        invite_room_state: Sequence[Mapping[str, Any]],
        now_ms: int,
    ) -> int:
        """Record an invite (idempotent per event ID); returns its stream ID."""
        rows = await txn.fetch(
            "SELECT stream_id FROM federation_received_invites "
            "WHERE tenant = $1 AND event_id = $2",
            tenant, event_id,
        )
        if rows:
            return int(rows[0][0])
        stream_id = await allocate_counter(txn, tenant, "federation_invites", 1)
        await txn.execute(
            "INSERT INTO federation_received_invites (tenant, event_id, room_id, invitee, "
            "sender, room_version, event_json, invite_room_state, received_ts, stream_id) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            tenant, event_id, room_id, invitee, sender, room_version, _dumps(dict(event)),
            _dumps([dict(s) for s in invite_room_state]), now_ms, stream_id,
        )
        return stream_id

    async def get_invites_for_user(
        self, tenant: str, invitee: str, *, since_stream_id: int = 0
    ) -> list[ReceivedInvite]:
        """Invites of ``invitee`` received after ``since_stream_id``, oldest first.

        Whether an invite still stands (the user may have joined or rejected it
        since) is for the caller to decide from the room's membership.
        """
        rows = await self._db.fetch(
            "SELECT event_id, room_id, invitee, sender, room_version, event_json, "
            "invite_room_state, received_ts, stream_id FROM federation_received_invites "
            "WHERE tenant = $1 AND invitee = $2 AND stream_id > $3 ORDER BY stream_id",
            tenant, invitee, since_stream_id,
        )
        return [
            ReceivedInvite(
                event_id=str(r[0]), room_id=str(r[1]), invitee=str(r[2]), sender=str(r[3]),
                room_version=str(r[4]), event=json.loads(r[5]),
                invite_room_state=json.loads(r[6]), received_ts=int(r[7]),
                stream_id=int(r[8]),
            )
            for r in rows
        ]

    async def get_invite(self, tenant: str, event_id: str) -> ReceivedInvite | None:
        rows = await self._db.fetch(
            "SELECT invitee FROM federation_received_invites "
            "WHERE tenant = $1 AND event_id = $2",
            tenant, event_id,
        )
        if not rows:
            return None
        for inv in await self.get_invites_for_user(tenant, str(rows[0][0])):
            if inv.event_id == event_id:
                return inv
        return None
