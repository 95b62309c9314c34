-- Every stored event, track and identify. One row per (app_id, event_id): the
-- ingest consumer drops ids already present (see event_ids), so queries read
-- this table without FINAL. ReplacingMergeTree is the second line of defence:
-- a duplicate that slips past ingest has the same sort key and is collapsed on merge.
CREATE TABLE IF NOT EXISTS events
(
    app_id String,
    user_id String,
    ts DateTime,
    event_id String,
    type Enum8('track' = 1, 'identify' = 2),
    event String,
    -- Top-level scalar properties as parallel arrays, so segments address them
    -- exactly (visitParamExtract* would also match nested keys).
    prop_keys Array(String),
    prop_strings Array(String),
    prop_numbers Array(Float64),
    properties String,
    -- Traits this event sets: identify traits plus context values.
    -- trait_types: 0 = null (removes the trait), 1 = string, 2 = number, 3 = boolean.
    trait_keys Array(String),
    trait_values Array(String),
    trait_types Array(UInt8),
    context String,
    received_at DateTime
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (app_id, user_id, ts, event_id);
