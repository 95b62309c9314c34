// The profile job: sequences the SQL steps of profiles/sql.ts for one app and
// one as_of, publishes the run atomically (rows first, then the `complete` mark
// in profile_runs) and removes superseded runs.
//
// Incremental runs recompute only the users whose profile can differ from the
// previous run's: events whose ts enters or leaves one of the 7d/30d/90d windows
// between the two as_of instants, and late arrivals — events received since that
// run started (minus a margin for events stamped before but inserted after it)
// with a ts it covered (traits come from events, so trait changes are among
// these; tags are not stored in profile rows). Users with a late arrival are
// rescanned over all their events; the other changed users take the previous
// row's all-time values plus the newer events, and their windowed values from
// the previous row's state (its 90d window's events) cut at the new window plus
// the newer events. The fields that depend on as_of or on the whole
// population (recency_days, the RFM scores and segment) are recomputed for all
// users from the per-user values, so the result equals a full run at the same
// as_of. Such a run is layered: it writes only its recomputed users (and those
// the layered run before it wrote) and reads every other user's row from the
// last run that wrote everyone, its base, rescored at its own as_of (runRowsSql,
// 110_profile_run_layers.sql); past LAYER_SHARE it copies everyone instead.
// Every run writes its rows while its RFM step runs, without the scores, which
// its readers compute from the thresholds its layer records (SCORES_AT_READ).
// Each run leaves its state and buyers caches in ClickHouse's memory for the
// next incremental run (stateCacheTableSql, buyersTableSql), which reads its
// changed users' previous rows and the previous purchasers from them, or from
// the previous run's rows when a restart emptied them.
import { randomBytes } from 'node:crypto';
import type { ClickHouse } from '../lib/clickhouse.ts';
import { ConfigSchema } from '../lib/config.ts';
import { isoSeconds, isStorableInstant } from '../lib/instant.ts';
import { JobConflictError, startJob, type StartJobOptions } from '../lib/jobs.ts';
import { log } from '../lib/log.ts';
import { ident, raw, sql, tuple, type Sql } from '../lib/sql.ts';
import { clusterLabelSql, nearestClusterSql } from './cluster-sql.ts';
import { assignNewUsers, latestModel } from './clusters-job.ts';
import { latestRun, listRuns, PROFILE_SELECT, withTagsAndCluster, type Profile, type ProfileRow, type ProfileRun } from './read.ts';
import {
  boundsSampleEvery,
  buyersFromCacheSql,
  buyersFromPreviousSql,
  buyersFromStateSql,
  buyersCountedCopiesSql,
  buyersInsertSql,
  buyersMatchRowsSql,
  buyersTableSql,
  changedTableSql,
  changedUsersSql,
  newZoneCandidatesSql,
  newEventsCopiedSql,
  newEventsTableSql,
  previousStateTableSql,
  DAY_S,
  profilesFromPreviousSql,
  profilesFromStateSql,
  profilesFromTimelineSql,
  traitCountsSql,
  traitsFromHistorySql,
  traitsIncompleteSql,
  traitsTableSql,
  purchasersSql,
  recentlyWrittenMonthsSql,
  recentUsersSql,
  rfmScoreFloorsSql,
  runRowsSql,
  inheritsRows,
  sliceBoundsSql,
  STATE_FORMAT,
  slicesOf,
  stateCacheCompleteSql,
  stateCacheFeedSql,
  stateCacheTableSql,
  type StateCaches,
  thresholdsFromFloors,
  timezoneCandidatesSql,
  windowOf,
  type RfmThresholds,
  type RunLayer,
  type RunRef,
  type MergedPartRead,
  type UserSlice,
  type Window,
  appPartsSql,
  contextInsertSql,
  contextTableSql,
  partActiveSql,
  type CompactTraits,
  type PerUserTable,
} from './sql.ts';
import { intlKnowsZone, offsetsWithin, zoneOffsets } from './zones.ts';

export type ProfileMode = 'full' | 'incremental';

export interface BuildOptions {
  asOf?: Date;
  /** Default incremental; it falls back to full without a previous run at or before as_of. */
  mode?: ProfileMode;
  onProgress?: (progress: number) => void;
  /** Events received up to this long before the previous run started count as possibly unseen by it. */
  receivedMarginS?: number;
  /** Complete runs kept besides the new one, for readers still on them. */
  keepPreviousRuns?: number;
  /** Complete runs finished less than this many seconds ago are kept too (RUN_READ_GRACE_S). */
  keepRecentS?: number;
  /** Concurrent queries, each over a slice of the users (default 2: the cores of the machine it was tuned on). */
  slices?: number;
  /** Changes per trait value from which a full run reads each value's latest change (default COMPACT_TRAITS_RATIO; 0: always). */
  compactTraitsRatio?: number;
  /** Late users above this share of the previous run's users make an incremental run a full one (default FULL_WHEN_LATE_SHARE). */
  fullWhenLateShare?: number;
  /** An incremental run recomputing more users than this runs as a full one (default FULL_WHEN_CHANGED_USERS). */
  fullWhenChangedUsers?: number;
  /** An incremental run holding more than this share of the users copies every user instead of inheriting from a base (default LAYER_SHARE). */
  layerShare?: number;
  /** A run of more users than this keeps no state cache (default stateCacheMaxUsers(): WARBLER_PROFILE_STATE_CACHE_MAX_USERS). */
  stateCacheMaxUsers?: number;
  /** False: read the previous run's rows even when its state cache is complete (to measure what the cache saves). */
  readStateCache?: boolean;
}

export interface BuildResult {
  run_id: string;
  as_of: string;
  users: number;
  mode: ProfileMode;
  seconds: number;
  previous_run_id?: string;
  recomputed_users?: number;
  /** Set when the run holds only its recomputed users and reads the others from this run (see runRowsSql). */
  base_run_id?: string;
  /** Users new since the latest cluster model was trained, given their nearest cluster under it. */
  clustered_users?: number;
  /** Where an incremental run read its changed users' previous rows: the previous run's state cache, or its rows. */
  previous_state?: 'cache' | 'rows';
  /** Where an incremental run read the previous run's purchasers: its buyers cache, or its rows. */
  previous_buyers?: 'cache' | 'rows';
  /** Seconds per step, for benchmarks and logs. */
  steps: Record<string, number>;
}

export const DEFAULT_RECEIVED_MARGIN_S = 300;
export const DEFAULT_SLICES = 2;
/**
 * A full run takes its users' traits from the compact tables (traitsOf: the
 * latest change of each context key per user, user_context_traits; of each
 * other key's distinct values, user_trait_values) when the app has at least
 * this many changes per row of user_trait_values, else from every change with
 * the user's events. With context on every event (bench/trait-heavy.ts at 1M
 * users, 16.6 changes per value once merged) the first takes a full run from
 * 110 s to about 10 s; on the same events without context (2.5) both ways took
 * about as long in hand timings. Rows not merged yet count as values: after a
 * 20M-event bulk load that context app had 4.6 rows per value.
 */
export const COMPACT_TRAITS_RATIO = 4;
/** About how many trait values (and their users' changes) COMPACT_TRAITS_RATIO is checked on. */
export const TRAIT_SAMPLE_VALUES = 100_000;
/** An incremental run whose late users exceed this share of the previous run's users runs as a full one. */
export const FULL_WHEN_LATE_SHARE = 0.1;
/**
 * An incremental run holds its changed users' previous rows (state and traits)
 * and newer events in Memory tables on one ClickHouse server: past this many
 * users it runs as a full one, which holds no such table.
 */
