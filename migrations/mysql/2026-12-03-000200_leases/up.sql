-- A lease names the one replica that may run a singleton job (the scheduled backup) until it expires.
CREATE TABLE leases (
    name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY NOT NULL,
    holder VARCHAR(128) NOT NULL,
    expires_at BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
