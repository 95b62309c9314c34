// The profile job as ClickHouse SQL. Every heavy step is an INSERT … SELECT that
// runs inside ClickHouse; Node only sequences the steps. Pipeline of one run:
//
//   purchase_events ──(1) one row per purchaser──► buyers (+ previous run's unchanged)
//   buyers ──(2) value counts──► 4 score thresholds per RFM metric (numbers in Node)
//   user_timeline ──(3) one row per user, fields by array functions, scores by arithmetic──► profiles
//     (the merged part with most of the app's rows read without FINAL, the other parts' rows of its users joined on)
//   incremental only: (3) for the changed users with a late arrival;
//   previous row's state + profile_events_by_time since its as_of ──(3s) the other changed users──► profiles
//   previous run ──(3') unchanged users, recency and scores recomputed──► profiles
//     (only the users the previous run held itself when the new run is layered
//     on a base run: runRowsSql reads every other user from the base)
// Every run writes its rows (3, 3s, 3') without the RFM scores, while steps 1
// and 2 run; its readers score them from the thresholds its layer records
// (SCORES_AT_READ, runRowsSql).
//
// Each profile row is written once, straight from the scan (no stage table).
// Step 3 groups nothing: user_timeline holds each user's events and trait
// changes as one row of arrays, kept by ClickHouse's merges (100_user_timeline.sql).
// Every row keeps its user's 90d window as small arrays, its state
// (120_profile_state.sql); every windowed field is computed from that state
// (windowedFields), which step 3 builds from the timeline and step 3s from the
// previous state cut at the new window plus the events since, a time range of
// the time-sorted profile_events_by_time. Active days are a 31-bit mask of the
// 30d window's UTC dates (groupBitOr, cheaper than a per-user hash set or list).
// best_hour: ClickHouse 18.16 only accepts a constant time zone in toHour, so
// each zone's UTC offset over the 90d window is tabulated once from Node's tz
// database (zones.ts) and the scan adds the user's offset to each 90d
// timestamp: one expression whatever the number of zones, DST included.
// Mode of a list: sort it, number repeated values with arrayEnumerateUniq,
// take the first position reaching the maximum count — in a sorted list that
// is the smallest value among the most frequent (the tie rule for both
// best_hour and top_category).
import { ident, join, raw, sql, tuple, type Sql } from '../lib/sql.ts';
import { MONETARY_KEY_MAX, segmentTable } from './rfm.ts';
import { CONTEXT_TRAITS, currentTraitsSql, traitOrderAfter, unpackContextChange } from './traits.ts';
import { localHours, type ZoneOffsets } from './zones.ts';

export const DAY_S = 86400;

/** Per-user columns the scan computes and incremental runs copy unchanged from the previous run. */
const CARRIED = [
  'user_id', 'first_seen', 'last_seen', 'events_total', 'events_7d', 'events_30d', 'active_days_30d', 'views_30d', 'clicks_30d',
  'purchases_30d', 'purchases_total', 'revenue_total', 'revenue_30d', 'top_category', 'platform', 'country', 'timezone', 'locale',
  'app_version', 'trait_keys', 'trait_values', 'trait_types', 'best_hour',
] as const;

/**
 * The row's state: its user's track events of the 90d window (120_profile_state.sql),
 * which the next incremental run cuts and extends instead of reading the window's events,
 * and its traits (140_profile_state_packed.sql). Written and copied with every row;
 * no reader but the job selects it.
 */
const STATE = ['s_ts', 's_flags', 's_cats_packed', 's_amounts', 's_traits_packed'] as const;

/** The form of STATE a run writes (profile_runs.state_format): an incremental run needs a previous run of this form. */
export const STATE_FORMAT = 1;

const NUL = '\u0000';
const ESC = '\u0001';

/**
 * A list of strings as one String (140_profile_state_packed.sql): '' when
 * empty, else each element preceded by NUL; in elements, \x01 becomes
 * \x01\x02 and NUL \x01\x03, so a NUL in the packed form always separates.
 */
export function packedList(list: Sql): Sql {
  return sql`if(empty(${list}), '', concat(${NUL}, arrayStringConcat(arrayMap(x -> replaceAll(replaceAll(x, ${ESC}, ${ESC + '\u0002'}), ${NUL}, ${ESC + '\u0003'}), ${list}), ${NUL})))`;
}

/** The list packedList packed. An escape starts with \x01 and \x01 only starts one, so each replacement finds only escapes. */
export function unpackedList(packed: Sql): Sql {
  return sql`arrayMap(x -> replaceAll(replaceAll(x, ${ESC + '\u0003'}, ${NUL}), ${ESC + '\u0002'}, ${ESC}), arrayPopFront(splitByChar(${NUL}, ${packed})))`;
}

/** STATE from the window's ts90, s_flags, s_cats and s_amounts and the new row's traits. */
function stateColumns(): Sql {
  return sql`ts90 AS s_ts, s_flags, ${packedList(raw('s_cats'))} AS s_cats_packed, s_amounts,
        ${packedList(raw('arrayConcat(trait_keys, trait_values)'))} AS s_traits_packed`;
}

export const NAMED_TRAITS = ['platform', 'country', 'timezone', 'locale', 'app_version'] as const;

const cols = (names: readonly string[]): Sql => join(names.map((n) => ident(n)));

/**
 * A slice of the app's users by user_id order: `from <= user_id < to` (open
 * where absent). Every table the job reads is sorted by (app_id, user_id, …),
 * so a slice reads only its own granules, and the job runs one slice per core
 * concurrently — ClickHouse 18.16 runs everything after a GROUP BY (and an
 * INSERT's sort and write) on one thread per query.
 */
export interface UserSlice {
  from?: string;
  to?: string;
}

function sliceSql(slice: UserSlice | undefined): Sql {
  if (!slice) return sql``;
  const from = slice.from === undefined ? sql`` : sql` AND user_id >= ${slice.from}`;
  const to = slice.to === undefined ? sql`` : sql` AND user_id < ${slice.to}`;
  return sql`${from}${to}`;
}

/**
 * n - 1 bounds for slices of about equal size: quantiles of the users a run
 * computes, or of a hash sample of them (every `sampleEvery`-th user by
 * cityHash64). A full run takes the users with events in the 7 days before
 * as_of (recentUsersSql): sorting all 650k such users of the benchmark took
 * 0.5–0.9 s of each run, and a sample of a few thousand cuts as evenly to within
 * a few percent. An incremental run takes its changed users. The slices cover
 * every user whatever the bounds.
 */
export function sliceBoundsSql(p: { users: Sql; n: number; sampleEvery?: number }): Sql {
  const every = Math.max(1, Math.floor(p.sampleEvery ?? 1));
  const sample = every > 1 ? sql` WHERE cityHash64(user_id) % ${every} = 0` : sql``;
  // The '' pad keeps every index in range (18.16 fails on an element of an empty array); '' bounds nothing.
  const picks = Array.from({ length: p.n - 1 }, (_, i) => sql`padded[intDiv(length(us) * ${i + 1}, ${p.n}) + 1]`);
  return sql`SELECT [${join(picks)}] AS bounds FROM (
    SELECT arraySort(groupUniqArray(user_id)) AS us, arrayConcat(us, ['']) AS padded
    FROM (${p.users})${sample}
  )`;
}

/** The users with events in the 7 days before as_of: a time range of profile_events_by_time. */
export function recentUsersSql(appId: string, asOf: Date): Sql {
  const from = new Date(asOf.getTime() - 7 * DAY_S * 1000);
  return sql`SELECT user_id FROM profile_events_by_time WHERE app_id = ${appId} AND ts > ${from} AND ts <= ${asOf}`;
}

/** The sampling rate for sliceBoundsSql: about 2,000 users per slice whatever the app's size (all users of a small app). */
export function boundsSampleEvery(appUsers: number, n: number): number {
  return Math.max(1, Math.floor(appUsers / (2000 * n)));
}

/** The n slices the bounds give: [, b1), [b1, b2), …, [b_last, ). */
export function slicesOf(bounds: readonly string[]): UserSlice[] {
  const b = [...new Set(bounds.filter((x) => x !== ''))].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
  if (b.length === 0) return [{}];
  return [{ to: b[0] as string }, ...b.map((from, i) => (i + 1 < b.length ? { from, to: b[i + 1] as string } : { from }))];
}

export function changedTableSql(table: string): Sql {
  return sql`CREATE TABLE ${ident(table)} (user_id String) ENGINE = Memory`;
}

