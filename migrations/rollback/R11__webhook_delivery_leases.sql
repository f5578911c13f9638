-- Rollback of V11__webhook_delivery_leases.sql (refinery has no down migrations; see docs/architecture.md#migrations).
DROP INDEX webhook_deliveries_leased_idx;
ALTER TABLE webhook_deliveries DROP COLUMN locked_until;
DELETE FROM refinery_schema_history WHERE version = 11;
