-- Job records: each state change is a new row; the latest (by updated_seq) wins.
CREATE TABLE IF NOT EXISTS jobs
(
    app_id String,
    job_id String,
    kind String,
    state String,
    progress Float64,
    params String,
    result String,
    error String,
    created_at DateTime,
    updated_seq UInt64
)
ENGINE = ReplacingMergeTree(updated_seq)
ORDER BY (app_id, job_id);

-- Saved segments: every version is kept; deleted = 1 marks removal.
CREATE TABLE IF NOT EXISTS segments
(
    app_id String,
    segment_id String,
    name String,
    description String,
    expression String,
    deleted UInt8,
    updated_at DateTime,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (app_id, segment_id);

CREATE TABLE IF NOT EXISTS segment_snapshots
(
    app_id String,
    segment_id String,
    snapshot_id String,
    as_of DateTime,
    created_at DateTime,
    count UInt64,
    entered UInt64,
    exited UInt64,
    previous_snapshot_id String
)
ENGINE = ReplacingMergeTree
ORDER BY (app_id, segment_id, snapshot_id);

CREATE TABLE IF NOT EXISTS segment_snapshot_members
(
    app_id String,
    segment_id String,
    snapshot_id String,
    user_id String
)
ENGINE = MergeTree
ORDER BY (app_id, segment_id, snapshot_id, user_id);
