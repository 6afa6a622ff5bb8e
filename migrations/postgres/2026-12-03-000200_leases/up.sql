-- A lease names the one replica that may run a singleton job (the scheduled backup) until it expires.
CREATE TABLE leases (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