/**
 * The run's purchasers: what the RFM scores rank. `sign` counts the
 * purchasers with a row's values; a negative one takes back as many rows with
 * the same values (an incremental run adds every previous purchaser, then
 * takes back the previous values of those it recomputes: reading them all
 * costs less than leaving those out). Kept after the run as its buyers cache,
 * which the next incremental run copies instead of reading the run's rows
 * (buyersFromCacheSql).
 */
export function buyersTableSql(table: string): Sql {
  return sql`CREATE TABLE ${ident(table)} (last_purchase_at DateTime, purchases_total UInt64, revenue_total Float64, sign Int32) ENGINE = Memory`;
}

/**
 * Whether a run's buyers table holds the purchasers its rows hold, as many and
 * with as many purchases (a purchase stored after the buyers were read adds to both sums).
 */
export function buyersMatchRowsSql(p: { appId: string; runId: string; buyers: string }): Sql {
  return sql`SELECT toUInt8(b.1 = r.1 AND b.2 = r.2) AS same, b.1 AS buyers, b.2 AS buyer_purchases, r.1 AS row_buyers, r.2 AS row_purchases FROM (
  SELECT (SELECT (toInt64(sum(sign)), toInt64(sum(sign * purchases_total))) FROM ${ident(p.buyers)}) AS b,
    (SELECT (toInt64(count()), toInt64(sum(purchases_total))) FROM profiles WHERE app_id = ${p.appId} AND run_id = ${p.runId} AND purchases_total > 0) AS r
)`;
}

/**
 * Step 1', incremental runs: the previous run's purchasers from its buyers
 * cache. Each incremental run adds a row taken back and a new row per changed
 * purchaser; `compact` sums rows of equal values, so copies stay the size of
 * the purchasers.
 */
export function buyersFromCacheSql(p: { cache: string; buyers: string; compact: boolean }): Sql {
  const columns = sql`last_purchase_at, purchases_total, revenue_total`;
  return sql`INSERT INTO ${ident(p.buyers)} (${columns}, sign)
${p.compact
    ? sql`SELECT ${columns}, toInt32(sum(sign)) AS n FROM ${ident(p.cache)} GROUP BY ${columns} HAVING n != 0`
    : sql`SELECT ${columns}, sign FROM ${ident(p.cache)}`}`;
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
  return sql`SELECT DISTINCT value FROM user_trait_values WHERE app_id = ${appId} AND key = 'timezone' AND value_type != 0`;
}

/**
 * One row per purchaser (all, or those in `usersIn`) up to as_of, from
 * purchase_events (080_purchase_events.sql). `dedup`: each purchase counted
 * once even where a copy of it is not merged away yet (an ingest repair leaves
 * one, ingest/repair.ts) — twice the cost over every purchase, so a full run
 * reads without it and checks its rows for copies afterwards (job.ts).
 */
export function purchasersSql(p: { appId: string; asOf: Date; usersIn?: Sql; dedup?: boolean }): Sql {
  const scope = p.usersIn ? sql` AND user_id IN ${p.usersIn}` : sql``;
  const where = sql`WHERE app_id = ${p.appId} AND ts <= ${p.asOf}${scope}`;
  const source = p.dedup
    ? sql`(SELECT user_id, ts, any(amount) AS amount FROM purchase_events ${where} GROUP BY user_id, ts, id_hash)`
    : sql`purchase_events ${where}`;
  // The purchases and amounts of the scan's revenue_total (amount is 0 on its other rows, and x + 0 = x).
  return sql`SELECT max(ts) AS last_purchase_at, count() AS purchases_total, sum(amount) AS revenue_total, toInt8(1) AS sign
FROM ${source}
GROUP BY user_id`;
}

/** Step 1: the purchasers among the scanned users, into the run's buyers table. */
export function buyersInsertSql(p: { appId: string; asOf: Date; buyers: string; usersIn?: Sql; dedup?: boolean }): Sql {
  return sql`INSERT INTO ${ident(p.buyers)} (last_purchase_at, purchases_total, revenue_total, sign) ${purchasersSql(p)}`;
}

/**
 * Whether a full run's purchasers (its buyers table) counted more purchases than
 * its rows, which count each stored event once by its hash: then a copy not
 * merged away yet moved its RFM thresholds, and they are computed again without
 * copies. The two are read at once, so a purchase stored meanwhile can reach
 * either: in the rows only, it is no sign of a copy (one with a copy can hide
 * it; the rows are exact all the same, the thresholds off by them); in the
 * buyers only, it costs a needless second read.
 */
export function buyersCountedCopiesSql(p: { appId: string; runId: string; buyers: string }): Sql {
  return sql`SELECT toUInt8((SELECT sum(purchases_total) FROM ${ident(p.buyers)}) >
  (SELECT sum(purchases_total) FROM profiles WHERE app_id = ${p.appId} AND run_id = ${p.runId})) AS copies`;
}

/**
 * Step 1', incremental runs: the previous run's purchasers (`usersIn` absent;
 * no user_id is read), or the previous values of those in `usersIn` taken back
 * (sign -1).
 */
export function buyersFromPreviousSql(p: { appId: string; previous: RunRef; buyers: string; takeBack?: Sql }): Sql {
  const scope = p.takeBack ? sql` AND user_id IN ${p.takeBack}` : sql``;
  return sql`INSERT INTO ${ident(p.buyers)} (last_purchase_at, purchases_total, revenue_total, sign)
SELECT assumeNotNull(lp), purchases_total, revenue_total, toInt8(${p.takeBack ? -1 : 1}) FROM (
  SELECT last_purchase_at AS lp, purchases_total, revenue_total
  FROM (${runRowsSql(p.appId, p.previous, sql` AND purchases_total > 0${scope}`, { scores: false })})
)`;
}

/**
 * Step 1', incremental runs, for the changed users of step 2
 * (previousStateTableSql, newEventsTableSql): their previous values taken back,
 * and their new ones (their previous row's totals plus the newer events'), the
 * values their new rows get in step 3.
 */
export function buyersFromStateSql(p: { previousRows: string; newEvents: string; buyers: string }): Sql {
  return sql`INSERT INTO ${ident(p.buyers)} (last_purchase_at, purchases_total, revenue_total, sign)
SELECT lp, pt, rt, sign FROM (
  SELECT [p_last_purchase, greatest(p_last_purchase, n_last_purchase)] AS lps, [p_purchases_total, p_purchases_total + n_purchases] AS pts,
    [p_revenue_total, p_revenue_total + n_revenue] AS rts, [toInt8(-1), toInt8(1)] AS signs
  FROM ${ident(p.previousRows)} ANY FULL JOIN ${ident(p.newEvents)} USING user_id
) ARRAY JOIN lps AS lp, pts AS pt, rts AS rt, signs AS sign
WHERE pt > 0`;
}

/**
 * Users whose profile can differ from the previous run's, into `changed`:
 * events entering or leaving a window between the two as_of, and late
 * arrivals. Late arrivals (received since `receivedSince`, stamped at or before
 * the previous as_of) also go into `late`: the previous run may or may not have
 * counted them, so those users are rescanned over all their events; for the
 * others the previous row is exact up to the previous as_of.
 */
export function changedUsersSql(p: {
  appId: string;
  changed: string;
  late: string;
  previousAsOf: Date;
  asOf: Date;
  receivedSince?: Date;
  /** The `events` months (toYYYYMM, its partition key) that can hold a late arrival; all months when absent. */
  lateMonths?: readonly number[];
}): { changed: Sql[]; late: Sql[]; then: Sql[] } {
  const prev = windowOf(p.previousAsOf);
  const next = windowOf(p.asOf);
  const ranges = (['asOf', 'd7', 'd30', 'd90'] as const).map((k) => sql`(ts > ${prev[k]} AND ts <= ${next[k]})`);
  // Time ranges of the table sorted by time: a few granules each.
  const changed = [
    sql`INSERT INTO ${ident(p.changed)} SELECT DISTINCT user_id FROM profile_events_by_time WHERE app_id = ${p.appId} AND (${join(ranges, ' OR ')})`,
  ];
  const late: Sql[] = [];
  const then: Sql[] = [];
  if (p.receivedSince) {
    if (p.lateMonths === undefined || p.lateMonths.length > 0) {
      const received = receivedSinceWhere({ appId: p.appId, asOf: prev.asOf, since: p.receivedSince, ...(p.lateMonths ? { months: p.lateMonths } : {}) });
      late.push(sql`INSERT INTO ${ident(p.late)} SELECT DISTINCT user_id FROM events WHERE ${received}`);
    }
    // Users whose events ingest re-derived into the views' tables after a failed
    // insert (130_ingest_repairs.sql): their received_at predates that.
    late.push(sql`INSERT INTO ${ident(p.late)} SELECT DISTINCT user_id FROM ingest_repairs WHERE ${repairedSinceWhere({ appId: p.appId, since: p.receivedSince })}`);
    then.push(sql`INSERT INTO ${ident(p.changed)} SELECT user_id FROM ${ident(p.late)}`);
  }
  // `changed` and `late` run at once; `then` after both.
  return { changed, late, then };
}

