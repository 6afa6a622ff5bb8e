-- Switches every replica follows: the read-only switch, the last reindex request. Admin calls
-- write them; each replica polls this small table and acts within a second, and the state
-- survives restarts.
CREATE TABLE cluster_settings (
    name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY NOT NULL,
    value VARCHAR(255) NOT NULL,
    reason TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by VARCHAR(128) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
