// The cluster job: sample features from the app's latest complete profile run,
// train, assign every user inside ClickHouse, store the model version.
//
// Write order makes a half-done job invisible: assignments for version v are
// inserted first, the model row last; readers take the latest version that has
// a model row, and a crashed job's orphaned assignments are skipped because the
// next version number is above every version seen in either table.
import { writeFileSync } from 'node:fs';
import { Table, Utf8, makeVector, tableToIPC, vectorFromArray, type Vector } from 'apache-arrow';
import type { ClickHouse } from '../lib/clickhouse.ts';
import { log } from '../lib/log.ts';
import { join, raw, sql, type Sql } from '../lib/sql.ts';
import { applyTransform, fitTransform, invertPoint, resolveFeatures, type ClusterModel, type FeatureDef, type FeatureTransform } from './cluster-features.ts';
import { identifyClusters, type PreviousClusters } from './cluster-labels.ts';
import { latestRun, type ProfileRun } from './read.ts';
import { runRowsSql, type RunRef } from './sql.ts';
import { liveAssignmentsSql } from './cluster-sql.ts';
import { autoKAsync, assignNearest, fitKMeansAsync, rowsOf, silhouette, type Engine, type KMeansFit, type KSelection, type Points } from './kmeans.ts';

export interface TrainOptions {
  k?: number | 'auto';
  /** Range searched when k is 'auto'. */
  kMin?: number;
  kMax?: number;
  features?: string[];
  /** Users the model is trained on (a seeded hash sample of the profile run). */
  sampleSize?: number;
  seed?: number;
  restarts?: number;
  engine?: Engine;
  silhouetteSample?: number;
  /** Use the latest complete profile run with as_of <= this instant (default: the latest). */
  asOf?: Date;
}

export const TRAIN_DEFAULTS = {
  k: 'auto' as const,
  kMin: 2,
  kMax: 8,
  sampleSize: 200_000,
  seed: 1,
  restarts: 4,
  engine: 'native' as Engine,
  silhouetteSample: 4000,
};

export type ProgressFn = (fraction: number, stage: string) => void;

export interface TrainResult {
  version: number;
  k: number;
  profile_run_id: string;
  as_of: string;
  users: number;
  sample_size: number;
  features: string[];
  labels: string[];
  sizes: number[];
  inertia: number;
  silhouette: number;
  k_selection: KSelection[] | null;
  /** Labels inherited from the previous model (1-based cluster numbers). */
  carried: number[];
  timings_ms: { sample: number; train: number; assign: number; total: number };
}

/** An error a caller can show as-is: `errors` carry zod-style paths. */
export class ClusterJobError extends Error {
  constructor(
    message: string,
    readonly errors: { path: string; message: string }[] = [],
  ) {
    super(message);
    this.name = 'ClusterJobError';
  }
}

/** The feature columns of a SELECT over `profiles`. */
function featureColumns(features: readonly FeatureDef[]): Sql {
  return join(features.map((f) => f.sql));
}

/**
 * A seeded sample of a profile run: rows whose hash falls under a threshold (a
 * cheap filter ClickHouse runs while scanning), then the smallest hashes up to
 * `size`. The same seed gives the same users.
 */
async function sampleFeatures(
  ch: ClickHouse,
  appId: string,
  run: RunRef,
  features: readonly FeatureDef[],
  size: number,
  seed: number,
  withUserIds: boolean,
): Promise<{ users: number; X: Points; userIds: string[] }> {
  const total = await ch.one<{ n: string }>(sql`SELECT count() AS n FROM (${runRowsSql(appId, run)})`);
  const users = Number(total?.n ?? 0);
  const SCALE = 1_000_000;
  // 10% headroom over the expected share so the LIMIT, not chance, decides the size.
  const threshold = users <= size ? SCALE : Math.min(SCALE, Math.ceil((SCALE * size * 1.1) / users) + 100);
  const q = sql`
    SELECT ${withUserIds ? raw('user_id, ') : raw('')}${featureColumns(features)}
    FROM (${runRowsSql(appId, run, sql` AND cityHash64(user_id, ${seed}) % ${SCALE} < ${threshold}`)})
    ORDER BY cityHash64(user_id, ${seed}), user_id
    LIMIT ${size}`;
  const d = features.length;
  const values = new Float64Array(Math.min(users, size) * d);
  const userIds: string[] = [];
  let n = 0;
  const stream = await ch.stream(q, 'TabSeparated', { timeoutS: 3600 });
  for await (const rows of stream as AsyncIterable<{ text: string }[]>) {
    for (const row of rows) {
      const cells = row.text.split('\t');
      const off = withUserIds ? 1 : 0;
      if (withUserIds) userIds.push(unescapeTsv(cells[0]!));
      for (let j = 0; j < d; j++) values[n * d + j] = Number(cells[off + j]);
      n++;
    }
  }
  return { users, X: { n, d, values: values.subarray(0, n * d) }, userIds };
}