/**
 * The months of `events` with a part written since `since`: an event inserted
 * since then lies in such a part (an insert writes a new part; a merge or
 * mutation writes its result later still), and rows never leave their month.
 */
export function recentlyWrittenMonthsSql(since: Date): Sql {
  return sql`SELECT DISTINCT toUInt32(partition) AS month FROM system.parts
WHERE database = currentDatabase() AND table = 'events' AND active AND modification_time >= ${since}`;
}

/**
 * The app's events with a ts up to `asOf` received since `since`, in `months`
 * (recentlyWrittenMonthsSql) when given: received_at is in no key, so without
 * the months every partition is read.
 */
function receivedSinceWhere(p: { appId: string; asOf: Date; since: Date; months?: readonly number[] }): Sql {
  const months = p.months ? sql` AND toYYYYMM(ts) IN (${join(p.months.map((m) => sql`${m}`))})` : sql``;
  return sql`app_id = ${p.appId} AND received_at >= ${p.since} AND ts <= ${p.asOf}${months}`;
}

/** Whether any event receivedSinceWhere selects is stored. */
export function receivedSinceSql(p: { appId: string; asOf: Date; since: Date; months: readonly number[] }): Sql {
  return sql`SELECT 1 AS received FROM events WHERE ${receivedSinceWhere(p)} LIMIT 1`;
}

/**
 * The rows of ingest_repairs since an instant: users whose events ingest
 * re-derived into the views' tables after a failed insert, with the failed
 * attempt's received_at (130_ingest_repairs.sql).
 */
function repairedSinceWhere(p: { appId: string; since: Date }): Sql {
  return sql`app_id = ${p.appId} AND repaired_at >= ${p.since}`;
}

/** Whether ingest repaired any user's events since `since` (repairedSinceWhere). */
export function repairedSinceSql(p: { appId: string; since: Date }): Sql {
  return sql`SELECT 1 AS repaired FROM ingest_repairs WHERE ${repairedSinceWhere(p)} LIMIT 1`;
}

// Comparison values for the quintiles, ascending from worst to best.
const RECENCY_DAYS = (asOf: Date) => sql`intDiv(toUInt32(${asOf}) - toUInt32(last_purchase_at), ${DAY_S})`;
const VALUE = {
  r: (asOf: Date) => sql`-toInt64(${RECENCY_DAYS(asOf)})`,
  f: () => sql`toInt64(purchases_total)`,
  m: () => sql`toInt64(least(floor(revenue_total * 1000000 + 0.5), ${raw(MONETARY_KEY_MAX.toExponential())}))`,
} as const;
export type RfmMetric = keyof typeof VALUE;

/**
 * A score is non-decreasing in the value, so a metric's whole value → score
 * table is four numbers: the least value scoring at least 2, 3, 4 and 5 (absent
 * when no purchaser scores that high). A score is then 1 + the thresholds the
 * value reaches — plain arithmetic on each row, no join, and a row copied from
 * the previous run is rescored without any lookup.
 */
export type RfmThresholds = Record<RfmMetric, (bigint | undefined)[]>;

/**
 * Rows written without their RFM scores and segment (NULL), as every run writes
 * them: its readers compute them from the thresholds its layer records
 * (runRowsSql, profiles_latest), so the run writes its rows while its RFM step
 * runs instead of after it.
 */
const SCORES_AT_READ = 'at_read' as const;
/** What a step writes the RFM scores from: thresholds, or SCORES_AT_READ. */
export type Scores = RfmThresholds | typeof SCORES_AT_READ;

/**
 * For one metric, each score that occurs with the least value holding it:
 * score = ceil(5 * (2 * smaller + equal) / (2 * n)) from exact value counts (see rfm.ts),
 * summed over the purchasers' `sign` (buyersTableSql).
 */
export function rfmScoreFloorsSql(p: { metric: RfmMetric; asOf: Date; purchasers: Sql }): Sql {
  const value = VALUE[p.metric](p.asOf);
  return sql`SELECT score, toString(min(v)) AS v FROM (
    SELECT v, toUInt8(intDiv(5 * (2 * (cum - c) + c) + 2 * n - 1, 2 * n)) AS score
    FROM (
      SELECT arraySort(groupArray((v, c))) AS s, arrayMap(x -> x.1, s) AS vs, arrayMap(x -> x.2, s) AS cs, arrayCumSum(cs) AS cums,
        toInt64(arraySum(cs)) AS n
      FROM (SELECT ${value} AS v, sum(sign) AS c FROM (${p.purchasers}) GROUP BY v HAVING c != 0)
    ) ARRAY JOIN vs AS v, cs AS c, cums AS cum
  ) GROUP BY score ORDER BY score`;
}

/** Thresholds (see RfmThresholds) from the rows of rfmScoreFloorsSql. */
export function thresholdsFromFloors(rows: readonly { score: number | string; v: string }[]): (bigint | undefined)[] {
  const out: (bigint | undefined)[] = [];
  for (let k = 2; k <= 5; k++) {
    // Scores ascend with the value, so the least value scoring >= k is that of the least score >= k.
    const row = rows.filter((r) => Number(r.score) >= k).sort((a, b) => Number(a.score) - Number(b.score))[0];
    out.push(row ? BigInt(row.v) : undefined);
  }
  return out;
}

function scoreSql(value: Sql, thresholds: readonly (bigint | undefined)[]): Sql {
  const steps = thresholds.filter((t): t is bigint => t !== undefined).map((t) => sql` + (${value} >= ${t})`);
  return sql`toUInt8(1${join(steps, '')})`;
}

/** rfm_segment from the three scores: the grid of profiles/rfm.ts, keyed by r * 10 + the mean of f and m (halves up). */
function rfmSegmentSql(r: Sql, f: Sql, m: Sql): Sql {
  const seg = segmentTable();
  return sql`transform(toUInt16(${r} * 10 + intDiv(${f} + ${m} + 1, 2)), ${raw('[' + seg.keys.map((k) => `toUInt16(${k})`).join(', ') + ']')}, ${seg.names}, '')`;
}

const OUTPUT_COLUMNS = [
  'app_id', 'run_id', 'as_of', ...CARRIED, 'avg_order_value', 'last_purchase_at', 'recency_days', 'r_score', 'f_score', 'm_score',
  'rfm_segment', 'random_bucket',
];

/**
 * Profile rows (OUTPUT_COLUMNS, by position) from a source with CARRIED and
 * last_purchase_at (any value when purchases_total = 0): the as_of- and
 * population-dependent fields are computed here, for scanned, copied and
 * inherited rows alike.
 */
function profilesSelect(p: { appId: string; runId: string; asOf: Date; source: Sql; rfm: Scores; state: boolean }): Sql {
  const buyer = raw('purchases_total > 0');
  const rfm = p.rfm === SCORES_AT_READ ? undefined : p.rfm;
  const segment = rfmSegmentSql(raw('r_score'), raw('f_score'), raw('m_score'));
  const ifBuyer = (v: Sql, type: string) => (rfm ? sql`if(${buyer}, ${v}, NULL)` : raw(`CAST(NULL AS Nullable(${type}))`));
  // Scores as aliases of this level, not a subquery's columns: 18.16 analyses
  // a subquery again for each level above it (tens of CPU-ms per level here).
  const score = (m: RfmMetric) => (rfm ? sql`(${scoreSql(VALUE[m](p.asOf), rfm[m])} AS ${raw(`${m}_score`)})` : sql``);
  return sql`SELECT ${p.appId}, ${p.runId}, ${p.asOf}, ${cols(CARRIED)},
  if(${buyer}, revenue_total / purchases_total, NULL),
  if(${buyer}, last_purchase_at, NULL),
  if(${buyer}, toUInt32(${RECENCY_DAYS(p.asOf)}), NULL),
  ${ifBuyer(score('r'), 'UInt8')},
  ${ifBuyer(score('f'), 'UInt8')},
  ${ifBuyer(score('m'), 'UInt8')},
  ${ifBuyer(segment, 'String')},
  ${randomBucketSql(p.appId)}${p.state ? sql`, ${cols(STATE)}` : sql``}
FROM (${p.source})`;
}

/**
 * The INSERT of profile rows with their state, from a source with CARRIED,
 * last_purchase_at and STATE: without their scores (SCORES_AT_READ) unless given
 * thresholds (a live profile's one row, read straight from its table).
 */
