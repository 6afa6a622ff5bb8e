DROP TABLE audit_events;
DROP TABLE api_keys;
DROP TABLE refresh_tokens;
DROP TABLE sessions;
DROP INDEX idx_sellers_owner;
ALTER TABLE sellers DROP COLUMN owner_user_id;
DROP TABLE users;
