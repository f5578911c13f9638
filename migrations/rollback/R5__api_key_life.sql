-- Rollback of V5__api_key_life.sql (refinery has no down migrations; see docs/architecture.md#migrations).
ALTER TABLE api_keys DROP COLUMN expires_at, DROP COLUMN last_used_at;
DELETE FROM refinery_schema_history WHERE version = 5;
