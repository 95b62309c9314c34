-- Each user's earliest track event of each name: what `first_did(e, …)` without
-- a `where` asks ("the first-ever e up to as_of lies in the window"). Read from
-- ~one row per (user, event name) instead of scanning each user's whole history
-- (without it, one first_did makes the shared events scan of a segment read
-- all time).
--
-- Same shape and reasoning as app_users (050): the view writes one row per
-- (app, event, user) of each insert block with that block's earliest ts;
-- readers take min(first_ts) over a user's rows, which is the earliest event
-- however many rows there are and whether or not they were merged, so the
-- table needs no FINAL and a duplicate event or a repeated backfill changes
-- nothing. If that min is after as_of the user had no such event by then.
-- Merges keep the earliest row (greatest first_ts_rev).
--
-- Events are never deleted today. A job that deletes events (retention) must
-- rebuild this table from events.
CREATE TABLE IF NOT EXISTS user_event_firsts
(
    app_id String,
    event String,
    user_id String,
    first_ts DateTime,
    first_ts_rev UInt32
)
ENGINE = ReplacingMergeTree(first_ts_rev)
ORDER BY (app_id, event, user_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS user_event_firsts_mv TO user_event_firsts AS
SELECT app_id, event, user_id, min(ts) AS first_ts, toUInt32(4294967295 - toUInt32(min(ts))) AS first_ts_rev
FROM events
WHERE type = 'track'
GROUP BY app_id, event, user_id;

-- Events stored before this migration. An event inserted while this runs is
-- seen by the view, the backfill or both, which is harmless (see above).
INSERT INTO user_event_firsts
SELECT app_id, event, user_id, min(ts) AS first_ts, toUInt32(4294967295 - toUInt32(min(ts))) AS first_ts_rev
FROM events
WHERE type = 'track'
GROUP BY app_id, event, user_id;
