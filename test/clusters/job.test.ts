import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromIPC } from 'apache-arrow';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { join as sqlJoin, sql } from '../../lib/sql.ts';
import { applyTransform, FEATURES, type ClusterModel } from '../../profiles/cluster-features.ts';
import { liveAssignmentsSql } from '../../profiles/cluster-sql.ts';
import { ClusterJobError, exportFeaturesArrow, latestAssignmentsSql, latestModel, trainClusters } from '../../profiles/clusters-job.ts';
import { assignNearest } from '../../profiles/kmeans.ts';
import { ARCHETYPES, plantedProfiles } from '../support/archetypes.ts';
import { adjustedRandIndex } from '../support/ari.ts';
import { testDatabase } from '../support/env.ts';

const APP = 'shop';
const OTHER = 'other_app';
const N = 4000;
let ch: ClickHouse;
let truth: Int32Array;

async function loadProfiles(appId: string, runId: string, n: number, seed: number): Promise<Int32Array> {
  const planted = plantedProfiles(n, seed, appId, runId);
  for (let i = 0; i < planted.rows.length; i += 50_000) await ch.insert('profiles', planted.rows.slice(i, i + 50_000));
  await ch.insert('profile_runs', [
    { app_id: appId, run_id: runId, as_of: planted.rows[0]!.as_of, mode: 'full', state: 'complete', users: n, started_at: planted.rows[0]!.as_of, finished_at: planted.rows[0]!.as_of, previous_run_id: '' },
  ]);
  return planted.truth;
}

/** Raw features of every user of the run, computed by the features' SQL, in user_id order. */
async function allFeatures(model: ClusterModel): Promise<{ ids: string[]; values: Float64Array }> {
  const cols = sqlJoin(model.features.map((f) => FEATURES[f]!.sql));
  const rows = await ch.rows<{ user_id: string; f: number[] }>(
    sql`SELECT user_id, [${cols}] AS f FROM profiles WHERE app_id = ${APP} AND run_id = ${model.profile_run_id} ORDER BY user_id`,
  );
  return { ids: rows.map((r) => r.user_id), values: Float64Array.from(rows.flatMap((r) => r.f.map(Number))) };
}

beforeAll(async () => {
  ch = await testDatabase('clusters');
  truth = await loadProfiles(APP, 'run1', N, 7);
  await loadProfiles(OTHER, 'runA', 500, 99);
});

