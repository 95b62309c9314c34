// The profile job as ClickHouse SQL. Every heavy step is an INSERT … SELECT that
// runs inside ClickHouse; Node only sequences the steps. Pipeline of one run:
//
//   profile_events ──(1) one scan, one row per user──► stage0 (per-user aggregates, traits,
//                                     the user's valid timezone, 90d track timestamps)
//   stage0 (+ previous run's unchanged users) ──(2) value → score──► three small RFM tables
//   stage0 ──(3) one branch per timezone, + RFM, recency, random_bucket──► profiles
//   previous run ──(3') incremental only: unchanged users, + RFM, recency──► profiles
//
// The scan keeps the per-event work small: it reads the narrow profile_events
// (kind, amount, category; written with each event by a materialized view), and
// the 7d/30d counts and active days are derived afterwards from the 90d
// timestamp list (a per-user array, cheaper than per-user hash sets).
// best_hour: ClickHouse 18.16 only accepts a constant time zone in toHour, so
// stage0 is sorted by timezone and step 3 reads each timezone's key range with
// its own constant-tz branch (UNION ALL). Every event is converted exactly once,
// by ClickHouse's own tz database, DST included. Mode of a list without lambdas
// that capture columns (18.16 cannot): sort it, number repeated values with
// arrayEnumerateUniq, take the first position reaching the maximum count — in a
// sorted list that is the smallest value among the most frequent (the tie rule
// for both best_hour and top_category).
import { ident, join, raw, sql, type Sql } from '../lib/sql.ts';
import { segmentTable } from './rfm.ts';

export const DAY_S = 86400;

/** Columns stage0 holds per user and `profiles` takes over unchanged. */
const CARRIED = [
  'user_id', 'first_seen', 'last_seen', 'events_total', 'views_30d', 'clicks_30d', 'purchases_30d', 'purchases_total',
  'revenue_total', 'revenue_30d', 'top_category', 'platform', 'country', 'timezone', 'locale', 'app_version',
  'trait_keys', 'trait_values', 'trait_types',
] as const;

const STAGE_TYPES: Record<string, string> = {
  user_id: 'String', first_seen: 'DateTime', last_seen: 'DateTime', events_total: 'UInt64', views_30d: 'UInt64',
  clicks_30d: 'UInt64', purchases_30d: 'UInt64', purchases_total: 'UInt64', revenue_total: 'Float64', revenue_30d: 'Float64',
  top_category: 'Nullable(String)', platform: 'Nullable(String)', country: 'Nullable(String)', timezone: 'Nullable(String)',
  locale: 'Nullable(String)', app_version: 'Nullable(String)', trait_keys: 'Array(String)', trait_values: 'Array(String)',
  trait_types: 'Array(UInt8)', last_purchase_at: 'DateTime', tz: 'String', ts90: 'Array(DateTime)',
};

/** stage0 columns; last_purchase_at is 0 when none. */
export const STAGE0_COLUMNS = [...CARRIED, 'last_purchase_at', 'tz', 'ts90'] as const;

export const NAMED_TRAITS = ['platform', 'country', 'timezone', 'locale', 'app_version'] as const;

const cols = (names: readonly string[]): Sql => join(names.map((n) => ident(n)));

export function stageTableSql(table: string, columns: readonly string[], orderBy: readonly string[]): Sql {
  const defs = columns.map((c) => sql`${ident(c)} ${raw(STAGE_TYPES[c] as string)}`);
  return sql`CREATE TABLE ${ident(table)} (${join(defs)}) ENGINE = MergeTree ORDER BY (${cols(orderBy)})`;
}

export function changedTableSql(table: string): Sql {
  return sql`CREATE TABLE ${ident(table)} (user_id String) ENGINE = Memory`;
}

export interface Window {
  asOf: Date;
  d7: Date;
  d30: Date;
  d90: Date;
}

export function windowOf(asOf: Date): Window {
  const t = Math.floor(asOf.getTime() / 1000) * 1000;
  const back = (days: number) => new Date(t - days * DAY_S * 1000);
  return { asOf: new Date(t), d7: back(7), d30: back(30), d90: back(90) };
}