export const FULL_WHEN_CHANGED_USERS = 2_000_000;
/**
 * A layered run copies the rows its previous run held itself, and readers of a
 * layered run skip the base rows of the users it holds: both cost in proportion
 * to the layer. Past this share of the users a run copies everyone instead (the
 * ~1 s that layers save) and starts a new base.
 */
export const LAYER_SHARE = 0.2;
/**
 * Runs of up to this many users keep a state cache in ClickHouse's memory
 * (stateCacheTableSql): ~180 bytes a user on the benchmark, so ~360 MB at the
 * default 2,000,000. Larger runs keep none, and the next incremental run reads their rows.
 */
export function stateCacheMaxUsers(env: NodeJS.ProcessEnv = process.env): number {
  return ConfigSchema.shape.WARBLER_PROFILE_STATE_CACHE_MAX_USERS.parse(env.WARBLER_PROFILE_STATE_CACHE_MAX_USERS);
}
/**
 * Rows per block of the Memory table of the changed users' previous rows. An
 * INSERT … SELECT squashes its blocks to ~1M rows, and a Memory table is read
 * one stream per block: in one block, the last step (the fields of every
 * changed user) would run on one thread.
 */
export const STATE_BLOCK_ROWS = 8192;
/**
 * Seconds a finished run is kept whatever runs come after it, so a reader that
 * picked it (an evaluation, a streaming export, a snapshot) finds its rows.
 */
export const RUN_READ_GRACE_S = 900;
/** At most this many runs are kept for the grace period alone. */
export const RECENT_RUNS_KEPT = 8;
const STALE_RUN_S = 86_400;

const building = new Set<string>();

function newRunId(now: Date): string {
  const stamp = now.toISOString().replace(/[-:T]/g, '').slice(0, 14);
  return `r${stamp}_${randomBytes(4).toString('hex')}`;
}

// A valid zone is an IANA name that both Intl (whose tables give the offsets,
// zones.ts) and ClickHouse can load. Names are first held to the shape of IANA
// names (no dots, so no path tricks; not the posix/ and right/ copies of the
// database), then tried once each: Intl refuses tzcode's files that are not
// zones (posixrules), and ClickHouse's loader is case-sensitive where Intl's is not.
const IANA_SHAPE = /^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+)*$/;
const zoneCache = new Map<string, boolean>();
export async function validTimezones(ch: ClickHouse, names: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const name of names) {
    let ok = zoneCache.get(name);
    if (ok === undefined) {
      ok = name.length <= 64 && IANA_SHAPE.test(name) && !/^(posix|right)\//.test(name) && intlKnowsZone(name);
      if (ok) {
        try {
          await ch.rows(sql`SELECT toHour(toDateTime(0), ${name}) AS h`);
        } catch {
          ok = false;
        }
      }
      zoneCache.set(name, ok);
    }
    if (ok) out.push(name);
  }
  return out.sort();
}

export async function buildProfiles(ch: ClickHouse, appId: string, opts: BuildOptions = {}): Promise<BuildResult> {
  if (building.has(appId)) throw new JobConflictError(appId, 'profiles', undefined);
  building.add(appId);
  try {
    return await build(ch, appId, opts);
  } finally {
    building.delete(appId);
  }
}

