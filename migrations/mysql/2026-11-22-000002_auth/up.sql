CREATE TABLE users (
    id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY NOT NULL,
    email VARCHAR(254) NOT NULL,
    password_hash VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    role VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE INDEX idx_users_email (email),
    INDEX idx_users_created (created_at, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- A session is one refresh-token family: one login on one device.
CREATE TABLE sessions (
    id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY NOT NULL,
    user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    CONSTRAINT fk_sessions_user FOREIGN KEY (user_id) REFERENCES users(id),
    INDEX idx_sessions_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Refresh tokens are stored as SHA-256 digests; a token is single use (used_at).
CREATE TABLE refresh_tokens (
    token_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY NOT NULL,
    session_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    CONSTRAINT fk_refresh_tokens_session FOREIGN KEY (session_id) REFERENCES sessions(id),
    INDEX idx_refresh_tokens_session (session_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE api_keys (
    id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY NOT NULL,
    user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    display_name VARCHAR(100) NOT NULL,
    secret_prefix VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    secret_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT,
    CONSTRAINT fk_api_keys_user FOREIGN KEY (user_id) REFERENCES users(id),
    UNIQUE INDEX idx_api_keys_hash (secret_hash),
    INDEX idx_api_keys_user (user_id, created_at),
    INDEX idx_api_keys_created (created_at, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE audit_events (
    id BIGINT AUTO_INCREMENT PRIMARY KEY NOT NULL,
    event_time BIGINT NOT NULL,
    principal VARCHAR(100) NOT NULL,
    action VARCHAR(200) NOT NULL,
    resource VARCHAR(300) NOT NULL,
    status_code VARCHAR(40) NOT NULL,
    reason TEXT NOT NULL,
    client_ip VARCHAR(64) NOT NULL,
    request_id VARCHAR(128) NOT NULL,
    INDEX idx_audit_time (event_time, id),
    INDEX idx_audit_action (action, event_time),
    INDEX idx_audit_principal (principal, event_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Seller profiles belong to a user; products of a seller are that user's to change.
ALTER TABLE sellers ADD COLUMN owner_user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL;
ALTER TABLE sellers ADD CONSTRAINT fk_sellers_owner FOREIGN KEY (owner_user_id) REFERENCES users(id);
CREATE UNIQUE INDEX idx_sellers_owner ON sellers (owner_user_id);
