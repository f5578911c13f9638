-- Rollback of V14__file_options.sql (refinery has no down migrations; see docs/architecture.md#migrations).
-- The version before cannot read an export with the options V14 added: the rollback refuses
-- while one exists, rather than deleting exports or letting a pending one be written otherwise.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM exports
               WHERE format = 'jsonl' OR compression <> 'none' OR columns IS NOT NULL) THEN
        RAISE EXCEPTION 'exports with columns, JSON Lines or gzip exist; delete them before rolling back V14';
    END IF;
END
$$;
DROP FUNCTION create_export_idempotently(uuid, uuid, text, jsonb, bigint, integer, text, bytea, jsonb, interval, text[], text);
DROP FUNCTION create_export_within_limit(uuid, uuid, text, jsonb, bigint, integer, text[], text);
DROP FUNCTION record_file_options(uuid, text[], text);
ALTER TABLE exports
    DROP CONSTRAINT exports_xlsx_uncompressed,
    DROP COLUMN compression,
    DROP COLUMN columns,
    DROP CONSTRAINT exports_format_check,
    ADD CONSTRAINT exports_format_check CHECK (format IN ('csv', 'xlsx'));
DELETE FROM refinery_schema_history WHERE version = 14;
