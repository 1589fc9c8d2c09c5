-- Room discovery: the order of a peer's health history (docs/usage/room_discovery.md).
--
-- A peer's state can change twice within one millisecond (a probe, then a
-- delivery failure reported by the outbox), so the time alone does not order
-- its history. `seq` counts each peer's state changes, from 1 (rows stored
-- before this migration keep 0 and are ordered by time among themselves).
ALTER TABLE discovery_peer_history ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX discovery_peer_history_by_seq ON discovery_peer_history (server_name, seq);
