CREATE TABLE IF NOT EXISTS cluster_models
(
    app_id String,
    version UInt32,
    created_at DateTime,
    profile_run_id String,
    k UInt16,
    model String -- the whole model as JSON: features, transform, centroids, sizes, quality, labels
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (app_id, version);

CREATE TABLE IF NOT EXISTS cluster_assignments
(
    app_id String,
    version UInt32,
    user_id String,
    cluster UInt16,
    cluster_label String
)
ENGINE = MergeTree
ORDER BY (app_id, version, user_id);
