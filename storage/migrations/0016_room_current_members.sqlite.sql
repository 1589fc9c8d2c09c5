-- The m.room.member entries of each room's current state, with their
-- membership (docs/development/event_graph.md, "Current members"): what the
-- outbox's fan-out, make_join/send_join and server visibility ask ("which
-- servers are in the room", "is this server in it"), answered from one index
-- instead of reading every member event's JSON. Kept by
-- StateStore.set_current_state_group_txn in the transaction that moves
-- room_current_state, so it always matches it.
-- SQLite variant: the membership is read with the JSON1 functions.
--
-- membership is NULL for a member event whose content has no string
-- membership (it counts as none). server is the part of user_id after the
-- first ':' ('' if none).
CREATE TABLE room_current_members (
    tenant TEXT NOT NULL,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    server TEXT NOT NULL,
    membership TEXT,
    event_id TEXT NOT NULL,
    PRIMARY KEY (tenant, room_id, user_id)
);
CREATE INDEX room_current_members_membership
    ON room_current_members (tenant, room_id, membership, server);

-- The rooms already stored: each current state group resolved through its
-- delta chain (the nearest group's entry for a key wins; a NULL event_id
-- there means the key is absent).
WITH RECURSIVE chain(tenant, room_id, state_group, pos) AS (
    SELECT tenant, room_id, state_group, 0 FROM room_current_state
    WHERE state_group IS NOT NULL
    UNION ALL
    SELECT c.tenant, c.room_id, g.delta_base, c.pos + 1
    FROM chain c JOIN state_groups g ON g.tenant = c.tenant AND g.id = c.state_group
    WHERE g.delta_base IS NOT NULL
),
entries AS (
    SELECT c.tenant, c.room_id, e.state_key, e.event_id,
           ROW_NUMBER() OVER (PARTITION BY c.tenant, c.room_id, e.state_key
                              ORDER BY c.pos) AS nearest
    FROM chain c
    JOIN state_group_entries e
      ON e.tenant = c.tenant AND e.state_group = c.state_group AND e.type = 'm.room.member'
)
INSERT INTO room_current_members (tenant, room_id, user_id, server, membership, event_id)
SELECT x.tenant, x.room_id, x.state_key,
       CASE WHEN instr(x.state_key, ':') > 0
            THEN substr(x.state_key, instr(x.state_key, ':') + 1) ELSE '' END,
       CASE WHEN json_type(ev.json, '$.content.membership') = 'text'
            THEN json_extract(ev.json, '$.content.membership') END,
       x.event_id
FROM entries x
LEFT JOIN events ev ON ev.tenant = x.tenant AND ev.event_id = x.event_id
WHERE x.nearest = 1 AND x.event_id IS NOT NULL;
