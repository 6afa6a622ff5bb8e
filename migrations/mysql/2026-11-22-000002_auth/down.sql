DROP TABLE audit_events;
DROP TABLE api_keys;
DROP TABLE refresh_tokens;
DROP TABLE sessions;
ALTER TABLE sellers DROP FOREIGN KEY fk_sellers_owner;
ALTER TABLE sellers DROP INDEX idx_sellers_owner;
ALTER TABLE sellers DROP COLUMN owner_user_id;
DROP TABLE users;
