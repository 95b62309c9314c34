// Random but seeded app data for the segment tests: events (with ties in ts,
// mixed-kind properties, unicode, and events exactly on window edges: at each
// evaluation as_of, one second after it, and at as_of - D and as_of - D + 1 for
// the EDGE_DURATIONS), identify traits with removals and non-integer numbers
// (also in the trait-backed `country`), tag history, profile runs (complete,
// incomplete, later than as_of) and cluster versions. The same data goes to the
// reference evaluator (RefData) and to ClickHouse.
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { duration, type Duration, type Expr } from '../../segments/ast.ts';
import type { ProfileValue, RefData, RefEvent, RefProfileRun, RefTagChange, Scalar } from './reference.ts';
import { seededRandom } from '../../profiles/kmeans.ts';

export const T0 = Date.UTC(2026, 5, 1) / 1000; // 2026-06-01T00:00:00Z
export const DAY = 86_400;

/** The evaluation instants of the differential tests. */
export const AS_OFS = [T0, T0 - 20 * DAY + 4321, T0 - 3 * DAY, T0 - 200 * DAY, T0 + 3 * DAY];

/**
 * Durations the generated data has events on the edges of (as_of - D is outside
 * `within D`, as_of - D + 1 inside), and that the random expressions use often.
 */
export const EDGE_DURATIONS: readonly Duration[] = [duration(1, 'd'), duration(3, 'h'), duration(7, 'd'), duration(2, 'w'), duration(30, 'd'), duration(997, 's')];

/** Non-integer numbers stored in traits, as text (String(n)); 14.694 and 2.256 are misparsed by 18.16's toFloat64OrZero. */
export const TRAIT_NUMBERS = [2.5, 14.694, 2.256, 0.1, -6.778, 14.694000000000003] as const;

export const EVENT_NAMES = ['view', 'click', 'purchase', 'add_to_cart', 'app_open', 'odd.name x'] as const;
export const PROP_KEYS = ['amount', 'category', 'flag', 'note'] as const;
export const TRAIT_KEYS = ['country', 'plan', 'vip', 'language', 'platform', 'score'] as const;
export const TAGS = ['vip', 'beta', "it's"] as const;
export const RFM = ['champions', 'loyal', 'at_risk', 'hibernating'] as const;

/** The project's seeded PRNG (mulberry32), so test data streams are reproducible. */
export const rng: (seed: number) => () => number = seededRandom;

export interface AppData {
  appId: string;
  ref: RefData;
}

const PROFILE_NUMBERS = [
  'events_total', 'events_7d', 'events_30d', 'active_days_30d', 'views_30d', 'clicks_30d', 'purchases_30d',
  'purchases_total', 'revenue_total', 'revenue_30d', 'random_bucket',
] as const;
const PROFILE_NULLABLE_NUMBERS = ['avg_order_value', 'recency_days', 'r_score', 'f_score', 'm_score', 'best_hour'] as const;

