-- The column holds the object key of an export's file in storage, never a URL: download links
-- are minted when asked for. Webhook outbox snapshots written before keep the old name;
-- they are read under either.
ALTER TABLE exports RENAME COLUMN file_url TO file_key;