function profilesInsert(p: { appId: string; runId: string; asOf: Date; source: Sql; into?: string; rfm?: RfmThresholds | undefined }): Sql {
  return sql`INSERT INTO ${ident(p.into ?? 'profiles')} (${cols([...OUTPUT_COLUMNS, ...STATE])})
${profilesSelect({ ...p, rfm: p.rfm ?? SCORES_AT_READ, state: true })}`;
}

/** CARRIED (and STATE) and a non-null last_purchase_at from one run's own rows, for profilesSelect. */
function storedRowsSource(p: { appId: string; runId: string; where: Sql; state: boolean }): Sql {
  const carried = cols(p.state ? [...CARRIED, ...STATE] : CARRIED);
  return sql`SELECT ${carried}, assumeNotNull(lp) AS last_purchase_at FROM (
    SELECT ${carried}, last_purchase_at AS lp
    FROM profiles
    WHERE app_id = ${p.appId} AND run_id = ${p.runId}${p.where}
  )`;
}

/**
 * A run's RFM thresholds at its `as_of`, from which its readers score its rows
 * (SCORES_AT_READ), and its base. A layered run (an incremental one that wrote
 * only the users it recomputed, see 110_profile_run_layers.sql) reads every
 * other user's row from `base_run_id`, rescored at `as_of` with `rfm`; a run
 * that wrote every user is its own base.
 */
export interface RunLayer {
  base_run_id: string;
  as_of: Date;
  rfm: RfmThresholds;
}

/** A run as its readers need it: its id, and its layer when it has one (runs before SCORES_AT_READ have none). */
export interface RunRef {
  run_id: string;
  layer?: RunLayer | undefined;
}

/** Whether a run reads the users it did not write from a base run (runRowsSql). */
export function inheritsRows(run: RunRef): boolean {
  return run.layer !== undefined && run.layer.base_run_id !== run.run_id;
}

/**
 * Every profile row of a run (OUTPUT_COLUMNS, named as in `profiles`): its own
 * rows and, for a layered run, its base run's rows of the users it does not
 * hold, with as_of, recency_days, the RFM scores and rfm_segment computed at the
 * run's as_of — exactly what a run that wrote every user would hold.
 * `where` (` AND …` on the stored columns, e.g. user_id) narrows both reads;
 * `state` adds the STATE columns, which only the job reads; `scores: false`
 * leaves a run's own rows unscored (NULL, as stored), for the job's reads that
 * need no score.
 * Every reader of profile rows goes through here.
 */
export function runRowsSql(appId: string, run: RunRef, where: Sql = sql``, opts: { state?: boolean; scores?: boolean } = {}): Sql {
  const state = opts.state ?? false;
  const l = run.layer;
  if (!l || (!inheritsRows(run) && opts.scores === false)) {
    return sql`SELECT ${cols(state ? [...OUTPUT_COLUMNS, ...STATE] : OUTPUT_COLUMNS)} FROM profiles WHERE app_id = ${appId} AND run_id = ${run.run_id}${where}`;
  }
  const own = scoredOwnRows({ appId, runId: run.run_id, rfm: l.rfm, where, state, asOf: l.as_of });
  if (!inheritsRows(run)) return own;
  const inherited = profilesSelect({
    appId,
    runId: run.run_id,
    asOf: l.as_of,
    rfm: l.rfm,
    state,
    source: storedRowsSource({
      appId,
      runId: l.base_run_id,
      where: sql` AND user_id NOT IN (SELECT user_id FROM profiles WHERE app_id = ${appId} AND run_id = ${run.run_id})${where}`,
      state,
    }),
  });
  return sql`${own}
UNION ALL
${inherited}`;
}

/**
 * A run's own rows, named as in `profiles`, with the RFM scores and segment
 * computed from its layer's thresholds: it wrote them without (SCORES_AT_READ).
 */
function scoredOwnRows(p: { appId: string; runId: string; rfm: RfmThresholds; where: Sql; state: boolean; asOf: Date }): Sql {
  const SCORES = new Set(['r_score', 'f_score', 'm_score', 'rfm_segment']);
  const stored = OUTPUT_COLUMNS.filter((c) => !SCORES.has(c));
  const buyer = raw('purchases_total > 0');
  const score = (m: RfmMetric) => scoreSql(VALUE[m](p.asOf), p.rfm[m]);
  // A purchaser's last_purchase_at, and so its scores, is never NULL.
  const computed: Record<string, Sql> = {
    r_score: sql`if(${buyer}, toNullable(assumeNotNull(s_r)), NULL) AS r_score`,
    f_score: sql`if(${buyer}, toNullable(assumeNotNull(s_f)), NULL) AS f_score`,
    m_score: sql`if(${buyer}, toNullable(assumeNotNull(s_m)), NULL) AS m_score`,
    rfm_segment: sql`if(${buyer}, toNullable(${rfmSegmentSql(raw('assumeNotNull(s_r)'), raw('assumeNotNull(s_f)'), raw('assumeNotNull(s_m)'))}), NULL) AS rfm_segment`,
  };
  const outer = OUTPUT_COLUMNS.map((c) => computed[c] ?? ident(c));
  const inner = [...stored, ...(p.state ? STATE : [])];
  return sql`SELECT ${join(outer)}${p.state ? sql`, ${cols(STATE)}` : sql``} FROM (
    -- materialize: with no purchaser in the layer a score is the constant 1, and
    -- 18.16 fails on if(…, toNullable(constant), NULL) ("Nullable(UInt8) cannot
    -- be inside Nullable column").
    SELECT ${cols(inner)}, materialize(${score('r')}) AS s_r, materialize(${score('f')}) AS s_f, materialize(${score('m')}) AS s_m
    FROM profiles WHERE app_id = ${p.appId} AND run_id = ${p.runId}${p.where}
  )`;
}

type Zones = { names: readonly string[]; offsets: ZoneOffsets };

/** The most frequent element of `sorted` (an ascending list), the smallest among ties; NULL when empty. */
function modeOfSorted(sorted: Sql, prefix: string): Sql {
  const e = raw(`${prefix}_nth`);
  return sql`if(empty(${sorted}), NULL, ${sorted}[indexOf(arrayEnumerateUniq(${sorted}) AS ${e}, arrayReduce('max', ${e}))])`;
}

/**
 * trait_keys, trait_values and trait_types from a user's trait changes
 * `changes` (an alias: (key, ts, event_id, value, type) tuples up to as_of,
 * sorted descending): the first of each key is its latest; removals (type 0)
 * dropped after that; keys ascending.
 */
function currentTraits(changes: string): Sql {
  const c = raw(changes);
  return sql`arrayReverse(arrayFilter((x, i) -> i = 1 AND x.5 != 0, ${c}, arrayEnumerateUniq(arrayMap(x -> x.1, ${c})))) AS current,
          arrayMap(x -> x.1, current) AS trait_keys,
          arrayMap(x -> x.4, current) AS trait_values,
          arrayMap(x -> x.5, current) AS trait_types`;
}

/**
 * A full run's traits but the context ones (180_user_trait_values.sql), into
 * a Memory table the scan joins on (profilesFromTimelineSql's `traits`): one
 * row per user with a change to such a key, trait_keys, trait_values and
 * trait_types as currentTraits gives them, `complete` 1 when every change of
 * the user is at or before as_of, `whole` 0 (the context traits come from
 * contextTableSql). Then the value whose latest change is greatest is the
 * key's current one; otherwise a value's latest change may be after as_of
 * while an earlier one is not, and traitsFromHistorySql adds the user's whole
 * row from every change. Rows not merged yet are just more candidates for the
 * same maximum.
 */
export function traitsTableSql(p: { appId: string; asOf: Date; into: string }): Sql {
  return sql`CREATE TABLE ${ident(p.into)} ENGINE = Memory AS
SELECT user_id, trait_keys, trait_values, trait_types, toUInt8(arrayReduce('max', ls) < ${traitOrderAfter(p.asOf)}) AS complete, toUInt8(0) AS whole
FROM (
  SELECT user_id, ls,
    -- (key, last, -, value, type) as currentTraits reads them: (key, last) sorts as (key, ts, event_id).
    arrayReverseSort(arrayMap((k, l, v, y) -> (k, l, '', v, y), ks, ls, vs, ys)) AS changes,
    ${currentTraits('changes')}
  FROM (
    SELECT user_id, groupArray(key) AS ks, groupArray(last) AS ls, groupArray(value) AS vs, groupArray(value_type) AS ys
    FROM (SELECT user_id, key, value, value_type, finalizeAggregation(last) AS last FROM user_trait_values WHERE app_id = ${p.appId} AND key NOT IN ${tuple(CONTEXT_TRAITS)})
    GROUP BY user_id
  )
)`;
}

