-- Idempotency-Key (createUserExport): the answer of each create that succeeded with a key,
-- kept 24 hours (the worker's sweeper deletes older ones). A key belongs to its user.
CREATE TABLE idempotency_keys (
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key         text        NOT NULL,
    -- SHA-256 of the request as understood (format and filters), not of its bytes.
    fingerprint bytea       NOT NULL,
    export_id   uuid        NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    -- The 202 body the first request got, sent again to every replay.
    response    jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

-- A create with an Idempotency-Key, in one statement (one round trip), like
-- create_export_within_limit which it calls. Outcomes:
--   'created'  the export was recorded; `answer` is stored as the key's response
--   'replayed' the key was used with the same fingerprint within `kept`: its stored answer
--   'reused'   the key was used with another fingerprint within `kept`
--   'in_use'   another request with the key holds it right now
--   'limit'    the user is at `max_active` exports (nothing is remembered)
-- A key already remembered is answered from its row, without a lock, so replays run in
-- parallel. Otherwise the key's advisory lock is only tried, never waited for: a concurrent
-- request with the same new key is told at once (409) instead of holding a connection. The
-- row is looked up again under the lock (READ COMMITTED: each statement of a volatile
-- function sees what committed before it), since the holder before may have just committed
-- it. The lock is held until the implicit transaction commits, with the key's row.
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
