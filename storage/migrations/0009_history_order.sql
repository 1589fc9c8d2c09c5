-- History order and backfill (docs/development/event_graph.md, "History order").
--
-- Clients page a room in topological order: (depth, stream_ordering). Events
-- fetched with /backfill get negative stream orderings (counter
-- `backfill_stream` in event_graph_counters), so they sort before every event
-- received live and never show up as new in an incremental /sync.
CREATE INDEX events_room_topological ON events (tenant, room_id, depth, stream_ordering);

-- Backward extremities: prev_events of accepted timeline events that this
-- tenant does not hold as timeline events (unknown, or only an outlier). They
-- are where history continues on other servers, what GET /backfill asks for.
-- `depth` is the depth of the (first known) child that refers to the event:
-- the missing event lies below it.
CREATE TABLE event_backward_extremities (
    tenant TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    depth BIGINT NOT NULL,
    PRIMARY KEY (tenant, room_id, event_id)
);
CREATE INDEX event_backward_extremities_depth
    ON event_backward_extremities (tenant, room_id, depth);

-- The backward extremities of the rooms already stored.
INSERT INTO event_backward_extremities (tenant, room_id, event_id, depth)
SELECT e.tenant, e.room_id, g.prev_event_id, MAX(e.depth)
FROM event_edges g
JOIN events e ON e.tenant = g.tenant AND e.event_id = g.event_id
WHERE e.outlier = 0 AND e.soft_failed = 0 AND e.rejected_reason IS NULL
  AND NOT EXISTS (
    SELECT 1 FROM events p
    WHERE p.tenant = g.tenant AND p.event_id = g.prev_event_id AND p.outlier = 0
  )
GROUP BY e.tenant, e.room_id, g.prev_event_id;