async function build(ch: ClickHouse, appId: string, opts: BuildOptions): Promise<BuildResult> {
  const t0 = performance.now();
  const startedAt = new Date();
  const w = windowOf(opts.asOf ?? startedAt);
  const asOf = w.asOf;
  // DateTime would store it as another instant, and the run would be labelled with it.
  if (!isStorableInstant(asOf.getTime())) {
    throw new Error(`as_of ${Number.isNaN(asOf.getTime()) ? 'is not a valid instant; it must be inside' : `${asOf.toISOString()} is outside`} 1970-01-01T00:00:00Z..2106-02-07T06:28:15Z, the range ClickHouse stores`);
  }
  const runId = newRunId(startedAt);
  const rlog = log.child({ app_id: appId, run_id: runId });
  const report = (p: number) => opts.onProgress?.(Math.min(1, Math.max(0, p)));
  const buyers = buyersCacheName(runId);
  const changed = `profile_changed_${runId}`;
  const late = `profile_late_${runId}`;
  const previousRows = `profile_prev_${runId}`;
  const newEvents = `profile_new_${runId}`;
  const traitsTable = `profile_traits_${runId}`;
  const contextTable = `profile_context_${runId}`;
  const cache = stateCacheName(runId);
  const feed = stateFeedName(runId);
  const runRow = (state: string, extra: { users?: number; mode?: string; previous?: string; finished?: boolean }) =>
    ch.insert('profile_runs', [
      {
        app_id: appId,
        run_id: runId,
        as_of: Math.floor(asOf.getTime() / 1000),
        mode: extra.mode ?? opts.mode ?? 'incremental',
        state,
        users: extra.users ?? 0,
        started_at: Math.floor(startedAt.getTime() / 1000),
        // The `running` row has version 0, so any later row replaces it.
        finished_at: extra.finished ? Math.max(Math.floor(Date.now() / 1000), Math.floor(startedAt.getTime() / 1000) + 1) : 0,
        previous_run_id: extra.previous ?? '',
        state_format: STATE_FORMAT,
      },
    ]);

  let mode: ProfileMode = opts.mode ?? 'incremental';
  // The previous run is the latest complete one at or before this as_of: later
  // ones (a run for a future as_of) cannot be moved back from.
  const [, previous] = await Promise.all([runRow('running', {}), mode === 'incremental' ? latestRun(ch, appId, asOf) : undefined]);
  report(0.01);
  if (mode === 'incremental' && !previous) mode = 'full';
  if (mode === 'incremental' && previous && previous.state_format !== STATE_FORMAT) {
    // Its rows keep their state in an older form (140_profile_state_packed.sql).
    rlog.info('the previous run predates the current form of profile state; running a full scan instead', { previous_run_id: previous.run_id });
    mode = 'full';
  }
  rlog.info('profile run started', { as_of: isoSeconds(asOf), mode, previous_run_id: previous?.run_id });

  const created: string[] = [];
  // Steps started ahead of being awaited (where a failure surfaces): all settle
  // before the run's tables are dropped, and none rejects unhandled meanwhile.
  const inflight: Promise<unknown>[] = [];
  const track = <T,>(p: Promise<T>): Promise<T> => {
    inflight.push(p.catch(() => undefined));
    return p;
  };
  /** Takes a table out of those the run drops when it ends: dropped already, or kept. */
  const untrack = (table: string) => {
    const i = created.indexOf(table);
    if (i >= 0) created.splice(i, 1);
  };
  let recomputed: number | undefined;
  const steps: Record<string, number> = {};
  let stepStart = performance.now();
  const step = (name: string) => {
    const now = performance.now();
    steps[name] = +((now - stepStart) / 1000).toFixed(3);
    stepStart = now;
  };
  try {
    // Tabulated while the steps below run; the rows need them. A full run takes
    // every zone its users ever had. An incremental run after a run of this
    // process (and the full scan it may turn into) takes that run's zones and
    // those set since (runZones), which cover every row it can write; otherwise,
    // or with late arrivals (whose zones may predate the previous run), every zone too.
    const zonesOf = (candidates?: Sql, after: Promise<unknown> = Promise.resolve()) => {
      const ready = after.then(() => zonesAt(ch, appId, w, candidates));
      ready.catch(() => undefined); // awaited below; a failure surfaces there
      return ready;
    };
    const lastZones = runZones.get(appId);
    const known = previous && mode === 'incremental' && lastZones?.runId === previous.run_id ? lastZones.names : undefined;
    const zoneCandidates = (late: number) => (known && previous && late === 0 ? newZoneCandidatesSql({ appId, known, previousAsOf: previous.as_of, asOf }) : undefined);
    let zonesReady = mode === 'full' ? zonesOf() : undefined;
    report(0.03);
    step('timezones');

    // One query per user slice, concurrently: after its GROUP BY (and in an INSERT's
    // sort and write) ClickHouse 18.16 uses one thread per query. The bounds are
    // found while the steps below run: a full run's at once, from the users active
    // in the last 7 days; an incremental run's from the users it recomputes.
    const n = Math.max(1, Math.floor(opts.slices ?? DEFAULT_SLICES));
    const boundsOf = (users: Sql, count: Promise<number>) => {
      const found = n > 1 ? count.then((c) => findSliceBounds(ch, users, n, boundsSampleEvery(c, n))) : Promise.resolve([]);
      found.catch(() => undefined); // awaited below; a failure surfaces there
      return found;
    };
    let sliceBounds: Promise<string[]> | undefined;
    const fullRunBounds = () => boundsOf(recentUsersSql(appId, asOf), appUsersOf(ch, appId));
    if (mode === 'full') sliceBounds = fullRunBounds();

    // A full scan's traits, from each context key's latest change per user
    // (contextTableSql) and each other key's distinct values (traitsTableSql)
    // rather than every change, while the RFM step runs — when the app's
    // changes mostly repeat a value (COMPACT_TRAITS_RATIO).
    let traitsReady: Promise<CompactTraits | undefined> | undefined;
    // Tracked: a run failing meanwhile drops the table only once it exists.
    const traitsOf = () =>
      track((async () => {
        const counts = await ch.one<{ bound: string; changes: string; values: string }>(traitCountsSql(appId, TRAIT_SAMPLE_VALUES));
        const [changes, values] = [Number(counts?.changes ?? 0), Number(counts?.values ?? 0)];
        if (changes === 0 || changes < (opts.compactTraitsRatio ?? COMPACT_TRAITS_RATIO) * values) return undefined;
        rlog.info('the users\' trait changes mostly repeat a value: taking each context trait\'s latest change per user, and each other value\'s', {
          sampled_users_up_to: counts?.bound,
          trait_changes: changes,
          trait_values: values,
        });
        created.push(traitsTable, contextTable);
        const tables = { into: traitsTable, context: contextTable };
        await Promise.all([
          ch.exec(traitsTableSql({ appId, asOf, into: traitsTable }), { timeoutS: 3600 }),
          sliceBounds!.then(async (bounds) => buildContextTable(ch, { appId, asOf, into: contextTable, slices: slicesOf(bounds) }, await planContextRead(ch, appId), rlog)),
        ]);
        const incomplete = Number((await ch.one<{ n: string }>(traitsIncompleteSql(tables)))?.n ?? 0);
        if (incomplete > 0) {
          rlog.info('users with a trait change after as_of: their traits come from every change', { users: incomplete });
          await ch.exec(traitsFromHistorySql({ appId, asOf, ...tables }), { timeoutS: 3600 });
        }
        return { context: contextTable, others: traitsTable };
      })());
    if (mode === 'full') traitsReady = traitsOf();

    let lateUsers = 0;
    let newRead: Promise<void> = Promise.resolve();
    let previousCaches: Promise<PreviousCaches> = Promise.resolve({});
    if (mode === 'incremental' && previous) {
      // Caches only save time: a failure to find them reads the rows instead.
      previousCaches = cachesOf(ch, appId, previous, rlog, opts.readStateCache ?? true).catch((e: unknown) => {
        rlog.warn('could not look up the previous run\'s caches; reading its rows instead', { error: e });
        return {};
      });
      created.push(changed, late);
      const margin = opts.receivedMarginS ?? DEFAULT_RECEIVED_MARGIN_S;
      const receivedSince = new Date(previous.started_at.getTime() - margin * 1000);
      const [months] = await Promise.all([
        // Parts are stamped by the ClickHouse host's clock, received_at by the consumer's: the margin again covers skew.
        ch.rows<{ month: number }>(recentlyWrittenMonthsSql(new Date(receivedSince.getTime() - margin * 1000))),
        ch.exec(changedTableSql(changed)),
        ch.exec(changedTableSql(late)),
      ]);
      const lateMonths = months.map((r) => Number(r.month));
      const find = changedUsersSql({ appId, changed, late, previousAsOf: previous.as_of, asOf, receivedSince, lateMonths });
      const changedFound = track(Promise.all(find.changed.map((q) => ch.exec(q))));
      await Promise.all(find.late.map((q) => ch.exec(q)));
      // Step 2's read of the newer events needs only the late users: it starts
      // now, while the changed users are still being found.
      created.push(newEvents);
      newRead = track((async () => {
        const readNew = (copies: boolean) => ch.exec(newEventsTableSql({ appId, previousAsOf: previous.as_of, asOf, late, copies, into: newEvents }), { timeoutS: 3600 });
        await readNew(false);
        if (Number((await ch.one<{ copied: number | string }>(newEventsCopiedSql(newEvents)))?.copied ?? 0) === 1) {
          rlog.info('an event since the previous run is stored twice (not merged yet); reading the newer events again without the copy');
          await ch.exec(sql`DROP TABLE ${ident(newEvents)}`);
          await readNew(true);
        }
      })());
      await changedFound;
      for (const q of find.then) await ch.exec(q);
      const n = await ch.one<{ n: string; late: string }>(
        sql`SELECT uniqExact(user_id) AS n, (SELECT uniqExact(user_id) FROM ${ident(late)}) AS late FROM ${ident(changed)}`,
      );
      recomputed = Number(n?.n ?? 0);
      // Late users are rescanned over all their events, and users spread over
      // the app touch every granule: past a small share that reads as much as a
      // full run, then the window and the copy on top (the demo's first
      // scheduled run, every user late: 6.8 s against 3.3 s for a full run).
      lateUsers = Number(n?.late ?? 0);
      const manyLate = lateUsers > (opts.fullWhenLateShare ?? FULL_WHEN_LATE_SHARE) * previous.users;
      if (manyLate || recomputed > (opts.fullWhenChangedUsers ?? FULL_WHEN_CHANGED_USERS)) {
        rlog.info(manyLate ? 'most users have late arrivals; running a full scan instead' : 'too many changed users to hold in memory; running a full scan instead', {
          late_users: lateUsers,
          changed_users: recomputed,
          previous_users: previous.users,
        });
        mode = 'full';
        recomputed = undefined;
        sliceBounds = fullRunBounds();
        traitsReady = traitsOf();
        zonesReady = zonesOf(zoneCandidates(lateUsers));
      } else {
        // Slices serve the late users' rescan and the copy of the previous run's
        // rows (a layered previous run's, or everyone's past LAYER_SHARE, below):
        // without either, the one query over the changed users needs none.
        const copiesRows = inheritsRows(previous) || recomputed > (opts.layerShare ?? LAYER_SHARE) * previous.users;
        sliceBounds = lateUsers > 0 || copiesRows ? boundsOf(sql`SELECT user_id FROM ${ident(changed)}`, Promise.resolve(recomputed)) : Promise.resolve([]);
      }
      report(0.1);
      step('changed_users');
    }

    // Incremental runs read the previous rows and the newer events of the users
    // they recompute while the RFM step runs.
    const incremental = mode === 'incremental' ? previous : undefined;
    let previousState: 'cache' | 'rows' | undefined;
    let previousBuyers: 'cache' | 'rows' | undefined;
    const stateRead = incremental
      ? track((async () => {
          created.push(previousRows);
          const onTime = sql`(SELECT user_id FROM ${ident(changed)} WHERE user_id NOT IN ${ident(late)})`;
          const readPrevious = (c?: StateCaches) =>
            ch.exec(previousStateTableSql({ appId, previous: incremental, users: onTime, into: previousRows, ...(c ? { cache: c } : {}) }), {
              timeoutS: 3600,
              settings: { min_insert_block_size_rows: STATE_BLOCK_ROWS },
            });
          const previousRead = previousCaches.then(async ({ state: c }) => {
            previousState = c ? 'cache' : 'rows';
            await readPrevious(c?.caches);
            // A restart since the caches were checked would have emptied them, and
            // their users would read as new: counted again (in memory, at once).
            if (c && !(await cachesStillHold(ch, c))) {
              rlog.warn('a state cache emptied while it was read (a ClickHouse restart?); reading the previous run\'s rows instead');
              previousState = 'rows';
              await ch.exec(sql`DROP TABLE IF EXISTS ${ident(previousRows)}`);
              await readPrevious();
            }
          });
          // The zones once either read is done (a core is free then): started
          // with the reads, their query slowed the critical path's first steps.
          zonesReady = zonesOf(zoneCandidates(lateUsers), Promise.race([previousRead, newRead]).catch(() => undefined));
          await Promise.all([previousRead, newRead]);
        })())
      : Promise.resolve();

    // An incremental run holds the users it recomputes and those the previous run
    // held itself; the rest it inherits from the base run (runRowsSql) — unless
    // that would be most of a run's rows anyway: then it copies every user and
    // becomes a base itself, so layers never grow past a share of the app.
    const held = incremental && inheritsRows(incremental) ? await ownRows(ch, appId, incremental.run_id) : 0;
    const all = incremental ? held + (recomputed ?? 0) > (opts.layerShare ?? LAYER_SHARE) * incremental.users : true;

    // This run's state cache, fed by every insert of its rows from here on.
    const cacheMax = opts.stateCacheMaxUsers ?? stateCacheMaxUsers();
    const caching = track((async () => {
      const users = incremental ? incremental.users + (recomputed ?? 0) : await appUsersOf(ch, appId);
      if (users > cacheMax) {
        rlog.info('too many users to keep a state cache; the next incremental run reads this run\'s rows', { users, state_cache_max_users: cacheMax });
        return false;
      }
      created.push(feed, cache); // the view first: it writes into the cache
      try {
        await ch.exec(stateCacheTableSql(cache));
        await ch.exec(stateCacheFeedSql({ view: feed, cache, appId, runId }));
        return true;
      } catch (e) {
        // A cache only saves the next run time: this run goes on without one.
        rlog.warn('could not set up this run\'s state cache; the next incremental run reads its rows', { error: e });
        for (const t of [feed, cache]) await ch.exec(sql`DROP TABLE IF EXISTS ${ident(t)}`).then(() => untrack(t));
        return false;
      }
    })());

    const rfmReady = track((async () => {
      await ch.exec(buyersTableSql(buyers));
      created.push(buyers);
      // The purchasers, into one Memory table by concurrent inserts: a full run's
      // from purchase_events; an incremental run's are the previous run's, less the
      // previous values of the users it recomputes, plus their new values (from
      // the state read above, or purchase_events for those with a late arrival).
      const t = { timeoutS: 3600 };
      await Promise.all(
        incremental
          ? [
              // Off the critical path, as the rows are written without scores: it
              // waits for the state's reads, which then have the cores to themselves.
              stateRead.then(() => previousCaches).then(({ buyers: c }) => {
                previousBuyers = c ? 'cache' : 'rows';
                return ch.exec(c ? buyersFromCacheSql({ cache: c.table, buyers, compact: c.compact }) : buyersFromPreviousSql({ appId, previous: incremental, buyers }), t);
              }),
              stateRead.then(() => ch.exec(buyersFromStateSql({ previousRows, newEvents, buyers }), t)),
              ...(lateUsers > 0
                ? [
                    ch.exec(buyersFromPreviousSql({ appId, previous: incremental, buyers, takeBack: ident(late) }), t),
                    // Late users are often repaired ones (ingest/repair.ts), whose purchases may have copies.
                    ch.exec(buyersInsertSql({ appId, asOf, buyers, usersIn: ident(late), dedup: true }), t),
                  ]
                : []),
            ]
          : [ch.exec(buyersInsertSql({ appId, asOf, buyers }), t)],
      );
      return rfmThresholds(ch, asOf, sql`SELECT last_purchase_at, purchases_total, revenue_total, sign FROM ${ident(buyers)}`);
    })());

    // The rows, without their scores (SCORES_AT_READ in profiles/sql.ts): written while the RFM step runs.
    const writeRows = async () => {
      await caching;
      const slices = slicesOf((await sliceBounds) ?? []);
      const zones = await zonesReady!;
      const t = { timeoutS: 3600 };
      const fromTimeline = async (usersIn?: Sql) => {
        // A few users (late ones) read their traits' changes with their events.
        const traits = usersIn ? undefined : await traitsReady;
        const scan = { appId, runId, window: w, zones, slices, ...(usersIn ? { usersIn } : {}), ...(traits ? { traits } : {}) };
        await scanTimeline(ch, scan, await planTimelineScan(ch, appId), rlog);
      };
      if (incremental) {
        // The late users first: a check after their reads sees only their rows in the run.
        if (lateUsers > 0) await fromTimeline(ident(late));
        await stateRead;
        await Promise.all([
          // One query, not one per slice: it reads the previous rows' blocks
          // (STATE_BLOCK_ROWS) on every thread, and 18.16 analyses each query's
          // expressions anew (~60 CPU-ms here, whatever the rows). Its blocks are
          // written as they come, a part per STATE_BLOCK_ROWS or more: squashed
          // into one, as an INSERT does by default, the rows are written on one
          // thread only after all are computed; so the write overlaps the fields.
          ch.exec(profilesFromStateSql({ appId, runId, window: w, zones, previousRows, newEvents }), { ...t, settings: { min_insert_block_size_rows: STATE_BLOCK_ROWS } }),
          // Step 3': the users the previous run holds that this run does not recompute.
          ...(all || inheritsRows(incremental) ? slices.map((slice) => ch.exec(profilesFromPreviousSql({ appId, runId, asOf, previous: incremental, all, changed, slice }), t)) : []),
        ]);
      } else {
        await fromTimeline();
      }
    };
    // Both settle before a failure surfaces, so no step still runs when the stage tables are dropped.
    const [written, thresholds] = await Promise.allSettled([writeRows(), rfmReady]);
    if (written.status === 'rejected') throw written.reason;
    if (thresholds.status === 'rejected') throw thresholds.reason;
    let rfm = thresholds.value;
    report(0.9);
    step(incremental ? 'state_rows_and_rfm_scores' : 'scan_and_rfm_scores');
    if (!incremental) {
      const check = await ch.one<{ copies: number | string }>(buyersCountedCopiesSql({ appId, runId, buyers }));
      if (Number(check?.copies ?? 0) === 1) {
        // Rare (a copy an ingest repair or a race left, not merged yet). The rows
        // count each purchase once; only the thresholds are read again.
        rlog.warn('purchase_events holds copies not merged yet: recomputing the RFM thresholds without them');
        await ch.exec(sql`TRUNCATE TABLE ${ident(buyers)}`);
        await ch.exec(buyersInsertSql({ appId, asOf, buyers, dedup: true }), { timeoutS: 3600 });
        rfm = await rfmThresholds(ch, asOf, sql`SELECT last_purchase_at, purchases_total, revenue_total, sign FROM ${ident(buyers)}`);
        step('rfm_scores_again');
      }
    }
    // The buyers table outlives the run as its buyers cache only if it holds what
    // the run's rows hold: the next run takes back values read from those rows.
    // A full run reads its purchasers and its rows at once, so purchases stored
    // meanwhile can reach one only; a late user's come from purchase_events too.
    const match = incremental ? undefined : await ch.one<{ same: number | string }>(buyersMatchRowsSql({ appId, runId, buyers }));
    const buyersKept = incremental ? lateUsers === 0 : Number(match?.same ?? 0) === 1;
    if (!buyersKept) rlog.info('the run\'s purchasers differ from its rows (purchases stored while it ran, or late users); the next incremental run reads its rows', { late_users: lateUsers, ...match });
    // Every row is written: the cache stops taking inserts, and outlives the run.
    const cached = await caching;
    if (cached) {
      await ch.exec(sql`DROP TABLE IF EXISTS ${ident(feed)}`);
      untrack(feed);
    }
    // A run that wrote every user is its own base.
    const layer: RunLayer = { base_run_id: incremental && !all ? (incremental.layer?.base_run_id ?? incremental.run_id) : runId, as_of: asOf, rfm: storedThresholds(rfm) };
    report(0.95);

    // Before the run is published, so no reader sees one of its users without a cluster
    // while a model exists. A model that cannot assign leaves the profiles valid: warn, go on.
    const clustered = await assignNewUsers(ch, appId, { run_id: runId, layer }).catch((e: unknown) => {
      rlog.warn('could not assign new users to the latest cluster model; run a cluster job (warbler clusters) to retrain', { error: e });
      return 0;
    });
    step('assign_clusters');

    // An incremental run holds the previous run's users and the users it
    // recomputed that the previous run did not have: on time, those with no
    // previous row; late, counted by usersOf.
    const [users] = await Promise.all([
      incremental && lateUsers === 0
        ? ch
            .one<{ n: string }>(sql`SELECT count() AS n FROM ${ident(newEvents)} WHERE user_id NOT IN (SELECT user_id FROM ${ident(previousRows)})`)
            .then((r) => incremental.users + Number(r?.n ?? 0))
        : usersOf(ch, appId, { run_id: runId, layer }),
      // Before the run is complete: no reader sees it without its layer.
      ch.insert('profile_run_layers', [
        { app_id: appId, run_id: runId, base_run_id: layer.base_run_id, as_of: Math.floor(asOf.getTime() / 1000), rfm_r: layer.rfm.r.map(String), rfm_f: layer.rfm.f.map(String), rfm_m: layer.rfm.m.map(String) },
      ]),
    ]);
    await runRow('complete', { users, mode, previous: previous?.run_id ?? '', finished: true });
    runZones.set(appId, { runId, names: (await zonesReady!).names });
    // The caches outlive the run, for the next incremental one.
    untrack(cache);
    if (buyersKept) untrack(buyers);
    const result: BuildResult = {
      run_id: runId,
      as_of: isoSeconds(asOf),
      users,
      mode,
      seconds: +((performance.now() - t0) / 1000).toFixed(3),
      steps,
    };
    if (previous && mode === 'incremental') {
      result.previous_run_id = previous.run_id;
      if (recomputed !== undefined) result.recomputed_users = recomputed;
      if (layer.base_run_id !== runId) result.base_run_id = layer.base_run_id;
      if (previousState) result.previous_state = previousState;
      if (previousBuyers) result.previous_buyers = previousBuyers;
    }
    if (clustered > 0) result.clustered_users = clustered;
    rlog.info('profile run complete', { ...result });
    await dropSupersededRuns(ch, appId, runId, opts.keepPreviousRuns ?? 2, opts.keepRecentS ?? RUN_READ_GRACE_S).catch((e) =>
      rlog.warn('could not drop old profile runs', { error: e }),
    );
    await dropAbandonedStageTables(ch).catch((e) => rlog.warn('could not drop abandoned stage tables', { error: e }));
    await dropStaleStateCaches(ch, appId, [runId, layer.base_run_id]).catch((e) => rlog.warn('could not drop stale state caches', { error: e }));
    report(1);
    return result;
  } catch (err) {
    await ch.exec(sql`ALTER TABLE profiles DROP PARTITION (${appId}, ${runId})`).catch(() => undefined);
    await runRow('failed', { mode, finished: true }).catch(() => undefined);
    throw err;
  } finally {
    await Promise.all(inflight);
    // The feed before the cache it writes into (created holds them in that order):
    // a materialized view whose target is gone fails every insert into profiles.
    let feedLeft = false;
    for (const t of created) {
      if (t === cache && feedLeft) {
        rlog.warn('kept this run\'s state cache: its feed could not be dropped; a later run drops both', { table: t });
        continue;
      }
      await ch.exec(sql`DROP TABLE IF EXISTS ${ident(t)}`).catch((e) => {
        if (t === feed) feedLeft = true;
        rlog.warn('could not drop stage table', { table: t, error: e });
      });
    }
  }
}

