-- The latest change of each context trait (app_version, country, locale,
-- platform, timezone: what SDKs send with every event) per user: one row per
-- user once merged, a `max` state per key over the user's changes to it, each
-- change packed into one string that orders as the change does:
--   ts + 10^10 as 11 digits; the event_id with each \x01 written \x01\x02 and
--   each NUL \x01\x01, then a NUL (the id holds no NUL then, and ids compare
--   as their bytes do, a shorter one first: TRAIT_ORDER's order); the value;
--   its value_type as one digit; 10^9 + the value's length as 10 digits (the
--   value and type are read from the end, so the value may hold anything).
-- A tie of one (ts, event_id) (an id reused with another value) goes to the
-- greater packed string, the same one on every read.
--
-- Why: with context on every event, a full profile run grouped ~6 rows of
-- user_trait_values per user, tuples of strings through a sort and a filter,
-- and took 10.4x its app's GROUP BY user_id scan at 1M users
-- (bench/results/trait-heavy-1m.md). A merged part of this table has each
-- user's context traits in one row: the run reads it without grouping
-- (profiles/sql.ts contextTableSql) and groups only the other keys.
--
-- max is what a merge of two rows computes, so duplicates, repeated inserts
-- and a backfill racing the view leave the same value.
CREATE TABLE IF NOT EXISTS user_context_traits
(
    app_id String,
    user_id String,
    app_version AggregateFunction(max, String),
    country AggregateFunction(max, String),
    locale AggregateFunction(max, String),
    platform AggregateFunction(max, String),
    timezone AggregateFunction(max, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (app_id, user_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS user_context_traits_mv TO user_context_traits AS
SELECT
    app_id,
    user_id,
    maxStateIf(concat(toString(toUInt64(ts) + 10000000000), replaceAll(replaceAll(event_id, '\x01', '\x01\x02'), '\0', '\x01\x01'), '\0', trait_values[indexOf(trait_keys, 'app_version')], toString(trait_types[indexOf(trait_keys, 'app_version')]), toString(1000000000 + length(trait_values[indexOf(trait_keys, 'app_version')]))), has(trait_keys, 'app_version')) AS app_version,
    maxStateIf(concat(toString(toUInt64(ts) + 10000000000), replaceAll(replaceAll(event_id, '\x01', '\x01\x02'), '\0', '\x01\x01'), '\0', trait_values[indexOf(trait_keys, 'country')], toString(trait_types[indexOf(trait_keys, 'country')]), toString(1000000000 + length(trait_values[indexOf(trait_keys, 'country')]))), has(trait_keys, 'country')) AS country,
    maxStateIf(concat(toString(toUInt64(ts) + 10000000000), replaceAll(replaceAll(event_id, '\x01', '\x01\x02'), '\0', '\x01\x01'), '\0', trait_values[indexOf(trait_keys, 'locale')], toString(trait_types[indexOf(trait_keys, 'locale')]), toString(1000000000 + length(trait_values[indexOf(trait_keys, 'locale')]))), has(trait_keys, 'locale')) AS locale,
    maxStateIf(concat(toString(toUInt64(ts) + 10000000000), replaceAll(replaceAll(event_id, '\x01', '\x01\x02'), '\0', '\x01\x01'), '\0', trait_values[indexOf(trait_keys, 'platform')], toString(trait_types[indexOf(trait_keys, 'platform')]), toString(1000000000 + length(trait_values[indexOf(trait_keys, 'platform')]))), has(trait_keys, 'platform')) AS platform,
    maxStateIf(concat(toString(toUInt64(ts) + 10000000000), replaceAll(replaceAll(event_id, '\x01', '\x01\x02'), '\0', '\x01\x01'), '\0', trait_values[indexOf(trait_keys, 'timezone')], toString(trait_types[indexOf(trait_keys, 'timezone')]), toString(1000000000 + length(trait_values[indexOf(trait_keys, 'timezone')]))), has(trait_keys, 'timezone')) AS timezone
FROM events
WHERE hasAny(trait_keys, ['app_version', 'country', 'locale', 'platform', 'timezone'])
GROUP BY app_id, user_id;

-- Changes stored before this migration (a row the view also wrote is the same maximum).
INSERT INTO user_context_traits
SELECT
    app_id,
    user_id,
    maxStateIf(concat(toString(toUInt64(ts) + 10000000000), replaceAll(replaceAll(event_id, '\x01', '\x01\x02'), '\0', '\x01\x01'), '\0', trait_values[indexOf(trait_keys, 'app_version')], toString(trait_types[indexOf(trait_keys, 'app_version')]), toString(1000000000 + length(trait_values[indexOf(trait_keys, 'app_version')]))), has(trait_keys, 'app_version')) AS app_version,
    maxStateIf(concat(toString(toUInt64(ts) + 10000000000), replaceAll(replaceAll(event_id, '\x01', '\x01\x02'), '\0', '\x01\x01'), '\0', trait_values[indexOf(trait_keys, 'country')], toString(trait_types[indexOf(trait_keys, 'country')]), toString(1000000000 + length(trait_values[indexOf(trait_keys, 'country')]))), has(trait_keys, 'country')) AS country,
    maxStateIf(concat(toString(toUInt64(ts) + 10000000000), replaceAll(replaceAll(event_id, '\x01', '\x01\x02'), '\0', '\x01\x01'), '\0', trait_values[indexOf(trait_keys, 'locale')], toString(trait_types[indexOf(trait_keys, 'locale')]), toString(1000000000 + length(trait_values[indexOf(trait_keys, 'locale')]))), has(trait_keys, 'locale')) AS locale,
    maxStateIf(concat(toString(toUInt64(ts) + 10000000000), replaceAll(replaceAll(event_id, '\x01', '\x01\x02'), '\0', '\x01\x01'), '\0', trait_values[indexOf(trait_keys, 'platform')], toString(trait_types[indexOf(trait_keys, 'platform')]), toString(1000000000 + length(trait_values[indexOf(trait_keys, 'platform')]))), has(trait_keys, 'platform')) AS platform,
    maxStateIf(concat(toString(toUInt64(ts) + 10000000000), replaceAll(replaceAll(event_id, '\x01', '\x01\x02'), '\0', '\x01\x01'), '\0', trait_values[indexOf(trait_keys, 'timezone')], toString(trait_types[indexOf(trait_keys, 'timezone')]), toString(1000000000 + length(trait_values[indexOf(trait_keys, 'timezone')]))), has(trait_keys, 'timezone')) AS timezone
FROM events
WHERE hasAny(trait_keys, ['app_version', 'country', 'locale', 'platform', 'timezone'])
GROUP BY app_id, user_id
SETTINGS max_bytes_before_external_group_by = 2000000000;

OPTIMIZE TABLE user_context_traits FINAL;