export function generateApp(appId: string, seed: number, users = 50, userPrefix = 'u'): AppData {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const ids: string[] = [];
  for (let i = 0; i < users; i++) ids.push(`${userPrefix}${String(i).padStart(2, '0')}`);
  ids.push(`${userPrefix}é`, `${userPrefix}Z`, `${userPrefix}_日本`);
  const events: RefEvent[] = [];
  let eid = 0;
  const ts = () => {
    // Within ~100 days before T0, a few after it; often on an hour grid so equal timestamps occur.
    let t = T0 - Math.floor(r() * 100 * DAY) + (r() < 0.05 ? Math.floor(r() * 2 * DAY) : 0);
    if (r() < 0.4) t -= t % 3600;
    return t;
  };
  const propValue = (key: string): Scalar | undefined => {
    const x = r();
    switch (key) {
      case 'amount':
        return x < 0.65 ? pick([0, 1, 2.5, 10, 12.5, 100, 250, -3]) : x < 0.75 ? pick(['12', 'abc']) : x < 0.8 ? true : undefined;
      case 'category':
        return x < 0.8 ? pick(['shoes', 'books', 'toys', 'Shoes', '']) : x < 0.9 ? 7 : undefined;
      case 'flag':
        return x < 0.4 ? pick([true, false]) : x < 0.6 ? pick(['true', 'false', 'yes']) : undefined;
      default:
        return x < 0.5 ? pick(['héllo', '日本', "it's", 'a\\b', 'x%_y', '']) : undefined;
    }
  };
  const traitValue = (key: string): Scalar | null => {
    switch (key) {
      case 'country':
        // The built-in `country` is this trait: identify may store numbers and booleans in it too.
        return r() < 0.85 ? pick(['CN', 'US', 'SG', null]) : pick([7, 14.694, true, 'true']);
      case 'plan':
        return r() < 0.6 ? pick([1, 2, 3, 'pro', null]) : pick(TRAIT_NUMBERS);
      case 'vip':
        return pick([true, false, 'true']);
      case 'language':
        return pick(['zh', 'en', null]);
      case 'score':
        return r() < 0.8 ? pick(TRAIT_NUMBERS) : pick([3, 'high', null]);
      default:
        return pick(['ios', 'android', 'web']);
    }
  };
  const pushEvent = (user: string, t: number, identify: boolean, props: Record<string, Scalar>, traits: Record<string, Scalar | null>): void => {
    events.push({
      user_id: user,
      ts: t,
      event_id: `e${String(eid++).padStart(6, '0')}`,
      type: identify ? 'identify' : 'track',
      event: identify ? '' : pick(EVENT_NAMES),
      props,
      traits,
    });
  };
  for (const user of ids) {
    const n = Math.floor(r() * r() * 70);
    const userTimes: number[] = [];
    for (let k = 0; k < n; k++) {
      const identify = r() < 0.12;
      let t = ts();
      if (userTimes.length > 0 && r() < 0.15) t = pick(userTimes); // exact ties
      userTimes.push(t);
      const props: Record<string, Scalar> = {};
      const traits: Record<string, Scalar | null> = {};
      if (identify) {
        for (const key of TRAIT_KEYS) if (r() < 0.5) traits[key] = traitValue(key);
      } else {
        for (const key of PROP_KEYS) {
          const v = propValue(key);
          if (v !== undefined) props[key] = v;
        }
        if (r() < 0.1) traits.platform = traitValue('platform');
      }
      pushEvent(user, t, identify, props, traits);
    }
  }
  // Events on the edges of windows, for every as_of: at it (inclusive) and one
  // second after it (invisible); on the lower edge of `within D` (as_of - D,
  // outside) and one second inside it, and the same one D further back (the
  // edges of `stopped(…, within D, before D)`), for every edge duration.
  const edgeEvent = (t: number): void => {
    const identify = r() < 0.2;
    const props: Record<string, Scalar> = {};
    const traits: Record<string, Scalar | null> = {};
    if (identify) {
      const key = pick(TRAIT_KEYS);
      traits[key] = traitValue(key);
    } else {
      for (const key of PROP_KEYS) {
        const v = propValue(key);
        if (v !== undefined) props[key] = v;
      }
    }
    pushEvent(pick(ids), t, identify, props, traits);
  };
  for (const asOf of AS_OFS) {
    edgeEvent(asOf);
    edgeEvent(asOf);
    edgeEvent(asOf + 1);
    for (const d of EDGE_DURATIONS) for (const t of [asOf - d.seconds, asOf - d.seconds + 1, asOf - 2 * d.seconds, asOf - 2 * d.seconds + 1]) edgeEvent(t);
  }
  const tags: RefTagChange[] = [];
  let seq = 1;
  for (const user of ids) {
    for (const tag of TAGS) {
      const changes = Math.floor(r() * 3);
      for (let k = 0; k < changes; k++) {
        const changedAt = r() < 0.1 ? pick(AS_OFS) : T0 - Math.floor(r() * 60 * DAY) + Math.floor(r() * 2 * DAY);
        tags.push({ user_id: user, tag, present: r() < 0.7, changed_at: changedAt, seq: seq++ });
      }
    }
  }
  const run = (run_id: string, as_of: number, complete: boolean): RefProfileRun => {
    const rows = new Map<string, Record<string, ProfileValue>>();
    for (const user of ids) {
      // A profile job has rows only for users with an event at or before its as_of.
      if (!events.some((e) => e.user_id === user && e.ts <= as_of)) continue;
      if (r() < 0.15) continue; // not in this run: a real run would have it, but missing rows must read as missing
      const row: Record<string, ProfileValue> = {};
      for (const f of PROFILE_NUMBERS) row[f] = f.startsWith('revenue') ? pick([0, 1, 2.5, 12.5, 40, 100]) : pick([0, 1, 2, 3, 5, 40]);
      for (const f of PROFILE_NULLABLE_NUMBERS) row[f] = r() < 0.3 ? null : f === 'avg_order_value' ? pick([0, 2.5, 12.5, 40]) : pick([0, 1, 2, 3, 4, 5]);
      row.rfm_segment = r() < 0.3 ? null : pick(RFM);
      row.top_category = r() < 0.3 ? null : pick(['shoes', 'books']);
      row.first_seen = { instant: as_of - Math.floor(r() * 90 * DAY) };
      row.last_seen = { instant: as_of - Math.floor(r() * 10 * DAY) };
      row.last_purchase_at = r() < 0.3 ? null : { instant: as_of - pick([0, 3600, 5 * DAY, 40 * DAY]) };
      rows.set(user, row);
    }
    return { run_id, as_of, complete, rows };
  };
  const runs = [run('r1', T0 - 40 * DAY, true), run('r2', T0 - 10 * DAY, true), run('r3', T0 - 1 * DAY, false), run('r4', T0 + 1 * DAY, true)];
  const clusterAssignments: RefData['clusterAssignments'] = [];
  for (const version of [1, 2, 3]) {
    for (const user of ids) {
      if (r() < 0.2) continue;
      const cluster = Math.floor(r() * 4);
      clusterAssignments.push({ version, user_id: user, cluster, label: `label ${cluster}` });
    }
  }
  const saved = new Map<string, Expr>([
    ['seg_buyers', { kind: 'did', event: 'purchase' }],
    ['big spenders', { kind: 'and', items: [{ kind: 'in_segment', ref: 'seg_buyers' }, { kind: 'agg', fn: 'sum', event: 'purchase', prop: 'amount', op: 'gte', value: 100 }] }],
  ]);
  // A run at T0 itself: evaluations through prepareSegment at T0 read a stored
  // run, as they would after a profile job at T0, instead of building a real one
  // (which would not hold these made-up rows). Drawn last: the data above stays
  // the same for a seed.
  runs.push(run('r5', T0, true));
  // Version 3 has assignments but no model row: readers must ignore it.
  return { appId, ref: { events, tags, runs, clusterModels: [1, 2], clusterAssignments, saved } };
}

