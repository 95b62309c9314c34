// The profile job as ClickHouse SQL. Every heavy step is an INSERT … SELECT that
// runs inside ClickHouse; Node only sequences the steps. Pipeline of one run:
//
//   events ──(1) one scan per user──► stage0 (per-user aggregates, traits, the
//                                     user's valid timezone, 90d track timestamps)
//   stage0 ──(2) one branch per timezone──► stage1 (+ best_hour)
//   previous run ──(2') incremental only: unchanged users copied──► stage1
//   stage1 ──(3) population-level parts (recency, RFM quintiles), random_bucket──► profiles
//
// best_hour: ClickHouse 18.16 only accepts a constant time zone in toHour, so
// stage0 is sorted by timezone and step 2 reads each timezone's key range with
// its own constant-tz branch (UNION ALL). Every event is converted exactly once,
// by ClickHouse's own tz database, DST included. Mode of a list without lambdas
// that capture columns (18.16 cannot): sort it, number repeated values with
// arrayEnumerateUniq, take the first position reaching the maximum count — in a
// sorted list that is the smallest value among the most frequent (the tie rule
// for both best_hour and top_category).
import { ident, join, raw, sql, type Sql } from '../lib/sql.ts';
import { segmentTable } from './rfm.ts';
import { currentTraitsSql } from './traits.ts';

export const DAY_S = 86400;

/** Columns a profile row carries from stage1 into `profiles` unchanged. */
const CARRIED = [
  'user_id', 'first_seen', 'last_seen', 'events_total', 'events_7d', 'events_30d', 'active_days_30d',
  'views_30d', 'clicks_30d', 'purchases_30d', 'purchases_total', 'revenue_total', 'revenue_30d',
  'top_category', 'platform', 'country', 'timezone', 'locale', 'app_version', 'trait_keys', 'trait_values', 'trait_types',
] as const;

const STAGE_TYPES: Record<string, string> = {
  user_id: 'String', first_seen: 'DateTime', last_seen: 'DateTime', events_total: 'UInt64', events_7d: 'UInt64',
  events_30d: 'UInt64', active_days_30d: 'UInt32', views_30d: 'UInt64', clicks_30d: 'UInt64', purchases_30d: 'UInt64',
  purchases_total: 'UInt64', revenue_total: 'Float64', revenue_30d: 'Float64', top_category: 'Nullable(String)',
  platform: 'Nullable(String)', country: 'Nullable(String)', timezone: 'Nullable(String)', locale: 'Nullable(String)',
  app_version: 'Nullable(String)', trait_keys: 'Array(String)', trait_values: 'Array(String)', trait_types: 'Array(UInt8)',
  last_purchase_at: 'DateTime', best_hour: 'Nullable(UInt8)', tz: 'String', ts90: 'Array(DateTime)',
};

/** stage1 columns: everything the final step needs per user. last_purchase_at is 0 when none. */
export const STAGE1_COLUMNS = [...CARRIED, 'last_purchase_at', 'best_hour'] as const;
/** stage0 columns: stage1's without best_hour, plus the inputs of best_hour. */
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

/** Step 1: one scan of the app's events (all users, or those in `usersIn`) into stage0. */
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
        countIf(tr) AS events_total,
        countIf(tr AND ts > ${w.d7}) AS events_7d,
        countIf(tr AND ts > ${w.d30}) AS events_30d,
        toUInt32(uniqExactIf(intDiv(toUInt32(ts), ${DAY_S}), tr AND ts > ${w.d30})) AS active_days_30d,
        countIf(tr AND event = 'view' AND ts > ${w.d30}) AS views_30d,
        countIf(tr AND event = 'click' AND ts > ${w.d30}) AS clicks_30d,
        countIf(pu AND ts > ${w.d30}) AS purchases_30d,
        countIf(pu) AS purchases_total,
        sumIf(amount, pu AND NOT isNaN(amount)) AS revenue_total,
        sumIf(amount, pu AND NOT isNaN(amount) AND ts > ${w.d30}) AS revenue_30d,
        maxIf(ts, pu) AS last_purchase_at,
        groupArrayIf(category, has_category AND (pu OR (tr AND event = 'view')) AND ts > ${w.d90}) AS cats90,
        groupArrayIf(ts, tr AND ts > ${w.d90}) AS ts90
      FROM (
        SELECT user_id, ts, event,
          type = 'track' AS tr,
          tr AND event = 'purchase' AS pu,
          if(has(prop_keys, 'amount'), prop_numbers[indexOf(prop_keys, 'amount')], nan) AS amount,
          has(prop_keys, 'category') AS has_category,
          prop_strings[indexOf(prop_keys, 'category')] AS category
        FROM events
        WHERE app_id = ${appId} AND ts <= ${w.asOf}${scope}
      )
      GROUP BY user_id
    ) ANY LEFT JOIN (
      SELECT user_id,
        arraySort(groupArray((key, value, value_type))) AS sorted_traits,
        arrayMap(x -> x.1, sorted_traits) AS trait_keys,
        arrayMap(x -> x.2, sorted_traits) AS trait_values,
        arrayMap(x -> x.3, sorted_traits) AS trait_types
      FROM (${currentTraitsSql(appId, w.asOf, p.usersIn ? { usersIn: p.usersIn } : {})})
      GROUP BY user_id
    ) USING user_id
  )
)`;
}

/** Step 2: best_hour for the users of a group of timezones, stage0 → stage1. */
export function stage1FromStage0Sql(p: { stage0: string; stage1: string; timezones: readonly string[] }): Sql {
  if (p.timezones.length === 0) throw new RangeError('no timezones');
  const carried = [...CARRIED, 'last_purchase_at'];
  const branches = p.timezones.map(
    (tz) => sql`SELECT ${cols(carried)},
      arraySort(arrayMap(t -> toHour(t, ${tz}), ts90)) AS hs, arrayEnumerateUniq(hs) AS he,
      if(empty(hs), NULL, hs[indexOf(he, arrayReduce('max', he))]) AS best_hour
    FROM ${ident(p.stage0)} WHERE tz = ${tz}`,
  );
  return sql`INSERT INTO ${ident(p.stage1)} (${cols(STAGE1_COLUMNS)})
