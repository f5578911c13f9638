-- Rollback of V6__idempotency_keys.sql (refinery has no down migrations; see docs/architecture.md#migrations).
DROP FUNCTION create_export_idempotently(uuid, uuid, text, jsonb, bigint, integer, text, bytea, jsonb, interval);
DROP TABLE idempotency_keys;
DELETE FROM refinery_schema_history WHERE version = 6;
