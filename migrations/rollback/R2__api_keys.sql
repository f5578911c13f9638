-- Rollback of V2__api_keys.sql.
DROP TABLE api_keys;
DELETE FROM refinery_schema_history WHERE version = 2;