describe('cluster job against ClickHouse', () => {
  it('reports a clear error before any profile run exists, and for bad options', async () => {
    await expect(trainClusters(ch, 'nobody', {})).rejects.toThrow(/no complete profile run/);
    const err = await trainClusters(ch, APP, { features: ['recency', 'shoe_size'] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClusterJobError);
    expect((err as ClusterJobError).errors).toEqual([expect.objectContaining({ path: 'features.1' })]);
    expect(await latestModel(ch, APP)).toBeNull();
  });

  it('trains, assigns every user in SQL exactly as the in-process model does, and stores version 1', async () => {
    const progress: number[] = [];
    const res = await trainClusters(ch, APP, { k: 5, seed: 3 }, (f) => progress.push(f));
    expect(res.version).toBe(1);
    expect(res.users).toBe(N);
    expect(res.sizes.reduce((a, b) => a + b, 0)).toBe(N);
    expect(progress.at(-1)).toBe(1);
    const model = (await latestModel(ch, APP))!;
    expect(model.version).toBe(1);
    expect(model.centroids).toHaveLength(5);

    const assigned = await ch.rows<{ user_id: string; cluster: number; cluster_label: string }>(
      sql`SELECT user_id, cluster, cluster_label FROM cluster_assignments WHERE app_id = ${APP} AND version = 1 ORDER BY user_id`,
    );
    const { ids, values } = await allFeatures(model);
    expect(assigned.map((r) => r.user_id)).toEqual(ids);
    const Z = applyTransform(model.transform, values);
    const d = model.features.length;
    const local = assignNearest({ n: ids.length, d, values: Z }, Float64Array.from(model.centroids_standardised.flat()), model.k);
    let mismatches = 0;
    assigned.forEach((r, i) => {
      if (Number(r.cluster) !== local[i]! + 1) mismatches++;
      expect(r.cluster_label).toBe(model.labels[Number(r.cluster) - 1]);
    });
    expect(mismatches).toBe(0);
    // The planted archetypes come back out of the database too.
    const byUser = new Map(assigned.map((r) => [r.user_id, Number(r.cluster)]));
    const ari = adjustedRandIndex(
      Array.from({ length: N }, (_, i) => byUser.get(`u${String(i).padStart(8, '0')}`)!),
      truth,
    );
    console.log(`job: k=${res.k} ARI=${ari.toFixed(4)} labels=${JSON.stringify(res.labels)} timings=${JSON.stringify(res.timings_ms)}`);
    expect(ari).toBeGreaterThanOrEqual(0.8);
    // Another app's users are untouched.
    const other = await ch.one<{ n: string }>(sql`SELECT count() AS n FROM cluster_assignments WHERE app_id = ${OTHER}`);
    expect(Number(other!.n)).toBe(0);
  });

  it('the live SQL assignment over the profile run agrees with the stored assignments', async () => {
    const model = (await latestModel(ch, APP))!;
    const diff = await ch.one<{ n: string; c: string }>(sql`
      SELECT count() AS c, countIf(live != cluster OR live_label != cluster_label) AS n FROM (
        SELECT user_id, cluster AS live, cluster_label AS live_label FROM (${liveAssignmentsSql(model, APP, { run_id: 'run1' })})
      ) ANY INNER JOIN (${latestAssignmentsSql(APP)}) USING user_id`);
    expect(Number(diff!.c)).toBe(N);
    expect(Number(diff!.n)).toBe(0);
  });

  it('as_of picks the latest complete profile run at or before it', async () => {
    await expect(trainClusters(ch, APP, { k: 3, asOf: new Date('2026-11-01T00:00:00Z') })).rejects.toThrow(/no complete profile run/);
  });

  it('a retrain with another seed makes version 2, keeps version 1, and carries the labels over', async () => {
    const first = (await latestModel(ch, APP))!;
    const res = await trainClusters(ch, APP, { k: 5, seed: 11 });
    expect(res.version).toBe(2);
    expect(res.carried).toEqual([1, 2, 3, 4, 5]);
    expect(res.labels).toEqual(first.labels);
    const versions = await ch.rows<{ version: number }>(sql`SELECT DISTINCT version FROM cluster_assignments WHERE app_id = ${APP} ORDER BY version`);
    expect(versions.map((v) => Number(v.version))).toEqual([1, 2]);
    // Users keep their cluster numbers across the two versions (almost all of them).
    const moved = await ch.one<{ n: string }>(sql`
      SELECT count() AS n FROM (SELECT user_id, cluster AS c1 FROM cluster_assignments WHERE app_id = ${APP} AND version = 1)
      ANY INNER JOIN (SELECT user_id, cluster AS c2 FROM cluster_assignments WHERE app_id = ${APP} AND version = 2) USING user_id
      WHERE c1 != c2`);
    expect(Number(moved!.n)).toBeLessThan(N * 0.02);
  });

  it('options passed as undefined (absent request fields) take their defaults', async () => {
    const res = await trainClusters(ch, APP, { k: undefined, features: undefined, asOf: undefined, sampleSize: 1000, kMax: 4 });
    expect(res.k_selection!.map((s) => s.k)).toEqual([2, 3, 4]);
    expect(res.features).toEqual(['recency', 'frequency', 'monetary', 'events_30d', 'active_days_30d', 'view_to_purchase']);
  });

  it('k = auto picks k in range by silhouette and records the scores', async () => {
    const res = await trainClusters(ch, APP, { k: 'auto', kMin: 3, kMax: 7, seed: 1 });
    expect(res.k).toBeGreaterThanOrEqual(3);
    expect(res.k).toBeLessThanOrEqual(7);
    expect(res.k_selection!.map((s) => s.k)).toEqual([3, 4, 5, 6, 7]);
    const best = res.k_selection!.reduce((a, b) => (b.silhouette > a.silhouette ? b : a));
    expect(best.k).toBe(res.k);
    expect(res.version).toBe(4);
  });

  it('a sample smaller than the run is a reproducible subset', async () => {
    const a = await trainClusters(ch, APP, { k: 4, seed: 5, sampleSize: 1500 });
    const b = await trainClusters(ch, APP, { k: 4, seed: 5, sampleSize: 1500 });
    expect(a.sample_size).toBe(1500);
    expect(b.inertia).toBe(a.inertia);
    expect(b.sizes).toEqual(a.sizes);
  });

  it('exports a sample of the feature matrix as an Arrow IPC file', async () => {
    const model = (await latestModel(ch, APP))!;
    const path = join(mkdtempSync(join(tmpdir(), 'arrow-')), 'f.arrow');
    const out = await exportFeaturesArrow(ch, APP, path, { sampleSize: 1000 });
    expect(out.rows).toBe(1000);
    const table = tableFromIPC(readFileSync(path));
    expect(table.numRows).toBe(1000);
    expect(table.schema.fields.map((f) => f.name)).toEqual(['user_id', ...model.features, ...model.features.map((f) => `${f}_z`), 'cluster']);
    const ids = table.getChild('user_id')!.toArray() as string[];
    expect(new Set(ids).size).toBe(1000);
    const clusters = Array.from(table.getChild('cluster')!.toArray() as Int32Array);
    expect(Math.min(...clusters)).toBeGreaterThanOrEqual(1);
    expect(Math.max(...clusters)).toBeLessThanOrEqual(model.k);
    expect(ARCHETYPES.length).toBe(5);
  });
});
