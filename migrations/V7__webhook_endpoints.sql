-- Webhook endpoints (issue 13): where a user's finished exports are announced. The secret
-- signs deliveries (Standard Webhooks), so it is kept as issued; it is never logged and
-- shown only when it is made. A deleted endpoint keeps its row (deleted_at) for the
-- deliveries that name it, and gets nothing more.
CREATE TABLE webhook_endpoints (
    id          uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url         text        NOT NULL,
    event_types text[]      NOT NULL,
    secret      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX webhook_endpoints_user_id_idx ON webhook_endpoints (user_id) WHERE deleted_at IS NULL;
