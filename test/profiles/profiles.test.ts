// Hand-computed cases (DST days, half-hour zones, invalid zones), the reader,
// tags, run publication and cleanup, and the job registry.
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { getJob, JobConflictError, jobFinished, startJob } from '../../lib/jobs.ts';
import { raw, sql } from '../../lib/sql.ts';
import { liveAssignmentsSql } from '../../profiles/cluster-sql.ts';
import { latestModel, trainClusters } from '../../profiles/clusters-job.ts';
import { buildProfiles, dropStaleStateCaches, dropSupersededRuns, largestMergedPart, RECENT_RUNS_KEPT, startProfileJob, stateCacheMaxUsers } from '../../profiles/job.ts';
import { getProfile, latestRun, listRuns, type ProfileRun } from '../../profiles/read.ts';
import { quintileScore, rfmSegment, segmentTable } from '../../profiles/rfm.ts';
import { boundsSampleEvery, buyersCountedCopiesSql, buyersFromCacheSql, buyersMatchRowsSql, buyersTableSql, recentUsersSql, rfmScoreFloorsSql, runRowsSql, sliceBoundsSql, slicesOf, thresholdsFromFloors } from '../../profiles/sql.ts';
import { appsWithEvents, scheduledMode, startProfileScheduler } from '../../profiles/scheduler.ts';
import { currentTagsSql, nextSeqs, setTag, TagInputError, tagUsers } from '../../profiles/tags.ts';
import { testDatabase } from '../support/env.ts';
import { insertEvents } from './events.ts';
import type { TestEvent } from './reference.ts';

let ch: ClickHouse;
beforeAll(async () => {
  ch = await testDatabase('wprof2');
});

const S = (iso: string) => Date.parse(iso) / 1000;
let n = 0;
const track = (user_id: string, iso: string, event = 'view', properties: Record<string, unknown> = {}, context: Record<string, string> = {}): TestEvent => ({
  event_id: `e${String(n++).padStart(6, '0')}`, user_id, ts: S(iso), type: 'track', event, properties, traits: {}, context, received_at: S('2026-11-01T00:00:00Z'),
});
const identify = (user_id: string, iso: string, traits: TestEvent['traits']): TestEvent => ({
  event_id: `e${String(n++).padStart(6, '0')}`, user_id, ts: S(iso), type: 'identify', event: '', properties: {}, traits, context: {}, received_at: S('2026-11-01T00:00:00Z'),
});

describe('best_hour in the user own time zone', () => {
  it('counts local hours across DST changes, half-hour zones and invalid names', async () => {
    const app = 'dst';
    const asOf = new Date('2026-04-10T00:00:00Z');
    await insertEvents(ch, app, [
      // New York springs forward 2026-03-08 07:00Z: 06:30Z is 01:30 EST, 07:30Z and 07:45Z are 03:xx EDT.
      identify('ny', '2026-01-01T00:00:00Z', { timezone: 'America/New_York' }),
      track('ny', '2026-03-08T06:30:00Z'), track('ny', '2026-03-08T07:30:00Z'), track('ny', '2026-03-08T07:45:00Z'),
      // Berlin springs forward 2026-03-29 01:00Z: 00:30Z is 01:30 CET; 01:30Z, 01:45Z are 03:xx CEST; 02:30Z is 04:30.
      identify('be', '2026-01-01T00:00:00Z', { timezone: 'Europe/Berlin' }),
      track('be', '2026-03-29T00:30:00Z'), track('be', '2026-03-29T01:30:00Z'), track('be', '2026-03-29T01:45:00Z'), track('be', '2026-03-29T02:30:00Z'),
      // Sydney falls back 2026-04-04 16:00Z: 15:30Z is 02:30 AEDT and 16:30Z is 02:30 AEST again; 17:30Z is 03:30.
      identify('sy', '2026-01-01T00:00:00Z', { timezone: 'Australia/Sydney' }),
      track('sy', '2026-04-04T15:30:00Z'), track('sy', '2026-04-04T16:30:00Z'), track('sy', '2026-04-04T17:30:00Z'),
      // Kolkata is +05:30: 00:29:59Z is 05:59:59, 00:30Z and 00:31Z are 06:xx.
      identify('in', '2026-01-01T00:00:00Z', { timezone: 'Asia/Kolkata' }),
      track('in', '2026-03-01T00:29:59Z'), track('in', '2026-03-01T00:30:00Z'), track('in', '2026-03-01T00:31:00Z'),
      // Invalid names count in UTC; the context value is the latest trait and wins.
      identify('bad', '2026-01-01T00:00:00Z', { timezone: 'Europe/Berlin' }),
      track('bad', '2026-03-02T10:00:00Z', 'view', {}, { timezone: 'Mars/Olympus' }), track('bad', '2026-03-03T22:00:00Z'), track('bad', '2026-03-04T22:10:00Z'),
      // Ties go to the smallest hour; events older than 90 days do not count.
      track('tie', '2026-03-01T09:00:00Z'), track('tie', '2026-03-01T04:00:00Z'), track('tie', '2026-01-01T01:00:00Z'),
      identify('none', '2026-03-01T09:00:00Z', { timezone: 'UTC' }),
    ]);
    const run = await buildProfiles(ch, app, { asOf, mode: 'full' });
    const rows = await ch.rows<{ user_id: string; best_hour: number | null; timezone: string | null }>(
      sql`SELECT user_id, best_hour, timezone FROM profiles WHERE app_id = ${app} AND run_id = ${run.run_id} ORDER BY user_id`,
    );
    expect(Object.fromEntries(rows.map((r) => [r.user_id, r.best_hour]))).toEqual({ ny: 3, be: 3, sy: 2, in: 6, bad: 22, tie: 4, none: null });
    expect(rows.find((r) => r.user_id === 'bad')?.timezone).toBe('Mars/Olympus');
  });

  it('counts the day after a DST change at local midnight in the new offset, and posixrules as UTC', async () => {
    const app = 'dst_midnight';
    const asOf = new Date('2026-11-30T00:00:00Z');
    await insertEvents(ch, app, [
      // Santiago goes from -04 to -03 at 2026-09-06 04:00Z (00:00 → 01:00 local): 12:xxZ that day is 09:xx,
      // 11:xxZ four days later 08:xx. 18.16's toHour still gives 08 on the sixth.
      identify('cl', '2026-08-01T00:00:00Z', { timezone: 'America/Santiago' }),
      track('cl', '2026-09-06T12:00:00Z'), track('cl', '2026-09-06T12:10:00Z'), track('cl', '2026-09-06T12:20:00Z'),
      track('cl', '2026-09-10T11:00:00Z'), track('cl', '2026-09-10T11:10:00Z'),
      // posixrules is a tzcode file (a copy of New York), not a zone: UTC.
      identify('px', '2026-11-01T00:00:00Z', { timezone: 'posixrules' }),
      track('px', '2026-11-20T18:30:00Z'), track('px', '2026-11-21T18:30:00Z'),
    ]);
    const run = await buildProfiles(ch, app, { asOf, mode: 'full' });
    const rows = await ch.rows<{ user_id: string; best_hour: number | null }>(sql`SELECT user_id, best_hour FROM profiles WHERE app_id = ${app} AND run_id = ${run.run_id} ORDER BY user_id`);
    expect(Object.fromEntries(rows.map((r) => [r.user_id, r.best_hour]))).toEqual({ cl: 9, px: 18 });
  });
});

