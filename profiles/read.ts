// Reading profiles: the latest complete run, and one user's profile as the API
// returns it (every field of the contract at top level, live tags, the cluster
// of the app's latest cluster model).
//
// A user whose events arrived after the latest run has no profile row yet:
// getProfile answers undefined until the next run, which the scheduler starts
// every WARBLER_PROFILE_INTERVAL_S (the API then computes one on request:
// liveProfile in job.ts). A profile is always one run's
// complete, consistent output — never a half-computed object whose RFM scores
// or windows disagree with everyone else's.
import type { ClickHouse } from '../lib/clickhouse.ts';
import { sql } from '../lib/sql.ts';
import { runRowsSql, type RunLayer, type RunRef } from './sql.ts';
import { userTags } from './tags.ts';
import { typedTraitValue, type TraitValue } from './traits.ts';

export interface ProfileRun extends RunRef {
  run_id: string;
  as_of: Date;
  mode: string;
  /** `superseded`: complete, no longer picked by readers, its rows kept for those still reading (dropSupersededRuns). */
  state: 'running' | 'complete' | 'failed' | 'superseded' | 'dropped';
  /** It was complete at some point (a dropped run may have been, or may have failed). */
  completed: boolean;
  users: number;
  started_at: Date;
  finished_at: Date;
  previous_run_id: string;
  /** The form of its rows' state (STATE_FORMAT in profiles/sql.ts; 0 before 140_profile_state_packed.sql). */
  state_format: number;
  /** Set when the run holds only its recomputed users (see runRowsSql). */
  layer?: RunLayer;
}

export interface Profile {
  user_id: string;
  as_of: string;
  first_seen: string;
  last_seen: string;
  events_total: number;
  events_7d: number;
  events_30d: number;
  active_days_30d: number;
  views_30d: number;
  clicks_30d: number;
  purchases_30d: number;
  purchases_total: number;
  revenue_total: number;
  revenue_30d: number;
  avg_order_value: number | null;
  last_purchase_at: string | null;
  recency_days: number | null;
  r_score: number | null;
  f_score: number | null;
  m_score: number | null;
  rfm_segment: string | null;
  top_category: string | null;
  best_hour: number | null;
  platform: TraitValue | null;
  country: TraitValue | null;
  timezone: TraitValue | null;
  locale: TraitValue | null;
  app_version: TraitValue | null;
  traits: Record<string, TraitValue>;
  tags: string[];
  cluster: number | null;
  cluster_label: string | null;
  random_bucket: number;
}

const iso = (epochS: number) => new Date(epochS * 1000).toISOString().replace('.000Z', 'Z');

interface RunRow {
  run_id: string;
  run_as_of: number;
  run_mode: string;
  run_users: string;
  run_started: number;
  run_finished: number;
  run_previous: string;
  run_state_format: number;
  dropped: number;
  superseded: number;
  complete: number;
  failed: number;
}

/** All runs of an app, newest as_of first (then newest finish). A run's state: dropped > superseded > complete > failed > running. */
export async function listRuns(ch: ClickHouse, appId: string): Promise<ProfileRun[]> {
  const rows = await ch.rows<RunRow>(sql`
    SELECT run_id, toUInt32(any(as_of)) AS run_as_of, argMax(mode, finished_at) AS run_mode, max(users) AS run_users,
      toUInt32(min(started_at)) AS run_started, toUInt32(max(finished_at)) AS run_finished,
      argMax(previous_run_id, finished_at) AS run_previous, max(state_format) AS run_state_format,
      max(state = 'dropped') AS dropped, max(state = 'superseded') AS superseded, max(state = 'complete') AS complete, max(state = 'failed') AS failed
    FROM profile_runs WHERE app_id = ${appId}
    GROUP BY run_id
    ORDER BY run_as_of DESC, run_finished DESC, run_id DESC`);
  const layers = new Map(
    (
      await ch.rows<{ run_id: string; base_run_id: string; as_of: number; r: string[]; f: string[]; m: string[] }>(sql`
        SELECT run_id, any(base_run_id) AS base_run_id, toUInt32(any(as_of)) AS as_of, any(rfm_r) AS r, any(rfm_f) AS f, any(rfm_m) AS m
        FROM profile_run_layers WHERE app_id = ${appId} GROUP BY run_id`)
    ).map((l) => [
      l.run_id,
      { base_run_id: l.base_run_id, as_of: new Date(Number(l.as_of) * 1000), rfm: { r: l.r.map(BigInt), f: l.f.map(BigInt), m: l.m.map(BigInt) } } satisfies RunLayer,
    ]),
  );
  return rows.map((r) => ({
    ...(layers.has(r.run_id) ? { layer: layers.get(r.run_id)! } : {}),
    run_id: r.run_id,
    as_of: new Date(Number(r.run_as_of) * 1000),
    mode: r.run_mode,
    state: Number(r.dropped) ? 'dropped' : Number(r.superseded) ? 'superseded' : Number(r.complete) ? 'complete' : Number(r.failed) ? 'failed' : 'running',
    completed: Number(r.complete) === 1,
    users: Number(r.run_users),
    started_at: new Date(Number(r.run_started) * 1000),
    finished_at: new Date(Number(r.run_finished) * 1000),
    previous_run_id: r.run_previous,
    state_format: Number(r.run_state_format),
  }));
}

