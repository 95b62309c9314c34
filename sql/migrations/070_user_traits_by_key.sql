-- user_traits sorted by (app_id, key, user_id, …) instead of (app_id, user_id,
-- key, …). Segments read one or two keys of every user ("country = 'CN'"); with
-- the user first they read every key's rows. Measured on 1M users / 3M trait
-- rows: "rfm_segment in (…) and country = 'CN'" 0.57–0.74 s → 0.34–0.44 s. The
-- per-user readers lose little: one user's traits are one granule per key
-- (100 users' traits: 7 ms → 13–25 ms), and the profile job reads every row.
--
-- 18.16 cannot change a sort key in place, so the table is rebuilt. The view
-- user_traits_mv writes `TO user_traits` by name, resolved at each insert, so
-- after the RENAME it writes into the new table with no gap and no change to
-- the view. Readers see the full old table until the RENAME swaps in a full new
-- one: the new table is filled from `events` first (every trait row is derived
-- from its event), then the rows written to the old table between that read and
-- the swap are copied over. Rows written twice share the whole sort key and
-- collapse on merge; every reader already takes the latest change per key, so a
-- duplicate never changes an answer (as after any retried insert).
--
-- Each statement is safe to repeat: a run interrupted anywhere leaves
-- user_traits complete (old or new order), and a repeated run rebuilds it from
-- events again. An INSERT whose view push began before the RENAME and ended
-- after the copy could leave its trait rows in the dropped table: apply this
-- with ingest stopped (`warbler ingest` applies migrations before it consumes)
-- or replay that minute's events.
DROP TABLE IF EXISTS user_traits_by_user;

DROP TABLE IF EXISTS user_traits_by_key;

CREATE TABLE user_traits_by_key
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
ORDER BY (app_id, key, user_id, ts, event_id);

INSERT INTO user_traits_by_key
SELECT app_id, user_id, key, value, value_type, ts, event_id
FROM events
ARRAY JOIN trait_keys AS key, trait_values AS value, trait_types AS value_type;

RENAME TABLE user_traits TO user_traits_by_user, user_traits_by_key TO user_traits;

INSERT INTO user_traits
SELECT app_id, user_id, key, value, value_type, ts, event_id
FROM user_traits_by_user;

DROP TABLE user_traits_by_user;

OPTIMIZE TABLE user_traits FINAL;
