-- Tag history: every add and remove is kept; the current state of a tag is the
-- change with the highest seq.
CREATE TABLE IF NOT EXISTS user_tags
(
    app_id String,
    user_id String,
    tag String,
    present UInt8,
    changed_at DateTime,
    seq UInt64
)
ENGINE = MergeTree
ORDER BY (app_id, user_id, tag, seq);
