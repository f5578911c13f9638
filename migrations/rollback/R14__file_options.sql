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
-- The functions as V3 and V6 made them.
DROP FUNCTION create_export_idempotently(uuid, uuid, text, jsonb, bigint, integer, text, bytea, jsonb, interval, text[], text);
DROP FUNCTION create_export_idempotently(uuid, uuid, text, jsonb, bigint, integer, text, bytea, jsonb, interval);
DROP FUNCTION create_export_within_limit(uuid, uuid, text, jsonb, bigint, integer, text[], text);
DROP FUNCTION create_export_within_limit(uuid, uuid, text, jsonb, bigint, integer);
CREATE FUNCTION create_export_within_limit(
    export_id   uuid,
    owner_id    uuid,
    file_format text,
    row_filters jsonb,
    total_rows  bigint,
    max_active  integer
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('exports.user:' || owner_id::text, 0));
    IF (SELECT count(*) FROM (
            SELECT 1 FROM exports
            WHERE user_id = owner_id AND status IN ('pending', 'processing')
            LIMIT max_active) AS active) >= max_active THEN
        RETURN false;
    END IF;
    INSERT INTO exports (id, user_id, type, format, status, filters, rows_total)
    VALUES (export_id, owner_id, 'users', file_format, 'pending', row_filters, total_rows);
    RETURN true;
END
$$;
CREATE FUNCTION create_export_idempotently(
    export_id       uuid,
    owner_id        uuid,
    file_format     text,
    row_filters     jsonb,
    total_rows      bigint,
    max_active      integer,
    idempotency_key text,
    request_fingerprint bytea,
    answer          jsonb,
    kept            interval
) RETURNS TABLE (outcome text, response jsonb) LANGUAGE plpgsql AS $$
DECLARE
    earlier idempotency_keys%ROWTYPE;
    locked  boolean := false;
BEGIN
    LOOP
        SELECT * INTO earlier FROM idempotency_keys k
        WHERE k.user_id = owner_id AND k.key = idempotency_key AND k.created_at > now() - kept;
        IF FOUND THEN
            IF earlier.fingerprint = request_fingerprint THEN
                RETURN QUERY SELECT 'replayed'::text, earlier.response;
            ELSE
                RETURN QUERY SELECT 'reused'::text, NULL::jsonb;
            END IF;
            RETURN;
        END IF;
        EXIT WHEN locked;
        IF NOT pg_try_advisory_xact_lock(
                hashtextextended('exports.idempotency:' || owner_id::text || ':' || idempotency_key, 0)) THEN
            RETURN QUERY SELECT 'in_use'::text, NULL::jsonb;
            RETURN;
        END IF;
        locked := true;
    END LOOP;
    IF NOT create_export_within_limit(export_id, owner_id, file_format, row_filters, total_rows, max_active) THEN
        RETURN QUERY SELECT 'limit'::text, NULL::jsonb;
        RETURN;
    END IF;
    -- A row past `kept` that the sweeper has not deleted yet is replaced.
    INSERT INTO idempotency_keys (user_id, key, fingerprint, export_id, response)
    VALUES (owner_id, idempotency_key, request_fingerprint, export_id, answer)
    ON CONFLICT (user_id, key) DO UPDATE
        SET fingerprint = EXCLUDED.fingerprint, export_id = EXCLUDED.export_id,
            response = EXCLUDED.response, created_at = now();
    RETURN QUERY SELECT 'created'::text, answer;
END
$$;
ALTER TABLE exports
    DROP CONSTRAINT exports_xlsx_uncompressed,
    DROP COLUMN compression,
    DROP COLUMN columns,
    DROP CONSTRAINT exports_format_check,
    ADD CONSTRAINT exports_format_check CHECK (format IN ('csv', 'xlsx'));
DELETE FROM refinery_schema_history WHERE version = 14;
