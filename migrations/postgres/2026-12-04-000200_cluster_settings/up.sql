-- Switches every replica follows: the read-only switch, the last reindex request. Admin calls
-- write them; each replica polls this small table and acts within a second, and the state
-- survives restarts.
CREATE TABLE cluster_settings (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    reason TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);