describe('RFM rules', () => {
  it('scores by the share of purchasers strictly beaten; the grid covers every score', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((b) => quintileScore(b, 1, 10))).toEqual([1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    expect(quintileScore(0, 1, 1)).toBe(3); // a lone purchaser sits in the middle
    expect(quintileScore(0, 10, 10)).toBe(3); // so does a block of everyone tied
    expect(quintileScore(0, 7, 10)).toBe(2); // 70% tied at the bottom: mid-rank 35%
    expect(quintileScore(7, 3, 10)).toBe(5);
    expect(rfmSegment(5, 5, 5)).toBe('champions');
    expect(rfmSegment(1, 1, 1)).toBe('lost');
    expect(rfmSegment(1, 5, 5)).toBe('cannot_lose');
    expect(rfmSegment(5, 1, 1)).toBe('new_customers');
    expect(new Set(segmentTable().names).size).toBe(11);
    expect(segmentTable().keys).toHaveLength(25);
  });

  it('scores the biggest spenders 5 on revenue past 9.2e12, where an Int64 key of micro-units would wrap', async () => {
    const app = 'whales';
    const asOf = new Date('2026-11-30T00:00:00Z');
    const buy = (u: string, amount: number) => track(u, '2026-11-20T10:00:00Z', 'purchase', { amount });
    await insertEvents(ch, app, [buy('w1', 1e13), buy('w2', 2e13), buy('w3', 9e12), ...Array.from({ length: 12 }, (_, i) => buy(`s${i}`, 10 + i))]);
    const run = await buildProfiles(ch, app, { asOf, mode: 'full' });
    const ref = (await listRuns(ch, app)).find((r) => r.run_id === run.run_id)!;
    const scored = await ch.rows<{ user_id: string; m_score: number }>(sql`SELECT user_id, m_score FROM (${runRowsSql(app, ref)}) WHERE user_id LIKE 'w%' ORDER BY user_id`);
    expect(scored).toEqual([{ user_id: 'w1', m_score: 5 }, { user_id: 'w2', m_score: 5 }, { user_id: 'w3', m_score: 5 }]);
    const latest = await ch.rows<{ user_id: string; m_score: number }>(sql`SELECT user_id, m_score FROM profiles_latest WHERE app_id = ${app} AND user_id LIKE 'w%' ORDER BY user_id`);
    expect(latest).toEqual(scored);
  });
});

describe('job plumbing', () => {
  it('turns the least value of each score into the four thresholds', () => {
    // Scores 1, 3 and 5 occur: a value scores >= 2 and >= 3 from 10, >= 4 and >= 5 from 40.
    expect(thresholdsFromFloors([{ score: 1, v: '-3' }, { score: 3, v: '10' }, { score: 5, v: '40' }])).toEqual([10n, 10n, 40n, 40n]);
    // Everyone tied scores 3: nobody reaches 4 or 5.
    expect(thresholdsFromFloors([{ score: '3', v: '7' }])).toEqual([7n, 7n, undefined, undefined]);
    expect(thresholdsFromFloors([])).toEqual([undefined, undefined, undefined, undefined]);
    // Int64 values beyond 2^53 stay exact.
    expect(thresholdsFromFloors([{ score: 2, v: '9007199254740993' }])[0]).toBe(9007199254740993n);
  });

  it('takes the state cache cap from WARBLER_PROFILE_STATE_CACHE_MAX_USERS, 2,000,000 by default', () => {
    expect(stateCacheMaxUsers({})).toBe(2_000_000);
    expect(stateCacheMaxUsers({ WARBLER_PROFILE_STATE_CACHE_MAX_USERS: '0' })).toBe(0);
    expect(() => stateCacheMaxUsers({ WARBLER_PROFILE_STATE_CACHE_MAX_USERS: 'lots' })).toThrow();
  });

  it('reads without FINAL only a merged part, the largest', () => {
    // An inserted part (level 0) can hold several rows of a user, however large it is.
    expect(largestMergedPart([{ name: 'all_9_9_0', level: 0, rows: 900 }, { name: 'all_1_4_2', level: '2', rows: '500' }, { name: 'all_5_8_1', level: 1, rows: 600 }])).toBe('all_5_8_1');
    expect(largestMergedPart([{ name: 'all_9_9_0', level: 0, rows: 900 }])).toBeUndefined();
    expect(largestMergedPart([])).toBeUndefined();
  });

  it('cuts the users into slices that cover every user_id exactly once', () => {
    expect(slicesOf([])).toEqual([{}]);
    expect(slicesOf([''])).toEqual([{}]);
    expect(slicesOf(['m'])).toEqual([{ to: 'm' }, { from: 'm' }]);
    // Duplicates (few active users) collapse; bounds sort in byte order, as ClickHouse compares strings.
    expect(slicesOf(['u9', 'u10', 'u9', 'ä'])).toEqual([{ to: 'u10' }, { from: 'u10', to: 'u9' }, { from: 'u9', to: 'ä' }, { from: 'ä' }]);
  });

  it('cuts at quantiles of the recently active users, or of a hash sample of them in a large app', async () => {
    const app = 'bounds';
    const asOf = new Date('2026-06-01T00:00:00Z');
    const users = Array.from({ length: 400 }, (_, i) => `b${String(i).padStart(3, '0')}`);
    // Active in the 7 days before as_of: all but the last 100 (seen 8 days before only).
    await insertEvents(ch, app, users.map((u, i) => track(u, i < 300 ? '2026-05-28T12:00:00Z' : '2026-05-24T00:00:00Z')));
    const bounds = async (sampleEvery: number) => (await ch.one<{ bounds: string[] }>(sliceBoundsSql({ users: recentUsersSql(app, asOf), n: 4, sampleEvery })))!.bounds;
    expect(await bounds(1)).toEqual(['b075', 'b150', 'b225']);
    const sample = await ch.rows<{ user_id: string }>(sql`SELECT user_id FROM (SELECT arrayJoin(${users.slice(0, 300)}) AS user_id) WHERE cityHash64(user_id) % 5 = 0 ORDER BY user_id`);
    const s = sample.map((r) => r.user_id);
    expect(s.length).toBeGreaterThan(30);
    expect(await bounds(5)).toEqual([1, 2, 3].map((k) => s[Math.floor((s.length * k) / 4)]));
    expect(boundsSampleEvery(3000, 2)).toBe(1);
    expect(boundsSampleEvery(848_327, 2)).toBe(212);
  });
});

