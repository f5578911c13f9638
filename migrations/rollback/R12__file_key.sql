-- Rollback of V12__file_key.sql (refinery has no down migrations; see docs/architecture.md#migrations).
ALTER TABLE exports RENAME COLUMN file_key TO file_url;
DELETE FROM refinery_schema_history WHERE version = 12;
