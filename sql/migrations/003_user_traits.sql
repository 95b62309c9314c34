-- Trait changes, one row per (event, key). Written by the same INSERT as the
-- event (through the view), so a trait is never stored without its event.
CREATE TABLE IF NOT EXISTS user_traits
(
    app_id String,
    user_id String,
    key String,
    value String,
    value_type UInt8,
    ts DateTime,
    event_id String
)
ENGINE = ReplacingMergeTree
ORDER BY (app_id, user_id, key, ts, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS user_traits_mv TO user_traits AS
SELECT app_id, user_id, key, value, value_type, ts, event_id
FROM events
ARRAY JOIN trait_keys AS key, trait_values AS value, trait_types AS value_type;