/** Distinct values the app's users ever had for the timezone trait (a superset of the current ones). */
export function timezoneCandidatesSql(appId: string): Sql {
  return sql`SELECT DISTINCT value FROM user_traits WHERE app_id = ${appId} AND key = 'timezone' AND value_type != 0`;
}

/**
 * Step 1: one scan of the app's events (all users, or those in `usersIn`) into
 * stage0. It reads `profile_events` (020_profiles_events.sql), the narrow copy
 * of each event the profile needs: kind, numeric purchase amount, category.
 */
export function stage0InsertSql(p: { appId: string; window: Window; stage0: string; validTimezones: readonly string[]; usersIn?: Sql }): Sql {
  const { appId, window: w } = p;
  const scope = p.usersIn ? sql` AND user_id IN ${p.usersIn}` : sql``;
  const tz = p.validTimezones.length
    ? sql`transform(ifNull(timezone, ''), ${p.validTimezones}, ${p.validTimezones}, 'UTC')`
    : sql`'UTC'`;
  const named = NAMED_TRAITS.map((k) => sql`if(has(trait_keys, ${k}), trait_values[indexOf(trait_keys, ${k})], NULL) AS ${ident(k)}`);
  return sql`INSERT INTO ${ident(p.stage0)} (${cols(STAGE0_COLUMNS)})
SELECT ${cols(STAGE0_COLUMNS)} FROM (
  SELECT *, ${tz} AS tz,
    arraySort(cats90) AS cs, arrayEnumerateUniq(cs) AS ce,
    if(empty(cs), NULL, cs[indexOf(ce, arrayReduce('max', ce))]) AS top_category
  FROM (
    SELECT *, ${join(named)}
    FROM (
      SELECT user_id,
        min(ts) AS first_seen,
        max(ts) AS last_seen,
        countIf(kind != 0) AS events_total,
        countIf(kind = 1 AND ts > ${w.d30}) AS views_30d,
        countIf(kind = 2 AND ts > ${w.d30}) AS clicks_30d,
        countIf(kind = 3 AND ts > ${w.d30}) AS purchases_30d,
        countIf(kind = 3) AS purchases_total,
        -- amount is 0 on every other row, and x + 0 = x exactly.
        sum(amount) AS revenue_total,
        sumIf(amount, ts > ${w.d30}) AS revenue_30d,
        maxIf(ts, kind = 3) AS last_purchase_at,
        groupArrayIf(category, has_category = 1 AND ts > ${w.d90}) AS cats90,
        groupArrayIf(ts, kind != 0 AND ts > ${w.d90}) AS ts90
      FROM profile_events
      WHERE app_id = ${appId} AND ts <= ${w.asOf}${scope}
      GROUP BY user_id
    ) ANY LEFT JOIN (
      -- Current traits per user in one grouping: changes sorted by (key, ts, event_id)
      -- descending, the first of each key is its latest; removals dropped; keys ascending.
      SELECT user_id,
        arrayReverseSort(groupArray((key, ts, event_id, value, value_type))) AS changes,
        arrayEnumerateUniq(arrayMap(x -> x.1, changes)) AS nth,
        arrayReverse(arrayFilter((x, i) -> i = 1 AND x.5 != 0, changes, nth)) AS current,
        arrayMap(x -> x.1, current) AS trait_keys,
        arrayMap(x -> x.4, current) AS trait_values,
        arrayMap(x -> x.5, current) AS trait_types
      FROM user_traits
      WHERE app_id = ${appId} AND ts <= ${w.asOf}${scope}
      GROUP BY user_id
    ) USING user_id
  )
)`;
}

/** Users whose profile can differ from the previous run's: new arrivals, and events entering or leaving a window. */
export function changedUsersSql(p: { appId: string; changed: string; previousAsOf: Date; asOf: Date; receivedSince?: Date }): Sql[] {
  const prev = windowOf(p.previousAsOf);
  const next = windowOf(p.asOf);
  const ranges = (['asOf', 'd7', 'd30', 'd90'] as const).map((k) => sql`(ts > ${prev[k]} AND ts <= ${next[k]})`);
  const out = [
    sql`INSERT INTO ${ident(p.changed)} SELECT DISTINCT user_id FROM events WHERE app_id = ${p.appId} AND (${join(ranges, ' OR ')})`,
  ];
  if (p.receivedSince) {
    out.push(sql`INSERT INTO ${ident(p.changed)} SELECT DISTINCT user_id FROM events WHERE app_id = ${p.appId} AND received_at >= ${p.receivedSince} AND ts <= ${next.asOf}`);
  }
  return out;
}

