// Synthetic users drawn from planted behavioural archetypes, as `profiles`
// rows: the clusterer should recover the archetypes from the features alone.
import { seededRandom } from '../../profiles/kmeans.ts';

export interface Archetype {
  name: string;
  share: number;
  /** Mean days since the last event. */
  recencyDays: number;
  purchases: number;
  /** Mean revenue per purchase. */
  orderValue: number;
  events30d: number;
  activeDays30d: number;
  views30d: number;
  purchases30d: number;
}

export const ARCHETYPES: readonly Archetype[] = [
  { name: 'champions', share: 0.1, recencyDays: 1.5, purchases: 25, orderValue: 90, events30d: 120, activeDays30d: 22, views30d: 60, purchases30d: 6 },
  { name: 'browsers', share: 0.25, recencyDays: 2, purchases: 0, orderValue: 0, events30d: 45, activeDays30d: 10, views30d: 38, purchases30d: 0 },
  { name: 'occasional', share: 0.2, recencyDays: 8, purchases: 3, orderValue: 40, events30d: 12, activeDays30d: 4, views30d: 6, purchases30d: 1 },
  { name: 'lapsed', share: 0.3, recencyDays: 70, purchases: 0.3, orderValue: 30, events30d: 0, activeDays30d: 0, views30d: 0, purchases30d: 0 },
  { name: 'newcomers', share: 0.15, recencyDays: 3, purchases: 0, orderValue: 0, events30d: 3, activeDays30d: 1.2, views30d: 1, purchases30d: 0 },
];

/** The columns of a `profiles` row the cluster features read (others take their defaults). */
export type ProfileRow = {
  app_id: string;
  run_id: string;
  as_of: string;
  user_id: string;
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
  random_bucket: number;
};

function poisson(rand: () => number, lambda: number): number {
  if (lambda <= 0) return 0;
  if (lambda > 30) return Math.max(0, Math.round(lambda + Math.sqrt(lambda) * normal(rand)));
  const l = Math.exp(-lambda);
  let k = 0;
  let p = 1;
  do {
    k++;
    p *= rand();
  } while (p > l);
  return k - 1;
}

function normal(rand: () => number): number {
  const u = Math.max(rand(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

function chDateTime(epochS: number): string {
  return new Date(epochS * 1000).toISOString().slice(0, 19).replace('T', ' ');
}

export interface Planted {
  rows: ProfileRow[];
  /** Archetype index of every row. */
  truth: Int32Array;
}

/** n users of `appId`, archetypes in proportion to their share, reproducible from `seed`. */
export function plantedProfiles(n: number, seed: number, appId = 'test', runId = 'run1', asOf = new Date('2026-11-20T12:00:00Z')): Planted {
  const rand = seededRandom(seed);
  const asOfS = Math.floor(asOf.getTime() / 1000);
  const rows: ProfileRow[] = [];
  const truth = new Int32Array(n);
  const cumulative: number[] = [];
  let acc = 0;
  for (const a of ARCHETYPES) cumulative.push((acc += a.share));
  for (let i = 0; i < n; i++) {
    const u = rand() * acc;
    const ai = Math.max(0, cumulative.findIndex((c) => u < c));
    const a = ARCHETYPES[ai]!;
    truth[i] = ai;
    const recencyS = Math.floor(a.recencyDays * 86400 * Math.exp(0.5 * normal(rand)));
    const purchases = poisson(rand, a.purchases);
    let revenue = 0;
    for (let p = 0; p < purchases; p++) revenue += a.orderValue * Math.exp(0.4 * normal(rand));
    revenue = Math.round(revenue * 100) / 100;
    const events30d = recencyS > 30 * 86400 ? 0 : Math.max(1, poisson(rand, a.events30d));
    const activeDays = events30d === 0 ? 0 : Math.min(30, Math.max(1, poisson(rand, a.activeDays30d)), events30d);
    const views30d = Math.min(events30d, poisson(rand, a.views30d));
    const purchases30d = Math.min(purchases, events30d - views30d, poisson(rand, a.purchases30d));
    const lastSeen = asOfS - recencyS;
    const firstSeen = lastSeen - Math.floor(rand() * 400 * 86400);
    rows.push({
      app_id: appId,
      run_id: runId,
      as_of: chDateTime(asOfS),
      user_id: `u${String(i).padStart(8, '0')}`,
      first_seen: chDateTime(firstSeen),
      last_seen: chDateTime(lastSeen),
      events_total: events30d + purchases + poisson(rand, 20),
      events_7d: Math.min(events30d, poisson(rand, events30d / 4)),
      events_30d: events30d,
      active_days_30d: activeDays,
      views_30d: views30d,
      clicks_30d: Math.max(0, events30d - views30d - purchases30d),
      purchases_30d: purchases30d,
      purchases_total: purchases,
      revenue_total: revenue,
      revenue_30d: purchases > 0 ? Math.round((revenue * purchases30d) / purchases * 100) / 100 : 0,
      random_bucket: Math.floor(rand() * 10000),
    });
  }
  return { rows, truth };
}

function epoch(s: string): number {
  return Date.parse(s.replace(' ', 'T') + 'Z') / 1000;
}

/**
 * The default features of a row, computed as the SQL in profiles/cluster-features.ts
 * defines them — a second, independent statement of those definitions for pure tests.
 */
export function defaultFeatureRow(r: ProfileRow): number[] {
  return [
    Math.max(0, (epoch(r.as_of) - epoch(r.last_seen)) / 86400),
    r.purchases_total,
    Math.max(0, r.revenue_total),
    r.events_30d,
    r.active_days_30d,
    r.views_30d / (r.purchases_30d + 1),
  ];
}