function unescapeTsv(s: string): string {
  if (!s.includes('\\')) return s;
  return s.replace(/\\(.)/g, (_, c: string) => ({ t: '\t', n: '\n', r: '\r', '0': '\0', b: '\b', f: '\f' })[c] ?? c);
}

/** The latest stored model of an app, or null before the first cluster job. */
export async function latestModel(ch: ClickHouse, appId: string): Promise<ClusterModel | null> {
  const row = await ch.one<{ model: string }>(sql`
    SELECT model FROM cluster_models WHERE app_id = ${appId} ORDER BY version DESC, created_at DESC LIMIT 1`);
  return row ? (JSON.parse(row.model) as ClusterModel) : null;
}

/**
 * (user_id, cluster, cluster_label) of every user assigned by the app's latest
 * model, as a subquery for profile and segment readers.
 */
export function latestAssignmentsSql(appId: string): Sql {
  return sql`
    SELECT user_id, cluster, cluster_label FROM cluster_assignments
    WHERE app_id = ${appId} AND version = (SELECT max(version) FROM cluster_models WHERE app_id = ${appId})`;
}

/**
 * Gives the users of a profile run that the app's latest model has not
 * assigned (new since it was trained) their nearest cluster under that model,
 * so `cluster` is null only while no model exists (contract §2). Users already
 * assigned keep their cluster until the next cluster job: an audience built on
 * a cluster does not shift with every profile run. Returns how many were
 * assigned; 0 when the app has no model.
 */
export async function assignNewUsers(ch: ClickHouse, appId: string, run: RunRef): Promise<number> {
  const model = await latestModel(ch, appId);
  if (!model) return 0;
  const unassigned = unassignedSql(appId, model.version);
  const row = await ch.one<{ n: string }>(sql`SELECT count() AS n FROM (${runRowsSql(appId, run, sql` AND ${unassigned}`)})`);
  const n = Number(row?.n ?? 0);
  if (n === 0) return 0;
  await insertAssignments(ch, appId, model.version, model, run, unassigned);
  return n;
}

/** The users of a run not yet assigned under model `version`. */
const unassignedSql = (appId: string, version: number) =>
  sql`user_id NOT IN (SELECT user_id FROM cluster_assignments WHERE app_id = ${appId} AND version = ${version})`;

/** Writes each user of `run` (those matching `where`) its nearest cluster under `model`, as version `version`. */
async function insertAssignments(
  ch: ClickHouse,
  appId: string,
  version: number,
  model: Parameters<typeof liveAssignmentsSql>[0],
  run: RunRef,
  where?: Sql,
): Promise<void> {
  await ch.exec(
    sql`
    INSERT INTO cluster_assignments (app_id, version, user_id, cluster, cluster_label)
    SELECT ${appId}, ${version}, user_id, cluster, cluster_label FROM (${liveAssignmentsSql(model, appId, run, where)})`,
    { timeoutS: 3600 },
  );
}

async function nextVersion(ch: ClickHouse, appId: string): Promise<number> {
  const row = await ch.one<{ v: number }>(sql`
    SELECT toUInt32(greatest(
      (SELECT max(version) FROM cluster_models WHERE app_id = ${appId}),
      (SELECT max(version) FROM cluster_assignments WHERE app_id = ${appId}))) AS v`);
  return Number(row?.v ?? 0) + 1;
}

function previousClusters(previous: ClusterModel | null, model: Pick<ClusterModel, 'features' | 'transform'>): PreviousClusters | undefined {
  if (!previous || previous.features.join(',') !== model.features.join(',')) return undefined;
  const d = model.features.length;
  const mapped = applyTransform(model.transform, Float64Array.from(previous.centroids.flat()));
  return { centroids: rowsOf(mapped, d), labels: previous.labels };
}

export interface TrainingSample {
  run: ProfileRun;
  /** Users in the profile run. */
  users: number;
  features: FeatureDef[];
  /** The sample in the features' own units. */
  raw: Points;
  transform: FeatureTransform[];
  /** The sample standardised: what k-means trains on. */
  Z: Points;
}

