// The cluster model as ClickHouse SQL: an expression over a `profiles` row that
// evaluates to the 1-based number of the nearest centroid, so every user of an
// app is assigned inside ClickHouse in one INSERT … SELECT, without a pass in Node.
//
// Shape (runs on 18.16 and current ClickHouse):
//   indexOf([ d_1, …, d_k ] AS __wcl_d, arrayReduce('min', __wcl_d))
//   d_c = (z_1 - c_c1)*(z_1 - c_c1) + … + (z_d - c_cd)*(z_d - c_cd)
//   z_j = (f(x_j) - mean_j) / sd_j,  f = log(1 + x) or identity
// Each z_j is written once and aliased at its first use; ClickHouse evaluates it
// once per row and the query text stays O(k·d) small. The sum runs in feature
// order and indexOf picks the first minimum: the same arithmetic and tie rule as
// the in-process `nearest()`. (18.16 cannot capture columns in an arrayMap lambda
// inside a subquery, hence the unrolled form.)
import { join, raw, sql, type Sql } from '../lib/sql.ts';
import { FEATURES, type ClusterModel } from './cluster-features.ts';
import { runRowsSql, type RunRef } from './sql.ts';

const ALIAS = '__wcl_';

type AssignableModel = Pick<ClusterModel, 'transform' | 'centroids_standardised'>;

/** z_j: the standardised value of one feature, exactly as `applyTransform` computes it. */
export function standardisedFeatureSql(model: AssignableModel, j: number): Sql {
  const t = model.transform[j]!;
  const def = FEATURES[t.name];
  if (!def) throw new TypeError(`model uses unknown feature ${JSON.stringify(t.name)}`);
  const x = sql`(${def.sql})`;
  const f = t.log1p ? sql`log(1 + ${x})` : x;
  return sql`((${f} - ${t.mean}) / ${t.sd})`;
}

/** The 1-based number of the nearest centroid, as a UInt expression over `profiles` columns. */
export function nearestClusterSql(model: AssignableModel): Sql {
  const d = model.transform.length;
  const k = model.centroids_standardised.length;
  if (k < 1 || d < 1) throw new RangeError('model has no centroids or no features');
  const z = Array.from({ length: d }, (_, j) => raw(`${ALIAS}z${j}`));
  const distances: Sql[] = model.centroids_standardised.map((c, ci) => {
    if (c.length !== d) throw new RangeError(`centroid ${ci + 1} has ${c.length} coordinates, expected ${d}`);
    const terms = c.map((cj, j) => {
      const first = ci === 0 ? sql`(${standardisedFeatureSql(model, j)} AS ${z[j]!})` : z[j]!;
      return sql`(${first} - ${cj})*(${z[j]!} - ${cj})`;
    });
    return join(terms, ' + ');
  });
  const arr = raw(`${ALIAS}d`);
  return sql`indexOf([${join(distances, ', ')}] AS ${arr}, arrayReduce('min', ${arr}))`;
}

/** The label of a cluster number expression (1-based), from the model's label list. */
export function clusterLabelSql(model: Pick<ClusterModel, 'labels'>, cluster: Sql): Sql {
  return sql`arrayElement(${model.labels}, ${cluster})`;
}

/**
 * (user_id, cluster, cluster_label) of every user of a profile run (or those
 * matching `users`) under `model`, computed on the fly — also covers users
 * profiled after the model was trained.
 */
export function liveAssignmentsSql(
  model: Pick<ClusterModel, 'transform' | 'centroids_standardised' | 'labels'>,
  appId: string,
  run: RunRef,
  users?: Sql,
): Sql {
  // `users` (a condition on user_id) filters the profile rows before any distance is computed.
  const only = users ? sql` AND ${users}` : sql``;
  return sql`
    SELECT user_id, cluster, ${clusterLabelSql(model, raw('cluster'))} AS cluster_label
    FROM (SELECT user_id, ${nearestClusterSql(model)} AS cluster FROM (${runRowsSql(appId, run, only)}))`;
}
