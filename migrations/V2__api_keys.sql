-- Bearer API keys. Only a SHA-256 digest of the secret is stored: keys are 256-bit random
-- tokens, so a fast hash is safe here and keeps authentication cheap on every request.
CREATE TABLE api_keys (
    id          uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text        NOT NULL,
    secret_hash bytea       NOT NULL UNIQUE,
    scopes      text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);