/** Users traitsTableSql or contextTableSql left incomplete. */
function incompleteUsers(p: { into: string; context: string }): Sql {
  return sql`(SELECT user_id FROM ${ident(p.into)} WHERE complete = 0 UNION ALL SELECT user_id FROM ${ident(p.context)} WHERE complete = 0)`;
}

/**
 * The users traitsTableSql or contextTableSql left incomplete, each as a whole
 * row (every key, context ones too) from every change up to as_of
 * (user_traits), complete. The scan then takes such a user's whole row only.
 */
export function traitsFromHistorySql(p: { appId: string; asOf: Date; into: string; context: string }): Sql {
  return sql`INSERT INTO ${ident(p.into)} (user_id, trait_keys, trait_values, trait_types, complete, whole)
SELECT user_id, arrayMap(x -> x.1, current) AS trait_keys, arrayMap(x -> x.2, current) AS trait_values, arrayMap(x -> x.3, current) AS trait_types, toUInt8(1), toUInt8(1)
FROM (SELECT user_id, arraySort(groupArray((key, value, value_type))) AS current FROM (${currentTraitsSql(p.appId, p.asOf, { usersIn: incompleteUsers(p) })}) GROUP BY user_id)`;
}

/**
 * The app's trait changes and distinct trait values (rows not merged yet count
 * as more values) of a sample of its users: those up to `bound`, a user_id that
 * bounds about `values` of the app's rows of user_trait_values (their users sort
 * first when a merged part holds most of them; every user when the app has
 * fewer). Counting every change read the app's whole user_traits on the run's
 * critical path, for a ratio a sample gives as well.
 */
export function traitCountsSql(appId: string, values: number): Sql {
  // In each subquery: 18.16 has no common table expressions, and an outer alias is not seen inside.
  const bound = sql`(SELECT max(user_id) FROM (SELECT user_id FROM user_trait_values WHERE app_id = ${appId} LIMIT ${values}))`;
  const users = sql`app_id = ${appId} AND user_id <= ${bound}`;
  return sql`SELECT ${bound} AS bound, (SELECT count() FROM user_traits WHERE ${users}) AS changes, (SELECT count() FROM user_trait_values WHERE ${users}) AS values`;
}

/** How many users traitsTableSql or contextTableSql left incomplete. */
export function traitsIncompleteSql(p: { into: string; context: string }): Sql {
  return sql`SELECT uniqExact(user_id) AS n FROM ${incompleteUsers(p)}`;
}

/**
 * A full run's context traits (190_user_context_traits.sql), into a Memory
 * table the scan joins on: one row per user with a change to one of
 * CONTEXT_TRAITS; for each such key k, `c_k` the value of its latest change and
 * `ct_k` its value_type (0: never set, or removed last); `complete` 1 when
 * every one of those changes is at or before as_of (else the user's traits
 * come from every change, traitsFromHistorySql).
 *
 * With `part` (a merged part, one row per user), read as the scan reads the
 * timeline's (MergedPartRead): the part's rows of the users no other part
 * holds, as they are; every row of the users another part holds (new since
 * the merge), grouped (-Merge), which also covers a merge of the part with
 * others before the read. If the part is merged away after the other users
 * are found but before it is read, its users are missing: the job checks that
 * the part was still active after the query (partActiveSql) and otherwise
 * builds the table again with FINAL (no `part`), as it does when no part is
 * merged. A user whose rows are written between the two reads can have a row
 * from each, both true for some instant of the run: the scan's join takes one.
 * Grouping the states of max(String) costs 18.16 several times FINAL's merge,
 * and FINAL several times reading the part as it is.
 * One INSERT per user slice, run at once (contextTableSql creates the table).
 */
export function contextInsertSql(p: { appId: string; asOf: Date; into: string; part?: string; slice?: UserSlice }): Sql {
  const slice = sliceSql(p.slice);
  const states = (f: 'finalizeAggregation' | 'maxMerge') => join(CONTEXT_TRAITS.map((k) => sql`${raw(f)}(${ident(k)}) AS ${ident('p_' + k)}`));
  let source: Sql;
  if (p.part === undefined) source = sql`SELECT user_id, ${states('finalizeAggregation')} FROM user_context_traits FINAL WHERE app_id = ${p.appId}${slice}`;
  else {
    const others = sql`(SELECT user_id FROM user_context_traits WHERE app_id = ${p.appId} AND _part != ${p.part}${slice})`;
    source = sql`SELECT user_id, ${states('finalizeAggregation')} FROM user_context_traits WHERE app_id = ${p.appId} AND _part = ${p.part}${slice} AND user_id NOT IN ${others}
  UNION ALL
  SELECT user_id, ${states('maxMerge')} FROM user_context_traits WHERE app_id = ${p.appId}${slice} AND user_id IN ${others} GROUP BY user_id`;
  }
  const parsed = join(CONTEXT_TRAITS.map((k) => {
    const change = unpackContextChange(ident('p_' + k), k);
    return sql`${change.value} AS ${ident('c_' + k)}, ${change.type} AS ${ident('ct_' + k)}`;
  }));
  const bound = traitOrderAfter(p.asOf);
  return sql`INSERT INTO ${ident(p.into)} (user_id, ${join(CONTEXT_TRAITS.map((k) => sql`${ident('c_' + k)}, ${ident('ct_' + k)}`))}, complete)
SELECT user_id, ${parsed},
  toUInt8(${join(CONTEXT_TRAITS.map((k) => sql`${ident('p_' + k)} < ${bound}`), ' AND ')}) AS complete
FROM (${source})`;
}

/** The Memory table contextInsertSql fills. */
export function contextTableSql(into: string): Sql {
  return sql`CREATE TABLE ${ident(into)} (user_id String, ${join(CONTEXT_TRAITS.map((k) => sql`${ident('c_' + k)} String, ${ident('ct_' + k)} UInt8`))}, complete UInt8) ENGINE = Memory`;
}

/**
 * trait_keys, trait_values and trait_types of a user from the context table's
 * columns and the other keys' (o_keys, o_values, o_types), keys ascending as
 * currentTraits gives them. A user with a whole row has no context columns
 * (the join skips them), so its keys are its whole row's.
 */
function joinedTraits(): Sql {
  const ctx = (value: (k: string) => Sql, empty: string) =>
    sql`arrayConcat(${join(CONTEXT_TRAITS.map((k) => sql`if(${ident('ct_' + k)} != 0, [${value(k)}], ${raw(empty)})`))})`;
  return sql`arrayConcat(${ctx((k) => sql`${k}`, 'emptyArrayString()')}, o_keys) AS all_keys,
            arraySort(all_keys) AS trait_keys,
            arraySort((v, k) -> k, arrayConcat(${ctx((k) => ident('c_' + k), 'emptyArrayString()')}, o_values), all_keys) AS trait_values,
            arraySort((y, k) -> k, arrayConcat(${ctx((k) => ident('ct_' + k), 'emptyArrayUInt8()')}, o_types), all_keys) AS trait_types`;
}

/** platform, country, … as columns, from trait_keys and trait_values. */
function namedTraits(): Sql {
  return join(NAMED_TRAITS.map((k) => sql`if(has(trait_keys, ${k}), trait_values[indexOf(trait_keys, ${k})], NULL) AS ${ident(k)}`));
}

/**
 * Every windowed field from a user's state at as_of (120_profile_state.sql):
 * `ts90` and `s_flags` (the counted track events of the 90d window, with
 * kind + 8 when it has a category), `s_cats` and `s_amounts` (the categories
 * and the purchases' amounts of those events, in their order). Full runs build
 * the state from the timeline, incremental runs from the previous state and
 * the newer events; both then compute the same fields from it, each an array
 * function of one user's row. Needs the zone columns in scope.
 */
