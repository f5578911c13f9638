-- Keys have a life: an optional expiry, and when each was last used (recorded at most once a
-- minute per key, so that authenticating is not a write per request).
ALTER TABLE api_keys
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN last_used_at timestamptz;