type Zones = Parameters<typeof profilesFromTimelineSql>[0]['zones'];

/** profilesFromTimelineSql's inputs but the read itself (merged, unwritten), over every slice. */
type TimelineScan = Omit<Parameters<typeof profilesFromTimelineSql>[0], 'slice' | 'merged' | 'unwritten'> & { slices: UserSlice[] };

/**
 * How step 3 reads user_timeline (MergedPartRead): the merged part holding
 * most of the app's rows without FINAL, with the app's rows in other parts
 * joined on when there are any; with FINAL when no part is merged.
 */
export async function planTimelineScan(ch: ClickHouse, appId: string): Promise<MergedPartRead | undefined> {
  const parts = await appParts(ch, 'user_timeline', appId);
  const part = largestMergedPart(parts);
  return part === undefined ? undefined : { part, others: parts.some((x) => x.name !== part) };
}

/** Step 3 from user_timeline as planned, one query per slice at once; resolves once every user read has a row. */
export async function scanTimeline(ch: ClickHouse, p: TimelineScan, plan: MergedPartRead | undefined, rlog = log): Promise<{ reread: boolean }> {
  const t = { timeoutS: 3600 };
  const { slices, ...common } = p;
  const scan = (extra: Partial<Parameters<typeof profilesFromTimelineSql>[0]>) =>
    Promise.all(slices.map((slice) => ch.exec(profilesFromTimelineSql({ ...common, slice, ...extra }), t)));
  await scan(plan ? { merged: plan } : {});
  // With other parts joined on, the read is complete whatever merges ran (MergedPartRead).
  if (!plan || plan.others || (await partActive(ch, 'user_timeline', plan.part))) return { reread: false };
  // Merged away, maybe before the read began: it found none of the part's rows.
  rlog.info('the merged timeline part was replaced while being read; reading the users still without a row with FINAL', { part: plan.part });
  await scan({ unwritten: true });
  return { reread: true };
}

