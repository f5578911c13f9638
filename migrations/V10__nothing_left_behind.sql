-- What an attempt may leave in storage if it dies: the object key it writes and, on S3, the id
-- of its open multipart upload, which a bucket listing does not show. Set as an attempt starts
-- writing; cleared once nothing else is left under the export's prefix: by the attempt that
-- finishes, or by whoever cleans after it (the next attempt, or the sweeper once the export is
-- final).
ALTER TABLE exports ADD COLUMN upload_key text, ADD COLUMN upload_id text;
CREATE INDEX exports_upload_left_idx ON exports (updated_at) WHERE upload_key IS NOT NULL;
-- The sweeper deletes deliveries that ended longer ago than their retention.
CREATE INDEX webhook_deliveries_ended_idx ON webhook_deliveries ((coalesce(delivered_at, gave_up_at)));
