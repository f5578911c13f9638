-- Rollback of V1__users.sql.
DROP TABLE users;
DELETE FROM refinery_schema_history WHERE version = 1;
