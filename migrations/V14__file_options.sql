-- The file's options (spec 1.9): JSON Lines beside CSV and XLSX, the columns chosen and their
-- order (NULL: all of them, in the default order, as every export before), and gzip.
ALTER TABLE exports
    DROP CONSTRAINT exports_format_check,
    ADD CONSTRAINT exports_format_check CHECK (format IN ('csv', 'xlsx', 'jsonl')),
    ADD COLUMN columns text[] CHECK (cardinality(columns) > 0),
    ADD COLUMN compression text NOT NULL DEFAULT 'none' CHECK (compression IN ('none', 'gzip')),
    -- An XLSX file is already a zip archive; the API refuses the pair before it gets here.
    ADD CONSTRAINT exports_xlsx_uncompressed CHECK (format <> 'xlsx' OR compression = 'none');

-- create_export_within_limit (V3) with the file's options; the six-argument form stays, for
-- API processes of the version before while a deployment rolls, and calls this one.
CREATE FUNCTION create_export_within_limit(
    export_id        uuid,
    owner_id         uuid,
    file_format      text,
    row_filters      jsonb,
    total_rows       bigint,
    max_active       integer,
    file_columns     text[],
    file_compression text
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('exports.user:' || owner_id::text, 0));
    IF (SELECT count(*) FROM (
            SELECT 1 FROM exports
            WHERE user_id = owner_id AND status IN ('pending', 'processing')
            LIMIT max_active) AS active) >= max_active THEN
        RETURN false;
    END IF;
    INSERT INTO exports (id, user_id, type, format, status, filters, rows_total, columns, compression)
    VALUES (export_id, owner_id, 'users', file_format, 'pending', row_filters, total_rows,
            file_columns, file_compression);
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION create_export_within_limit(
    export_id   uuid,
    owner_id    uuid,
    file_format text,
    row_filters jsonb,
    total_rows  bigint,
    max_active  integer
) RETURNS boolean LANGUAGE sql AS $$
    SELECT create_export_within_limit(export_id, owner_id, file_format, row_filters, total_rows,
                                      max_active, NULL, 'none');
$$;

-- create_export_idempotently (V6) with the file's options. The ten-argument form stays for
-- the same reason and calls this one.
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
    kept            interval,
    file_columns    text[],
    file_compression text
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
    IF NOT create_export_within_limit(export_id, owner_id, file_format, row_filters, total_rows,
                                      max_active, file_columns, file_compression) THEN
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

CREATE OR REPLACE FUNCTION create_export_idempotently(
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
) RETURNS TABLE (outcome text, response jsonb) LANGUAGE sql AS $$
    SELECT * FROM create_export_idempotently(export_id, owner_id, file_format, row_filters,
                                             total_rows, max_active, idempotency_key,
                                             request_fingerprint, answer, kept, NULL, 'none');
$$;
