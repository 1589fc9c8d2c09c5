-- Outbound federation (docs/federate.md, "Sending"): what this node owes other
-- servers, written in the same transaction as what it owes them, and the
-- state of each destination.

-- One row per (sending tenant, destination, item). `seq` is allocated per
-- origin in the transaction that writes the row (counter
-- `federation_outbox` of event_graph_counters), under the origin's outbox
-- lock, so it follows the stream order of the events. A PDU row names its
-- event (the JSON is read from `events` when sent); an EDU row carries its
-- content. `txn_id` is set when the row is placed into a transaction and kept
-- until the destination acknowledges it: a retry resends the same rows under
-- the same txn_id. attempts/first_attempt_ts/last_error are what a dead-letter
-- decision needs (issue 7).
CREATE TABLE federation_outbox (
    origin TEXT NOT NULL,
    destination TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    event_id TEXT,
    room_id TEXT,
    edu_type TEXT,
    edu_content TEXT,
    created_ts BIGINT NOT NULL,
    txn_id TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    first_attempt_ts BIGINT,
    last_attempt_ts BIGINT,
    last_error TEXT,
    PRIMARY KEY (origin, destination, seq)
);
CREATE INDEX federation_outbox_txn ON federation_outbox (origin, destination, txn_id);

-- The transaction in flight per (origin, destination): at most one. Its
-- origin_server_ts is kept so a retry is byte-for-byte the same transaction
-- (the receiver refuses a known txn_id with different content).
CREATE TABLE federation_outbox_transactions (
    origin TEXT NOT NULL,
    destination TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, destination)
);

-- Transaction IDs used per (origin, destination): the next one is
-- "<ms at allocation>-<n>", unique even if this table is ever lost.
CREATE TABLE federation_txn_counters (
    origin TEXT NOT NULL,
    destination TEXT NOT NULL,
    last_n BIGINT NOT NULL,
    PRIMARY KEY (origin, destination)
);

-- Reachability of each destination, shared by every tenant of this database:
-- persisted so a restart does not hammer a server that is down.
-- next_retry_ts NULL: not backing off.
CREATE TABLE federation_destinations (
    destination TEXT NOT NULL PRIMARY KEY,
    failure_count BIGINT NOT NULL DEFAULT 0,
    retry_interval_ms BIGINT NOT NULL DEFAULT 0,
    next_retry_ts BIGINT,
    last_success_ts BIGINT,
    last_failure_ts BIGINT,
    last_error TEXT
);
