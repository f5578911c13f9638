-- Rollback of V9__webhook_deliveries_without_holds.sql (refinery has no down migrations; see docs/architecture.md#migrations).
ALTER TABLE webhook_deliveries ADD COLUMN locked_until timestamptz;
DELETE FROM refinery_schema_history WHERE version = 9;
