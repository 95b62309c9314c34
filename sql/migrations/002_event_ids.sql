-- Time-ordered index of stored ids. A real-time batch spans a narrow ts range,
-- so looking its ids up here reads a few granules whatever the table size.
CREATE TABLE IF NOT EXISTS event_ids
(
    app_id String,
    ts DateTime,
    event_id String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (app_id, ts, event_id)
SETTINGS index_granularity = 1024;

CREATE MATERIALIZED VIEW IF NOT EXISTS event_ids_mv TO event_ids AS
SELECT app_id, ts, event_id FROM events;
