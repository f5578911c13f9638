-- Rollback of V10__nothing_left_behind.sql (refinery has no down migrations; see docs/architecture.md#migrations).
DROP INDEX webhook_deliveries_ended_idx;
DROP INDEX exports_upload_left_idx;
ALTER TABLE exports DROP COLUMN upload_key, DROP COLUMN upload_id;
DELETE FROM refinery_schema_history WHERE version = 10;