function windowedFields(w: Window, zone: ReturnType<typeof localHours>): Sql {
  // The first UTC date a 30d-window instant (d30, as_of] can fall on.
  const firstDay30 = Math.floor((w.d30.getTime() / 1000 + 1) / DAY_S);
  const kindIn30 = (kind: number) => sql`arrayCount((t, f) -> bitAnd(f, 7) = ${raw(String(kind))} AND t > ${w.d30}, ts90, s_flags)`;
  return sql`arrayCount(t -> t > ${w.d7}, ts90) AS events_7d,
        arrayCount(t -> t > ${w.d30}, ts90) AS events_30d,
        ${kindIn30(1)} AS views_30d,
        ${kindIn30(2)} AS clicks_30d,
        ${kindIn30(3)} AS purchases_30d,
        arraySum(arrayFilter((x, t) -> t > ${w.d30}, s_amounts, arrayFilter((t, f) -> bitAnd(f, 7) = 3, ts90, s_flags))) AS revenue_30d,
        -- Bit i: a track event on the i-th UTC date of the 30d window (31 dates at most).
        toUInt32(length(bitmaskToArray(arrayReduce('groupBitOr', arrayMap(t -> toUInt64(bitShiftLeft(toUInt64(1), bitAnd(intDiv(toUInt32(t), ${DAY_S}) - ${firstDay30}, 63))),
          arrayFilter(t -> t > ${w.d30}, ts90)))))) AS active_days_30d,
        ${modeOfSorted(raw('arraySort(s_cats)'), 'cats')} AS top_category,
        ${modeOfSorted(sql`arraySort(${zone.hoursOf(raw('ts90'))})`, 'hours')} AS best_hour`;
}

/**
 * Reading user_timeline without FINAL. FINAL merges a user's rows across parts
 * as it reads, on one thread per query, and cost ~25% of a full run's scan CPU
 * on the benchmark even over a single part. A part ClickHouse merged (level >
 * 0) holds one row per user (an inserted part can hold several), so the scan
 * reads the merged part `part` that holds most of the app's rows as it is.
 * With `others`, the app's rows in every other part (the few recently written
 * ones, in a table taking inserts) are grouped by user (-Merge of the
 * groupArray states, what FINAL would do for them) and joined on, their arrays
 * appended to the merged part's: one read of the merged part, whoever else holds
 * rows of a user.
 *
 * Parts are snapshots, taken by each side of the join as it starts: if a merge
 * replaces `part` before the left side starts, the right side reads the part
 * that replaced it, so every event is still read; if in between, events of
 * `part` are read twice, and the scan counts an event hash once (as it does for
 * copies). Without `others` there is no right side: the job then checks that
 * `part` was still active after the read (timelinePartActiveSql) and otherwise
 * reads the users left without a row with FINAL (`unwritten`).
 */
export interface MergedPartRead {
  part: string;
  others: boolean;
}

/** The tables a run reads one merged part of without FINAL: each keeps one row per user in a merged part. */
export type PerUserTable = 'user_timeline' | 'user_context_traits';

/**
 * The active parts of `table` that hold rows of the app, with their level and
 * the app's rows in each: the job reads the one with most without FINAL (a
 * part merged from apps written at different times may hold few of them).
 */
export function appPartsSql(table: PerUserTable, appId: string): Sql {
  return sql`SELECT name, level, rows FROM (SELECT _part AS name, count() AS rows FROM ${ident(table)} WHERE app_id = ${appId} GROUP BY name)
ANY INNER JOIN (SELECT name, level FROM system.parts WHERE database = currentDatabase() AND table = ${table} AND active) USING name`;
}

/** Whether the part is still active (parts never come back once merged away). */
export function partActiveSql(table: PerUserTable, part: string): Sql {
  return sql`SELECT count() AS n FROM system.parts WHERE database = currentDatabase() AND table = ${table} AND active AND name = ${part}`;
}

/** user_timeline's state columns, the names the scan gives their arrays, and the -Merge that groups them. */
const TIMELINE_COLUMNS = [
  ['event_ts', 't_ts', 'groupArrayMerge'],
  ['event_hash', 't_hash', 'groupArrayMerge'],
  ['event_flags', 't_flags', 'groupArrayMerge'],
  ['event_amount', 't_amount', 'groupArrayMerge'],
  ['event_category', 't_category', 'groupArrayMerge'],
  ['trait_key', 't_key', 'groupArrayArrayMerge'],
  ['trait_ts', 't_tts', 'groupArrayArrayMerge'],
  ['trait_event', 't_event', 'groupArrayArrayMerge'],
  ['trait_value', 't_value', 'groupArrayArrayMerge'],
  ['trait_type', 't_type', 'groupArrayArrayMerge'],
] as const;

/**
 * One row per user with TIMELINE_COLUMNS as arrays (named t_*), from user_timeline as `merged` says, else with FINAL;
 * without the trait changes' columns when `events` (the traits come from elsewhere).
 */
function timelineRowsSql(p: { appId: string; scope: Sql; merged?: MergedPartRead; events?: boolean }): Sql {
  const columns = p.events ? TIMELINE_COLUMNS.filter(([c]) => !c.startsWith('trait_')) : TIMELINE_COLUMNS;
  const finalized = (prefix: string) => join(columns.map(([c, t]) => sql`finalizeAggregation(${ident(c)}) AS ${ident(prefix + t.slice(2))}`));
  if (!p.merged) return sql`SELECT user_id, ${finalized('t_')} FROM user_timeline FINAL WHERE app_id = ${p.appId}${p.scope}`;
  const part = sql`SELECT user_id, ${finalized(p.merged.others ? 'l_' : 't_')} FROM user_timeline WHERE app_id = ${p.appId} AND _part = ${p.merged.part}${p.scope}`;
  if (!p.merged.others) return part;
  const grouped = join(columns.map(([c, t, merge]) => sql`${raw(merge)}(${ident(c)}) AS ${ident('r_' + t.slice(2))}`));
  const appended = join(columns.map(([, t]) => sql`arrayConcat(${ident('l_' + t.slice(2))}, ${ident('r_' + t.slice(2))}) AS ${ident(t)}`));
  // FULL: a user only the other parts hold (new since the merge) gets empty arrays from the left.
  return sql`SELECT user_id, ${appended} FROM (${part})
    ANY FULL JOIN (SELECT user_id, ${grouped} FROM user_timeline WHERE app_id = ${p.appId} AND _part != ${p.merged.part}${p.scope} GROUP BY user_id) USING user_id`;
}

/** A full run's traits from the compact tables rather than every change (job.ts traitsOf). */
export interface CompactTraits {
  /** contextTableSql's table. */
  context: string;
  /** traitsTableSql's table, with traitsFromHistorySql's whole rows. */
  others: string;
}

/**
 * The timeline's rows with the users' context traits and other traits joined
 * on (18.16 takes one JOIN per SELECT). A user with neither gets the joins'
 * defaults: no traits. A user with a whole row (traitsFromHistorySql) takes
 * only that: its context row, and any row of its other keys, are left out.
 */
function traitsJoined(t: CompactTraits, timelineRows: Sql, slice: UserSlice | undefined): Sql {
  const wholeUsers = sql`(SELECT user_id FROM ${ident(t.others)} WHERE whole = 1)`;
  const ctxColumns = join(CONTEXT_TRAITS.flatMap((k) => [ident('c_' + k), ident('ct_' + k)]));
  return sql`(
            SELECT * FROM (${timelineRows})
            ANY LEFT JOIN (SELECT user_id, ${ctxColumns} FROM ${ident(t.context)} WHERE complete = 1 AND user_id NOT IN ${wholeUsers}${sliceSql(slice)}) USING user_id
          ) ANY LEFT JOIN (
            SELECT user_id, trait_keys AS o_keys, trait_values AS o_values, trait_types AS o_types FROM ${ident(t.others)}
            WHERE complete = 1 AND (whole = 1 OR user_id NOT IN ${wholeUsers})${sliceSql(slice)}
          ) USING user_id`;
}

/**
 * Step 3: one profile row per user (all, or those in `usersIn`) from
 * user_timeline (100_user_timeline.sql), where ClickHouse's merges keep each
 * user's events and trait changes as one row of parallel arrays. Read either
 * with FINAL, which merges the rows of a user that sit in parts not merged yet,
 * or (`merged`) from one merged part with the other parts' rows joined on
 * (MergedPartRead): either way every row read is one whole user, and each
 * field comes from the user's arrays by array functions. An event repeated in
 * a user's arrays (same hash of event_id and ts) counts once, as merges of
 * events collapse it. `zones`: the zones ClickHouse can load (job.ts checks
 * each once), 'UTC' among them, with their offsets over the 90d window
 * (zones.ts); any other timezone trait counts as UTC. Also writes the row's
 * state (120_profile_state.sql).
 */
