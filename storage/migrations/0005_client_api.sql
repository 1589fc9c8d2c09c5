-- Client-Server API tables (docs/client_api.md). Every row is scoped by the
-- tenant (local server name) it belongs to, which leads every primary key.

-- Room aliases this tenant resolves: #alias:tenant -> room ID
-- (client-server-api "Room aliases").
CREATE TABLE room_aliases (
    tenant TEXT NOT NULL,
    room_alias TEXT NOT NULL,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (tenant, room_alias)
);
CREATE INDEX room_aliases_room ON room_aliases (tenant, room_id);

-- Transaction IDs of PUT /send and /state requests: the same (access token,
-- txnId) gives back the same event (client-server-api "Transaction
-- identifiers").
CREATE TABLE client_txns (
    tenant TEXT NOT NULL,
    token_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (tenant, token_id, txn_id)
);
CREATE INDEX client_txns_event ON client_txns (tenant, event_id);

-- Receipts (m.read, m.read.private), latest per user, type and thread;
-- stream_id orders them for /sync.
CREATE TABLE receipts (
    tenant TEXT NOT NULL,
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (tenant, room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_stream ON receipts (tenant, stream_id);

-- Global and per-room account data (m.fully_read read markers among it).
-- room_id '' is global account data.
CREATE TABLE account_data (
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (tenant, user_id, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (tenant, user_id, stream_id);

-- Users' global profiles (displayname, avatar_url). NULL: not set.
CREATE TABLE profiles (
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    displayname TEXT,
    avatar_url TEXT,
    PRIMARY KEY (tenant, user_id)
);

-- The tenant's public room directory: rooms published with visibility public.
CREATE TABLE room_directory (
    tenant TEXT NOT NULL,
    room_id TEXT NOT NULL,
    published_ts BIGINT NOT NULL,
    PRIMARY KEY (tenant, room_id)
);

-- Rooms a user has forgotten (POST /rooms/{roomId}/forget): left out of /sync.
CREATE TABLE room_forgotten (
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (tenant, user_id, room_id)
);

-- Filters uploaded with POST /user/{userId}/filter.
CREATE TABLE user_filters (
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter_json TEXT NOT NULL,
    PRIMARY KEY (tenant, user_id, filter_id)
);

-- The rooms a user has a membership event in (their m.room.member state
-- key), and the redactions of a room, are read from the event graph.
CREATE INDEX events_type_state_key ON events (tenant, type, state_key);
CREATE INDEX events_room_type ON events (tenant, room_id, type);
