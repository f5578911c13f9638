-- Where an export's trace began, written only when the API exports traces (server/src/telemetry.rs):
-- the create request's span as a W3C traceparent and its request id, which every attempt of the
-- job joins; and the first attempt's span, which later attempts link to.
ALTER TABLE exports
    ADD COLUMN traceparent text,
    ADD COLUMN request_id text,
    ADD COLUMN first_attempt_traceparent text;