export function profilesFromTimelineSql(p: {
  appId: string;
  runId: string;
  window: Window;
  zones: Zones;
  /** Scores written with the rows (liveProfile); absent, SCORES_AT_READ. */
  rfm?: RfmThresholds;
  usersIn?: Sql;
  slice?: UserSlice;
  into?: string;
  /** Read one merged part without FINAL (MergedPartRead). */
  merged?: MergedPartRead;
  /** Only users the run has no row for yet. */
  unwritten?: boolean;
  /** The users' traits from these tables (contextTableSql, traitsTableSql: complete rows), not from the timeline's trait changes. */
  traits?: CompactTraits;
}): Sql {
  const { window: w } = p;
  const unwritten = p.unwritten ? sql` AND user_id NOT IN (SELECT user_id FROM profiles WHERE app_id = ${p.appId} AND run_id = ${p.runId})` : sql``;
  const scope = sql`${p.usersIn ? sql` AND user_id IN ${p.usersIn}` : sql``}${unwritten}${sliceSql(p.slice)}`;
  const zone = localHours(sql`ifNull(timezone, '')`, p.zones.names, p.zones.offsets);
  const timelineRows = timelineRowsSql({ appId: p.appId, scope, ...(p.merged ? { merged: p.merged } : {}), events: Boolean(p.traits) });
  // The state: the counted track events of the 90d window, and their categories and purchase amounts.
  const in90 = (x: string, cond: string) => sql`arrayFilter((x, f, m) -> m AND ${raw(cond)}, ${raw(x)}, fa, m90)`;
  // keep: the event counts; every field takes it as an argument rather than
  // reading copies of the arrays filtered by it.
  const source = sql`SELECT user_id,
        arraySum(keep) AS n_all,
        arrayReduce('minIf', tsa, keep) AS first_seen,
        arrayReduce('maxIf', tsa, keep) AS last_seen,
        arrayCount((k, u) -> u AND k != 0, ka, keep) AS events_total,
        arrayCount((k, u) -> u AND k = 3, ka, keep) AS purchases_total,
        -- amount is 0 on every other event, and x + 0 = x exactly.
        arrayReduce('sumIf', am, keep) AS revenue_total,
        arrayReduce('maxIf', tsa, arrayMap((k, u) -> u AND k = 3, ka, keep)) AS last_purchase_at,
        ${windowedFields(w, zone)},
        trait_keys, trait_values, trait_types, ${cols(NAMED_TRAITS)},
        ${stateColumns()}
      FROM (SELECT *,
          arrayMap((t, k, u) -> u AND k != 0 AND t > ${w.d90}, tsa, ka, keep) AS m90,
          arrayFilter((t, m) -> m, tsa, m90) AS ts90,
          arrayFilter((f, m) -> m, fa, m90) AS s_flags,
          ${in90('ca', 'f >= 8')} AS s_cats,
          ${in90('am', 'bitAnd(f, 7) = 3')} AS s_amounts,
          ${join(zone.columns)}
        FROM (
        SELECT *, ${namedTraits()} FROM (
          SELECT user_id,
            t_ts AS tsa,
            -- Counted: the first event of each hash, up to as_of.
            arrayMap((t, i) -> i = 1 AND t <= ${w.asOf}, tsa, arrayEnumerateUniq(t_hash)) AS keep,
            t_flags AS fa,
            arrayMap(f -> bitAnd(f, 7), fa) AS ka,
            t_amount AS am,
            t_category AS ca,
            ${p.traits ? joinedTraits() : sql`arrayReverseSort(arrayFilter(x -> x.2 <= ${w.asOf}, arrayMap((k, t, e, v, y) -> (k, t, e, v, y), t_key, t_tts, t_event, t_value, t_type))) AS changes,
            ${currentTraits('changes')}`}
          FROM ${p.traits ? traitsJoined(p.traits, timelineRows, p.slice) : sql`(${timelineRows})`}
        )
      ))
      -- A user with no event up to as_of has no profile.
      WHERE n_all > 0`;
  return profilesInsert({ appId: p.appId, runId: p.runId, asOf: w.asOf, source, rfm: p.rfm, ...(p.into ? { into: p.into } : {}) });
}

/**
 * Step 2, incremental runs: the previous rows of the changed users whose previous
 * row holds every event they had up to the previous as_of (`users`: the changed
 * users without a late arrival, see changedUsersSql), into a Memory table. It
 * runs while the RFM step does (it needs no score), and step 3 then computes on
 * whole blocks: streamed, these rows come in thousands of small blocks (a few
 * percent of each granule read), where ClickHouse 18.16 spends as much on
 * per-block work as on the fields themselves.
 */
export function previousStateTableSql(p: { appId: string; previous: RunRef; users: Sql; into: string; cache?: StateCaches }): Sql {
  const source = p.cache ? cachedStateSql(p.cache, p.users) : runRowsSql(p.appId, p.previous, sql` AND user_id IN ${p.users}`, { state: true, scores: false });
  return sql`CREATE TABLE ${ident(p.into)} ENGINE = Memory AS
SELECT user_id, toUInt8(1) AS has_prev, first_seen AS p_first, last_seen AS p_last, events_total AS p_events_total,
  purchases_total AS p_purchases_total, revenue_total AS p_revenue_total, ifNull(last_purchase_at, toDateTime(0)) AS p_last_purchase,
  s_ts AS p_ts, s_flags AS p_flags, ${unpackedList(raw('s_cats_packed'))} AS p_cats, s_amounts AS p_amounts,
  -- From the packed state, not trait_keys and trait_values: see 140_profile_state_packed.sql.
  arraySlice(${unpackedList(raw('s_traits_packed'))} AS p_traits, 1, length(trait_types)) AS p_trait_keys,
  arraySlice(p_traits, length(trait_types) + 1) AS p_trait_values, trait_types AS p_trait_types
FROM (${source})`;
}

/**
 * The columns of a run's rows that the next incremental run reads
 * (previousStateTableSql), as a run's state cache holds them.
 */
const STATE_CACHED = ['user_id', 'first_seen', 'last_seen', 'events_total', 'purchases_total', 'revenue_total', 'last_purchase_at', ...STATE, 'trait_types'] as const;

/**
 * A run's state cache: a Memory table of STATE_CACHED for each of its own rows.
 * Reading the changed users' previous rows from the run's partition decodes
 * every granule of it (changed users are spread over all of them): on the
 * benchmark that was a third of an incremental run's CPU, and a lookup in
 * memory a tenth of that. Filled while the run writes, by a materialized view
 * on `profiles` (stateCacheFeedSql), so a full run pays no second read of its
 * rows. Not persisted: after a ClickHouse restart the table is empty, and a
 * reader that finds its count short of the run's rows reads the partition.
 */
export function stateCacheTableSql(table: string): Sql {
  return sql`CREATE TABLE ${ident(table)} ENGINE = Memory AS SELECT ${cols(STATE_CACHED)} FROM profiles WHERE 0`;
}

/** Feeds a run's rows, as they are inserted into `profiles`, into its state cache. */
export function stateCacheFeedSql(p: { view: string; cache: string; appId: string; runId: string }): Sql {
  return sql`CREATE MATERIALIZED VIEW ${ident(p.view)} TO ${ident(p.cache)}
AS SELECT ${cols(STATE_CACHED)} FROM profiles WHERE app_id = ${p.appId} AND run_id = ${p.runId}`;
}

/** Whether a cache holds all `run`'s own rows (a restart empties it), and how many it holds. */
export function stateCacheCompleteSql(p: { appId: string; runId: string; cache: string }): Sql {
  return sql`SELECT toUInt8(rows = (SELECT count() FROM profiles WHERE app_id = ${p.appId} AND run_id = ${p.runId})) AS complete, rows
FROM (SELECT count() AS rows FROM ${ident(p.cache)})`;
}

/** The state caches of a run (`own`) and, for a layered run, of its base (`base`). */
export interface StateCaches {
  own: string;
  base?: string;
}

/**
 * The rows of `users` as runRowsSql gives them (STATE_CACHED only), from the
 * caches: a layered run's own rows, and its base's rows of the users it does not hold.
 */
function cachedStateSql(c: StateCaches, users: Sql): Sql {
  const own = sql`SELECT ${cols(STATE_CACHED)} FROM ${ident(c.own)} WHERE user_id IN ${users}`;
  if (!c.base) return own;
  return sql`${own}
UNION ALL
SELECT ${cols(STATE_CACHED)} FROM ${ident(c.base)} WHERE user_id IN ${users} AND user_id NOT IN (SELECT user_id FROM ${ident(c.own)} WHERE user_id IN ${users})`;
}

/**
 * Whether step 2' (newEventsTableSql without `copies`) read an event stored
 * more than once (a copy that slipped past ingest's id lookup and is not
 * merged yet): it is then read again without the copies, which costs more than
 * counting them as it reads.
 */
export function newEventsCopiedSql(table: string): Sql {
  return sql`SELECT toUInt8(count() > 0) AS copied FROM ${ident(table)} WHERE n_copied`;
}