describe('buyers cache', () => {
  it('copies a buyers cache, compacted or not, into purchasers that rank alike', async () => {
    await ch.exec(sql`DROP TABLE IF EXISTS bc_cache`);
    await ch.exec(buyersTableSql('bc_cache'));
    // Two runs' worth of changes: values taken back (-1) and re-added, equal values, one purchaser gone.
    const row = (lp: string, pt: number, rt: number, sign: number) => ({ last_purchase_at: lp, purchases_total: pt, revenue_total: rt, sign });
    await ch.insert('bc_cache', [
      row('2026-05-01 10:00:00', 1, 10.5, 1), row('2026-05-01 10:00:00', 1, 10.5, 1), row('2026-05-02 00:00:00', 3, 99.99, 1),
      row('2026-05-03 00:00:00', 2, 20, 1), row('2026-05-03 00:00:00', 2, 20, -1), row('2026-05-20 00:00:00', 3, 25, 1),
      row('2026-05-02 00:00:00', 3, 99.99, -1), row('2026-05-21 00:00:00', 4, 120.01, 1), row('2026-04-01 00:00:00', 1, 5, 1),
      // More equal rows than an Int8 counts.
      ...Array.from({ length: 200 }, () => row('2026-05-10 00:00:00', 2, 40, 1)),
    ]);
    const asOf = new Date('2026-06-01T00:00:00Z');
    const ranked = async (table: string) => {
      const out: Record<string, unknown> = {};
      for (const metric of ['r', 'f', 'm'] as const) {
        out[metric] = await ch.rows(rfmScoreFloorsSql({ metric, asOf, purchasers: sql`SELECT last_purchase_at, purchases_total, revenue_total, sign FROM ${raw(table)}` }));
      }
      return out;
    };
    const want = await ranked('bc_cache');
    for (const compact of [false, true]) {
      await ch.exec(sql`DROP TABLE IF EXISTS bc_copy`);
      await ch.exec(buyersTableSql('bc_copy'));
      await ch.exec(buyersFromCacheSql({ cache: 'bc_cache', buyers: 'bc_copy', compact }));
      const n = await ch.one<{ rows: string; purchasers: string }>(sql`SELECT count() AS rows, sum(sign) AS purchasers FROM bc_copy`);
      // Compacted: one row per distinct values still held, counting its purchasers.
      expect([Number(n!.rows), Number(n!.purchasers)]).toEqual([compact ? 5 : 209, 205]);
      expect(await ranked('bc_copy')).toEqual(want);
    }
  });
});

describe('buyers cache kept', () => {
  it('only when the buyers table holds the purchasers and purchases the run rows hold', async () => {
    const app = 'bmatch';
    const run = 'r20260101000000_0000dddd';
    await ch.exec(sql`DROP TABLE IF EXISTS bm_buyers`);
    await ch.exec(buyersTableSql('bm_buyers'));
    const at = new Date('2026-05-01T00:00:00Z');
    await ch.insert('profiles', [
      { app_id: app, run_id: run, as_of: '2026-06-01 00:00:00', user_id: 'a', purchases_total: 2, revenue_total: 10, last_purchase_at: '2026-05-01 00:00:00' },
      { app_id: app, run_id: run, as_of: '2026-06-01 00:00:00', user_id: 'b', purchases_total: 0, revenue_total: 0 },
    ]);
    const same = async () => Number((await ch.one<{ same: number }>(buyersMatchRowsSql({ appId: app, runId: run, buyers: 'bm_buyers' })))!.same);
    // A purchase stored after the buyers were read: the rows count 2, the buyers 1.
    await ch.insert('bm_buyers', [{ last_purchase_at: at.toISOString().slice(0, 19).replace('T', ' '), purchases_total: 1, revenue_total: 4, sign: 1 }]);
    expect(await same()).toBe(0);
    await ch.exec(sql`TRUNCATE TABLE bm_buyers`);
    await ch.insert('bm_buyers', [{ last_purchase_at: '2026-05-01 00:00:00', purchases_total: 2, revenue_total: 10, sign: 1 }]);
    expect(await same()).toBe(1);
  });
});

describe('state cache cleanup', () => {
  const app = 'cleanup';
  const runRow = (run_id: string, state: string, startedAgoS: number) => {
    const t = Math.floor(Date.now() / 1000) - startedAgoS;
    return { app_id: app, run_id, as_of: t, mode: 'full', state, users: 0, started_at: t, finished_at: state === 'running' ? 0 : t + 1, previous_run_id: '' };
  };
  const cacheOf = async (runId: string) => {
    await ch.exec(raw(`CREATE TABLE IF NOT EXISTS profile_state_${runId} (user_id String, run_id String, app_id String) ENGINE = Memory`));
    await ch.exec(raw(`CREATE TABLE IF NOT EXISTS profile_buyercache_${runId} (x UInt8) ENGINE = Memory`));
    await ch.exec(raw(`CREATE MATERIALIZED VIEW IF NOT EXISTS profile_statefeed_${runId} TO profile_state_${runId} AS SELECT user_id, run_id, app_id FROM profiles WHERE run_id = '${runId}'`));
  };
  const tablesOf = async (runId: string) =>
    (await ch.rows<{ name: string }>(sql`SELECT name FROM system.tables WHERE database = currentDatabase() AND endsWith(name, ${runId})`)).map((r) => r.name).sort();

  it('keeps the caches while another run of the app may be running, then drops feed and caches of runs no longer needed', async () => {
    const [done, old, running] = ['r20260101000000_0000aaaa', 'r20260101000000_0000bbbb', 'r20260101000000_0000cccc'];
    await ch.insert('profile_runs', [runRow(done, 'complete', 600), runRow(old, 'complete', 1200), runRow(running, 'running', 60)]);
    for (const r of [done, old, running]) await cacheOf(r);
    // A run of the app is running elsewhere: which run it reads is not recorded yet, so nothing goes.
    expect(await dropStaleStateCaches(ch, app, [])).toEqual([]);
    expect(await tablesOf(old)).toHaveLength(3);
    // It failed: the older complete run's caches go (its feed first), the latest complete run's stay.
    await ch.insert('profile_runs', [{ ...runRow(running, 'failed', 60), finished_at: Math.floor(Date.now() / 1000) + 5 }]);
    const dropped = await dropStaleStateCaches(ch, app, []);
    expect(dropped.filter((n) => n.endsWith(old))[0]).toBe(`profile_statefeed_${old}`);
    expect(dropped.sort()).toEqual([old, running].flatMap((r) => [`profile_buyercache_${r}`, `profile_state_${r}`, `profile_statefeed_${r}`]).sort());
    expect(await tablesOf(done)).toHaveLength(3);
    // Inserts into profiles still work: no feed was left without its cache.
    await ch.exec(sql`INSERT INTO profiles (app_id, run_id, as_of, user_id) VALUES (${app}, ${done}, ${new Date()}, 'u1')`);
    expect(Number((await ch.one<{ n: string }>(raw(`SELECT count() AS n FROM profile_state_${done}`)))!.n)).toBe(1);
    await ch.exec(raw(`DROP TABLE profile_statefeed_${done}`));
  });
});

