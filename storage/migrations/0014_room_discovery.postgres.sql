-- Room discovery (docs/usage/room_discovery.md): the peers a node crawls,
-- their health probes and state history, and the index of their public rooms.
-- PostgreSQL variant: full-text search (tsvector + GIN) and, when the pg_trgm
-- extension can be had, a trigram index for fuzzy matches (misspellings).

CREATE TABLE discovery_peers (
    server_name TEXT PRIMARY KEY,
    -- 1: added through the admin API / CLI (kept until removed there).
    added_by_admin BIGINT NOT NULL DEFAULT 0,
    added_ts BIGINT NOT NULL,
    -- unknown | online | degraded | offline
    state TEXT NOT NULL DEFAULT 'unknown',
    state_since_ts BIGINT NOT NULL,
    state_reason TEXT,
    last_probe_ts BIGINT,
    last_latency_ms BIGINT,
    last_crawl_ts BIGINT,
    last_crawl_ok_ts BIGINT,
    last_crawl_duration_ms BIGINT,
    last_crawl_error TEXT,
    last_crawl_rooms BIGINT,
    next_crawl_ts BIGINT
);

CREATE TABLE discovery_probes (
    server_name TEXT NOT NULL,
    ts BIGINT NOT NULL,
    ok BIGINT NOT NULL,
    keys_fresh BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    error TEXT
);
CREATE INDEX discovery_probes_by_server ON discovery_probes (server_name, ts);

CREATE TABLE discovery_peer_history (
    server_name TEXT NOT NULL,
    ts BIGINT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX discovery_peer_history_by_server ON discovery_peer_history (server_name, ts);

CREATE TABLE discovery_rooms (
    server_name TEXT NOT NULL,
    room_id TEXT NOT NULL,
    name TEXT,
    topic TEXT,
    canonical_alias TEXT,
    avatar_url TEXT,
    num_joined_members BIGINT NOT NULL,
    world_readable BIGINT NOT NULL,
    guest_can_join BIGINT NOT NULL,
    join_rule TEXT,
    room_type TEXT,
    first_seen_ts BIGINT NOT NULL,
    last_seen_ts BIGINT NOT NULL,
    -- Lower-cased name, topic and alias (the alias's punctuation as spaces).
    search_text TEXT NOT NULL,
    search_vector TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', search_text)) STORED,
    PRIMARY KEY (server_name, room_id)
);
CREATE INDEX discovery_rooms_by_members ON discovery_rooms (num_joined_members, server_name, room_id);
CREATE INDEX discovery_rooms_by_first_seen ON discovery_rooms (first_seen_ts, server_name, room_id);
CREATE INDEX discovery_rooms_fts ON discovery_rooms USING GIN (search_vector);

-- pg_trgm is optional: without it (not installed, or our role may not create
-- extensions) search is full-text only. The inner block is a savepoint, so a
-- failed CREATE EXTENSION does not abort this migration; the server logs a
-- warning at start-up (homeserver/discovery/service.py) and the notice below
-- reaches the PostgreSQL log.
DO $$
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'room discovery: pg_trgm is unavailable (%); fuzzy search is off', SQLERRM;
    END;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        BEGIN
            EXECUTE 'CREATE INDEX discovery_rooms_trgm ON discovery_rooms '
                    'USING GIN (search_text gin_trgm_ops)';
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'room discovery: no trigram index (%); fuzzy search is unindexed', SQLERRM;
        END;
    END IF;
END
$$;
