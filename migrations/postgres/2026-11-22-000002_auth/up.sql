CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX idx_users_email ON users (email);
CREATE INDEX idx_users_created ON users (created_at, id);

-- A session is one refresh-token family: one login on one device.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX idx_sessions_user ON sessions (user_id);

-- Refresh tokens are stored as SHA-256 digests; a token is single use (used_at).
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX idx_refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    display_name TEXT NOT NULL,
    secret_prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX idx_api_keys_hash ON api_keys (secret_hash);
CREATE INDEX idx_api_keys_user ON api_keys (user_id, created_at);
CREATE INDEX idx_api_keys_created ON api_keys (created_at, id);

CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    event_time BIGINT NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    status_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX idx_audit_time ON audit_events (event_time, id);
CREATE INDEX idx_audit_action ON audit_events (action, event_time);
CREATE INDEX idx_audit_principal ON audit_events (principal, event_time);

-- Seller profiles belong to a user; products of a seller are that user's to change.
ALTER TABLE sellers ADD COLUMN owner_user_id TEXT REFERENCES users(id);
CREATE UNIQUE INDEX idx_sellers_owner ON sellers (owner_user_id);