// Comparison values for the quintiles, ascending from worst to best.
const RECENCY_DAYS = (asOf: Date) => sql`intDiv(toUInt32(${asOf}) - toUInt32(last_purchase_at), ${DAY_S})`;
const R_VALUE = (asOf: Date) => sql`-toInt64(${RECENCY_DAYS(asOf)})`;
const F_VALUE = sql`toInt64(purchases_total)`;
const M_VALUE = sql`toInt64(floor(revenue_total * 1000000 + 0.5))`;

export interface RfmTables {
  r: string;
  f: string;
  m: string;
}

export function rfmTableSql(table: string, key: 'rv' | 'fv' | 'mv', score: 'r_score' | 'f_score' | 'm_score'): Sql {
  return sql`CREATE TABLE ${ident(table)} (${ident(key)} Int64, ${ident(score)} UInt8) ENGINE = Memory`;
}

/**
 * The run's purchasers (last_purchase_at, purchases_total, revenue_total): stage0's,
 * plus in incremental runs the previous run's unchanged users.
 */
export function purchasersSourceSql(p: { stage0: string; previous?: { appId: string; runId: string; changed: string } }): Sql {
  const fresh = sql`SELECT last_purchase_at, purchases_total, revenue_total FROM ${ident(p.stage0)} WHERE purchases_total > 0`;
  if (!p.previous) return fresh;
  return sql`${fresh}
  UNION ALL
  SELECT ifNull(lp, toDateTime(0)) AS last_purchase_at, purchases_total, revenue_total FROM (
    SELECT last_purchase_at AS lp, purchases_total, revenue_total FROM profiles
    WHERE app_id = ${p.previous.appId} AND run_id = ${p.previous.runId} AND purchases_total > 0 AND user_id NOT IN ${ident(p.previous.changed)}
  )`;
}

/** value → score for one metric: ceil(5 * (2 * smaller + equal) / (2 * n)), see rfm.ts. */
export function rfmScoresInsertSql(p: { table: string; metric: 'r' | 'f' | 'm'; asOf: Date; purchasers: Sql; n: number }): Sql {
  const value = p.metric === 'r' ? R_VALUE(p.asOf) : p.metric === 'f' ? F_VALUE : M_VALUE;
  const twoN = 2 * p.n;
  return sql`INSERT INTO ${ident(p.table)}
  SELECT v, toUInt8(intDiv(5 * (2 * (cum - c) + c) + ${twoN} - 1, ${twoN}))
  FROM (
    SELECT arraySort(groupArray((v, c))) AS s, arrayMap(x -> x.1, s) AS vs, arrayMap(x -> x.2, s) AS cs, arrayCumSum(cs) AS cums
    FROM (SELECT ${value} AS v, count() AS c FROM (${p.purchasers}) GROUP BY v)
  ) ARRAY JOIN vs AS v, cs AS c, cums AS cum`;
}

/** Rows of `source` (with every profile input column) joined to the three score tables. */
function withScores(source: Sql, asOf: Date, t: RfmTables): Sql {
  const base = sql`SELECT *, ${R_VALUE(asOf)} AS rv, ${F_VALUE} AS fv, ${M_VALUE} AS mv FROM (${source})`;
  const withR = sql`SELECT * FROM (${base}) ANY LEFT JOIN ${ident(t.r)} USING rv`;
  const withF = sql`SELECT * FROM (${withR}) ANY LEFT JOIN ${ident(t.f)} USING fv`;
  return sql`SELECT * FROM (${withF}) ANY LEFT JOIN ${ident(t.m)} USING mv`;
}

const OUTPUT_COLUMNS = [
  'app_id', 'run_id', 'as_of', ...CARRIED, 'events_7d', 'events_30d', 'active_days_30d', 'avg_order_value', 'last_purchase_at',
  'recency_days', 'r_score', 'f_score', 'm_score', 'rfm_segment', 'best_hour', 'random_bucket',
];

