// What a full profile run computes before its scan (zones with their offsets,
// user slices), at the as_of of the data bench/profiles.ts
// keeps: for benchmarks that time the scan query alone (timeline.ts, late.ts).
import type { ClickHouse } from '../lib/clickhouse.ts';
import { sql } from '../lib/sql.ts';
import { validTimezones } from '../profiles/job.ts';
import {
  recentUsersSql,
  sliceBoundsSql,
  slicesOf,
  timezoneCandidatesSql,
  windowOf,
  type UserSlice,
  type Window,
} from '../profiles/sql.ts';
import { zoneOffsets, type ZoneOffsets } from '../profiles/zones.ts';

export interface ScanInputs {
  /** The kept data's generation parameters (bench_meta). */
  meta: { t0: string; events: string };
  window: Window;
  zones: { names: string[]; offsets: ZoneOffsets };
  slices: UserSlice[];
}

/** The run's inputs, as buildProfiles finds them, for `app` at the kept data's t0 (two slices). */
export async function scanInputs(ch: ClickHouse, app: string, db: string): Promise<ScanInputs> {
  const meta = await ch.one<{ t0: string; events: string }>(sql`SELECT t0, events FROM bench_meta LIMIT 1`).catch(() => undefined);
  if (!meta) throw new Error(`${db} has no benchmark data: run npx tsx bench/profiles.ts --db ${db} first`);
  const w = windowOf(new Date(Number(meta.t0) * 1000));
  const candidates = await ch.rows<{ value: string }>(timezoneCandidatesSql(app));
  const names = [...new Set([...(await validTimezones(ch, candidates.map((r) => r.value))), 'UTC'])].sort();
  const offsets = zoneOffsets(names, Math.floor(w.d90.getTime() / 1000) + 1, Math.floor(w.asOf.getTime() / 1000));
  const bounds = (await ch.one<{ bounds: string[] }>(sliceBoundsSql({ users: recentUsersSql(app, w.asOf), n: 2, sampleEvery: 200 })))?.bounds ?? [];
  return { meta, window: w, zones: { names, offsets }, slices: slicesOf(bounds) };
}