/** An active part of a table with the app's rows in it (appPartsSql). */
type PartRow = { name: string; level: number | string; rows: number | string };

function appParts(ch: ClickHouse, table: PerUserTable, appId: string): Promise<PartRow[]> {
  return ch.rows<PartRow>(appPartsSql(table, appId));
}

async function partActive(ch: ClickHouse, table: PerUserTable, part: string): Promise<boolean> {
  return Number((await ch.one<{ n: string }>(partActiveSql(table, part)))?.n ?? 0) > 0;
}

/**
 * The merged part of user_context_traits with the most of the app's rows, for
 * contextTableSql to read as it is, if it holds at least twice the rows of the
 * other parts; else none (FINAL). In ClickHouse 18.16 grouping a user's rows
 * of max(String) states costs several times what FINAL does, so a part that
 * leaves most rows to be grouped (after a bulk load, before merges catch up)
 * is slower than FINAL over all of them.
 */
export async function planContextRead(ch: ClickHouse, appId: string): Promise<string | undefined> {
  const parts = await appParts(ch, 'user_context_traits', appId);
  const part = largestMergedPart(parts);
  const inPart = Number(parts.find((x) => x.name === part)?.rows ?? 0);
  const inOthers = parts.reduce((n, x) => n + (x.name === part ? 0 : Number(x.rows)), 0);
  return part !== undefined && inPart >= 2 * inOthers ? part : undefined;
}

