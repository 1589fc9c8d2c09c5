-- Inbound federation (docs/federate.md): what peers sent us that is not an event
-- of the room graph.

-- Transactions received with PUT /_matrix/federation/v1/send/{txnId}, with the
-- response given, so a retried transaction is answered the same way and
-- changes nothing (server-server-api "Transactions": the sender retries the
-- same txnId until it gets a 200).
CREATE TABLE federation_received_transactions (
    tenant TEXT NOT NULL,
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response_json TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (tenant, origin, txn_id)
);
CREATE INDEX federation_received_transactions_ts
    ON federation_received_transactions (received_ts);

-- Invites of local users to rooms this tenant may not be in
-- (PUT /_matrix/federation/v2/invite): the invite event as we signed it and the
-- stripped state the inviter sent, for /sync's "invite" section. stream_id
-- orders them; a later membership of the user in the room's graph supersedes it.
CREATE TABLE federation_received_invites (
    tenant TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    invitee TEXT NOT NULL,
    sender TEXT NOT NULL,
    room_version TEXT NOT NULL,
    event_json TEXT NOT NULL,
    invite_room_state TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (tenant, event_id)
);
CREATE INDEX federation_received_invites_invitee
    ON federation_received_invites (tenant, invitee, stream_id);
