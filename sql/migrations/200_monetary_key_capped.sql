-- profiles_latest as in 170, with the monetary key capped at 9.2e18
-- micro-units (revenue 9.2e12) as profiles/sql.ts now computes it: past
-- 2^63 micro-units toInt64 wrapped to a negative key, and the biggest spender
-- scored m 1. Revenues above the cap tie at the top.
DROP TABLE IF EXISTS profiles_latest;

CREATE VIEW IF NOT EXISTS profiles_latest AS
SELECT app_id, l_run AS run_id, l_as_of AS as_of, user_id, first_seen, last_seen, events_total, events_7d, events_30d,
    active_days_30d, views_30d, clicks_30d, purchases_30d, purchases_total, revenue_total, revenue_30d, avg_order_value,
    last_purchase_at, x_recency AS recency_days, x_r AS r_score, x_f AS f_score, x_m AS m_score, x_segment AS rfm_segment,
    top_category, best_hour, platform, country, timezone, locale, app_version, trait_keys, trait_values, trait_types, random_bucket
FROM
(
    SELECT *,
        if(inherited, if(purchases_total > 0, toNullable(toUInt32(intDiv(toUInt32(l_as_of) - toUInt32(assumeNotNull(last_purchase_at)), 86400))), NULL), recency_days) AS x_recency,
        if(layered, if(purchases_total > 0, toNullable(toUInt8(1 + (length(l_r) >= 1 AND -toInt64(assumeNotNull(x_recency)) >= l_r[1]) + (length(l_r) >= 2 AND -toInt64(assumeNotNull(x_recency)) >= l_r[2]) + (length(l_r) >= 3 AND -toInt64(assumeNotNull(x_recency)) >= l_r[3]) + (length(l_r) >= 4 AND -toInt64(assumeNotNull(x_recency)) >= l_r[4]))), NULL), r_score) AS x_r,
        if(layered, if(purchases_total > 0, toNullable(toUInt8(1 + (length(l_f) >= 1 AND toInt64(purchases_total) >= l_f[1]) + (length(l_f) >= 2 AND toInt64(purchases_total) >= l_f[2]) + (length(l_f) >= 3 AND toInt64(purchases_total) >= l_f[3]) + (length(l_f) >= 4 AND toInt64(purchases_total) >= l_f[4]))), NULL), f_score) AS x_f,
        if(layered, if(purchases_total > 0, toNullable(toUInt8(1 + (length(l_m) >= 1 AND toInt64(least(floor(revenue_total * 1000000 + 0.5), 9.2e18)) >= l_m[1]) + (length(l_m) >= 2 AND toInt64(least(floor(revenue_total * 1000000 + 0.5), 9.2e18)) >= l_m[2]) + (length(l_m) >= 3 AND toInt64(least(floor(revenue_total * 1000000 + 0.5), 9.2e18)) >= l_m[3]) + (length(l_m) >= 4 AND toInt64(least(floor(revenue_total * 1000000 + 0.5), 9.2e18)) >= l_m[4]))), NULL), m_score) AS x_m,
        -- The RFM grid of profiles/rfm.ts, keyed by r * 10 + the mean of f and m (halves up).
        if(layered, if(purchases_total > 0, toNullable(transform(toUInt16(assumeNotNull(x_r) * 10 + intDiv(assumeNotNull(x_f) + assumeNotNull(x_m) + 1, 2)),
            [toUInt16(11), 12, 13, 14, 15, 21, 22, 23, 24, 25, 31, 32, 33, 34, 35, 41, 42, 43, 44, 45, 51, 52, 53, 54, 55],
            ['lost', 'hibernating', 'at_risk', 'at_risk', 'cannot_lose', 'hibernating', 'hibernating', 'at_risk', 'at_risk', 'cannot_lose',
             'about_to_sleep', 'about_to_sleep', 'need_attention', 'loyal', 'loyal', 'promising', 'potential_loyalist', 'potential_loyalist', 'loyal', 'loyal',
             'new_customers', 'potential_loyalist', 'potential_loyalist', 'champions', 'champions'], '')), NULL), rfm_segment) AS x_segment
    FROM
    (
        SELECT *, run_id != l_run AS inherited, l_base != '' AS layered
        FROM profiles
        ANY INNER JOIN
        (
            SELECT app_id, l_run, l_as_of, base_run_id AS l_base, rfm_r AS l_r, rfm_f AS l_f, rfm_m AS l_m
            FROM
            (
                SELECT app_id, argMax(run_id, (as_of, finished_at, run_id)) AS l_run, argMax(as_of, (as_of, finished_at, run_id)) AS l_as_of
                FROM
                (
                    SELECT app_id, run_id, any(as_of) AS as_of, max(finished_at) AS finished_at
                    FROM profile_runs
                    GROUP BY app_id, run_id
                    HAVING max(state = 'complete') = 1 AND max(state = 'dropped') = 0 AND max(state = 'superseded') = 0 AND as_of <= now()
                )
                GROUP BY app_id
            )
            ANY LEFT JOIN
            (
                SELECT app_id, run_id AS l_run, base_run_id, rfm_r, rfm_f, rfm_m FROM profile_run_layers
            ) USING app_id, l_run
        ) USING app_id
        WHERE run_id = l_run
            OR (run_id = l_base AND l_base != ''
                -- The users the latest run holds itself (its layer's rows: the latest
                -- runs repeated, as 18.16 has no common table expressions).
                AND (app_id, user_id) NOT IN (SELECT app_id, user_id FROM profiles WHERE (app_id, run_id) IN (
                    SELECT app_id, argMax(run_id, (as_of, finished_at, run_id))
                    FROM
                    (
                        SELECT app_id, run_id, any(as_of) AS as_of, max(finished_at) AS finished_at
                        FROM profile_runs
                        GROUP BY app_id, run_id
                        HAVING max(state = 'complete') = 1 AND max(state = 'dropped') = 0 AND max(state = 'superseded') = 0 AND as_of <= now()
                    )
                    GROUP BY app_id)))
    )
);


-- traits_current as in 030, without trait changes stamped in the future: like
-- profiles and segments, it shows the traits as of now.
