-- The file's options (spec 1.9): JSON Lines beside CSV and XLSX, the columns chosen and their
-- order (NULL: all of them, in the default order, as every export before), and gzip.
ALTER TABLE exports
    DROP CONSTRAINT exports_format_check,
    ADD CONSTRAINT exports_format_check CHECK (format IN ('csv', 'xlsx', 'jsonl')),
    ADD COLUMN columns text[] CHECK (cardinality(columns) > 0),
    ADD COLUMN compression text NOT NULL DEFAULT 'none' CHECK (compression IN ('none', 'gzip')),
    -- An XLSX file is already a zip archive; the API refuses the pair before it gets here.
    ADD CONSTRAINT exports_xlsx_uncompressed CHECK (format <> 'xlsx' OR compression = 'none');

-- The creates of V3 and V6 with the file's options: the same call, then the options written
-- into the row it made, in the same statement (so the same transaction: no worker sees the
-- export before they are there). V3's and V6's functions stay as they were, for API processes
-- of the version before while a deployment rolls.
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
    IF NOT create_export_within_limit(export_id, owner_id, file_format, row_filters, total_rows, max_active) THEN
        RETURN false;
    END IF;
    PERFORM record_file_options(export_id, file_columns, file_compression);
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
    kept            interval,
    file_columns    text[],
    file_compression text
) RETURNS TABLE (outcome text, response jsonb) LANGUAGE plpgsql AS $$
DECLARE
    created record;
BEGIN
    SELECT * INTO created FROM create_export_idempotently(
        export_id, owner_id, file_format, row_filters, total_rows, max_active, idempotency_key,
        request_fingerprint, answer, kept) AS c;
    IF created.outcome = 'created' THEN
        PERFORM record_file_options(export_id, file_columns, file_compression);
    END IF;
    RETURN QUERY SELECT created.outcome, created.response;
END
$$;

-- Writes a new export's options, when they are not the defaults the row already has.
CREATE FUNCTION record_file_options(export_id uuid, file_columns text[], file_compression text)
RETURNS void LANGUAGE sql AS $$
    UPDATE exports SET columns = file_columns, compression = file_compression
    WHERE id = export_id AND (file_columns IS NOT NULL OR file_compression <> 'none');
$$;