describe('reading profiles', () => {
  it('returns the contract object with ISO times, typed traits, live tags and the latest cluster; 404 for unknown users', async () => {
    const app = 'reader';
    await insertEvents(ch, app, [
      identify('u1', '2026-11-10T08:00:00Z', { plan: 'pro', age: 41, vip: true, gone: 'x' }),
      identify('u1', '2026-11-11T08:00:00Z', { gone: null }),
      track('u1', '2026-11-12T09:30:00Z', 'purchase', { amount: 12.5, category: 'books' }, { platform: 'ios', country: 'DE' }),
      track('u2', '2026-11-12T09:30:00Z', 'view'),
    ]);
    await setTag(ch, app, 'u1', 'vip', true);
    await setTag(ch, app, 'u1', 'trial', true);
    await setTag(ch, app, 'u1', 'trial', false);
    const run = await buildProfiles(ch, app, { asOf: new Date('2026-11-20T12:00:00Z'), mode: 'full' });
    expect(run.users).toBe(2);
    const p = await getProfile(ch, app, 'u1');
    expect(p).toMatchObject({
      user_id: 'u1', first_seen: '2026-11-10T08:00:00Z', last_seen: '2026-11-12T09:30:00Z', events_total: 1, purchases_total: 1,
      revenue_total: 12.5, avg_order_value: 12.5, last_purchase_at: '2026-11-12T09:30:00Z', recency_days: 8,
      r_score: 3, f_score: 3, m_score: 3, rfm_segment: 'need_attention', top_category: 'books', best_hour: 9,
      platform: 'ios', country: 'DE', timezone: null, traits: { age: 41, country: 'DE', plan: 'pro', platform: 'ios', vip: true },
      tags: ['vip'], cluster: null, cluster_label: null,
    });
    expect(p!.random_bucket).toBeGreaterThanOrEqual(0);
    expect(p!.random_bucket).toBeLessThan(10000);
    // Tags are live: a change shows without a new run.
    await setTag(ch, app, 'u1', 'vip', false);
    expect((await getProfile(ch, app, 'u1'))!.tags).toEqual([]);
    expect(await getProfile(ch, app, 'nobody')).toBeUndefined();
    expect(await getProfile(ch, 'other-app', 'u1')).toBeUndefined();

    await ch.insert('cluster_models', [{ app_id: app, version: 1, created_at: 1700000000, profile_run_id: run.run_id, k: 2, model: '{}' }]);
    await ch.insert('cluster_assignments', [{ app_id: app, version: 1, user_id: 'u1', cluster: 2, cluster_label: 'big spenders' }]);
    expect(await getProfile(ch, app, 'u1')).toMatchObject({ cluster: 2, cluster_label: 'big spenders' });
    // A newer model without this user: null again (the latest model decides).
    await ch.insert('cluster_models', [{ app_id: app, version: 2, created_at: 1700000001, profile_run_id: run.run_id, k: 2, model: '{}' }]);
    expect(await getProfile(ch, app, 'u1')).toMatchObject({ cluster: null, cluster_label: null });
  });

  it('gives users profiled after the latest cluster model their nearest cluster under it, and leaves assigned users as they were', async () => {
    const app = 'clustered';
    const shopper = (u: string, day: number, buys: number): TestEvent[] => [
      track(u, `2026-10-${String(day).padStart(2, '0')}T10:00:00Z`),
      ...Array.from({ length: buys }, (_, i) => track(u, `2026-10-${String(day + 1).padStart(2, '0')}T1${i}:00:00Z`, 'purchase', { amount: 20 * (i + 1) })),
    ];
    const first = Array.from({ length: 24 }, (_, i) => shopper(`a${String(i).padStart(2, '0')}`, 1 + (i % 20), i % 4)).flat();
    await insertEvents(ch, app, first);
    await buildProfiles(ch, app, { asOf: new Date('2026-10-25T00:00:00Z'), mode: 'full' });
    // No model yet: a profile run assigns nobody.
    expect(Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM cluster_assignments WHERE app_id = ${app}`))!.n)).toBe(0);
    const trained = await trainClusters(ch, app, { k: 2, seed: 1 });
    const before = await ch.rows<{ user_id: string; cluster: number }>(
      sql`SELECT user_id, cluster FROM cluster_assignments WHERE app_id = ${app} AND version = ${trained.version} ORDER BY user_id`,
    );
    expect(before).toHaveLength(24);

    // Two new users, and old users with new events (their features change, their cluster must not).
    await insertEvents(ch, app, [...shopper('n1', 26, 3), ...shopper('n2', 26, 0), ...shopper('a00', 26, 3), ...shopper('a01', 26, 3)]);
    const inc = await buildProfiles(ch, app, { asOf: new Date('2026-10-29T00:00:00Z'), mode: 'incremental' });
    expect(inc.clustered_users).toBe(2);
    const after = await ch.rows<{ user_id: string; cluster: number; cluster_label: string }>(
      sql`SELECT user_id, cluster, cluster_label FROM cluster_assignments WHERE app_id = ${app} AND version = ${trained.version} ORDER BY user_id`,
    );
    expect(after.map((r) => r.user_id)).toEqual([...before.map((r) => r.user_id), 'n1', 'n2']);
    expect(after.slice(0, 24).map((r) => Number(r.cluster))).toEqual(before.map((r) => Number(r.cluster)));
    const model = (await latestModel(ch, app))!;
    const live = await ch.rows<{ user_id: string; cluster: number; cluster_label: string }>(
      sql`SELECT user_id, cluster, cluster_label FROM (${liveAssignmentsSql(model, app, (await latestRun(ch, app))!)}) WHERE user_id IN ('n1', 'n2') ORDER BY user_id`,
    );
    expect(after.slice(24).map((r) => [r.user_id, Number(r.cluster), r.cluster_label])).toEqual(live.map((r) => [r.user_id, Number(r.cluster), r.cluster_label]));
    // The n1 and n2 purchase profiles differ this much, so the check above can tell the clusters apart.
    expect(new Set(live.map((r) => Number(r.cluster))).size).toBe(2);
    const n1 = await getProfile(ch, app, 'n1');
    expect(n1).toMatchObject({ cluster: Number(live[0]!.cluster), cluster_label: live[0]!.cluster_label });

    // A later run assigns nobody twice.
    const again = await buildProfiles(ch, app, { asOf: new Date('2026-10-30T00:00:00Z'), mode: 'full' });
    expect(again.clustered_users).toBeUndefined();
    const dup = await ch.one<{ n: string }>(sql`SELECT count() - uniqExact(user_id) AS n FROM cluster_assignments WHERE app_id = ${app} AND version = ${trained.version}`);
    expect(Number(dup!.n)).toBe(0);

    // A model that cannot assign (here: stored without its transform) does not fail the profile run.
    await ch.insert('cluster_models', [{ app_id: app, version: trained.version + 1, created_at: 1900000000, profile_run_id: again.run_id, k: 2, model: JSON.stringify({ version: trained.version + 1 }) }]);
    await insertEvents(ch, app, shopper('n3', 30, 1));
    const broken = await buildProfiles(ch, app, { asOf: new Date('2026-11-02T00:00:00Z'), mode: 'incremental' });
    expect(broken.users).toBe(27);
    expect(await getProfile(ch, app, 'n3')).toMatchObject({ cluster: null, cluster_label: null });
  });

  it('gives platform, country, timezone, locale and app_version as the traits of that name, typed as in traits', async () => {
    const app = 'named_traits';
    await insertEvents(ch, app, [
      identify('n1', '2026-11-10T08:00:00Z', { platform: true, country: 49, app_version: 2.5, locale: 'de-DE' }),
      track('n1', '2026-11-11T08:00:00Z', 'view'),
    ]);
    await buildProfiles(ch, app, { asOf: new Date('2026-11-12T00:00:00Z'), mode: 'full' });
    const p = await getProfile(ch, app, 'n1');
    expect(p).toMatchObject({ platform: true, country: 49, app_version: 2.5, locale: 'de-DE', timezone: null });
    expect(p?.traits).toMatchObject({ platform: true, country: 49, app_version: 2.5, locale: 'de-DE' });
  });

  it('reads layered runs, with or without purchasers, through runRowsSql and profiles_latest, any column alone', async () => {
    // Without purchasers a layer's scores are constants (18.16 failed on them
    // inside toNullable); with them, profiles_latest counts thresholds, and a
    // score selected alone failed when it counted them with a lambda.
    const cases = {
      no_buyers: [track('u1', '2026-11-10T08:00:00Z'), track('u2', '2026-11-11T08:00:00Z'), track('u2', '2026-11-12T10:00:00Z')],
      some_buyers: [
        ...['a', 'b', 'c', 'd', 'e', 'f'].map((u, i) => track(u, `2026-11-0${i + 1}T08:00:00Z`, 'purchase', { amount: 10 * (i + 1) })),
        track('b', '2026-11-12T10:00:00Z', 'purchase', { amount: 100 }),
      ],
    };
    for (const [app, events] of Object.entries(cases)) {
      await insertEvents(ch, app, events);
      await buildProfiles(ch, app, { asOf: new Date('2026-11-12T00:00:00Z'), mode: 'full' });
      const built = await buildProfiles(ch, app, { asOf: new Date('2026-11-13T00:00:00Z'), mode: 'incremental', layerShare: 1 });
      expect(built.base_run_id, app).toBeDefined(); // layered: the users with new events its own rows, the others inherited
      const run = (await latestRun(ch, app))!;
      const users = [...new Set(events.map((e) => e.user_id))].sort();
      const expected: unknown[][] = [];
      for (const user of users) {
        const p = (await getProfile(ch, app, user, { run }))!;
        expected.push([user, p.r_score, p.f_score, p.m_score, p.rfm_segment, p.recency_days]);
      }
      if (app === 'no_buyers') expect(expected.map((r) => r.slice(1))).toEqual(users.map(() => [null, null, null, null, null]));
      else expect(expected.find((r) => r[0] === 'b')?.slice(1)).toEqual([5, 5, 5, 'champions', 0]);
      const columns = ['r_score', 'f_score', 'm_score', 'rfm_segment', 'recency_days'];
      for (const [i, column] of columns.entries()) {
        const rows = await ch.rows<Record<string, unknown>>(sql`SELECT ${raw(column)} AS v FROM profiles_latest WHERE app_id = ${app} ORDER BY user_id`);
        expect(rows.map((r) => (r.v === null ? null : column === 'rfm_segment' ? r.v : Number(r.v))), `${app} ${column}`).toEqual(expected.map((r) => r[i + 1]));
      }
    }
  });

  it('scores RFM as if each purchase were stored once, when purchase_events holds a copy not merged yet', async () => {
    const app = 'copies';
    // 10 purchasers: user b{i} buys i + 1 times, 10 × (i + 1) each.
    const events = Array.from({ length: 10 }, (_, i) =>
      Array.from({ length: i + 1 }, (_, k) => track(`b${i}`, `2026-11-${String(k + 1).padStart(2, '0')}T08:00:00Z`, 'purchase', { amount: 10 * (i + 1) })),
    ).flat();
    await insertEvents(ch, app, events);
    const asOf = new Date('2026-11-20T00:00:00Z');
    // Through runRowsSql: a run's rows are scored at read, from the thresholds its layer records.
    const scores = async (runId: string) =>
      (await ch.rows<{ user_id: string; r: number; f: number; m: number; p: string }>(
        sql`SELECT user_id, r_score AS r, f_score AS f, m_score AS m, purchases_total AS p FROM (${runRowsSql(app, (await listRuns(ch, app)).find((r) => r.run_id === runId)!)}) ORDER BY user_id`,
      )).map((r) => [r.user_id, r.r, r.f, r.m, Number(r.p)]);
    const clean = await scores((await buildProfiles(ch, app, { asOf, mode: 'full' })).run_id);
    // A copy of the two lightest buyers' purchases, as an ingest repair leaves one, kept from merging.
    await ch.exec(sql`SYSTEM STOP MERGES purchase_events`);
    try {
      await ch.exec(sql`INSERT INTO purchase_events SELECT * FROM purchase_events WHERE app_id = ${app} AND user_id IN ('b0', 'b1')`);
      expect(Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM purchase_events WHERE app_id = ${app}`))!.n)).toBe(55 + 3);
      const withCopies = await buildProfiles(ch, app, { asOf, mode: 'full' });
      expect(withCopies.steps).toHaveProperty('rfm_scores_again');
      expect(await scores(withCopies.run_id)).toEqual(clean);
      // Purchases stored while a run scans reach its rows and not its buyers: no sign of a copy.
      await ch.exec(sql`CREATE TABLE copies_buyers (last_purchase_at DateTime, purchases_total UInt64, revenue_total Float64, sign Int8) ENGINE = Memory`);
      await ch.exec(sql`INSERT INTO copies_buyers SELECT last_purchase_at, purchases_total - 1, revenue_total, 1 FROM profiles WHERE app_id = ${app} AND run_id = ${withCopies.run_id} AND purchases_total > 1`);
      const check = async () => Number((await ch.one<{ copies: number }>(buyersCountedCopiesSql({ appId: app, runId: withCopies.run_id, buyers: 'copies_buyers' })))!.copies);
      expect(await check()).toBe(0);
      await ch.exec(sql`INSERT INTO copies_buyers VALUES (now(), 100, 1, 1)`);
      expect(await check()).toBe(1);
      await ch.exec(sql`DROP TABLE copies_buyers`);
    } finally {
      await ch.exec(sql`SYSTEM START MERGES purchase_events`);
    }
  });

  it('publishes runs atomically, picks the latest complete one (optionally at or before an instant) and drops superseded runs', async () => {
    const app = 'runs';
    await insertEvents(ch, app, [track('u1', '2026-10-01T00:00:00Z'), track('u1', '2026-10-05T00:00:00Z')]);
    const ids: string[] = [];
    for (const d of ['2026-10-02', '2026-10-03', '2026-10-04', '2026-10-06']) ids.push((await buildProfiles(ch, app, { asOf: new Date(`${d}T00:00:00Z`), mode: 'full', keepRecentS: 0 })).run_id);
    expect((await latestRun(ch, app))?.run_id).toBe(ids[3]);
    expect((await latestRun(ch, app, new Date('2026-10-04T12:00:00Z')))?.run_id).toBe(ids[2]);
    expect((await latestRun(ch, app, new Date('2026-10-02T12:00:00Z')))).toBeUndefined(); // dropped
    const runs = await listRuns(ch, app);
    expect(runs.filter((r) => r.state === 'complete').map((r) => r.run_id)).toEqual([ids[3], ids[2], ids[1]]);
    const partitions = await ch.rows<{ run_id: string }>(sql`SELECT DISTINCT run_id FROM profiles WHERE app_id = ${app} ORDER BY run_id`);
    expect(partitions.map((r) => r.run_id)).toEqual([ids[1], ids[2], ids[3]].sort());
    // A running (not yet complete) run is invisible to readers.
    await ch.insert('profile_runs', [{ app_id: app, run_id: 'rzz_running', as_of: S('2026-12-01T00:00:00Z'), mode: 'full', state: 'running', users: 0, started_at: S('2026-11-01T00:00:00Z'), finished_at: 0, previous_run_id: '' }]);
    expect((await latestRun(ch, app))?.run_id).toBe(ids[3]);
  });

  it('keeps runs finished within the grace period and does not count runs for future instants among the latest', async () => {
    const app = 'drop_grace';
    const now = Math.floor(Date.now() / 1000);
    const run = (run_id: string, as_of: number, finished_at: number) => ({ app_id: app, run_id, as_of, mode: 'full', state: 'complete', users: 1, started_at: finished_at - 5, finished_at, previous_run_id: '' });
    await ch.insert('profile_runs', [
      run('r_cur', now - 60, now),
      run('r_prev', now - 3600, now - 7200),
      run('r_older', now - 7200, now - 9000),
      // Built for a future instant: newest by as_of, but nobody's latest.
      run('r_future', now + 86_400, now - 7200),
      // Built a moment ago for an evaluation at a past instant: someone may still read it.
      run('r_past_recent', now - 30 * 86_400, now - 10),
    ]);
    const states = async () => Object.fromEntries((await listRuns(ch, app)).map((r) => [r.run_id, r.state]));
    // Taken out of reading in two steps: marked superseded (readers skip them), their rows kept for the grace.
    expect((await dropSupersededRuns(ch, app, 'r_cur', 1, 900)).sort()).toEqual(['r_future', 'r_older']);
    expect(await states()).toMatchObject({ r_cur: 'complete', r_prev: 'complete', r_past_recent: 'complete', r_future: 'superseded', r_older: 'superseded' });
    expect((await latestRun(ch, app, new Date((now + 2 * 86_400) * 1000)))?.run_id).toBe('r_cur');
    // Within their grace they stay superseded; past it (here: a grace of 0) they are dropped, as is the rest.
    expect(await dropSupersededRuns(ch, app, 'r_cur', 1, 900)).toEqual([]);
    expect((await dropSupersededRuns(ch, app, 'r_cur', 1, 0)).sort()).toEqual(['r_future', 'r_older', 'r_past_recent']);
    expect(await states()).toMatchObject({ r_future: 'dropped', r_older: 'dropped', r_past_recent: 'dropped' });
    // However many finished lately, at most RECENT_RUNS_KEPT stay for the grace alone: the newest finished.
    await ch.insert('profile_runs', Array.from({ length: RECENT_RUNS_KEPT + 3 }, (_, i) => run(`r_walk${String(i).padStart(2, '0')}`, now - (40 + i) * 86_400, now - 100 + i)));
    expect((await dropSupersededRuns(ch, app, 'r_cur', 1, 900)).sort()).toEqual(['r_walk00', 'r_walk01', 'r_walk02']);
  });

  it('drops a superseded run only after its grace, and keeps the base of a superseded layered run meanwhile', async () => {
    const app = 'drop_two_phase';
    const now = Math.floor(Date.now() / 1000);
    const row = (run_id: string, as_of: number, finished_at: number, state = 'complete') => ({ app_id: app, run_id, as_of, mode: 'full', state, users: 1, started_at: finished_at - 5, finished_at, previous_run_id: '' });
    await ch.insert('profile_runs', [row('r_cur', now - 60, now), row('r_base', now - 9000, now - 9000), row('r_layer', now - 8000, now - 8000), row('r_layer', now - 8000, now - 100, 'superseded'), row('r_gone', now - 7000, now - 7000), row('r_gone', now - 7000, now - 1000, 'superseded')]);
    await ch.insert('profile_run_layers', [{ app_id: app, run_id: 'r_layer', base_run_id: 'r_base', as_of: now - 8000, rfm_r: [], rfm_f: [], rfm_m: [] }]);
    // r_layer was marked 100 s ago: still read, and its base with it; r_gone 1,000 s ago: past a 900 s grace.
    expect(await dropSupersededRuns(ch, app, 'r_cur', 0, 900)).toEqual(['r_gone']);
    expect(Object.fromEntries((await listRuns(ch, app)).map((r) => [r.run_id, r.state]))).toMatchObject({ r_base: 'complete', r_layer: 'superseded', r_gone: 'dropped' });
  });

  it('keeps a dropped run dropped when profile_runs merges, even when its complete row carries a later second', async () => {
    const app = 'drop_merge';
    const now = Math.floor(Date.now() / 1000);
    // A run is stamped finished at least a second after it started, so one dropped within that second looks like r_old.
    await ch.insert('profile_runs', [
      { app_id: app, run_id: 'r_old', as_of: now - 7200, mode: 'full', state: 'complete', users: 1, started_at: now - 10, finished_at: now + 30, previous_run_id: '' },
      { app_id: app, run_id: 'r_new', as_of: now - 3600, mode: 'full', state: 'complete', users: 1, started_at: now - 5, finished_at: now, previous_run_id: '' },
    ]);
    expect(await dropSupersededRuns(ch, app, 'r_new', 0, 0)).toEqual(['r_old']);
    await ch.exec(sql`OPTIMIZE TABLE profile_runs FINAL`);
    expect((await listRuns(ch, app)).map((r) => [r.run_id, r.state])).toEqual([
      ['r_new', 'complete'],
      ['r_old', 'dropped'],
    ]);
    // Merged down to its dropped row, a completed full run still counts for the schedule of full runs.
    expect(scheduledMode((await listRuns(ch, app)).filter((r) => r.run_id === 'r_old'), new Date(), 86_400)).toBe('incremental');
  });

  it('keeps a run for a future as_of out of the way of readers and incremental runs at now', async () => {
    const app = 'future';
    const now = Math.floor(Date.now() / 1000);
    const iso = (s: number) => new Date(s * 1000).toISOString();
    await insertEvents(ch, app, [track('u1', iso(now - 3 * 86400), 'purchase', { amount: 5 }), track('u1', iso(now - 86400), 'view')]);
    const future = await buildProfiles(ch, app, { asOf: new Date((now + 400 * 86400) * 1000), mode: 'full' });
    const current = await buildProfiles(ch, app, { asOf: new Date(now * 1000), mode: 'incremental' });
    // Nothing at or before now to start from: a full run, not a move back from the future one.
    expect(current.mode).toBe('full');
    expect((await latestRun(ch, app))?.run_id).toBe(current.run_id);
    expect((await latestRun(ch, app, new Date((now + 500 * 86400) * 1000)))?.run_id).toBe(future.run_id);
    expect(await getProfile(ch, app, 'u1')).toMatchObject({ as_of: iso(now).replace('.000Z', 'Z'), recency_days: 3, events_30d: 2 });
    const next = await buildProfiles(ch, app, { asOf: new Date((now + 60) * 1000), mode: 'incremental' });
    expect(next).toMatchObject({ mode: 'incremental', previous_run_id: current.run_id });
    // The analyst view picks the latest run as readers do: not the future one.
    const viewRun = async () => (await ch.one<{ run_id: string }>(sql`SELECT any(run_id) AS run_id FROM profiles_latest WHERE app_id = ${app}`))?.run_id;
    expect(await viewRun()).toBe((await latestRun(ch, app))?.run_id);
    expect(await viewRun()).not.toBe(future.run_id);
  });

  it('leaves superseded runs out of profiles_latest, and future trait changes out of traits_current', async () => {
    const app = 'views_now';
    const now = Math.floor(Date.now() / 1000);
    const iso = (s: number) => new Date(s * 1000).toISOString();
    await insertEvents(ch, app, [
      track('u1', iso(now - 86400), 'view'),
      identify('u1', iso(now - 3600), { plan: 'free' }),
      identify('u1', iso(now + 3 * 3600), { plan: 'pro' }), // stamped 3 h ahead: not a current trait yet
    ]);
    const older = await buildProfiles(ch, app, { asOf: new Date((now - 60) * 1000), mode: 'full' });
    const newer = await buildProfiles(ch, app, { asOf: new Date(now * 1000), mode: 'full', keepPreviousRuns: 1 });
    // The newer run marked superseded (its rows kept for the grace period), as dropSupersededRuns does it.
    await ch.insert('profile_runs', [{ app_id: app, run_id: newer.run_id, as_of: now, mode: 'full', state: 'superseded', users: 1, started_at: now, finished_at: now + 1, previous_run_id: '', state_format: 0 }]);
    expect((await latestRun(ch, app))?.run_id).toBe(older.run_id);
    const viewRun = await ch.one<{ run_id: string }>(sql`SELECT any(run_id) AS run_id FROM profiles_latest WHERE app_id = ${app}`);
    expect(viewRun?.run_id).toBe(older.run_id);
    const traits = await ch.rows<{ value: string }>(sql`SELECT value FROM traits_current WHERE app_id = ${app} AND user_id = 'u1' AND key = 'plan'`);
    expect(traits.map((t) => t.value)).toEqual(['free']);
  });
});

