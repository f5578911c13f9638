-- Rollback of V8__webhook_deliveries.sql (refinery has no down migrations; see docs/architecture.md#migrations).
DROP TABLE webhook_deliveries;
DELETE FROM refinery_schema_history WHERE version = 8;