/**
 * The latest complete run with as_of <= asOf (default now): greatest as_of, then
 * latest finished. A run built for a future as_of (a job may be given one) is
 * only seen by a reader asking for that instant or later, so it never hides the
 * runs that keep profiles current.
 */
export async function latestRun(ch: ClickHouse, appId: string, asOf: Date = new Date()): Promise<ProfileRun | undefined> {
  const runs = await listRuns(ch, appId);
  const limit = Math.floor(asOf.getTime() / 1000) * 1000;
  return runs.find((r) => r.state === 'complete' && r.as_of.getTime() <= limit);
}

export interface ProfileRow {
  [k: string]: unknown;
}

const COUNTS = ['events_total', 'events_7d', 'events_30d', 'active_days_30d', 'views_30d', 'clicks_30d', 'purchases_30d', 'purchases_total'] as const;
const NULLABLE_NUMBERS = ['avg_order_value', 'recency_days', 'r_score', 'f_score', 'm_score', 'best_hour'] as const;
const NULLABLE_STRINGS = ['rfm_segment', 'top_category'] as const;
/** The current trait of that name (events-and-profiles.md §2), typed as in `traits`; the row's copy is its text. */
const NAMED_TRAITS = ['platform', 'country', 'timezone', 'locale', 'app_version'] as const;

/** Turns a `profiles` row (timestamps selected as epoch seconds) into the API object. */
export function profileFromRow(row: ProfileRow, extra: { tags: string[]; cluster: number | null; cluster_label: string | null }): Profile {
  const num = (v: unknown) => Number(v);
  const nullableNum = (v: unknown) => (v === null || v === undefined ? null : Number(v));
  const keys = row.trait_keys as string[];
  const values = row.trait_values as string[];
  const types = row.trait_types as number[];
  const traits: Record<string, TraitValue> = {};
  keys.forEach((k, i) => {
    traits[k] = typedTraitValue(values[i] as string, Number(types[i]));
  });
  const p: Record<string, unknown> = {
    user_id: row.user_id,
    as_of: iso(num(row.as_of)),
    first_seen: iso(num(row.first_seen)),
    last_seen: iso(num(row.last_seen)),
  };
  for (const k of COUNTS) p[k] = num(row[k]);
  p.revenue_total = num(row.revenue_total);
  p.revenue_30d = num(row.revenue_30d);
  for (const k of NULLABLE_NUMBERS) p[k] = nullableNum(row[k]);
  p.last_purchase_at = row.last_purchase_at === null || row.last_purchase_at === undefined ? null : iso(num(row.last_purchase_at));
  for (const k of NULLABLE_STRINGS) p[k] = (row[k] as string | null | undefined) ?? null;
  for (const k of NAMED_TRAITS) p[k] = Object.hasOwn(traits, k) ? traits[k] : ((row[k] as string | null | undefined) ?? null);
  p.traits = traits;
  p.tags = extra.tags;
  p.cluster = extra.cluster;
  p.cluster_label = extra.cluster_label;
  p.random_bucket = num(row.random_bucket);
  return p as unknown as Profile;
}

/** The `profiles` columns with timestamps as epoch seconds, for reading rows. */
export const PROFILE_SELECT = sql`user_id, toUInt32(as_of) AS as_of, toUInt32(first_seen) AS first_seen, toUInt32(last_seen) AS last_seen,
  events_total, events_7d, events_30d, active_days_30d, views_30d, clicks_30d, purchases_30d, purchases_total,
  revenue_total, revenue_30d, avg_order_value, toUInt32(last_purchase_at) AS last_purchase_at, recency_days,
  r_score, f_score, m_score, rfm_segment, top_category, best_hour, platform, country, timezone, locale, app_version,
  trait_keys, trait_values, trait_types, random_bucket`;

/** The user's profile in `opts.run`, or else in the latest complete run at or before `opts.asOf` (default now). */
export async function getProfile(ch: ClickHouse, appId: string, userId: string, opts: { asOf?: Date; run?: ProfileRun } = {}): Promise<Profile | undefined> {
  const run = opts.run ?? (await latestRun(ch, appId, opts.asOf));
  if (!run) return undefined;
  const rows = await ch.rows<ProfileRow>(sql`SELECT ${PROFILE_SELECT} FROM (${runRowsSql(appId, run, sql` AND user_id = ${userId}`)})`);
  return rows[0] ? withTagsAndCluster(ch, appId, userId, rows[0]) : undefined;
}

/** The API object of a profile row (PROFILE_SELECT's columns), with the user's live tags and cluster. */
export async function withTagsAndCluster(ch: ClickHouse, appId: string, userId: string, row: ProfileRow): Promise<Profile> {
  const [tags, clusters] = await Promise.all([
    userTags(ch, appId, userId),
    ch.rows<{ cluster: number; cluster_label: string }>(sql`
      SELECT cluster, cluster_label FROM cluster_assignments
      WHERE app_id = ${appId} AND user_id = ${userId}
        AND version = (SELECT max(version) FROM cluster_models WHERE app_id = ${appId})
      LIMIT 1`),
  ]);
  const c = clusters[0];
  return profileFromRow(row, { tags, cluster: c ? Number(c.cluster) : null, cluster_label: c ? c.cluster_label : null });
}
