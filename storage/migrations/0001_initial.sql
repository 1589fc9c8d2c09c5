-- Facts about this node that outlive a restart: its identity and when its
-- database was created. One row per key; values are text so the table never
-- needs another column.
CREATE TABLE node_info (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