/** Pulls the seeded feature sample of the app's latest complete profile run and fits its transform. */
export async function loadTrainingSample(
  ch: ClickHouse,
  appId: string,
  options: Pick<TrainOptions, 'features' | 'sampleSize' | 'seed' | 'asOf'> = {},
): Promise<TrainingSample> {
  const resolved = resolveFeatures(options.features);
  if ('errors' in resolved) throw new ClusterJobError('invalid features', resolved.errors);
  const { features } = resolved;
  const run = await latestRun(ch, appId, options.asOf);
  if (!run) throw new ClusterJobError(`no complete profile run for app ${JSON.stringify(appId)}; run a profile job first`);
  const { users, X } = await sampleFeatures(ch, appId, run, features, options.sampleSize ?? TRAIN_DEFAULTS.sampleSize, options.seed ?? TRAIN_DEFAULTS.seed, false);
  if (X.n < 2) throw new ClusterJobError(`profile run ${run.run_id} has ${X.n} users; clustering needs at least 2`);
  const transform = fitTransform(features, X.values, X.n);
  return { run, users, features, raw: X, transform, Z: { n: X.n, d: X.d, values: applyTransform(transform, X.values) } };
}

/** Trains a new model version for `appId`, assigns every user of the profile run, returns a summary. */
export async function trainClusters(ch: ClickHouse, appId: string, options: TrainOptions = {}, onProgress: ProgressFn = () => {}): Promise<TrainResult> {
  // An option given as undefined (an absent request field) means the default.
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as TrainOptions;
  const opts = { ...TRAIN_DEFAULTS, ...given };
  const started = performance.now();
  if (opts.k !== 'auto' && (!Number.isInteger(opts.k) || opts.k < 1)) throw new ClusterJobError('invalid k', [{ path: 'k', message: 'a positive integer or "auto"' }]);
  onProgress(0.02, 'sample');
  const { run, users, features, transform, Z } = await loadTrainingSample(ch, appId, options);
  const jlog = log.child({ job: 'clusters', app_id: appId, profile_run_id: run.run_id });
  const tSampled = performance.now();
  jlog.info('sampled', { users, sample: Z.n, ms: Math.round(tSampled - started) });

  onProgress(0.1, 'train');
  const fitOpts = { seed: opts.seed, restarts: opts.restarts, engine: opts.engine };
  let fit: KMeansFit;
  let quality: number;
  let kSelection: KSelection[] | null = null;
  if (opts.k === 'auto') {
    const kMax = Math.min(opts.kMax, Z.n - 1);
    const res = await autoKAsync(Z, { ...fitOpts, kMin: Math.min(opts.kMin, kMax), kMax, silhouetteSample: opts.silhouetteSample, onProgress: (f) => onProgress(0.1 + 0.6 * f, 'train') });
    fit = res.fit;
    quality = res.silhouette;
    kSelection = res.scores;
  } else {
    if (opts.k > Z.n) throw new ClusterJobError(`k=${opts.k} exceeds the ${Z.n} sampled users`, [{ path: 'k', message: 'larger than the sample' }]);
    fit = await fitKMeansAsync(Z, opts.k, fitOpts);
    quality = opts.k > 1 ? silhouette(Z, fit.labels, opts.k, opts.silhouetteSample, opts.seed) : 0;
  }
  const tTrained = performance.now();
  jlog.info('trained', { k: fit.k, inertia: fit.inertia, silhouette: quality, ms: Math.round(tTrained - tSampled) });

  // Number and name the clusters, continuing the previous model where centroids match.
  const featureNames = features.map((f) => f.name);
  const previous = await latestModel(ch, appId);
  const fitted = rowsOf(fit.centroids, Z.d);
  const identity = identifyClusters(featureNames, fitted, fit.sizes, previousClusters(previous, { features: featureNames, transform }));
  const centroidsZ = identity.order.map((i) => fitted[i]!);
  const version = await nextVersion(ch, appId);
  const model: ClusterModel = {
    app_id: appId,
    version,
    created_at: new Date().toISOString().slice(0, 19) + 'Z',
    profile_run_id: run.run_id,
    as_of: run.as_of.toISOString().replace('.000Z', 'Z'),
    k: fit.k,
    features: featureNames,
    transform,
    centroids: centroidsZ.map((c) => invertPoint(transform, c)),
    centroids_standardised: centroidsZ,
    labels: identity.labels,
    sizes: [],
    sample_size: Z.n,
    sample_sizes: identity.order.map((i) => fit.sizes[i]!),
    inertia: fit.inertia,
    silhouette: quality,
    k_selection: kSelection,
    seed: opts.seed,
    restarts: opts.restarts,
    engine: opts.engine,
  };

  onProgress(0.75, 'assign');
  await insertAssignments(ch, appId, version, model, run);
  // The users of a later run (one that finished while this trained, or when it
  // trained at an earlier as_of) get their nearest cluster too, before the model
  // is published: "the user's cluster in the app's latest model" is never null
  // once a model exists. (A run finishing after this read assigns its own new
  // users under whichever model is latest then.)
  const latest = await latestRun(ch, appId);
  if (latest && latest.run_id !== run.run_id) await insertAssignments(ch, appId, version, model, latest, unassignedSql(appId, version));
  const counts = await ch.rows<{ cluster: number; n: string }>(sql`
    SELECT cluster, count() AS n FROM cluster_assignments
    WHERE app_id = ${appId} AND version = ${version} GROUP BY cluster`);
  model.sizes = Array.from({ length: model.k }, (_, i) => Number(counts.find((r) => Number(r.cluster) === i + 1)?.n ?? 0));
  const tAssigned = performance.now();

  await ch.insert('cluster_models', [
    { app_id: appId, version, created_at: model.created_at.slice(0, 19).replace('T', ' '), profile_run_id: run.run_id, k: model.k, model: JSON.stringify(model) },
  ]);
  onProgress(1, 'done');
  const timings = {
    sample: Math.round(tSampled - started),
    train: Math.round(tTrained - tSampled),
    assign: Math.round(tAssigned - tTrained),
    total: Math.round(performance.now() - started),
  };
  jlog.info('clusters stored', { version, k: model.k, users, timings_ms: timings });
  return {
    version,
    k: model.k,
    profile_run_id: run.run_id,
    as_of: model.as_of,
    users,
    sample_size: Z.n,
    features: featureNames,
    labels: model.labels,
    sizes: model.sizes,
    inertia: model.inertia,
    silhouette: model.silhouette,
    k_selection: kSelection,
    carried: identity.carried,
    timings_ms: timings,
  };
}