function propArrays(props: Record<string, Scalar>): { prop_keys: string[]; prop_strings: string[]; prop_numbers: (number | string)[] } {
  const out = { prop_keys: [] as string[], prop_strings: [] as string[], prop_numbers: [] as (number | string)[] };
  for (const [k, v] of Object.entries(props)) {
    out.prop_keys.push(k);
    out.prop_strings.push(typeof v === 'boolean' ? (v ? 'true' : 'false') : String(v));
    // JSON has no NaN; ClickHouse reads the quoted "nan".
    out.prop_numbers.push(typeof v === 'number' ? v : 'nan');
  }
  return out;
}

function profileCell(v: ProfileValue | undefined): unknown {
  if (v === undefined || v === null) return null;
  if (typeof v === 'object') return v.instant;
  return v;
}

/** Writes the app's data into the events/user_tags/profiles/profile_runs/cluster tables. */
export async function loadApp(ch: ClickHouse, app: AppData): Promise<void> {
  const { appId, ref } = app;
  await ch.insert(
    'events',
    ref.events.map((e) => {
      const traitEntries = Object.entries(e.traits);
      return {
        app_id: appId,
        user_id: e.user_id,
        ts: e.ts,
        event_id: e.event_id,
        type: e.type,
        event: e.event,
        ...propArrays(e.props),
        properties: JSON.stringify(e.props),
        trait_keys: traitEntries.map(([k]) => k),
        trait_values: traitEntries.map(([, v]) => (v === null ? '' : typeof v === 'boolean' ? (v ? 'true' : 'false') : String(v))),
        trait_types: traitEntries.map(([, v]) => (v === null ? 0 : typeof v === 'string' ? 1 : typeof v === 'number' ? 2 : 3)),
        context: '{}',
        received_at: e.ts,
      };
    }),
  );
  await ch.insert(
    'user_tags',
    ref.tags.map((t) => ({ app_id: appId, user_id: t.user_id, tag: t.tag, present: t.present ? 1 : 0, changed_at: t.changed_at, seq: t.seq })),
  );
  for (const run of ref.runs) {
    await ch.insert(
      'profiles',
      [...run.rows].map(([user_id, row]) => {
        const out: Record<string, unknown> = { app_id: appId, run_id: run.run_id, as_of: run.as_of, user_id };
        for (const [k, v] of Object.entries(row)) out[k] = profileCell(v);
        return out;
      }),
    );
    // Started half a minute after its instant, as a scheduled run is: a run started at
    // its instant could miss events still in a consumer's batch, and a reader would
    // build that instant's run again (profiles/run-at.ts holdsAllAt).
    await ch.insert('profile_runs', [
      { app_id: appId, run_id: run.run_id, as_of: run.as_of, mode: 'full', state: 'running', users: 0, started_at: run.as_of + 30, finished_at: run.as_of + 30, previous_run_id: '' },
      ...(run.complete
        ? [{ app_id: appId, run_id: run.run_id, as_of: run.as_of, mode: 'full', state: 'complete', users: run.rows.size, started_at: run.as_of + 30, finished_at: run.as_of + 60, previous_run_id: '' }]
        : []),
    ]);
  }
  await ch.insert(
    'cluster_assignments',
    ref.clusterAssignments.map((a) => ({ app_id: appId, version: a.version, user_id: a.user_id, cluster: a.cluster, cluster_label: a.label })),
  );
  await ch.insert(
    'cluster_models',
    ref.clusterModels.map((version) => ({ app_id: appId, version, created_at: T0, profile_run_id: 'r1', k: 4, model: '{}' })),
  );
}
