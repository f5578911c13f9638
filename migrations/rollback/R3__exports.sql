-- Rollback of V3__exports.sql (refinery has no down migrations; see docs/architecture.md#migrations).
DROP FUNCTION create_export_within_limit(uuid, uuid, text, jsonb, bigint, integer);
DROP TABLE exports;
DELETE FROM refinery_schema_history WHERE version = 3;
