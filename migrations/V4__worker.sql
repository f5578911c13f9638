-- What the worker and its sweeper need beyond V3.
ALTER TABLE exports
    -- When a job for this export was last put on the Redis stream (NULL: only by the API at
    -- creation). The sweeper re-queues pending exports whose entry vanished, once it is older
    -- than a grace period.
    ADD COLUMN queued_at timestamptz,
    -- A failed attempt waits until then before the sweeper queues the next one (backoff).
    ADD COLUMN retry_at  timestamptz;

