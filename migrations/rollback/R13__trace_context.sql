-- Rollback of V13__trace_context.sql (refinery has no down migrations; see docs/architecture.md#migrations).
ALTER TABLE exports
    DROP COLUMN traceparent,
    DROP COLUMN request_id,
    DROP COLUMN first_attempt_traceparent;
DELETE FROM refinery_schema_history WHERE version = 13;
