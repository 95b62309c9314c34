-- Users whose events ingest re-derived into the views' tables after an INSERT
-- that failed part-way (ingest/repair.ts). Their events carry the failed
-- attempt's received_at, but the tables the profile job reads got them only at
-- repaired_at: incremental profile runs treat these users as late arrivals
-- (profiles/sql.ts, changedUsersSql). A few rows per failed batch.
CREATE TABLE IF NOT EXISTS ingest_repairs
(
    app_id String,
    user_id String,
    repaired_at DateTime
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(repaired_at)
ORDER BY (app_id, repaired_at, user_id);