describe('tags', () => {
  it('keeps every change, the latest wins, bulk-tags up to 100,000 users, rejects bad input', async () => {
    const app = 'tags';
    await setTag(ch, app, 'u1', 'a', true);
    await setTag(ch, app, 'u1', 'a', false);
    await setTag(ch, app, 'u1', 'a', true);
    await setTag(ch, app, 'u2', 'a', true);
    await setTag(ch, app, 'u2', 'a', false);
    const ids = Array.from({ length: 100_000 }, (_, i) => `bulk${i}`);
    expect(await tagUsers(ch, app, 'b', [...ids.slice(0, 99_999), 'bulk1'])).toEqual({ users: 99_999 });
    expect(await tagUsers(ch, app, 'b', ids)).toEqual({ users: 100_000 });
    const current = await ch.rows<{ tag: string; n: string }>(sql`SELECT tag, count() AS n FROM (${currentTagsSql(app)}) GROUP BY tag ORDER BY tag`);
    expect(current.map((r) => [r.tag, Number(r.n)])).toEqual([['a', 1], ['b', 100_000]]);
    const history = await ch.one<{ n: string }>(sql`SELECT count() AS n FROM user_tags WHERE app_id = ${app} AND tag = 'a'`);
    expect(Number(history!.n)).toBe(5);
    expect(Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM user_tags WHERE app_id = ${app} AND tag = 'b'`))!.n)).toBe(199_999);
    await expect(tagUsers(ch, app, 'b', [...ids, 'one-too-many'])).rejects.toBeInstanceOf(TagInputError);
    await expect(setTag(ch, app, '', 'a', true)).rejects.toThrow(/user_id/);
    await expect(setTag(ch, app, 'u1', '', true)).rejects.toThrow(/tag/);
  });

  it('hands out strictly increasing seqs', () => {
    let last = nextSeqs();
    for (let i = 0; i < 10_000; i++) {
      const s = nextSeqs(i % 3 === 0 ? 5 : 1);
      expect(s > last).toBe(true);
      last = s + BigInt(i % 3 === 0 ? 4 : 0);
    }
  });
});

describe('jobs', () => {
  // Queueing behind a job of the same kind (the default) is tested in test/jobs/queue.test.ts.
  it('runs in the background, records progress and result, refuses a second job of the same kind when asked to', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { job_id } = await startJob(ch, 'jobs', 'profiles', { mode: 'full' }, async (report) => {
      report(0.5);
      await gate;
      return { users: 3 };
    });
    await expect(startJob(ch, 'jobs', 'profiles', {}, async () => 1, { ifBusy: 'refuse' })).rejects.toBeInstanceOf(JobConflictError);
    // Another kind and another app are independent.
    const other = await startJob(ch, 'jobs', 'clusters', {}, async () => {
      throw new Error('no profile run');
    });
    await jobFinished(other.job_id);
    expect(await getJob(ch, 'jobs', other.job_id)).toMatchObject({ state: 'failed', error: 'no profile run', kind: 'clusters' });
    expect(['queued', 'running']).toContain((await getJob(ch, 'jobs', job_id))!.state);
    release();
    await jobFinished(job_id);
    const done = await getJob(ch, 'jobs', job_id);
    expect(done).toMatchObject({ job_id, kind: 'profiles', state: 'succeeded', progress: 1, result: { users: 3 } });
    expect(done!.created_at).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
    expect(await getJob(ch, 'other-app', job_id)).toBeUndefined();
    // Finished: a new one may start.
    const again = await startJob(ch, 'jobs', 'profiles', {}, async () => 2);
    await jobFinished(again.job_id);
    expect((await getJob(ch, 'jobs', again.job_id))!.state).toBe('succeeded');
  });

  it('refuses (when asked to) a job another process recorded as running, unless its heartbeat is stale', async () => {
    const seq = Date.now() * 1000;
    await ch.insert('jobs', [{ app_id: 'elsewhere', job_id: 'j-live', kind: 'profiles', state: 'running', progress: 0.2, params: '{}', result: '', error: '', created_at: Math.floor(Date.now() / 1000), updated_seq: seq }]);
    await expect(startJob(ch, 'elsewhere', 'profiles', {}, async () => 1, { ifBusy: 'refuse' })).rejects.toBeInstanceOf(JobConflictError);
    await ch.insert('jobs', [{ app_id: 'stale', job_id: 'j-dead', kind: 'profiles', state: 'running', progress: 0.2, params: '{}', result: '', error: '', created_at: 1700000000, updated_seq: 1700000000 * 1000 * 1000 }]);
    expect(await getJob(ch, 'stale', 'j-dead')).toMatchObject({ state: 'failed' });
    const { job_id } = await startJob(ch, 'stale', 'profiles', {}, async () => 1);
    await jobFinished(job_id);
  });

  it('runs the profile job through the registry and on a schedule', async () => {
    const app = 'sched';
    await insertEvents(ch, app, [track('u1', '2026-10-01T00:00:00Z')]);
    const { job_id } = await startProfileJob(ch, app, { asOf: new Date('2026-10-02T00:00:00Z'), mode: 'full' });
    await jobFinished(job_id);
    const job = await getJob(ch, app, job_id);
    expect(job).toMatchObject({ state: 'succeeded', progress: 1, result: { users: 1, mode: 'full', as_of: '2026-10-02T00:00:00Z' } });
    const before = (await listRuns(ch, app)).length;
    const scheduler = startProfileScheduler(ch, [app], 3600);
    await new Promise((r) => setTimeout(r, 50));
    await scheduler.stop();
    expect((await listRuns(ch, app)).length).toBe(before + 1);
    expect(await appsWithEvents(ch)).toContain(app);
  });

  it('schedules a full run when the last completed full run is older than the period', async () => {
    const now = new Date('2026-11-29T12:00:00Z');
    const run = (mode: string, finishedIso: string, completed: boolean, state: ProfileRun['state'] = completed ? 'complete' : 'failed'): ProfileRun => ({
      run_id: `r${finishedIso}`, as_of: new Date(finishedIso), mode, state, completed, users: 1,
      started_at: new Date(finishedIso), finished_at: new Date(finishedIso), previous_run_id: '', state_format: 1,
    });
    const day = 86_400;
    expect(scheduledMode([], now, day)).toBe('full');
    expect(scheduledMode([run('full', '2026-11-29T00:00:00Z', true)], now, day)).toBe('incremental');
    // Dropped after completing still counts; a failed full run does not.
    expect(scheduledMode([run('full', '2026-11-29T00:00:00Z', true, 'dropped')], now, day)).toBe('incremental');
    expect(scheduledMode([run('full', '2026-11-29T00:00:00Z', false), run('full', '2026-11-28T11:00:00Z', true)], now, day)).toBe('full');
    expect(scheduledMode([run('incremental', '2026-11-29T11:00:00Z', true), run('full', '2026-11-28T12:00:00Z', true)], now, day)).toBe('full');
    expect(scheduledMode([run('incremental', '2026-11-29T11:00:00Z', true), run('full', '2026-11-28T12:00:01Z', true)], now, day)).toBe('incremental');
    expect(scheduledMode([], now, 0)).toBe('incremental');
  });

  it('stops waiting for a tick in progress after the given time, and reports it', async () => {
    let release!: () => void;
    const slowApps = () => new Promise<string[]>((resolve) => (release = () => resolve([])));
    const scheduler = startProfileScheduler(ch, slowApps, 3600);
    expect(await scheduler.stop(50)).toBe(false);
    release();
    expect(await scheduler.stop(5000)).toBe(true);
    expect(await startProfileScheduler(ch, [], 0).stop()).toBe(true);
  });
});
