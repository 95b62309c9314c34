-- The profiles of each app's latest complete run: what GET /v1/users/{id} and
-- segments read, for analysts. (Clusters: join cluster_assignments on the
-- app's greatest model version.)
CREATE VIEW IF NOT EXISTS profiles_latest AS
SELECT *
FROM profiles
WHERE (app_id, run_id) IN
(
    SELECT app_id, argMax(run_id, (as_of, finished_at, run_id))
    FROM
    (
        SELECT app_id, run_id, any(as_of) AS as_of, max(finished_at) AS finished_at
        FROM profile_runs
        GROUP BY app_id, run_id
        HAVING max(state = 'complete') = 1 AND max(state = 'dropped') = 0
    )
    GROUP BY app_id
);
