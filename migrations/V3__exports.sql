-- One row per export request: the source of truth for its lifecycle (Redis only carries work).
CREATE TABLE exports (
    id              uuid        PRIMARY KEY,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type            text        NOT NULL CHECK (type IN ('users')),
    format          text        NOT NULL CHECK (format IN ('csv', 'xlsx')),
    status          text        NOT NULL
                    CHECK (status IN ('pending', 'processing', 'done', 'failed', 'cancelled', 'expired')),
    filters         jsonb       NOT NULL DEFAULT '{}',
    -- Object key of the finished file in storage; download links are minted from it on request.
    file_url        text,
    error_message   text,
    rows_total      bigint      NOT NULL DEFAULT 0 CHECK (rows_total >= 0),
    rows_written    bigint      NOT NULL DEFAULT 0 CHECK (rows_written >= 0),
    file_size_bytes bigint,
    -- Worker bookkeeping: every status change is conditional on the attempt that holds the lease.
    attempts        integer     NOT NULL DEFAULT 0,
    lease_expires_at timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    expires_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Listing a user's exports newest first (keyset pagination on created_at, id).
CREATE INDEX exports_user_id_created_at_idx ON exports (user_id, created_at DESC, id DESC);
CREATE INDEX exports_status_idx ON exports (status);
-- The per-user limit counts a user's active exports on every create: this keeps that count
-- bounded by the limit, however many finished exports the user has.
CREATE INDEX exports_active_user_id_idx ON exports (user_id) WHERE status IN ('pending', 'processing');
CREATE INDEX exports_expires_at_idx ON exports (expires_at);

-- Records a pending export unless the user already has `max_active` pending or processing
-- exports, in one statement and so one round trip. The advisory lock serialises one user's
-- concurrent requests (other users are not blocked) until the implicit transaction commits,
-- and in READ COMMITTED every query of a volatile function takes a fresh snapshot, so the
-- count sees each export committed by the requests that held the lock before.
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
