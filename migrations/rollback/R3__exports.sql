-- Rollback of V3__exports.sql (refinery has no down migrations; see README).
DROP TABLE exports;
DELETE FROM refinery_schema_history WHERE version = 3;
