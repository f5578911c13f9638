-- Webhook attempts no longer hold their rows in a transaction across the HTTP call (issue 22):
-- a worker claims a due row by setting `locked_until` (the attempt's lease) in a short
-- statement, makes the attempt with no transaction open, and records the outcome only if
-- its lease still holds. A worker that dies mid-attempt leaves the row due again when the
-- lease runs out. The claim counts an endpoint's rows under lease to bound its attempts
-- in flight, hence the index on the rows being attempted.
ALTER TABLE webhook_deliveries ADD COLUMN locked_until timestamptz;
CREATE INDEX webhook_deliveries_leased_idx ON webhook_deliveries (endpoint_id)
    WHERE locked_until IS NOT NULL AND delivered_at IS NULL AND gave_up_at IS NULL;
