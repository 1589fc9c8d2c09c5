-- The event graph of every room of every tenant (docs/development/event_graph.md).
--
-- `tenant` is the local server name that holds the copy: one node hosts many
-- server names, and two of them in the same room each keep their own copy, so
-- it leads every primary key.

-- Per-tenant counters: `stream` (the clients' order of events) and
-- `state_group` (state group IDs). Allocation is an UPDATE of one row, so
-- concurrent writers of one tenant queue on its row lock instead of racing.
CREATE TABLE event_graph_counters (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- One row per PDU, `json` being the canonical JSON of the event as received
-- (hashes and signatures are checked against it, so it is never rewritten).
-- state_key is NULL for a message event; '' is a real state key.
-- state_group_before/after are NULL for an outlier (its state is unknown); for
-- an event whose state before is the empty state (the create event), only
-- state_group_before is NULL.
CREATE TABLE events (
    tenant TEXT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    room_version TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    json TEXT NOT NULL,
    rejected_reason TEXT,
    soft_failed BIGINT NOT NULL DEFAULT 0,
    outlier BIGINT NOT NULL DEFAULT 0,
    state_group_before BIGINT,
    state_group_after BIGINT,
    PRIMARY KEY (tenant, event_id)
);
CREATE UNIQUE INDEX events_stream_ordering ON events (tenant, stream_ordering);
CREATE INDEX events_room_stream ON events (tenant, room_id, stream_ordering);
CREATE INDEX events_room_depth ON events (tenant, room_id, depth);

-- prev_events edges (child -> parent).
CREATE TABLE event_edges (
    tenant TEXT NOT NULL,
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (tenant, event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (tenant, prev_event_id);

-- auth_events edges (event -> auth event).
CREATE TABLE event_auth_edges (
    tenant TEXT NOT NULL,
    event_id TEXT NOT NULL,
    auth_event_id TEXT NOT NULL,
    PRIMARY KEY (tenant, event_id, auth_event_id)
);

-- Events of the room with no accepted child yet: the prev_events of the next
-- event this tenant creates (server-server-api.md, "PDUs").
CREATE TABLE event_forward_extremities (
    tenant TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (tenant, room_id, event_id)
);

-- State groups: a room state, stored as a delta over `delta_base` (NULL: a
-- full snapshot). `prev_group` is the state it evolved from and `seq` the
-- number of steps since a root; the delta base is the ancestor at
-- seq & (seq - 1), so any group resolves in at most log2(seq) + 1 reads.
CREATE TABLE state_groups (
    tenant TEXT NOT NULL,
    id BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    prev_group BIGINT,
    delta_base BIGINT,
    seq BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- The delta of a group: event_id NULL means the key is absent from the state.
CREATE TABLE state_group_entries (
    tenant TEXT NOT NULL,
    state_group BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (tenant, state_group, type, state_key)
);

-- The current state of each room a tenant knows (the state resolved across the
-- forward extremities), as a state group.
CREATE TABLE room_current_state (
    tenant TEXT NOT NULL,
    room_id TEXT NOT NULL,
    room_version TEXT NOT NULL,
    state_group BIGINT,
    PRIMARY KEY (tenant, room_id)
);
