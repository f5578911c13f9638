-- Where an interrupted attempt's file stopped, so that the next attempt goes on from there
-- (server/src/worker/resume.rs): the multipart upload named by upload_key and upload_id (V10),
-- its completed parts' entity tags in order, the file's bytes and rows in them, and the sort
-- key (created_at, id) of the last row they hold. Written, conditional on the attempt and the
-- upload, each time a part is completed; NULL when there is nothing to go on from.
ALTER TABLE exports ADD COLUMN checkpoint jsonb;
