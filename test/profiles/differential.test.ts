// Differential tests: the profile job (full and incremental) against the
// in-memory reference implementation, field by field, on random event sets
// aimed at the contract's edges (DST, window boundaries, ties, bad zones).
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { raw, sql } from '../../lib/sql.ts';
import { buildContextTable, buildProfiles, planContextRead, planTimelineScan, scanTimeline, zonesAt } from '../../profiles/job.ts';
import { getProfile, listRuns, PROFILE_SELECT } from '../../profiles/read.ts';
import { appPartsSql, runRowsSql, slicesOf, windowOf } from '../../profiles/sql.ts';
import { evaluateSegment } from '../../segments/evaluate.ts';
import { CONTEXT_TRAITS, typedTraitValue } from '../../profiles/traits.ts';
import { testDatabase } from '../support/env.ts';
import { AS_OFS, generate, insertEvents, rng } from './events.ts';
import { referenceProfiles, type RefProfile, type TestEvent } from './reference.ts';

let ch: ClickHouse;
beforeAll(async () => {
  ch = await testDatabase('wprof');
});

type Row = Record<string, unknown>;

/** A run's rows as readers see them (its own and, for a layered run, those it inherits). */
async function runRows(appId: string, runId: string): Promise<Map<string, Row>> {
  const run = (await listRuns(ch, appId)).find((r) => r.run_id === runId)!;
  const rows = await ch.rows<Row>(sql`SELECT ${PROFILE_SELECT} FROM (${runRowsSql(appId, run)}) ORDER BY user_id`);
  return new Map(rows.map((r) => [r.user_id as string, r]));
}

const FLOATS = new Set(['revenue_total', 'revenue_30d', 'avg_order_value']);
const FIELDS: (keyof RefProfile)[] = [
  'first_seen', 'last_seen', 'events_total', 'events_7d', 'events_30d', 'active_days_30d', 'views_30d', 'clicks_30d',
  'purchases_30d', 'purchases_total', 'revenue_total', 'revenue_30d', 'avg_order_value', 'last_purchase_at', 'recency_days',
  'r_score', 'f_score', 'm_score', 'rfm_segment', 'top_category', 'best_hour', 'platform', 'country', 'timezone', 'locale', 'app_version',
];

function normalise(v: unknown, field: string): unknown {
  if (v === null || v === undefined) return null;
  if (FLOATS.has(field)) return Math.round(Number(v) * 1e6) / 1e6;
  if (typeof v === 'string' && /^\d+$/.test(v) && field !== 'top_category' && !['platform', 'country', 'timezone', 'locale', 'app_version', 'rfm_segment'].includes(field)) return Number(v);
  return v;
}

function expectMatches(actual: Map<string, Row>, expected: Map<string, RefProfile>, label: string, skip: readonly string[] = []): void {
  expect([...actual.keys()].sort(), `${label}: users`).toEqual([...expected.keys()].sort());
  const mismatches: string[] = [];
  for (const [user, ref] of expected) {
    const row = actual.get(user)!;
    for (const f of FIELDS) {
      if (skip.includes(f)) continue;
      const a = normalise(row[f], f);
      const e = normalise(ref[f], f);
      if (a !== e) mismatches.push(`${user}.${f}: got ${JSON.stringify(a)} expected ${JSON.stringify(e)}`);
    }
    const traits: Record<string, unknown> = {};
    (row.trait_keys as string[]).forEach((k, i) => (traits[k] = typedTraitValue((row.trait_values as string[])[i]!, Number((row.trait_types as number[])[i]))));
    if (JSON.stringify(traits) !== JSON.stringify(ref.traits)) mismatches.push(`${user}.traits: got ${JSON.stringify(traits)} expected ${JSON.stringify(ref.traits)}`);
    const bucket = Number(row.random_bucket);
    if (!(Number.isInteger(bucket) && bucket >= 0 && bucket <= 9999)) mismatches.push(`${user}.random_bucket ${bucket}`);
  }
  expect(mismatches.slice(0, 20), `${label}: ${mismatches.length} mismatches`).toEqual([]);
}

function expectSameRows(a: Map<string, Row>, b: Map<string, Row>, label: string): void {
  expect([...a.keys()], label).toEqual([...b.keys()]);
  for (const [user, ra] of a) {
    const rb = b.get(user)!;
    for (const k of Object.keys(ra)) {
      if (k === 'run_id') continue;
      expect(normalise(ra[k], k), `${label}: ${user}.${k}`).toEqual(normalise(rb[k], k));
    }
  }
}

const SEEDS = Array.from({ length: 12 }, (_, i) => i + 1);

