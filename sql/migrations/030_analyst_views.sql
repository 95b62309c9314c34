-- Views for analysts who query ClickHouse with plain SQL. They hide the storage
-- layout (parallel property arrays, trait history, profile runs) behind the
-- names of the contract. Every view keeps app_id: filter on it first, it is the
-- leading column of every sort key.

-- Events with the well-known properties as columns. Missing or non-numeric
-- amounts are NULL rather than nan, which is what SQL users expect.
CREATE VIEW IF NOT EXISTS events_flat AS
SELECT
    app_id,
    user_id,
    ts,
    event_id,
    type,
    event,
    if(has(prop_keys, 'amount') AND NOT isNaN(prop_numbers[indexOf(prop_keys, 'amount')]),
       toNullable(prop_numbers[indexOf(prop_keys, 'amount')]), NULL) AS amount,
    if(has(prop_keys, 'currency'), toNullable(prop_strings[indexOf(prop_keys, 'currency')]), NULL) AS currency,
    if(has(prop_keys, 'category'), toNullable(prop_strings[indexOf(prop_keys, 'category')]), NULL) AS category,
    if(has(prop_keys, 'item_id'), toNullable(prop_strings[indexOf(prop_keys, 'item_id')]), NULL) AS item_id,
    properties,
    context,
    received_at
FROM events;

-- The current value of every trait (null removals dropped).
CREATE VIEW IF NOT EXISTS traits_current AS
SELECT app_id, user_id, key, value, value_type, updated_at
FROM
(
    SELECT
        app_id,
        user_id,
        key,
        argMax(value, (ts, event_id)) AS value,
        argMax(value_type, (ts, event_id)) AS value_type,
        max(ts) AS updated_at
    FROM user_traits
    GROUP BY app_id, user_id, key
)
WHERE value_type != 0;

-- The tags users carry now.
CREATE VIEW IF NOT EXISTS tags_current AS
SELECT app_id, user_id, tag, changed_at
FROM
(
    SELECT app_id, user_id, tag, argMax(present, seq) AS present, max(changed_at) AS changed_at
    FROM user_tags
    GROUP BY app_id, user_id, tag
)
WHERE present = 1;
