-- The people whose data is exported, and who request exports.
CREATE TABLE users (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    email       text        NOT NULL UNIQUE,
    name        text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('active', 'inactive')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Export filters are `status` and `created_after`; both indexes end in `id`
-- so a filtered export can stream in a stable order.
CREATE INDEX users_created_at_idx ON users (created_at, id);
CREATE INDEX users_status_created_at_idx ON users (status, created_at, id);
