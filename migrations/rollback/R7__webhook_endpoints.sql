-- Rollback of V7__webhook_endpoints.sql (refinery has no down migrations; see docs/architecture.md#migrations).
DROP TABLE webhook_endpoints;
DELETE FROM refinery_schema_history WHERE version = 7;
