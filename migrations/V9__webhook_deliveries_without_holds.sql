-- Webhook attempts hold their rows in a transaction (FOR UPDATE SKIP LOCKED) for as long as a
-- batch lasts, so a row needs no hold of its own: V8's `locked_until` is never set.
ALTER TABLE webhook_deliveries DROP COLUMN locked_until;
