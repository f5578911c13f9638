-- Rollback of V4__worker.sql (refinery has no down migrations; see docs/architecture.md#migrations).
ALTER TABLE exports DROP COLUMN queued_at, DROP COLUMN retry_at;
DELETE FROM refinery_schema_history WHERE version = 4;