/** The INSERT of profile rows from a source with CARRIED, events_7d, events_30d, active_days_30d, last_purchase_at (0 = none), best_hour. */
function profilesInsert(p: { appId: string; runId: string; asOf: Date; source: Sql; rfm: RfmTables }): Sql {
  const seg = segmentTable();
  const buyer = raw('purchases_total > 0');
  const segment = sql`transform(toUInt16(r_score * 10 + intDiv(f_score + m_score + 1, 2)), ${raw('[' + seg.keys.map((k) => `toUInt16(${k})`).join(', ') + ']')}, ${seg.names}, '')`;
  return sql`INSERT INTO profiles (${cols(OUTPUT_COLUMNS)})
SELECT ${p.appId}, ${p.runId}, ${p.asOf}, ${cols(CARRIED)}, events_7d, events_30d, active_days_30d,
  if(${buyer}, revenue_total / purchases_total, NULL),
  if(${buyer}, last_purchase_at, NULL),
  if(${buyer}, toUInt32(${RECENCY_DAYS(p.asOf)}), NULL),
  if(${buyer}, r_score, NULL),
  if(${buyer}, f_score, NULL),
  if(${buyer}, m_score, NULL),
  if(${buyer}, ${segment}, NULL),
  best_hour,
  ${randomBucketSql(p.appId)}
FROM (${withScores(p.source, p.asOf, p.rfm)})`;
}

/** Step 3: the profile rows of the users of a group of timezones, from stage0. */
export function profilesFromStage0Sql(p: { appId: string; runId: string; window: Window; stage0: string; timezones: readonly string[]; rfm: RfmTables }): Sql {
  if (p.timezones.length === 0) throw new RangeError('no timezones');
  const w = p.window;
  const branches = p.timezones.map(
    (tz) => sql`SELECT ${cols(CARRIED)}, last_purchase_at, ts90,
      arraySort(arrayMap(t -> toHour(t, ${tz}), ts90)) AS hs, arrayEnumerateUniq(hs) AS he,
      if(empty(hs), NULL, hs[indexOf(he, arrayReduce('max', he))]) AS best_hour
    FROM ${ident(p.stage0)} WHERE tz = ${tz}`,
  );
  // Only the columns the profile row needs flow on into the joins, not the lists.
  const source = sql`SELECT ${cols(CARRIED)}, last_purchase_at, best_hour,
    toUInt64(arrayCount(t -> t > ${w.d7}, ts90)) AS events_7d,
    arrayFilter(t -> t > ${w.d30}, ts90) AS ts30,
    toUInt64(length(ts30)) AS events_30d,
    toUInt32(arrayUniq(arrayMap(t -> intDiv(toUInt32(t), ${DAY_S}), ts30))) AS active_days_30d
  FROM (${join(branches, '\n  UNION ALL\n  ')})`;
  return profilesInsert({ appId: p.appId, runId: p.runId, asOf: w.asOf, source, rfm: p.rfm });
}

/** Step 3': incremental runs take the users that cannot have changed from the previous run, with as_of-dependent fields recomputed. */
export function profilesFromPreviousSql(p: { appId: string; runId: string; asOf: Date; previousRunId: string; changed: string; rfm: RfmTables }): Sql {
  const source = sql`SELECT ${cols(CARRIED)}, events_7d, events_30d, active_days_30d, best_hour, ifNull(lp, toDateTime(0)) AS last_purchase_at
  FROM (
    SELECT ${cols(CARRIED)}, events_7d, events_30d, active_days_30d, best_hour, last_purchase_at AS lp
    FROM profiles
    WHERE app_id = ${p.appId} AND run_id = ${p.previousRunId} AND user_id NOT IN ${ident(p.changed)}
  )`;
  return profilesInsert({ appId: p.appId, runId: p.runId, asOf: p.asOf, source, rfm: p.rfm });
}

/** 0..9999, stable per (app_id, user_id): cityHash64 is the same on every ClickHouse version. */
export function randomBucketSql(appId: string, userColumn: Sql = raw('user_id')): Sql {
  return sql`toUInt16(cityHash64(${appId}, ${userColumn}) % 10000)`;
}