/**
 * contextTableSql's table, from the planned part (with FINAL when none), one
 * query per slice at once; again with FINAL when the part was merged away
 * before the read may have found it.
 */
export async function buildContextTable(
  ch: ClickHouse,
  p: Omit<Parameters<typeof contextInsertSql>[0], 'part' | 'slice'> & { slices?: UserSlice[] },
  part: string | undefined,
  rlog = log,
): Promise<{ reread: boolean }> {
  const t = { timeoutS: 3600 };
  const { slices = slicesOf([]), ...common } = p;
  const read = (from?: string) => Promise.all(slices.map((slice) => ch.exec(contextInsertSql({ ...common, slice, ...(from === undefined ? {} : { part: from }) }), t)));
  await ch.exec(contextTableSql(p.into));
  await read(part);
  if (part === undefined || (await partActive(ch, 'user_context_traits', part))) return { reread: false };
  rlog.info('the merged context traits part was replaced while being read; reading them again with FINAL', { part });
  await ch.exec(sql`TRUNCATE TABLE ${ident(p.into)}`);
  await read();
  return { reread: true };
}

/** The merged (level > 0) part with the most of the app's rows, if any. */
export function largestMergedPart(parts: readonly PartRow[]): string | undefined {
  return [...parts].filter((x) => Number(x.level) > 0).sort((a, b) => Number(b.rows) - Number(a.rows))[0]?.name;
}

/** The users a run reads: its own rows, plus its base's rows of users it does not hold (counted without reading the rows). */
async function usersOf(ch: ClickHouse, appId: string, run: RunRef): Promise<number> {
  if (!run.layer || !inheritsRows(run)) return ownRows(ch, appId, run.run_id);
  const base = run.layer.base_run_id;
  const row = await ch.one<{ n: string }>(sql`SELECT (SELECT count() FROM profiles WHERE app_id = ${appId} AND run_id = ${run.run_id})
    + (SELECT count() FROM profiles WHERE app_id = ${appId} AND run_id = ${base})
    - (SELECT count() FROM profiles WHERE app_id = ${appId} AND run_id = ${base}
         AND user_id IN (SELECT user_id FROM profiles WHERE app_id = ${appId} AND run_id = ${run.run_id})) AS n`);
  return Number(row?.n ?? 0);
}

async function ownRows(ch: ClickHouse, appId: string, runId: string): Promise<number> {
  return Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM profiles WHERE app_id = ${appId} AND run_id = ${runId}`))?.n ?? 0);
}

/** The thresholds a score reaches, as stored for a layer: absent ones (no purchaser scores that high) left out. */
function storedThresholds(rfm: RfmThresholds): RfmThresholds {
  const defined = (ts: (bigint | undefined)[]) => ts.filter((t): t is bigint => t !== undefined);
  return { r: defined(rfm.r), f: defined(rfm.f), m: defined(rfm.m) };
}

/**
 * Per app, the zones of its latest run built by this process: every zone its
 * rows can hold (a full run's are every zone its users ever had; an
 * incremental run's, its previous run's and those set since, or every zone).
 * The next incremental run starts from them, at once, rather than waiting for
 * its users' rows to find theirs.
 */
const runZones = new Map<string, { runId: string; names: readonly string[] }>();

// Each zone's tabulated spans, newest first: tabulating is a query of ~0.1–0.2
// s, and scheduled runs minutes or hours apart need spans inside one tabulation.
const zoneSpans = new Map<string, { from: number; to: number; start: number; changes: { at: number; off: number }[] }[]>();
const ZONE_SPANS_KEPT = 8;
/**
 * How far past a run's span its zones are tabulated, so the runs of the next
 * days find their span inside (a table keyed on the span itself missed at each
 * midnight: a run an hour after one on the day before tabulated again).
 */
const ZONE_SPAN_AHEAD_S = 7 * DAY_S;

/**
 * The zones among `candidates` (a query of `value`s; default: every timezone the
 * app's users ever had) that ClickHouse can load, 'UTC' among them, with their
 * offsets over the 90d window.
 */
export async function zonesAt(ch: ClickHouse, appId: string, w: Window, candidates: Sql = timezoneCandidatesSql(appId)): Promise<Zones> {
  const values = await ch.rows<{ value: string }>(candidates);
  const names = [...new Set([...(await validTimezones(ch, values.map((r) => r.value))), 'UTC'])].sort();
  // The span: from the start of the window's first UTC day to two days after
  // as_of's. The offset at any instant from a table's start on is its start
  // offset plus the changes up to that instant, so a table serves every span
  // inside its own.
  const from = Math.floor((w.d90.getTime() / 1000 + 1) / DAY_S) * DAY_S;
  const to = (Math.floor(w.asOf.getTime() / 1000 / DAY_S) + 2) * DAY_S;
  const spanOf = (zone: string) => zoneSpans.get(zone)?.find((s) => s.from <= from && s.to >= to);
  const missing = names.filter((z) => !spanOf(z));
  if (missing.length > 0) {
    const ahead = to + ZONE_SPAN_AHEAD_S;
    const tabulated = zoneOffsets(missing, from, ahead);
    missing.forEach((z, i) => {
      const spans = zoneSpans.get(z) ?? [];
      spans.unshift({ from, to: ahead, start: tabulated.start[i]!, changes: tabulated.changes[i]! });
      zoneSpans.set(z, spans.slice(0, ZONE_SPANS_KEPT));
    });
  }
  const own = names.map((z) => offsetsWithin(spanOf(z)!, from, to));
  return { names, offsets: { start: own.map((o) => o.start), changes: own.map((o) => o.changes) } };
}

/** The RFM thresholds (see RfmThresholds) of `purchasers`: rows of last_purchase_at, purchases_total, revenue_total. */
async function rfmThresholds(ch: ClickHouse, asOf: Date, purchasers: Sql): Promise<RfmThresholds> {
  // Three small queries over the same purchasers, at once.
  const [r, f, m] = await Promise.all(
    (['r', 'f', 'm'] as const).map(async (metric) =>
      thresholdsFromFloors(await ch.rows<{ score: number; v: string }>(rfmScoreFloorsSql({ metric, asOf, purchasers }), { timeoutS: 3600 })),
    ),
  );
  return { r: r!, f: f!, m: m! };
}

/**
 * The profile of one user who has events but no row in the latest run (new
 * since it ran), computed now by the job's own SQL at `asOf` (default now) into
 * a throw-away table: RFM scores among all the app's purchasers at that instant.
 * Undefined when the user has no event up to asOf. Costs one pass over the app's
 * purchases, so it is for the rare miss, not for every read.
 */
export async function liveProfile(ch: ClickHouse, appId: string, userId: string, asOf: Date = new Date()): Promise<Profile | undefined> {
  const w = windowOf(asOf);
  const seen = await ch.one<{ n: string }>(sql`SELECT count() AS n FROM events WHERE app_id = ${appId} AND user_id = ${userId} AND ts <= ${w.asOf}`);
  if (!Number(seen?.n ?? 0)) return undefined;
  return withLiveRows(ch, appId, [userId], w.asOf, async (table) => {
    const row = (await ch.rows<ProfileRow>(sql`SELECT ${PROFILE_SELECT} FROM ${ident(table)}`))[0];
    if (!row) return undefined;
    const profile = await withTagsAndCluster(ch, appId, userId, row);
    // Not assigned yet (the next run will): the nearest cluster under the latest model, as that run would give it.
    const model = profile.cluster === null ? await latestModel(ch, appId) : null;
    if (model) {
      const c = await ch.one<{ cluster: number; label: string }>(
        sql`SELECT cluster, ${clusterLabelSql(model, raw('cluster'))} AS label FROM (SELECT ${nearestClusterSql(model)} AS cluster FROM ${ident(table)})`,
      );
      if (c) Object.assign(profile, { cluster: Number(c.cluster), cluster_label: c.label });
    }
    return profile;
  });
}

/**
 * Rows, as a run holds them, for users with events up to `asOf` but no row in
 * the run a read uses (new since it ran, or stored after it was built),
 * computed by the job's own SQL at `asOf` into a throw-away table that `read`
 * reads: RFM scores among all the app's purchasers at that instant. Users
 * without an event up to asOf get no row. Costs one pass over the app's
 * purchases, so it is for the members a run misses, not for every read.
 */
export async function withLiveRows<T>(ch: ClickHouse, appId: string, userIds: readonly string[], asOf: Date, read: (table: string) => Promise<T>): Promise<T> {
  const table = await createLiveRows(ch, appId, tuple(userIds), asOf);
  try {
    return await read(table);
  } finally {
    await dropLiveRows(ch, table);
  }
}

/**
 * withLiveRows' table for the users of `usersIn` (a subquery or tuple of
 * user ids), for a reader that outlives one call (an export's stream): the
 * caller drops it with dropLiveRows once done.
 */
export async function createLiveRows(ch: ClickHouse, appId: string, usersIn: Sql, asOf: Date): Promise<string> {
  const w = windowOf(asOf);
  const [zones, rfm] = await Promise.all([zonesAt(ch, appId, w), rfmThresholds(ch, w.asOf, purchasersSql({ appId, asOf: w.asOf, dedup: true }))]);
  const table = `profile_live_${newRunId(new Date())}`;
  await ch.exec(sql`CREATE TABLE ${ident(table)} AS profiles ENGINE = Memory`);
  try {
    await ch.exec(profilesFromTimelineSql({ appId, runId: '', window: w, zones, rfm, usersIn, into: table }));
  } catch (e) {
    await dropLiveRows(ch, table);
    throw e;
  }
  return table;
}

/**
 * Live rows (createLiveRows) for the members of `members` (a `SELECT user_id`)
 * that `run` does not hold, or undefined when it holds them all. The members
 * are found once, into a Memory table, rather than evaluated again in the
 * live rows' query.
 */
export async function liveRowsOfMissing(ch: ClickHouse, appId: string, p: { members: Sql; run: RunRef; asOf: Date }): Promise<string | undefined> {
  const missing = `profile_missing_${newRunId(new Date())}`;
  await ch.exec(sql`CREATE TABLE ${ident(missing)} ENGINE = Memory AS
SELECT user_id FROM (${p.members}) WHERE user_id NOT IN (SELECT user_id FROM (${runRowsSql(appId, p.run, sql``, { scores: false })}))`);
  try {
    const n = Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM ${ident(missing)}`))?.n ?? 0);
    return n === 0 ? undefined : await createLiveRows(ch, appId, sql`(SELECT user_id FROM ${ident(missing)})`, p.asOf);
  } finally {
    await dropLiveRows(ch, missing);
  }
}

