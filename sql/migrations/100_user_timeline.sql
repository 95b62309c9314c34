-- Each user's whole history in one row: what a full profile run reads instead
-- of grouping every event by user.
--
-- The GROUP BY of 20M events by user_id is what the profile scan spent most of
-- its CPU on: 15 aggregate functions updated per event through a hash table.
-- Here ClickHouse's own merges do that grouping in the background: an
-- AggregatingMergeTree keyed by user, whose columns are groupArray states,
-- concatenates the rows of one user whenever parts merge. A run reads it with
-- FINAL (which merges what the background has not yet), one row per user, and
-- computes each field with array functions (profiles/sql.ts).
--
-- Columns are parallel arrays, one element per event (in no particular order):
--   event_ts, event_hash: the event's second and cityHash64(event_id, ts), the
--     identity the sort keys of events and profile_events give it, so a
--     duplicate that slipped past ingest is dropped at read exactly where their
--     merges would collapse it;
--   event_flags: kind (bits 0-2, as profile_events: 0 identify, 1 view,
--     2 click, 3 purchase, 4 other) + 8 when the event has a category;
--   event_amount, event_category: as profile_events' amount and category;
-- and parallel arrays, one element per trait change (an event's trait_keys):
--   trait_key, trait_value, trait_type, trait_ts, trait_event (its event_id).
-- The view is one flat SELECT: 18.16 loses the columns of a subquery in a
-- materialized view ("Unknown identifier" on insert).
CREATE TABLE IF NOT EXISTS user_timeline
(
    app_id String,
    user_id String,
    event_ts AggregateFunction(groupArray, DateTime),
    event_hash AggregateFunction(groupArray, UInt64),
    event_flags AggregateFunction(groupArray, UInt8),
    event_amount AggregateFunction(groupArray, Float64),
    event_category AggregateFunction(groupArray, String),
    trait_key AggregateFunction(groupArrayArray, Array(String)),
    trait_value AggregateFunction(groupArrayArray, Array(String)),
    trait_type AggregateFunction(groupArrayArray, Array(UInt8)),
    trait_ts AggregateFunction(groupArrayArray, Array(DateTime)),
    trait_event AggregateFunction(groupArrayArray, Array(String))
)
ENGINE = AggregatingMergeTree
ORDER BY (app_id, user_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS user_timeline_mv TO user_timeline AS
SELECT
    app_id,
    user_id,
    groupArrayState(ts) AS event_ts,
    groupArrayState(cityHash64(event_id, toUInt32(ts))) AS event_hash,
    groupArrayState(toUInt8((multiIf(type = 'identify', 0, event = 'view', 1, event = 'click', 2, event = 'purchase', 3, 4) AS kind)
        + 8 * (indexOf(prop_keys, 'category') > 0 AND kind IN (1, 3) AS has_category))) AS event_flags,
    groupArrayState(if(kind = 3 AND NOT isNaN(prop_numbers[indexOf(prop_keys, 'amount')]), prop_numbers[indexOf(prop_keys, 'amount')], 0.)) AS event_amount,
    groupArrayState(if(has_category, prop_strings[indexOf(prop_keys, 'category')], '')) AS event_category,
    groupArrayArrayState(trait_keys) AS trait_key,
    groupArrayArrayState(trait_values) AS trait_value,
    groupArrayArrayState(trait_types) AS trait_type,
    groupArrayArrayState(arrayResize(CAST([] AS Array(DateTime)), length(trait_keys), ts)) AS trait_ts,
    groupArrayArrayState(arrayResize(CAST([] AS Array(String)), length(trait_keys), event_id)) AS trait_event
FROM events
GROUP BY app_id, user_id;

-- Events stored before this migration. A row inserted while it runs (or a
-- repeated run of this file) may be written twice: its hash repeats, and
-- readers drop the repeat (a repeated trait change is the same change, and only
-- the latest per key counts). The GROUP BY holds every user's arrays in memory
-- (bench/timeline.ts measures it), so it spills past 2 GB rather than fail on
-- a large store.
INSERT INTO user_timeline
SELECT
    app_id,
    user_id,
    groupArrayState(ts) AS event_ts,
    groupArrayState(cityHash64(event_id, toUInt32(ts))) AS event_hash,
    groupArrayState(toUInt8((multiIf(type = 'identify', 0, event = 'view', 1, event = 'click', 2, event = 'purchase', 3, 4) AS kind)
        + 8 * (indexOf(prop_keys, 'category') > 0 AND kind IN (1, 3) AS has_category))) AS event_flags,
    groupArrayState(if(kind = 3 AND NOT isNaN(prop_numbers[indexOf(prop_keys, 'amount')]), prop_numbers[indexOf(prop_keys, 'amount')], 0.)) AS event_amount,
    groupArrayState(if(has_category, prop_strings[indexOf(prop_keys, 'category')], '')) AS event_category,
    groupArrayArrayState(trait_keys) AS trait_key,
    groupArrayArrayState(trait_values) AS trait_value,
    groupArrayArrayState(trait_types) AS trait_type,
    groupArrayArrayState(arrayResize(CAST([] AS Array(DateTime)), length(trait_keys), ts)) AS trait_ts,
    groupArrayArrayState(arrayResize(CAST([] AS Array(String)), length(trait_keys), event_id)) AS trait_event
FROM events
GROUP BY app_id, user_id
SETTINGS max_bytes_before_external_group_by = 2000000000;

OPTIMIZE TABLE user_timeline FINAL;
