-- Profiles partitioned by run, so a superseded run is removed with DROP PARTITION
-- (instant, atomic) instead of an ALTER DELETE mutation that would rewrite the
-- whole app's partition on every run. Profiles are derived data: the table is
-- recreated empty and the run log cleared, and the next profile job rebuilds it.
DROP TABLE IF EXISTS profiles;

CREATE TABLE IF NOT EXISTS profiles
(
    app_id String,
    run_id String,
    as_of DateTime,
    user_id String,
    first_seen DateTime,
    last_seen DateTime,
    events_total UInt64,
    events_7d UInt64,
    events_30d UInt64,
    active_days_30d UInt32,
    views_30d UInt64,
    clicks_30d UInt64,
    purchases_30d UInt64,
    purchases_total UInt64,
    revenue_total Float64,
    revenue_30d Float64,
    avg_order_value Nullable(Float64),
    last_purchase_at Nullable(DateTime),
    recency_days Nullable(UInt32),
    r_score Nullable(UInt8),
    f_score Nullable(UInt8),
    m_score Nullable(UInt8),
    rfm_segment Nullable(String),
    top_category Nullable(String),
    best_hour Nullable(UInt8),
    platform Nullable(String),
    country Nullable(String),
    timezone Nullable(String),
    locale Nullable(String),
    app_version Nullable(String),
    trait_keys Array(String),
    trait_values Array(String),
    trait_types Array(UInt8),
    random_bucket UInt16
)
ENGINE = MergeTree
PARTITION BY (app_id, run_id)
ORDER BY (app_id, run_id, user_id);

TRUNCATE TABLE profile_runs;