export async function dropLiveRows(ch: ClickHouse, table: string): Promise<void> {
  await ch.exec(sql`DROP TABLE IF EXISTS ${ident(table)}`).catch((e) => log.warn('could not drop a live profile table', { table, error: e }));
}

async function findSliceBounds(ch: ClickHouse, users: Sql, n: number, sampleEvery: number): Promise<string[]> {
  return (await ch.one<{ bounds: string[] }>(sliceBoundsSql({ users, n, sampleEvery })))?.bounds ?? [];
}

async function appUsersOf(ch: ClickHouse, appId: string): Promise<number> {
  return Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM app_users WHERE app_id = ${appId}`))?.n ?? 0);
}

/**
 * Keeps the new run, the `keep` latest other complete runs at or before now,
 * up to RECENT_RUNS_KEPT complete runs finished less than `graceS` ago, and the
 * base runs of all these. Takes the other complete runs out of reading in two
 * steps: first marked `superseded` (no reader picks them any more), their rows
 * dropped once they have been so for `graceS`, so that a reader that picked one
 * just before finds its rows. Failed and abandoned runs are dropped at once, and
 * with `graceS` 0 everything is. Returns the runs it marked or dropped.
 */
export async function dropSupersededRuns(ch: ClickHouse, appId: string, currentRunId: string, keep: number, graceS = RUN_READ_GRACE_S): Promise<string[]> {
  const runs = await listRuns(ch, appId);
  const others = runs.filter((r) => r.run_id !== currentRunId && r.state !== 'dropped');
  const complete = others.filter((r) => r.state === 'complete');
  const now = Date.now();
  const within = (r: ProfileRun) => graceS > 0 && now - r.finished_at.getTime() < graceS * 1000;
  // A run for a future instant is nobody's latest yet: it does not take a kept place.
  const latest = complete.filter((r) => r.as_of.getTime() <= now).slice(0, keep);
  // A run built for one segment evaluation (profiles/run-at.ts), at a past instant, is
  // never among the latest: kept a while for that evaluation, its export or snapshot.
  // At most RECENT_RUNS_KEPT (the newest finished): a client walking many instants must not keep a copy per instant.
  const recent = complete.filter(within).sort((a, b) => b.finished_at.getTime() - a.finished_at.getTime()).slice(0, RECENT_RUNS_KEPT);
  const kept = [...runs.filter((x) => x.run_id === currentRunId), ...latest, ...recent];
  // Superseded runs still in their grace may be read: their bases stay too.
  const stillRead = others.filter((r) => r.state === 'superseded' && within(r));
  const keepIds = new Set(kept.map((r) => r.run_id));
  // A layered run reads its base's rows: the base stays while such a run does.
  for (const r of [...kept, ...stillRead]) if (r.layer) keepIds.add(r.layer.base_run_id);
  const staleBefore = now - STALE_RUN_S * 1000;
  const out = others.filter(
    (r) => !keepIds.has(r.run_id) && (r.state === 'complete' || r.state === 'failed' || r.state === 'superseded' || r.started_at.getTime() < staleBefore),
  );
  const taken: string[] = [];
  for (const r of out) {
    if (r.state === 'superseded' && within(r)) continue;
    const mark = r.state === 'complete' && graceS > 0;
    if (!mark) await ch.exec(sql`ALTER TABLE profiles DROP PARTITION (${appId}, ${r.run_id})`);
    await ch.insert('profile_runs', [
      {
        app_id: appId,
        run_id: r.run_id,
        as_of: Math.floor(r.as_of.getTime() / 1000),
        mode: r.mode,
        state: mark ? 'superseded' : 'dropped',
        users: r.users,
        started_at: Math.floor(r.started_at.getTime() / 1000),
        // profile_runs replaces by finished_at: this row must carry a later second
        // than the run's own rows, or a merge could bring the run back as complete
        // (a run finishing in its first second is stamped a second ahead). A
        // superseded run's finished_at is so the time it was marked.
        finished_at: Math.max(Math.floor(now / 1000), Math.floor(r.finished_at.getTime() / 1000) + 1),
        previous_run_id: r.previous_run_id,
        state_format: r.state_format,
      },
    ]);
    taken.push(r.run_id);
  }
  return taken;
}

/** The profile job through the job registry (API, scheduler, CLI): one per app at a time, persisted, in process. */
export function startProfileJob(
  ch: ClickHouse,
  appId: string,
  params: { asOf?: Date; mode?: ProfileMode } = {},
  opts: StartJobOptions = {},
): Promise<{ job_id: string }> {
  const recorded = { ...(params.asOf ? { as_of: isoSeconds(params.asOf) } : {}), mode: params.mode ?? 'incremental' };
  return startJob(ch, appId, 'profiles', recorded, (report) => buildProfiles(ch, appId, { ...params, onProgress: report }), opts);
}

/** The name of a run's state cache (stateCacheTableSql). */
export function stateCacheName(runId: string): string {
  return `profile_state_${runId}`;
}

/** The name of the materialized view that fills a run's state cache while it writes (stateCacheFeedSql). */
export function stateFeedName(runId: string): string {
  return `profile_statefeed_${runId}`;
}

/** The name of a run's buyers cache (buyersTableSql). */
export function buyersCacheName(runId: string): string {
  return `profile_buyercache_${runId}`;
}

interface PreviousCaches {
  /** The state caches and the rows each held when checked. */
  state?: { caches: StateCaches; rows: Map<string, number> };
  buyers?: { table: string; compact: boolean };
}

/** Whether the state caches still hold the rows they held when checked (a ClickHouse restart empties them). */
async function cachesStillHold(ch: ClickHouse, c: NonNullable<PreviousCaches['state']>): Promise<boolean> {
  for (const [table, rows] of c.rows) {
    const n = await ch.one<{ n: string }>(sql`SELECT count() AS n FROM ${ident(table)}`);
    if (Number(n?.n ?? -1) !== rows) return false;
  }
  return true;
}

/**
 * The caches an incremental run from `previous` can read: the state caches
 * of the previous run and, when it is layered, of its base, if each exists
 * and holds all its run's rows; the previous run's buyers cache, if it exists
 * and is not empty. Both are Memory tables: a ClickHouse restart empties them.
 */
async function cachesOf(ch: ClickHouse, appId: string, previous: ProfileRun, rlog = log, readState = true): Promise<PreviousCaches> {
  const base = previous.layer && previous.layer.base_run_id !== previous.run_id ? previous.layer.base_run_id : undefined;
  const runs = [previous.run_id, ...(base ? [base] : [])];
  const names = runs.map(stateCacheName);
  const buyers = buyersCacheName(previous.run_id);
  const existing = new Set(
    (await ch.rows<{ name: string }>(sql`SELECT name FROM system.tables WHERE database = currentDatabase() AND name IN ${tuple([...names, buyers])}`)).map((r) => r.name),
  );
  const [complete, counted] = await Promise.all([
    names.every((n) => existing.has(n))
      ? Promise.all(runs.map(async (runId) => (await ch.one<{ complete: number | string; rows: string }>(stateCacheCompleteSql({ appId, runId, cache: stateCacheName(runId) }))) ?? { complete: 0, rows: '0' }))
      : undefined,
    existing.has(buyers) ? ch.one<{ rows: string; purchasers: string }>(sql`SELECT count() AS rows, sum(sign) AS purchasers FROM ${ident(buyers)}`) : undefined,
  ]);
  const out: PreviousCaches = {};
  if (complete?.every((c) => Number(c.complete) === 1) && readState) {
    out.state = { caches: { own: names[0]!, ...(base ? { base: names[1]! } : {}) }, rows: new Map(names.map((n, i) => [n, Number(complete[i]!.rows)])) };
  } else if (complete && readState) rlog.info('a state cache does not hold all its run\'s rows (a ClickHouse restart empties it); reading the previous run\'s rows instead', { runs });
  const rows = Number(counted?.rows ?? 0);
  if (rows > 0) out.buyers = { table: buyers, compact: rows > 2 * Number(counted?.purchasers ?? 0) };
  return out;
}

/**
 * Drops the app's state and buyers caches but those of `keep` and of the
 * latest complete run at or before now and its base: the next incremental run
 * builds on that one (one at an earlier as_of reads the rows of the run it
 * builds on). While a run of the app may still be running in another process
 * (started less than STALE_RUN_S ago), only its own caches are at stake, but
 * which run it builds on is not recorded until it completes: then nothing but
 * orphans is dropped. Orphans are caches of runs with no record in
 * profile_runs at all (a run records itself before it creates any). A feed is
 * always dropped before its cache, and a cache whose feed cannot be dropped is
 * kept: a materialized view whose target is gone fails every insert into profiles.
 */
export async function dropStaleStateCaches(ch: ClickHouse, appId: string, keep: readonly string[]): Promise<string[]> {
  const runs = await listRuns(ch, appId);
  const now = Date.now();
  const kept = new Set(keep);
  const latest = runs.find((r) => r.state === 'complete' && r.as_of.getTime() <= now);
  if (latest) {
    kept.add(latest.run_id);
    if (latest.layer) kept.add(latest.layer.base_run_id);
  }
  const othersRunning = runs.some((r) => r.state === 'running' && !kept.has(r.run_id) && now - r.started_at.getTime() < STALE_RUN_S * 1000);
  const stale = new Set(othersRunning ? [] : runs.filter((r) => !kept.has(r.run_id)).map((r) => r.run_id));
  const tables = await ch.rows<{ name: string; run_id: string; orphan: number | string }>(sql`
    SELECT name, run_id, run_id NOT IN (SELECT run_id FROM profile_runs) AS orphan FROM (
      SELECT name, replaceRegexpOne(name, '^profile_(state|buyercache|statefeed)_', '') AS run_id
      FROM system.tables WHERE database = currentDatabase() AND match(name, '^profile_(state|buyercache|statefeed)_r')
    )`);
  const byRun = new Map<string, string[]>();
  for (const t of tables) if (stale.has(t.run_id) || Number(t.orphan) === 1) byRun.set(t.run_id, [...(byRun.get(t.run_id) ?? []), t.name]);
  const dropped: string[] = [];
  for (const [runId, names] of byRun) {
    const feed = stateFeedName(runId);
    if (names.includes(feed)) {
      try {
        await ch.exec(sql`DROP TABLE IF EXISTS ${ident(feed)}`);
        dropped.push(feed);
      } catch (e) {
        log.warn('could not drop a leftover state cache feed; keeping its cache', { table: feed, error: e });
        continue;
      }
    }
    for (const name of names.filter((n) => n !== feed)) {
      await ch.exec(sql`DROP TABLE IF EXISTS ${ident(name)}`);
      dropped.push(name);
    }
  }
  return dropped;
}

/** Stage tables of runs that died without their `finally` (a killed process), a day later. */
export async function dropAbandonedStageTables(ch: ClickHouse): Promise<string[]> {
  const rows = await ch.rows<{ name: string }>(sql`
    SELECT name FROM system.tables
    WHERE database = currentDatabase() AND match(name, '^profile_(stage0|buyers|changed|late|live|missing|prev|new|traits|context|rfm_[rfm])_r[0-9]{14}_[0-9a-f]{8}$')
      AND metadata_modification_time < now() - ${STALE_RUN_S}`);
  for (const r of rows) await ch.exec(sql`DROP TABLE IF EXISTS ${ident(r.name)}`);
  return rows.map((r) => r.name);
}