export interface ExportOptions {
  features?: string[];
  sampleSize?: number;
  seed?: number;
}

/**
 * Writes the feature matrix of a seeded sample of the latest profile run as an
 * Arrow IPC file: user_id, each feature in its own units, and — when a model with
 * the same features exists — each feature standardised (`<name>_z`) and the
 * user's nearest cluster under that model.
 */
export async function exportFeaturesArrow(ch: ClickHouse, appId: string, path: string, options: ExportOptions = {}): Promise<{ path: string; rows: number; columns: string[] }> {
  const model = await latestModel(ch, appId);
  const resolved = resolveFeatures(options.features ?? model?.features);
  if ('errors' in resolved) throw new ClusterJobError('invalid features', resolved.errors);
  const { features } = resolved;
  const run = await latestRun(ch, appId);
  if (!run) throw new ClusterJobError(`no complete profile run for app ${JSON.stringify(appId)}`);
  const { X, userIds } = await sampleFeatures(ch, appId, run, features, options.sampleSize ?? TRAIN_DEFAULTS.sampleSize, options.seed ?? TRAIN_DEFAULTS.seed, true);
  // Plain Utf8 ids (arrow's default for strings is a dictionary, pointless for unique keys).
  const columns: Record<string, Vector> = { user_id: vectorFromArray(userIds, new Utf8()) };
  features.forEach((f, j) => {
    const col = new Float64Array(X.n);
    for (let i = 0; i < X.n; i++) col[i] = X.values[i * X.d + j]!;
    columns[f.name] = makeVector(col);
  });
  if (model && model.features.join(',') === features.map((f) => f.name).join(',')) {
    const Z = applyTransform(model.transform, X.values);
    features.forEach((f, j) => {
      const col = new Float64Array(X.n);
      for (let i = 0; i < X.n; i++) col[i] = Z[i * X.d + j]!;
      columns[`${f.name}_z`] = makeVector(col);
    });
    const labels = assignNearest({ n: X.n, d: X.d, values: Z }, Float64Array.from(model.centroids_standardised.flat()), model.k);
    columns.cluster = makeVector(labels.map((l) => l + 1));
  }
  const table = new Table(columns);
  writeFileSync(path, tableToIPC(table, 'file'));
  return { path, rows: X.n, columns: Object.keys(columns) };
}