SELECT ${cols(STAGE1_COLUMNS)} FROM (${join(branches, '\nUNION ALL\n')})`;
}

/** Step 2': incremental runs copy the users that cannot have changed from the previous run. */
export function stage1CopySql(p: { appId: string; previousRunId: string; stage1: string; changed: string }): Sql {
  const select = STAGE1_COLUMNS.map((c) => (c === 'last_purchase_at' ? sql`ifNull(last_purchase_at, toDateTime(0))` : ident(c)));
  return sql`INSERT INTO ${ident(p.stage1)} (${cols(STAGE1_COLUMNS)})
SELECT ${join(select)} FROM profiles
WHERE app_id = ${p.appId} AND run_id = ${p.previousRunId} AND user_id NOT IN ${ident(p.changed)}`;
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

/** value → score for one metric: ceil(5 * (2 * smaller + equal) / (2 * n)), see rfm.ts. */
function scoreTableSql(stage1: string, value: Sql, key: string, score: string, purchasers: number): Sql {
  return sql`SELECT v AS ${ident(key)}, toUInt8(intDiv(5 * (2 * (cum - c) + c) + ${2 * purchasers} - 1, ${2 * purchasers})) AS ${ident(score)}
  FROM (
    SELECT arraySort(groupArray((v, c))) AS s, arrayMap(x -> x.1, s) AS vs, arrayMap(x -> x.2, s) AS cs, arrayCumSum(cs) AS cums
    FROM (SELECT ${value} AS v, count() AS c FROM ${ident(stage1)} WHERE purchases_total > 0 GROUP BY v)
  ) ARRAY JOIN vs AS v, cs AS c, cums AS cum`;
}

export function purchasersSql(stage1: string): Sql {
  return sql`SELECT count() AS n FROM ${ident(stage1)} WHERE purchases_total > 0`;
}

/** Step 3: the run's rows, with the population-level fields computed over all of them. */
export function profilesInsertSql(p: { appId: string; runId: string; asOf: Date; stage1: string; purchasers: number }): Sql {
  const { asOf } = p;
  const seg = segmentTable();
  const keys = seg.keys;
  let source: Sql;
  if (p.purchasers > 0) {
    const base = sql`SELECT *, ${R_VALUE(asOf)} AS rv, ${F_VALUE} AS fv, ${M_VALUE} AS mv FROM ${ident(p.stage1)}`;
    const withR = sql`SELECT * FROM (${base}) ANY LEFT JOIN (${scoreTableSql(p.stage1, R_VALUE(asOf), 'rv', 'r_score', p.purchasers)}) USING rv`;
    const withF = sql`SELECT * FROM (${withR}) ANY LEFT JOIN (${scoreTableSql(p.stage1, F_VALUE, 'fv', 'f_score', p.purchasers)}) USING fv`;
    source = sql`SELECT * FROM (${withF}) ANY LEFT JOIN (${scoreTableSql(p.stage1, M_VALUE, 'mv', 'm_score', p.purchasers)}) USING mv`;
  } else {
    source = sql`SELECT *, toUInt8(0) AS r_score, toUInt8(0) AS f_score, toUInt8(0) AS m_score FROM ${ident(p.stage1)}`;
  }
  const buyer = raw('purchases_total > 0');
  const segment = sql`transform(toUInt16(r_score * 10 + intDiv(f_score + m_score + 1, 2)), ${raw('[' + keys.map((k) => `toUInt16(${k})`).join(', ') + ']')}, ${seg.names}, '')`;
  return sql`INSERT INTO profiles (app_id, run_id, as_of, ${cols(CARRIED)}, avg_order_value, last_purchase_at, recency_days,
  r_score, f_score, m_score, rfm_segment, best_hour, random_bucket)
SELECT ${p.appId}, ${p.runId}, ${asOf}, ${cols(CARRIED)},
  if(${buyer}, revenue_total / purchases_total, NULL),
  if(${buyer}, last_purchase_at, NULL),
  if(${buyer}, toUInt32(${RECENCY_DAYS(asOf)}), NULL),
  if(${buyer}, r_score, NULL),
  if(${buyer}, f_score, NULL),
  if(${buyer}, m_score, NULL),
  if(${buyer}, ${segment}, NULL),
  best_hour,
  ${randomBucketSql(p.appId)}
FROM (${source})`;
}

/** 0..9999, stable per (app_id, user_id): cityHash64 is the same on every ClickHouse version. */
export function randomBucketSql(appId: string, userColumn: Sql = raw('user_id')): Sql {
  return sql`toUInt16(cityHash64(${appId}, ${userColumn}) % 10000)`;
}
