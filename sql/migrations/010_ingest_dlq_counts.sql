-- Dead-lettered Kafka messages per day, app and reason, for GET /v1/stats.
-- The ingest consumer adds one row per (day, app_id, reason) per batch; the
-- engine sums them on merge, readers sum() anyway. app_id is '' when the
-- message did not carry a readable one. A batch redelivered after a crash can
-- count its dead letters again: the count is at-least-once, like the DLQ topic.
CREATE TABLE IF NOT EXISTS ingest_dlq_counts
(
    day Date,
    app_id String,
    reason String,
    count UInt64
)
ENGINE = SummingMergeTree(count)
ORDER BY (app_id, day, reason);
