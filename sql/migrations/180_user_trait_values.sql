-- Each distinct trait value a user had, with its latest change: one row per
-- (user, key, value, value_type) once merged, `last` the greatest (ts, event_id)
-- of the changes to it, as the 11 fixed-width digits of ts + 10^10 followed by
-- the event_id (the order segments use: ts first, ties by the event_id's bytes).
--
-- Why: SDKs send the context (platform, app_version, country, timezone, locale)
-- with every event, and each is a trait change that nearly always repeats the
-- value before it. A full profile run took each user's current traits from
-- every change in user_timeline: 196 per user on bench/trait-heavy.ts against
-- 7 without context, and 8.3x the time. The current value at an as_of after
-- every change of the user is the value whose latest change is greatest, so
-- the run reads these rows instead (~6 per user there, profiles/sql.ts
-- traitsTableSql) and takes the history (user_traits) only for users with a
-- change after the as_of.
--
-- An AggregatingMergeTree: max over the changes is what a merge of two rows
-- computes, so a duplicate event, a repeated insert or a backfill racing the
-- view changes nothing, and a reader may read rows not merged yet (it takes
-- the greatest `last` per key over whatever rows it finds).
CREATE TABLE IF NOT EXISTS user_trait_values
(
    app_id String,
    user_id String,
    key String,
    value String,
    value_type UInt8,
    last AggregateFunction(max, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (app_id, user_id, key, value, value_type);

CREATE MATERIALIZED VIEW IF NOT EXISTS user_trait_values_mv TO user_trait_values AS
SELECT app_id, user_id, key, value, value_type, maxState(concat(toString(toUInt64(ts) + 10000000000), event_id)) AS last
FROM events
ARRAY JOIN trait_keys AS key, trait_values AS value, trait_types AS value_type
GROUP BY app_id, user_id, key, value, value_type;

-- Changes stored before this migration (a row the view also wrote is the same maximum).
INSERT INTO user_trait_values
SELECT app_id, user_id, key, value, value_type, maxState(concat(toString(toUInt64(ts) + 10000000000), event_id)) AS last
FROM events
ARRAY JOIN trait_keys AS key, trait_values AS value, trait_types AS value_type
GROUP BY app_id, user_id, key, value, value_type
SETTINGS max_bytes_before_external_group_by = 2000000000;

OPTIMIZE TABLE user_trait_values FINAL;
