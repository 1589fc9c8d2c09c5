-- Delivery guarantees (docs/usage/delivery.md): deliveries the sender gave up
-- on, and what the receiver needs to refuse a reused transaction ID.

-- One row per outbox row moved out of federation_outbox without being
-- acknowledged, so nothing leaves the outbox unseen. `reason` is one of
-- max_attempts, max_age, rejected (the peer answered 4xx other than 429),
-- pdu_rejected (an error for this PDU in a 200 /send answer) or
-- event_missing (the event is no longer stored). The other columns are the
-- outbox row's as it was (attempts, first/last attempt, last error), plus
-- dead_ts, when it was moved, and seq, the outbox position it had (a replay
-- queues rows again in that order). Replaying a row deletes it and queues a fresh
-- outbox row; purging deletes it. dead_letter_id is random (16 hex digits), so
-- IDs stay unique across the databases of a node's tenants.
CREATE TABLE federation_dead_letters (
    dead_letter_id TEXT NOT NULL PRIMARY KEY,
    origin TEXT NOT NULL,
    destination TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    event_id TEXT,
    room_id TEXT,
    edu_type TEXT,
    edu_content TEXT,
    reason TEXT NOT NULL,
    last_error TEXT,
    attempts BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    first_attempt_ts BIGINT,
    last_attempt_ts BIGINT,
    dead_ts BIGINT NOT NULL,
    txn_id TEXT
);
CREATE INDEX federation_dead_letters_destination
    ON federation_dead_letters (destination, dead_ts);
CREATE INDEX federation_dead_letters_room ON federation_dead_letters (room_id, dead_ts);
CREATE INDEX federation_dead_letters_dead_ts ON federation_dead_letters (dead_ts);

-- SHA-256 (hex) of the canonical JSON of a received transaction's body, so
-- the same txnId with other content is refused (NULL: recorded before 0008).
ALTER TABLE federation_received_transactions ADD COLUMN body_hash TEXT;
