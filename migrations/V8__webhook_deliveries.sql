-- The webhook outbox (issue 13): one row per event and endpoint, inserted by the very
-- statement that moves an export to a final status (db/exports.rs), so no status change is
-- announced without happening, nor happens unannounced. The workers deliver each row at least
-- once, one attempt at a time, retrying with backoff for at least a day.
CREATE TABLE webhook_deliveries (
    -- The `webhook-id` of every attempt.
    id              uuid        PRIMARY KEY,
    endpoint_id     uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type      text        NOT NULL,
    -- The export's row as the status change left it; each attempt renders the same body from it.
    export          jsonb       NOT NULL,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A worker is making an attempt until then; another may take the row after it.
    locked_until    timestamptz,
    delivered_at    timestamptz,
    gave_up_at      timestamptz,
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, last_attempt_at);