/**
 * Candidates for an incremental run's zones (see zonesAt): `known`, every zone
 * the previous run's rows can hold, and the timezone trait values set by events
 * since the previous as_of (a time range of profile_events_by_time, a few
 * granules). Only time: it can run before any other step.
 */
export function newZoneCandidatesSql(p: { appId: string; known: readonly string[]; previousAsOf: Date; asOf: Date }): Sql {
  return sql`SELECT arrayJoin(CAST(${p.known} AS Array(String))) AS value
UNION ALL
SELECT DISTINCT value FROM profile_events_by_time ARRAY JOIN trait_keys AS key, trait_values AS value
WHERE app_id = ${p.appId} AND ts > ${p.previousAsOf} AND ts <= ${p.asOf} AND key = 'timezone'`;
}

/**
 * Step 2', incremental runs: per user, the events after the previous as_of up to
 * as_of (a time range of profile_events_by_time, a few granules) into a Memory
 * table: the all-time sums, the track events' state and the trait changes.
 * Users with a late arrival (`late`) are left out: they are rescanned whole.
 * `copies`: some event is stored twice (newEventsCopiedSql); each counts once.
 * Without it, n_copied marks the users with an event read twice.
 */
export function newEventsTableSql(p: { appId: string; previousAsOf: Date; asOf: Date; late: string; copies: boolean; into: string }): Sql {
  const columns = sql`user_id, ts, id_hash, kind, amount, has_category, category, trait_keys, trait_values, trait_types, trait_event`;
  return sql`CREATE TABLE ${ident(p.into)} ENGINE = Memory AS
SELECT user_id, toUInt8(1) AS has_new,
  min(ts) AS n_first,
  max(ts) AS n_last,
  countIf(kind != 0) AS n_events,
  countIf(kind = 3) AS n_purchases,
  sum(amount) AS n_revenue,
  maxIf(ts, kind = 3) AS n_last_purchase,
  -- One pass, so the subsets keep the order of their events in n_ts.
  groupArrayIf(ts, kind != 0) AS n_ts,
  groupArrayIf(toUInt8(kind + 8 * has_category), kind != 0) AS n_flags,
  groupArrayIf(category, kind != 0 AND has_category = 1) AS n_cats,
  groupArrayIf(amount, kind = 3) AS n_amounts,
  groupArrayArray(changes_e) AS n_changes${p.copies ? sql`` : sql`,
  -- One array of hashes costs less than two arrays compared as pairs. A
  -- collision only sends the run to the exact read (DISTINCT).
  arrayUniq(groupArray(cityHash64(ts, id_hash))) != count() AS n_copied`}
FROM (
  SELECT *,
    -- (key, ts, event_id, value, type) of each trait change (ts and event_id in as arrays: no capture in 18.16).
    arrayMap((k, v, y, t, e) -> (k, t, e, v, y), trait_keys, trait_values, trait_types,
      arrayResize(CAST([] AS Array(DateTime)), length(trait_keys), ts), arrayResize(CAST([] AS Array(String)), length(trait_keys), trait_event)) AS changes_e
  FROM (
    SELECT ${p.copies ? sql`DISTINCT ` : sql``}${columns}
    FROM profile_events_by_time
    WHERE app_id = ${p.appId} AND ts > ${p.previousAsOf} AND ts <= ${p.asOf} AND user_id NOT IN ${ident(p.late)}
  )
)
GROUP BY user_id`;
}

/**
 * Step 3, incremental runs: a profile row for each user of the two Memory
 * tables of step 2 (previousStateTableSql, newEventsTableSql). The all-time
 * fields are the previous row's plus the newer events'; the windowed fields
 * come from the previous row's state (its 90d window's track events,
 * 120_profile_state.sql) cut at the new window's start, plus the newer events;
 * the traits are the previous row's updated by the newer events' trait changes.
 */
export function profilesFromStateSql(p: { appId: string; runId: string; window: Window; zones: Zones; previousRows: string; newEvents: string; slice?: UserSlice }): Sql {
  const { appId, window: w } = p;
  const zone = localHours(sql`ifNull(timezone, '')`, p.zones.names, p.zones.offsets);
  // Old state elements still in the window; the subsets (categories, amounts)
  // are in the order of their events in s_ts, so each is cut by its events' ts.
  const oldKept = sql`arrayMap(t -> t > ${w.d90}, p_ts)`;
  const subsetOf = (cond: string, ts: string, flags: string) => sql`arrayFilter((t, f) -> ${raw(cond)}, ${raw(ts)}, ${raw(flags)})`;
  const inWindow = (values: string, ts: Sql) => sql`arrayFilter((x, t) -> t > ${w.d90}, ${raw(values)}, ${ts})`;
  const rowsOf = (table: string) => sql`(SELECT * FROM ${ident(table)} WHERE 1${sliceSql(p.slice)})`;

  const source = sql`SELECT user_id, first_seen, last_seen, events_total, purchases_total, revenue_total, last_purchase_at,
        ${windowedFields(w, zone)},
        trait_keys, trait_values, trait_types, ${cols(NAMED_TRAITS)},
        ${stateColumns()}
      -- One level of aliases over the join: 18.16 analyses a subquery again for
      -- each level above it, tens of CPU-ms per level for these expressions.
      FROM (SELECT user_id,
          -- The previous current traits (older than any change since) and the changes since, newest first.
          arrayReverseSort(arrayConcat(n_changes,
            arrayMap((k, v, y) -> (k, toDateTime(0), '', v, y), p_trait_keys, p_trait_values, p_trait_types))) AS changes,
          ${currentTraits('changes')},
          ${namedTraits()},
          if(has_prev, if(has_new, least(p_first, n_first), p_first), n_first) AS first_seen,
          if(has_prev, if(has_new, greatest(p_last, n_last), p_last), n_last) AS last_seen,
          p_events_total + n_events AS events_total,
          p_purchases_total + n_purchases AS purchases_total,
          p_revenue_total + n_revenue AS revenue_total,
          greatest(p_last_purchase, n_last_purchase) AS last_purchase_at,
          arrayConcat(arrayFilter((t, k) -> k, p_ts, ${oldKept}), arrayFilter(t -> t > ${w.d90}, n_ts)) AS ts90,
          arrayConcat(arrayFilter((f, k) -> k, p_flags, ${oldKept}), ${inWindow('n_flags', raw('n_ts'))}) AS s_flags,
          arrayConcat(${inWindow('p_cats', subsetOf('f >= 8', 'p_ts', 'p_flags'))}, ${inWindow('n_cats', subsetOf('f >= 8', 'n_ts', 'n_flags'))}) AS s_cats,
          arrayConcat(${inWindow('p_amounts', subsetOf('bitAnd(f, 7) = 3', 'p_ts', 'p_flags'))}, ${inWindow('n_amounts', subsetOf('bitAnd(f, 7) = 3', 'n_ts', 'n_flags'))}) AS s_amounts,
          ${join(zone.columns)}
        -- FULL keeps the users without a previous row (new since the previous run).
        FROM ${rowsOf(p.previousRows)} ANY FULL JOIN ${rowsOf(p.newEvents)} USING user_id
        -- A user with no event up to as_of has no profile.
        WHERE has_prev OR has_new
      )`;
  return profilesInsert({ appId, runId: p.runId, asOf: w.asOf, source });
}

/**
 * Step 3': incremental runs copy from the previous run the users that cannot
 * have changed; only recency_days and the RFM scores and segment are
 * recomputed. `all`: every such user of the previous run (a run that holds
 * every user itself); otherwise only those the previous run holds itself (a
 * layered run on the same base, which inherits the others).
 */
export function profilesFromPreviousSql(p: { appId: string; runId: string; asOf: Date; previous: RunRef; all: boolean; changed: string; slice?: UserSlice }): Sql {
  const where = sql` AND user_id NOT IN ${ident(p.changed)}${sliceSql(p.slice)}`;
  const carried = cols([...CARRIED, ...STATE]);
  const source = p.all && inheritsRows(p.previous)
    ? sql`SELECT ${carried}, assumeNotNull(lp) AS last_purchase_at FROM (
    SELECT ${carried}, last_purchase_at AS lp FROM (${runRowsSql(p.appId, p.previous, where, { state: true })})
  )`
    : storedRowsSource({ appId: p.appId, runId: p.previous.run_id, where, state: true });
  return profilesInsert({ appId: p.appId, runId: p.runId, asOf: p.asOf, source });
}

/** 0..9999, stable per (app_id, user_id): cityHash64 is the same on every ClickHouse version. */
export function randomBucketSql(appId: string, userColumn: Sql = raw('user_id')): Sql {
  return sql`toUInt16(cityHash64(${appId}, ${userColumn}) % 10000)`;
}
