-- Rollback of V15__resume_checkpoints.sql (refinery has no down migrations; see docs/architecture.md#migrations).
-- Checkpoints are only a shortcut: without them the next attempt starts its file over.
ALTER TABLE exports DROP COLUMN checkpoint;
DELETE FROM refinery_schema_history WHERE version = 15;