describe('profiles match the reference implementation', () => {
  for (const seed of SEEDS) {
    it(`seed ${seed}: full, then incremental after new events and a later as_of, equals full and the reference`, async () => {
      const app = `app${seed}`;
      const r = rng(seed * 7919);
      const now = Math.floor(Date.now() / 1000);
      const asOf1 = AS_OFS[seed % AS_OFS.length]!;
      const a = generate(seed, { appUsers: 25 + (seed % 4) * 10, asOf: asOf1, receivedAt: now - 3600, tag: 'a' });
      await insertEvents(ch, app, a);
      // Odd seeds' full runs take each trait value's latest change (COMPACT_TRAITS_RATIO), even seeds' every change.
      const traits = { compactTraitsRatio: seed % 2 ? 0 : Infinity };
      const full1 = await buildProfiles(ch, app, { asOf: new Date(asOf1 * 1000), mode: 'full', ...traits });
      expect(full1.mode).toBe('full');
      expectMatches(await runRows(app, full1.run_id), referenceProfiles(a, asOf1), `seed ${seed} full@1`);

      // Later: new events (some with old ts, arriving late), new users, trait
      // and zone changes; as_of moves by minutes to days.
      const step = [60, 3600, 86400, 7 * 86400 + 1][seed % 4]! + Math.floor(r() * 3600);
      const asOf2 = asOf1 + step;
      const users = [...new Set(a.map((e) => e.user_id))];
      const b: TestEvent[] = generate(seed + 1000, { appUsers: 5, asOf: asOf2, receivedAt: now, tag: 'b', existingUsers: users.filter(() => r() < 0.2) });
      await insertEvents(ch, app, b);
      const inc = await buildProfiles(ch, app, { asOf: new Date(asOf2 * 1000), mode: 'incremental', receivedMarginS: 60, fullWhenLateShare: 1 });
      expect(inc.mode).toBe('incremental');
      expect(inc.previous_run_id).toBe(full1.run_id);
      const incRows = await runRows(app, inc.run_id);
      expect(inc.users, `seed ${seed} users`).toBe(incRows.size);
      expectMatches(incRows, referenceProfiles([...a, ...b], asOf2), `seed ${seed} incremental@2`);

      const full2 = await buildProfiles(ch, app, { asOf: new Date(asOf2 * 1000), mode: 'full', ...traits });
      expectSameRows(incRows, await runRows(app, full2.run_id), `seed ${seed} incremental = full`);
      // Not everyone was recomputed: the copy path was exercised.
      expect(inc.recomputed_users!).toBeLessThanOrEqual(inc.users + b.length);
    });
  }

  it('incremental recomputes only changed users and still equals a full run when nothing arrived', async () => {
    const app = 'quiet';
    const now = Math.floor(Date.now() / 1000);
    const asOf1 = AS_OFS[0]!;
    const a = generate(99, { appUsers: 60, asOf: asOf1, receivedAt: now - 7200, tag: 'a' });
    await insertEvents(ch, app, a);
    await buildProfiles(ch, app, { asOf: new Date(asOf1 * 1000), mode: 'full' });
    const inc = await buildProfiles(ch, app, { asOf: new Date((asOf1 + 600) * 1000), mode: 'incremental', receivedMarginS: 60, fullWhenLateShare: 1 });
    expect(inc.mode).toBe('incremental');
    // Exactly the users with an event entering or leaving a window between the two as_of.
    const [p, n] = [asOf1, asOf1 + 600];
    const moved = new Set(a.filter((e) => [0, 7, 30, 90].some((d) => e.ts > p - d * 86400 && e.ts <= n - d * 86400)).map((e) => e.user_id));
    expect(inc.recomputed_users).toBe(moved.size);
    expect(inc.recomputed_users!).toBeLessThan(inc.users);
    const rows = await runRows(app, inc.run_id);
    expect(inc.users).toBe(rows.size);
    expectMatches(rows, referenceProfiles(a, asOf1 + 600), 'quiet incremental');
  });

  it('takes the zones of the previous run and those set since, along a chain of incremental runs', async () => {
    const app = 'zonechain';
    const now = Math.floor(Date.now() / 1000);
    const asOf1 = AS_OFS[0]!;
    let n = 0;
    const ev = (user_id: string, ts: number, receivedAt: number, traits?: TestEvent['traits']): TestEvent => ({
      event_id: `z${n++}`, user_id, ts, type: traits ? 'identify' : 'track', event: traits ? '' : 'view', properties: {}, traits: traits ?? {}, context: {}, received_at: receivedAt,
    });
    // Three users in Berlin, each with a view at 06:10 UTC (08:10 local).
    const a = ['u1', 'u2', 'u3'].flatMap((u) => [ev(u, asOf1 - 10 * 86400, now - 7200, { timezone: 'Europe/Berlin' }), ev(u, asOf1 - 86400 * 2 - 13800, now - 7200)]);
    await insertEvents(ch, app, a);
    await buildProfiles(ch, app, { asOf: new Date(asOf1 * 1000), mode: 'full' });
    // u2 moves to a zone no user had, then views twice.
    // Received well before the runs: late arrivals of the next run would take every zone.
    const b = [ev('u2', asOf1 + 100, now - 3600, { timezone: 'Asia/Kathmandu' }), ev('u2', asOf1 + 200, now - 3600), ev('u2', asOf1 + 300, now - 3600)];
    await insertEvents(ch, app, b);
    const inc1 = await buildProfiles(ch, app, { asOf: new Date((asOf1 + 3600) * 1000), mode: 'incremental', receivedMarginS: 60, fullWhenLateShare: 1 });
    expect(inc1.mode).toBe('incremental');
    expectMatches(await runRows(app, inc1.run_id), referenceProfiles([...a, ...b], asOf1 + 3600), 'a zone set since the previous run');
    // u1 views again, with no zone set since: its zone comes from the rows before both runs.
    const c = [ev('u1', asOf1 + 5000, now), ev('u1', asOf1 + 5100, now), ev('u1', asOf1 + 5200, now), ev('u2', asOf1 + 5300, now)];
    await insertEvents(ch, app, c);
    const inc2 = await buildProfiles(ch, app, { asOf: new Date((asOf1 + 7200) * 1000), mode: 'incremental', receivedMarginS: 60, fullWhenLateShare: 1 });
    expect(inc2.mode).toBe('incremental');
    expect(inc2.previous_run_id).toBe(inc1.run_id);
    const expected = referenceProfiles([...a, ...b, ...c], asOf1 + 7200);
    expect([expected.get('u1')?.timezone, expected.get('u2')?.timezone]).toEqual(['Europe/Berlin', 'Asia/Kathmandu']);
    expectMatches(await runRows(app, inc2.run_id), expected, 'a zone from before the previous run');
  });

  it('adds new events to the previous rows when as_of moves by more than the 90-day window', async () => {
    const app = 'leap';
    const now = Math.floor(Date.now() / 1000);
    const asOf1 = AS_OFS[2]!;
    const asOf2 = asOf1 + 120 * 86400;
    const a = generate(515, { appUsers: 50, asOf: asOf1, receivedAt: now - 7200, tag: 'a' });
    await insertEvents(ch, app, a);
    await buildProfiles(ch, app, { asOf: new Date(asOf1 * 1000), mode: 'full' });
    const users = [...new Set(a.map((e) => e.user_id))];
    // Some of these are stamped before asOf1 (late arrivals: rescanned), most after it.
    const b = generate(516, { appUsers: 5, asOf: asOf2, receivedAt: now, tag: 'b', existingUsers: users.filter((_, i) => i % 3 === 0) });
    await insertEvents(ch, app, b);
    expect(b.some((e) => e.ts <= asOf1)).toBe(true);
    const inc = await buildProfiles(ch, app, { asOf: new Date(asOf2 * 1000), mode: 'incremental', receivedMarginS: 60, fullWhenLateShare: 1 });
    expect(inc.mode).toBe('incremental');
    const incRows = await runRows(app, inc.run_id);
    expectMatches(incRows, referenceProfiles([...a, ...b], asOf2), 'incremental over 120 days');
    const full = await buildProfiles(ch, app, { asOf: new Date(asOf2 * 1000), mode: 'full' });
    expectSameRows(incRows, await runRows(app, full.run_id), 'incremental over 120 days = full');
  });

  it('gives the same rows whatever the number of user slices, incremental runs included', async () => {
    const app = 'sliced';
    const now = Math.floor(Date.now() / 1000);
    const asOf1 = AS_OFS[2]!;
    const a = generate(4242, { appUsers: 80, asOf: asOf1, receivedAt: now - 7200, tag: 'a' });
    await insertEvents(ch, app, a);
    const expected = referenceProfiles(a, asOf1);
    const one = await buildProfiles(ch, app, { asOf: new Date(asOf1 * 1000), mode: 'full', slices: 1 });
    const oneRows = await runRows(app, one.run_id);
    expectMatches(oneRows, expected, 'one slice');
    for (const slices of [2, 3, 7, 40]) {
      const run = await buildProfiles(ch, app, { asOf: new Date(asOf1 * 1000), mode: 'full', slices });
      expectSameRows(await runRows(app, run.run_id), oneRows, `${slices} slices = one slice`);
    }
    const users = [...new Set(a.map((e) => e.user_id))];
    const b = generate(4243, { appUsers: 4, asOf: asOf1 + 3600, receivedAt: now, tag: 'b', existingUsers: users });
    await insertEvents(ch, app, b);
    const inc = await buildProfiles(ch, app, { asOf: new Date((asOf1 + 3600) * 1000), mode: 'incremental', receivedMarginS: 60, fullWhenLateShare: 1, slices: 3 });
    expect(inc.mode).toBe('incremental');
    expectMatches(await runRows(app, inc.run_id), referenceProfiles([...a, ...b], asOf1 + 3600), 'incremental, 3 slices');
  });

  it('runs as one slice when no user was active in the 7 days before as_of', async () => {
    const app = 'idle';
    const now = Math.floor(Date.now() / 1000);
    const asOf = AS_OFS[0]!;
    const a = generate(77, { appUsers: 15, asOf: asOf - 30 * 86400, receivedAt: now - 7200, tag: 'a' }).filter((e) => e.ts <= asOf - 8 * 86400);
    await insertEvents(ch, app, a);
    const run = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'full' });
    expectMatches(await runRows(app, run.run_id), referenceProfiles(a, asOf), 'idle app');
  });

  it('runs as a full run when late arrivals touch more than the given share of users', async () => {
    const app = 'late_many';
    const now = Math.floor(Date.now() / 1000);
    const asOf1 = AS_OFS[0]!;
    const a = generate(31, { appUsers: 30, asOf: asOf1, receivedAt: now - 7200, tag: 'a' });
    await insertEvents(ch, app, a);
    const first = await buildProfiles(ch, app, { asOf: new Date(asOf1 * 1000), mode: 'full' });
    // Every user gets a view stamped before asOf1 that arrives after the run: all late.
    const users = [...new Set(a.filter((e) => e.ts <= asOf1).map((e) => e.user_id))];
    const late: TestEvent[] = users.map((u, i) => ({ ...a[0]!, event_id: `late${i}`, user_id: u, ts: asOf1 - 3600, type: 'track', event: 'view', received_at: now, properties: {}, traits: {}, context: {} }));
    await insertEvents(ch, app, late);
    const asOf2 = asOf1 + 60;
    const inc = await buildProfiles(ch, app, { asOf: new Date(asOf2 * 1000), mode: 'incremental', receivedMarginS: 60, fullWhenLateShare: 0.5 });
    expect(inc.mode).toBe('full');
    expect(inc.previous_run_id).toBeUndefined();
    expectMatches(await runRows(app, inc.run_id), referenceProfiles([...a, ...late], asOf2), 'many late users');
    // Below the share, the same situation stays incremental.
    const again = await buildProfiles(ch, app, { asOf: new Date((asOf2 + 60) * 1000), mode: 'incremental', receivedMarginS: 60, fullWhenLateShare: 1 });
    expect(again).toMatchObject({ mode: 'incremental', previous_run_id: inc.run_id });
    expect(first.mode).toBe('full');
  });

  it('rescans the users whose events ingest re-derived after a failed insert, though received_at predates the previous run', async () => {
    const app = 'repaired';
    const now = Math.floor(Date.now() / 1000);
    const asOf1 = AS_OFS[0]!;
    const a = generate(37, { appUsers: 30, asOf: asOf1, receivedAt: now - 7200, tag: 'a' });
    await insertEvents(ch, app, a);
    await buildProfiles(ch, app, { asOf: new Date(asOf1 * 1000), mode: 'full' });
    // Events in events since before the run (received_at), whose views' rows only
    // now arrive (ingest/repair.ts), for three users: ingest records the repair.
    const users = [...new Set(a.filter((e) => e.ts <= asOf1).map((e) => e.user_id))].slice(0, 3);
    const repaired: TestEvent[] = users.map((u, i) => ({ ...a[0]!, event_id: `rep${i}`, user_id: u, ts: asOf1 - 3600, type: 'track', event: 'purchase', received_at: now - 7200, properties: { amount: 5 }, traits: {}, context: {} }));
    await insertEvents(ch, app, repaired);
    await ch.insert('ingest_repairs', users.map((user_id) => ({ app_id: app, user_id, repaired_at: now })));
    const asOf2 = asOf1 + 60;
    const inc = await buildProfiles(ch, app, { asOf: new Date(asOf2 * 1000), mode: 'incremental', receivedMarginS: 60, fullWhenLateShare: 1 });
    expect(inc.mode).toBe('incremental');
    const rows = await runRows(app, inc.run_id);
    expect(inc.users).toBe(rows.size);
    expectMatches(rows, referenceProfiles([...a, ...repaired], asOf2), 'repaired users');
  });

  it('runs as a full run when it would recompute more users than the given number', async () => {
    const app = 'changed_many';
    const now = Math.floor(Date.now() / 1000);
    const asOf1 = AS_OFS[1]!;
    const a = generate(41, { appUsers: 30, asOf: asOf1, receivedAt: now - 7200, tag: 'a' });
    await insertEvents(ch, app, a);
    await buildProfiles(ch, app, { asOf: new Date(asOf1 * 1000), mode: 'full' });
    // A day later: the users with an event entering or leaving a window that day (more than 3 here) are recomputed.
    const asOf2 = asOf1 + 86400;
    const probe = { asOf: new Date(asOf2 * 1000), mode: 'incremental' as const, receivedMarginS: 60, fullWhenLateShare: 1 };
    const inc = await buildProfiles(ch, app, { ...probe, fullWhenChangedUsers: 3 });
    expect(inc.mode).toBe('full');
    expect(inc.previous_run_id).toBeUndefined();
    expectMatches(await runRows(app, inc.run_id), referenceProfiles(a, asOf2), 'many changed users');
    // With room for them, the same run stays incremental.
    const again = await buildProfiles(ch, app, { ...probe, asOf: new Date((asOf2 + 86400) * 1000) });
    expect(again).toMatchObject({ mode: 'incremental', previous_run_id: inc.run_id });
    expect(again.recomputed_users!).toBeGreaterThan(3);
  });

  // Timeline rows of the app's users: how many rows each user has (see 100_user_timeline.sql).
  const timelineRows = async (app: string) =>
    (await ch.rows<{ rows: string }>(sql`SELECT count() AS rows FROM user_timeline WHERE app_id = ${app} GROUP BY user_id`)).map((r) => Number(r.rows));

  // A full run's timeline scan of every user of `app`, as the job sets it up, in two slices.
  const scanOf = (app: string, asOf: number, runId: string) => ({
    appId: app,
    runId,
    window: windowOf(new Date(asOf * 1000)),
    slices: slicesOf(['au2']),
  });

  it('gives the same rows whether a user history is in one timeline row or in several', async () => {
    const app = 'timeline_rows';
    const now = Math.floor(Date.now() / 1000);
    const asOf = AS_OFS[3]!;
    const a = generate(606, { appUsers: 40, asOf, receivedAt: now - 7200, tag: 'a' });
    // Three inserts, each a third of every user's events: one timeline row per insert until merged.
    for (let k = 0; k < 3; k++) await insertEvents(ch, app, a.filter((_, i) => i % 3 === k));
    const rows = await timelineRows(app);
    expect(Math.max(...rows)).toBe(3);
    expect(rows.some((n) => n === 1)).toBe(true);
    const expected = referenceProfiles(a, asOf);
    const several = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'full' });
    const severalRows = await runRows(app, several.run_id);
    expectMatches(severalRows, expected, 'several timeline rows');

    await ch.exec(sql`OPTIMIZE TABLE user_timeline FINAL`);
    expect(Math.max(...(await timelineRows(app)))).toBe(1);
    const one = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'full' });
    const oneRows = await runRows(app, one.run_id);
    expectSameRows(oneRows, severalRows, 'one timeline row = several');
    expectMatches(oneRows, expected, 'one timeline row');
  });

  it('takes traits from the latest change of each value, and from every change for a user with one after as_of', async () => {
    const app = 'context_traits';
    const now = Math.floor(Date.now() / 1000);
    const asOf = AS_OFS[1]!;
    const events: TestEvent[] = [];
    const add = (user: string, id: string, ts: number, e: Partial<TestEvent>) =>
      events.push({ event_id: id, user_id: user, ts, type: 'track', event: 'view', properties: {}, traits: {}, context: {}, received_at: now - 7200, ...e });
    const H = 3600;
    // Context on every event, nearly always repeating itself; platform goes ios → android → ios.
    for (let i = 0; i < 40; i++) {
      add('repeats', `r${String(i).padStart(3, '0')}`, asOf - (40 - i) * H, {
        context: { platform: i >= 10 && i < 20 ? 'android' : 'ios', country: i < 30 ? 'DE' : 'US', timezone: 'Europe/Berlin' },
      });
    }
    // Same second: the greatest event_id wins, whichever value's latest change that is.
    add('tie_web', 'ta1', asOf - 5 * H, { context: { platform: 'ios' } });
    add('tie_web', 'ta0', asOf - 2 * H, { context: { platform: 'ios' } });
    add('tie_web', 'ta2', asOf - 2 * H, { context: { platform: 'web' } });
    add('tie_ios', 'tb0', asOf - 2 * H, { context: { platform: 'ios' } });
    add('tie_ios', 'tb2', asOf - 2 * H, { context: { platform: 'web' } });
    add('tie_ios', 'tb3', asOf - 2 * H, { context: { platform: 'ios' } });
    // Removed, then set again to the value it had; and removed last.
    add('removed', 'm0', asOf - 9 * H, { type: 'identify', event: '', traits: { plan: 'pro', vip: true } });
    add('removed', 'm1', asOf - 8 * H, { type: 'identify', event: '', traits: { plan: null, vip: null } });
    add('removed', 'm2', asOf - 7 * H, { type: 'identify', event: '', traits: { plan: 'pro' } });
    // A value's latest change after as_of, an earlier one before: at as_of the other value is current.
    add('later', 'l0', asOf - 9 * H, { context: { platform: 'ios', country: 'DE' } });
    add('later', 'l1', asOf - 5 * H, { context: { platform: 'web' } });
    add('later', 'l2', asOf + 5 * H, { context: { platform: 'ios', country: 'FR' } });
    // Only after as_of: no profile.
    add('after', 'f0', asOf + H, { context: { platform: 'ios' } });
    await insertEvents(ch, app, events);
    // From each value's latest change (with every change for `later` at as_of), and from every change.
    for (const [at, compactTraitsRatio] of [[asOf, 0], [asOf + 6 * H, 0], [asOf, Infinity], [asOf + 6 * H, Infinity]] as const) {
      const full = await buildProfiles(ch, app, { asOf: new Date(at * 1000), mode: 'full', compactTraitsRatio });
      const rows = await runRows(app, full.run_id);
      expectMatches(rows, referenceProfiles(events, at), `full at as_of + ${(at - asOf) / H} h, ratio ${compactTraitsRatio}`);
      const platforms = Object.fromEntries([...rows].map(([u, r]) => [u, r.platform]));
      expect(platforms).toMatchObject(at === asOf
        ? { repeats: 'ios', tie_web: 'web', tie_ios: 'ios', later: 'web' }
        : { repeats: 'ios', tie_web: 'web', tie_ios: 'ios', later: 'ios', after: 'ios' });
      expect(rows.get('removed')!.trait_keys).toEqual(['plan']);
    }
  });

  /**
   * Users with context traits (platform, country, …), some of them set by
   * identify calls with values a packed change must survive (a NUL, '', a long
   * value, a number, a removal, an event_id holding a NUL), merged into one part
   * of user_context_traits; then newer changes of some of them and new users in
   * parts of their own. Merges of user_context_traits stay stopped, for the
   * caller to start.
   */
  async function contextPartAndNewer(app: string, asOf: number): Promise<TestEvent[]> {
    const now = Math.floor(Date.now() / 1000);
    const H = 3600;
    const events: TestEvent[] = [];
    const add = (user: string, id: string, ts: number, e: Partial<TestEvent>) =>
      events.push({ event_id: id, user_id: user, ts, type: 'track', event: 'view', properties: {}, traits: {}, context: {}, received_at: now - 7200, ...e });
    const identify = (user: string, id: string, ts: number, traits: TestEvent['traits']) => add(user, id, ts, { type: 'identify', event: '', traits });
    for (let u = 0; u < 12; u++) {
      for (let i = 0; i < 6; i++) {
        add(`u${u}`, `a${u}_${i}`, asOf - (30 - i) * H, { context: { platform: i < 3 ? 'ios' : 'android', country: u % 2 ? 'DE' : 'FR', timezone: 'Europe/Berlin', locale: 'de-DE', app_version: `1.${i}` } });
      }
    }
    identify('u0', 'x0', asOf - 20 * H, { platform: 'we\u0000b', country: '', locale: 'l'.repeat(300), app_version: 3 });
    identify('u1', 'x1', asOf - 20 * H, { timezone: null, plan: 'pro' });
    identify('u2', 'x\u00002', asOf - 20 * H, { platform: 'nul-id' });
    identify('u2', 'x', asOf - 20 * H, { platform: 'shorter-id' });
    identify('u6', 'x6', asOf - 20 * H, { plan: 'basic' });
    await insertEvents(ch, app, events);
    await ch.exec(sql`OPTIMIZE TABLE user_context_traits FINAL`);
    await ch.exec(sql`SYSTEM STOP MERGES user_context_traits`);
    const newer: TestEvent[] = [];
    const before = events.length;
    add('u3', 'b3', asOf - 2 * H, { context: { platform: 'web', country: 'US' } });
    identify('u4', 'b4', asOf - 2 * H, { locale: null });
    add('u5', 'b5', asOf + 2 * H, { context: { platform: 'web' } });
    identify('u6', 'b6', asOf + 2 * H, { plan: 'max' });
    add('new1', 'n1', asOf - H, { context: { platform: 'ios', locale: 'en-US' } });
    newer.push(...events.slice(before));
    await insertEvents(ch, app, newer);
    return events;
  }

  it('reads context traits from the merged part as it is, with the users other parts hold grouped', async () => {
    const app = 'context_part';
    const asOf = AS_OFS[1]!;
    let events, run;
    try {
      events = await contextPartAndNewer(app, asOf);
      const parts = await ch.rows<{ name: string }>(appPartsSql('user_context_traits', app));
      expect(parts.length).toBeGreaterThan(1);
      expect(await planContextRead(ch, app)).toBeDefined();
      run = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'full', compactTraitsRatio: 0 });
    } finally {
      await ch.exec(sql`SYSTEM START MERGES user_context_traits`);
    }
    const rows = await runRows(app, run.run_id);
    expectMatches(rows, referenceProfiles(events, asOf), 'context traits from the merged part and the others');
    expect(rows.get('u0')).toMatchObject({ platform: 'we\u0000b', country: '', locale: 'l'.repeat(300), app_version: '3' });
    expect(rows.get('u2')!.platform).toBe('nul-id');
    expect(rows.get('u3')).toMatchObject({ platform: 'web', country: 'US' });
    // Changed after as_of, u5 a context trait and u6 another: their traits come from every change.
    expect(rows.get('u5')!.platform).toBe('android');
    expect(rows.get('u6')!.trait_keys).toEqual(['app_version', 'country', 'locale', 'plan', 'platform', 'timezone']);
  });

  it('reads the context traits again with FINAL when a merge replaces the planned part', async () => {
    const app = 'context_merged_away';
    const asOf = AS_OFS[2]!;
    const into = 'profile_context_r20260101000000_0000f00d';
    let events, result;
    try {
      events = await contextPartAndNewer(app, asOf);
      const part = await planContextRead(ch, app);
      expect(part).toBeDefined();
      await ch.exec(sql`SYSTEM START MERGES user_context_traits`);
      await ch.exec(sql`OPTIMIZE TABLE user_context_traits FINAL`);
      result = await buildContextTable(ch, { appId: app, asOf: new Date(asOf * 1000), into }, part);
    } finally {
      await ch.exec(sql`SYSTEM START MERGES user_context_traits`);
    }
    expect(result.reread).toBe(true);
    const table = await ch.rows<Row>(sql`SELECT * FROM ${raw(into)} ORDER BY user_id`);
    await ch.exec(sql`DROP TABLE ${raw(into)}`);
    const expected = referenceProfiles(events, asOf);
    expect(table.map((r) => r.user_id)).toEqual([...expected.keys(), 'u5'].filter((u, i, a) => a.indexOf(u) === i).sort());
    for (const r of table) {
      if (r.user_id === 'u5') {
        expect(r.complete, 'u5 changed after as_of').toBe(0);
        continue;
      }
      expect(r.complete).toBe(1);
      const traits = expected.get(r.user_id as string)!.traits;
      for (const k of CONTEXT_TRAITS) {
        const set = Number(r[`ct_${k}`]) !== 0;
        expect(set ? typedTraitValue(r[`c_${k}`] as string, Number(r[`ct_${k}`])) : undefined, `${r.user_id as string}.${k}`).toEqual(traits[k]);
      }
    }
  });

  it('counts an event stored twice once, whether its copies are in one timeline row or two', async () => {
    const app = 'timeline_dup';
    const now = Math.floor(Date.now() / 1000);
    const asOf = AS_OFS[1]!;
    const a = generate(707, { appUsers: 30, asOf, receivedAt: now - 7200, tag: 'a' });
    // A background merge would make the two timeline rows one before the run reads them.
    await ch.exec(sql`SYSTEM STOP MERGES user_timeline`);
    let run;
    try {
      await insertEvents(ch, app, a);
      // The same rows again (a store that slipped past ingest's id lookup): a second timeline row per user.
      await insertEvents(ch, app, a.filter((_, i) => i % 2 === 0));
      expect(Math.max(...(await timelineRows(app)))).toBe(2);
      // The RFM step reads purchase_events, whose merges collapse the copies as events' do.
      await ch.exec(sql`OPTIMIZE TABLE purchase_events FINAL`);
      run = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'full' });
    } finally {
      await ch.exec(sql`SYSTEM START MERGES user_timeline`);
    }
    expectMatches(await runRows(app, run.run_id), referenceProfiles(a, asOf), 'events stored twice, in two rows');
    // Merged into one row per user: the same.
    await ch.exec(sql`OPTIMIZE TABLE user_timeline FINAL`);
    expect(Math.max(...(await timelineRows(app)))).toBe(1);
    const merged = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'full' });
    expectMatches(await runRows(app, merged.run_id), referenceProfiles(a, asOf), 'events stored twice, in one row');
  });

  /**
   * An app's events merged into one timeline part, then newer ones (more events
   * of some of its users, and new users) in parts of their own; with `copies`,
   * also copies of some events of both (a store that slipped past ingest's id
   * lookup, or the merged part read again by the other side of the scan's join
   * after a merge). Merges of user_timeline stay stopped, for the caller to start.
   */
  async function mergedPartAndNewer(app: string, seed: number, asOf: number, copies: boolean): Promise<TestEvent[]> {
    const now = Math.floor(Date.now() / 1000);
    const a = generate(seed, { appUsers: 30, asOf, receivedAt: now - 7200, tag: 'a' });
    await insertEvents(ch, app, a);
    await ch.exec(sql`OPTIMIZE TABLE user_timeline FINAL`);
    const users = [...new Set(a.map((e) => e.user_id))];
    const b = generate(seed + 1, { appUsers: 5, asOf, receivedAt: now - 3600, tag: 'b', existingUsers: users.slice(0, 10) });
    await ch.exec(sql`SYSTEM STOP MERGES user_timeline`);
    await insertEvents(ch, app, b);
    if (copies) await insertEvents(ch, app, [...b.filter((_, i) => i % 3 === 0), ...a.filter((_, i) => i % 4 === 0)]);
    // The RFM step reads purchase_events, whose merges collapse copies as the timeline's reads do.
    await ch.exec(sql`OPTIMIZE TABLE purchase_events FINAL`);
    return [...a, ...b];
  }

  /** A run's rows as written (no run record needed), one entry per row: a user written twice shows as two. */
  async function writtenRows(app: string, runId: string): Promise<Map<string, Row>> {
    const rows = await ch.rows<Row>(sql`SELECT ${PROFILE_SELECT} FROM profiles WHERE app_id = ${app} AND run_id = ${runId} ORDER BY user_id`);
    await ch.exec(sql`ALTER TABLE profiles DROP PARTITION (${app}, ${runId})`);
    const byUser = new Map(rows.map((r) => [r.user_id as string, r]));
    expect(byUser.size, 'one row per user').toBe(rows.length);
    return byUser;
  }
  // Written without the RFM scores (those need the run's purchasers): every other field as the reference has it.
  const NO_SCORES = ['r_score', 'f_score', 'm_score', 'rfm_segment'];

  it('reads the merged timeline part without FINAL, with the rows of other parts joined on', async () => {
    const app = 'merged_part';
    const asOf = AS_OFS[2]!;
    let events, run;
    try {
      events = await mergedPartAndNewer(app, 909, asOf, true);
      const plan = await planTimelineScan(ch, app);
      expect(plan).toMatchObject({ others: true });
      // The part is chosen by the app's own rows in each, not by the rows of every app the part holds.
      const parts = await ch.rows<{ rows: string }>(appPartsSql('user_timeline', app));
      expect(parts.reduce((n, x) => n + Number(x.rows), 0)).toBe((await timelineRows(app)).reduce((n, r) => n + r, 0));
      run = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'full' });
    } finally {
      await ch.exec(sql`SYSTEM START MERGES user_timeline`);
    }
    const expected = referenceProfiles(events, asOf);
    // Counted rows, not a map of them: a user read from both sides would have two.
    expect(run.users).toBe(expected.size);
    expectMatches(await runRows(app, run.run_id), expected, 'merged part without FINAL, other parts joined on');
  });

  it('reads every event when a merge replaces the planned part before the read, with other parts joined on', async () => {
    const app = 'merged_away';
    const asOf = AS_OFS[0]!;
    const runId = 'r20260101000000_0000beef';
    let events, result;
    try {
      events = await mergedPartAndNewer(app, 911, asOf, false);
      const scan = { ...scanOf(app, asOf, runId), zones: await zonesAt(ch, app, windowOf(new Date(asOf * 1000))) };
      const plan = await planTimelineScan(ch, app);
      expect(plan).toMatchObject({ others: true });
      // The planned part is merged away: the join's left side finds nothing, its right side everything.
      await ch.exec(sql`SYSTEM START MERGES user_timeline`);
      await ch.exec(sql`OPTIMIZE TABLE user_timeline FINAL`);
      result = await scanTimeline(ch, scan, plan);
    } finally {
      await ch.exec(sql`SYSTEM START MERGES user_timeline`);
    }
    expect(result.reread).toBe(false);
    expectMatches(await writtenRows(app, runId), referenceProfiles(events, asOf), 'merged away, other parts joined on', NO_SCORES);
  });

  it('reads with FINAL the users left without a row when a merge replaces the only part read', async () => {
    const app = 'merged_alone';
    const now = Math.floor(Date.now() / 1000);
    const asOf = AS_OFS[1]!;
    const runId = 'r20260101000000_0000cafe';
    const a = generate(913, { appUsers: 30, asOf, receivedAt: now - 7200, tag: 'a' });
    await insertEvents(ch, app, a);
    await ch.exec(sql`OPTIMIZE TABLE user_timeline FINAL`);
    const scan = { ...scanOf(app, asOf, runId), zones: await zonesAt(ch, app, windowOf(new Date(asOf * 1000))) };
    const plan = await planTimelineScan(ch, app);
    expect(plan).toMatchObject({ others: false });
    // Newer events, then a merge that replaces the planned part: the read of it finds nothing.
    const b = generate(914, { appUsers: 3, asOf, receivedAt: now - 3600, tag: 'b', existingUsers: [...new Set(a.map((e) => e.user_id))].slice(0, 5) });
    await insertEvents(ch, app, b);
    await ch.exec(sql`OPTIMIZE TABLE user_timeline FINAL`);
    await ch.exec(sql`OPTIMIZE TABLE purchase_events FINAL`);
    const result = await scanTimeline(ch, scan, plan);
    expect(result.reread).toBe(true);
    expectMatches(await writtenRows(app, runId), referenceProfiles([...a, ...b], asOf), 'merged alone, then away', NO_SCORES);
  });

  it('counts a newer event stored twice once in an incremental run', async () => {
    const app = 'state_dup';
    const now = Math.floor(Date.now() / 1000);
    const asOf1 = AS_OFS[0]!;
    const asOf2 = asOf1 + 3600;
    const a = generate(808, { appUsers: 30, asOf: asOf1, receivedAt: now - 7200, tag: 'a' });
    await insertEvents(ch, app, a);
    await buildProfiles(ch, app, { asOf: new Date(asOf1 * 1000), mode: 'full' });
    // Newer events only (after the previous as_of), for old and new users; stored twice, not merged yet.
    const users = [...new Set(a.map((e) => e.user_id))];
    const b = generate(809, { appUsers: 5, asOf: asOf2, receivedAt: now, tag: 'b', existingUsers: users }).map((e, i) => ({ ...e, ts: asOf1 + 1 + ((i * 37) % 3600) }));
    // A background merge would collapse the copies before the run reads them (it did once in CI).
    await ch.exec(sql`SYSTEM STOP MERGES profile_events_by_time`);
    let inc;
    try {
      await insertEvents(ch, app, b);
      await insertEvents(ch, app, b.filter((_, i) => i % 2 === 0));
      const copies = await ch.one<{ stored: string; distinct: string }>(
        sql`SELECT count() AS stored, uniqExact(user_id, ts, id_hash) AS distinct FROM profile_events_by_time WHERE app_id = ${app} AND ts > toDateTime(${asOf1})`,
      );
      expect(Number(copies!.stored)).toBeGreaterThan(Number(copies!.distinct));
      inc = await buildProfiles(ch, app, { asOf: new Date(asOf2 * 1000), mode: 'incremental', receivedMarginS: 60, fullWhenLateShare: 1 });
    } finally {
      await ch.exec(sql`SYSTEM START MERGES profile_events_by_time`);
    }
    expect(inc.mode).toBe('incremental');
    const incRows = await runRows(app, inc.run_id);
    expect(inc.users).toBe(incRows.size);
    expectMatches(incRows, referenceProfiles([...a, ...b], asOf2), 'newer events stored twice');
  });

  it('layers incremental runs on a base run, carries each layer forward, and starts a new base past the share', async () => {
    const app = 'layers';
    const now = Math.floor(Date.now() / 1000);
    let asOf = AS_OFS[1]!;
    let events = generate(808, { appUsers: 60, asOf, receivedAt: now - 7200, tag: 'a' });
    await insertEvents(ch, app, events);
    const base = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'full' });
    const users = [...new Set(events.map((e) => e.user_id))];
    const runs = [base];
    // Three later runs, each after a few users' new events (and a day or an hour
    // for windows and recency to move): two layered on the base, then one over
    // the share, which copies everyone.
    for (const [k, step, share] of [[1, 86400, 1], [2, 3600, 1], [3, 600, 0]] as const) {
      asOf += step;
      const more = generate(808 + k, { appUsers: 2, asOf, receivedAt: now, tag: `l${k}`, existingUsers: users.filter((_, i) => i % 9 === k) });
      await insertEvents(ch, app, more);
      events = [...events, ...more];
      const inc = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'incremental', receivedMarginS: 60, fullWhenLateShare: 1, layerShare: share });
      expect(inc.mode).toBe('incremental');
      expect(inc.base_run_id).toBe(share === 1 ? base.run_id : undefined);
      const rows = await runRows(app, inc.run_id);
      expectMatches(rows, referenceProfiles(events, asOf), `run ${k}`);
      const own = await ch.one<{ n: string; scored: string }>(
        sql`SELECT count() AS n, countIf(r_score IS NOT NULL) AS scored FROM profiles WHERE app_id = ${app} AND run_id = ${inc.run_id}`,
      );
      // A layered run holds fewer users than it reads; the last holds all. Each
      // writes its rows without their RFM scores: its readers compute them, as they did above.
      if (share === 1) expect(Number(own!.n)).toBeLessThan(rows.size);
      else expect(Number(own!.n)).toBe(rows.size);
      expect(Number(own!.scored)).toBe(0);
      expect(inc.users).toBe(rows.size);
      const full = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'full', keepPreviousRuns: 9 });
      expectSameRows(rows, await runRows(app, full.run_id), `run ${k} = full`);
      // What analysts and the API read for a layered latest run: the same rows.
      // (Its version, finished_at, beats the `complete` row's, so a merge keeps this one.)
      await ch.insert('profile_runs', [{ app_id: app, run_id: full.run_id, as_of: asOf, mode: 'full', state: 'dropped', users: 0, started_at: asOf, finished_at: Math.floor(Date.now() / 1000) + 60, previous_run_id: '' }]);
      await ch.exec(sql`ALTER TABLE profiles DROP PARTITION (${app}, ${full.run_id})`);
      const latest = await ch.rows<Row>(sql`SELECT ${PROFILE_SELECT} FROM profiles_latest WHERE app_id = ${app} ORDER BY user_id`);
      expect(latest.every((r) => r.run_id === undefined || r.run_id === inc.run_id)).toBe(true);
      expectSameRows(new Map(latest.map((r) => [r.user_id as string, r])), rows, `run ${k}: profiles_latest`);
      const someone = users[(k * 7) % users.length]!;
      const viaApi = await getProfile(ch, app, someone);
      expect(viaApi?.recency_days ?? null).toEqual(normalise(rows.get(someone)?.recency_days, 'recency_days'));
      expect(viaApi?.rfm_segment ?? null).toEqual(rows.get(someone)?.rfm_segment ?? null);
      // Segments over profile fields, and the fields they return, read the same rows.
      const seg = await evaluateSegment(ch, app, 'r_score >= 3', { limit: 10_000, fields: ['recency_days', 'rfm_segment'] });
      const want = [...rows.values()].filter((r) => r.r_score !== null && Number(r.r_score) >= 3);
      expect(want.length).toBeGreaterThan(0);
      expect(seg.users.map((u) => [u.user_id, u.recency_days, u.rfm_segment]).sort()).toEqual(
        want.map((r) => [r.user_id, normalise(r.recency_days, 'recency_days'), r.rfm_segment]).sort(),
      );
      runs.push(inc);
    }
    // The base outlives the runs before it as long as a kept run reads it.
    const kept = (await listRuns(ch, app)).filter((r) => r.state === 'complete').map((r) => r.run_id);
    expect(kept).toContain(runs[3]!.run_id);
  });

  it('keeps the base of a kept layered run when it drops superseded runs', async () => {
    const app = 'layer_drop';
    const now = Math.floor(Date.now() / 1000);
    let asOf = AS_OFS[0]!;
    const a = generate(909, { appUsers: 40, asOf, receivedAt: now - 7200, tag: 'a' });
    await insertEvents(ch, app, a);
    const base = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'full' });
    const ids: string[] = [];
    for (let k = 1; k <= 4; k++) {
      asOf += 600;
      ids.push((await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'incremental', receivedMarginS: 60, layerShare: 1, keepPreviousRuns: 1, keepRecentS: 0 })).run_id);
    }
    const runs = await listRuns(ch, app);
    const complete = runs.filter((r) => r.state === 'complete').map((r) => r.run_id);
    expect(complete).toEqual([ids[3], ids[2], base.run_id]);
    expectMatches(await runRows(app, ids[3]!), referenceProfiles(a, asOf), 'latest layered run after drops');
  });

  it('reads changed users from the state and buyers caches, layered or not, and from the run rows when a cache is missing, short or capped', async () => {
    const app = 'caches';
    const now = Math.floor(Date.now() / 1000);
    let asOf = AS_OFS[2]!;
    let events = generate(4242, { appUsers: 60, asOf, receivedAt: now - 7200, tag: 'a' });
    await insertEvents(ch, app, events);
    // A cache nobody recorded a run for (its run's records deleted) goes at the next run.
    await ch.exec(sql`CREATE TABLE IF NOT EXISTS profile_state_r20000101000000_deadbeef (user_id String) ENGINE = Memory`);
    const base = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'full' });
    const users = [...new Set(events.map((e) => e.user_id))];
    // This app's (other tests' apps share the database).
    const cacheTables = async () => {
      const ids = new Set((await listRuns(ch, app)).map((r) => r.run_id));
      return (await ch.rows<{ name: string }>(sql`SELECT name FROM system.tables WHERE database = currentDatabase() AND match(name, '^profile_(state|buyercache|statefeed)_r')`))
        .map((r) => r.name)
        .filter((n) => ids.has(n.replace(/^profile_[a-z]+_/, '')))
        .sort();
    };
    const cachesOf = (...runIds: string[]) => runIds.flatMap((id) => [`profile_buyercache_${id}`, `profile_state_${id}`]).sort();
    expect(await cacheTables()).toEqual(cachesOf(base.run_id));
    expect((await ch.rows(sql`SELECT name FROM system.tables WHERE database = currentDatabase() AND name = 'profile_state_r20000101000000_deadbeef'`)).length).toBe(0);
    const held = await ch.one<{ cached: string; rows: string }>(
      sql`SELECT (SELECT count() FROM ${raw('`profile_state_' + base.run_id + '`')}) AS cached, (SELECT count() FROM profiles WHERE app_id = ${app} AND run_id = ${base.run_id}) AS rows`,
    );
    expect(Number(held!.cached)).toBe(Number(held!.rows));

    // late: with events stamped before the previous run's as_of (a run with late users keeps no buyers cache).
    const next = async (k: number, opts: Parameters<typeof buildProfiles>[2] = {}, late = false) => {
      const previousAsOf = asOf;
      asOf += 3600 * k;
      // Each run also touches the users the run before it recomputed: a layered previous run's own rows must win over its base's.
      // On time: received before the previous run started, and no margin taken for events stored while it ran.
      const receivedAt = Math.floor(Date.now() / 1000) - 5;
      const more = generate(4242 + k, { appUsers: 3, asOf, receivedAt, tag: `c${k}`, existingUsers: users.filter((_, i) => i % 5 === k % 5 || i % 5 === (k + 4) % 5) })
        .filter((e) => late || e.ts > previousAsOf);
      await insertEvents(ch, app, more);
      events = [...events, ...more];
      const inc = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'incremental', receivedMarginS: late ? 60 : 0, fullWhenLateShare: 1, layerShare: 1, ...opts });
      expect(inc.mode).toBe('incremental');
      expectMatches(await runRows(app, inc.run_id), referenceProfiles(events, asOf), `run ${k} (${inc.previous_state})`);
      return inc;
    };
    // Layered on the base: from the base's caches; then from a layered run's own cache and its base's.
    const inc1 = await next(1);
    expect([inc1.previous_state, inc1.previous_buyers, inc1.base_run_id]).toEqual(['cache', 'cache', base.run_id]);
    const inc2 = await next(2);
    expect([inc2.previous_state, inc2.previous_buyers, inc2.base_run_id]).toEqual(['cache', 'cache', base.run_id]);
    // Only the latest run's caches and its base's stay; no feed outlives its run.
    expect(await cacheTables()).toEqual(cachesOf(base.run_id, inc2.run_id));
    // A ClickHouse restart empties Memory tables: a short cache is not read.
    await ch.exec(sql`TRUNCATE TABLE ${raw('`profile_state_' + base.run_id + '`')}`);
    await ch.exec(sql`TRUNCATE TABLE ${raw('`profile_buyercache_' + inc2.run_id + '`')}`);
    const inc3 = await next(3, { stateCacheMaxUsers: 0 }, true);
    expect([inc3.previous_state, inc3.previous_buyers]).toEqual(['rows', 'rows']);
    // Past the cap a run keeps no state cache, and with late users no buyers cache: the next run reads its rows.
    expect(await cacheTables()).toEqual(inc3.base_run_id ? cachesOf(inc3.base_run_id) : []);
    // A run that copies every user (none layered) fills a whole cache as it copies.
    const inc4 = await next(4, { layerShare: 0 });
    expect([inc4.previous_state, inc4.previous_buyers, inc4.base_run_id]).toEqual(['rows', 'rows', undefined]);
    expect(await cacheTables()).toEqual(cachesOf(inc4.run_id));
    const inc5 = await next(5);
    expect([inc5.previous_state, inc5.previous_buyers, inc5.base_run_id]).toEqual(['cache', 'cache', inc4.run_id]);
    const full = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'full', keepPreviousRuns: 9 });
    expectSameRows(await runRows(app, inc5.run_id), await runRows(app, full.run_id), 'run 5 = full');
  });

  it('falls back to a full run without a previous run, or when as_of moves back', async () => {
    const app = 'fallback';
    const now = Math.floor(Date.now() / 1000);
    const asOf = AS_OFS[1]!;
    const a = generate(7, { appUsers: 20, asOf, receivedAt: now - 7200, tag: 'a' });
    await insertEvents(ch, app, a);
    const first = await buildProfiles(ch, app, { asOf: new Date(asOf * 1000), mode: 'incremental' });
    expect(first.mode).toBe('full');
    const back = await buildProfiles(ch, app, { asOf: new Date((asOf - 86400) * 1000), mode: 'incremental' });
    expect(back.mode).toBe('full');
    expectMatches(await runRows(app, back.run_id), referenceProfiles(a, asOf - 86400), 'as_of moved back');
  });
});
