-- What every replica must forget about sessions: one session ended (logout, refresh-token reuse),
-- or everything about a user changed (role, password). Replicas poll it to drop cached session
-- state within a second; rows are pruned after a day.
CREATE TABLE session_events (
    id BIGSERIAL PRIMARY KEY,
    event_time BIGINT NOT NULL,
    session_id TEXT,
    user_id TEXT
);
CREATE INDEX idx_session_events_time ON session_events (event_time);
