// Which profile run a segment's profile fields come from (profiles/run-at.ts):
// the run at exactly an explicit as_of, built when missing; the latest run at
// "now". Against the real ClickHouse and the real profile job.
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { buildProfiles } from '../../profiles/job.ts';
import { listRuns, type ProfileRun } from '../../profiles/read.ts';
import { isRunAt } from '../../profiles/run-at.ts';
import { evaluateSegment } from '../../segments/evaluate.ts';
import { explainSegment } from '../../segments/explain.ts';
import { insertEvents } from '../profiles/events.ts';
import type { TestEvent } from '../profiles/reference.ts';
import { testDatabase } from '../support/env.ts';

let ch: ClickHouse;
beforeAll(async () => {
  ch = await testDatabase('wt_segrunat');
});

const DAY = 86_400;
const T = Date.parse('2026-10-01T00:00:00Z') / 1000;
const at = (s: number) => new Date(s * 1000);
const iso = (s: number) => at(s).toISOString().replace('.000Z', 'Z');
let n = 0;
const event = (user_id: string, ts: number, event = 'purchase', type: 'track' | 'identify' = 'track'): TestEvent => ({
  event_id: `e${n++}`,
  user_id,
  ts,
  type,
  event: type === 'track' ? event : '',
  properties: event === 'purchase' ? { amount: 10 } : {},
  traits: {},
  context: {},
  received_at: T - 100 * DAY,
});
// u1 bought 40 days and 1 day before T; u2 only after T; u3 viewed 5 days before T; u4 identified after T.
const EVENTS = [event('u1', T - 40 * DAY), event('u1', T - DAY), event('u2', T + DAY), event('u3', T - 5 * DAY, 'view'), event('u4', T + 3 * DAY, '', 'identify')];
const members = async (app: string, expression: string, asOf?: number, fields?: string[]) => {
  const r = await evaluateSegment(ch, app, expression, { ...(asOf !== undefined ? { asOf: at(asOf) } : {}), limit: 100, ...(fields ? { fields } : {}) });
  return { ids: r.users.map((u) => u.user_id), profilesAsOf: r.profiles_as_of, users: r.users };
};
const runsAt = async (app: string, s: number) => (await listRuns(ch, app)).filter((r) => r.state === 'complete' && r.as_of.getTime() === s * 1000);

describe('profile fields at the evaluation as_of', () => {
  it('builds the run at an explicit as_of that has none, even before any run exists', async () => {
    await insertEvents(ch, 'first', EVENTS);
    const r = await members('first', 'purchases_30d >= 1', T);
    expect(r.ids).toEqual(['u1']);
    expect(r.profilesAsOf).toBe(iso(T));
    expect(await runsAt('first', T)).toHaveLength(1);
    // Every user of the universe at T has the never-null fields.
    expect((await members('first', 'events_total is null', T)).ids).toEqual([]);
    expect((await members('first', 'events_total >= 0', T)).ids).toEqual(['u1', 'u3']);
  });

  it('reads the run at exactly the as_of, not an earlier one whose windows are stale', async () => {
    await insertEvents(ch, 'stale', EVENTS);
    await buildProfiles(ch, 'stale', { asOf: at(T), mode: 'full' });
    // Two days on: u1's purchase of T - 1d is still in 30 days, and u2 bought; u4 only identified.
    const later = T + 2 * DAY;
    expect((await members('stale', 'purchases_30d >= 1', later)).ids).toEqual(['u1', 'u2']);
    expect((await members('stale', 'events_total is null', later)).ids).toEqual([]);
    expect((await members('stale', 'first_seen >= "2026-10-01T00:00:01Z"', T + 4 * DAY)).ids).toEqual(['u2', 'u4']);
    // Fields to return need the run too, and so does explain.
    const f = await members('stale', 'did(purchase)', later, ['purchases_total', 'last_purchase_at']);
    expect(f.users).toEqual([
      { user_id: 'u1', purchases_total: 2, last_purchase_at: iso(T - DAY) },
      { user_id: 'u2', purchases_total: 1, last_purchase_at: iso(T + DAY) },
    ]);
    const ex = await explainSegment(ch, 'stale', 'recency_days <= 1', { asOf: at(T + 6 * DAY) });
    expect(ex.nodes[0]!.count).toBe(0);
    expect((await explainSegment(ch, 'stale', 'recency_days <= 5', { asOf: at(T + 6 * DAY) })).nodes[0]!.count).toBe(1);
    // Built runs are kept like any other: the newest ones (dropSupersededRuns).
    expect(await runsAt('stale', T + 6 * DAY)).toHaveLength(1);
  });

  it('builds nothing for an expression without profile fields, and one run for concurrent evaluations at one instant', async () => {
    await insertEvents(ch, 'once', EVENTS);
    await buildProfiles(ch, 'once', { asOf: at(T), mode: 'full' });
    expect((await members('once', 'did(purchase)', T + DAY)).ids).toEqual(['u1', 'u2']);
    expect(await runsAt('once', T + DAY)).toHaveLength(0);
    const s = T + 7 * DAY;
    const all = await Promise.all(Array.from({ length: 4 }, () => members('once', 'events_total >= 1', s)));
    for (const r of all) expect(r.ids).toEqual(['u1', 'u2', 'u3']);
    expect(await runsAt('once', s)).toHaveLength(1);
  });

  it('builds one run for a future as_of, and the runs for now stay', async () => {
    const now = Math.floor(Date.now() / 1000);
    await insertEvents(ch, 'future', [event('f1', now - DAY)]);
    const current = await buildProfiles(ch, 'future', { asOf: at(now), mode: 'full' });
    const later = now + 2 * DAY;
    for (let i = 0; i < 3; i++) {
      const r = await members('future', 'purchases_30d >= 1', later);
      expect([r.ids, r.profilesAsOf]).toEqual([['f1'], iso(later)]);
    }
    expect(await runsAt('future', later)).toHaveLength(1);
    // A run for a future instant is nobody's latest: readers at now keep theirs.
    expect((await members('future', 'purchases_30d >= 1')).profilesAsOf).toBe(iso(now));
    expect((await listRuns(ch, 'future')).find((r) => r.run_id === current.run_id)?.state).toBe('complete');
  });

  it('takes a run built before its instant as the run at it only while that instant is ahead', () => {
    const t = Date.parse('2026-12-01T00:00:00Z');
    const run = (startedAt: number) => ({ as_of: new Date(t), started_at: new Date(startedAt) }) as ProfileRun;
    expect(isRunAt(run(t - 600_000), new Date(t), t - 60_000)).toBe(true); // built at 23:50, asked at 23:59
    expect(isRunAt(run(t - 600_000), new Date(t), t + 300_000)).toBe(false); // asked at 00:05: the events of 23:50–00:00 are due
    expect(isRunAt(run(t + 1_000), new Date(t), t + 300_000)).toBe(true);
    expect(isRunAt(run(t + 1_000), new Date(t + 1_000), t + 300_000)).toBe(false);
  });

  it('keeps a run built for one evaluation while the next build runs', async () => {
    await insertEvents(ch, 'grace', EVENTS);
    await buildProfiles(ch, 'grace', { asOf: at(T + 30 * DAY), mode: 'full' });
    await buildProfiles(ch, 'grace', { asOf: at(T + 31 * DAY), mode: 'full' });
    // Past instants: neither is among the latest two, and each build drops what it may.
    expect((await members('grace', 'purchases_total >= 1', T)).ids).toEqual(['u1']);
    expect((await members('grace', 'purchases_total >= 1', T + 2 * DAY)).ids).toEqual(['u1', 'u2']);
    expect(await runsAt('grace', T)).toHaveLength(1);
  });

  it('reads the latest run without an as_of, and builds one at now only when the app has none', async () => {
    await insertEvents(ch, 'now', EVENTS);
    const before = await members('now', 'events_total >= 1');
    expect(before.ids).toEqual(['u1', 'u2', 'u3']);
    expect(before.profilesAsOf).not.toBeNull();
    const runs = (await listRuns(ch, 'now')).filter((r) => r.state === 'complete');
    expect(runs).toHaveLength(1);
    expect((await members('now', 'events_total >= 2')).profilesAsOf).toBe(before.profilesAsOf);
    expect((await listRuns(ch, 'now')).filter((r) => r.state === 'complete')).toHaveLength(1);
  });

  it('builds the run at a past as_of again when an event up to that instant is stored after the run was built', async () => {
    await insertEvents(ch, 'backfill', EVENTS);
    expect((await members('backfill', 'purchases_total >= 1', T)).ids).toEqual(['u1']);
    expect((await members('backfill', 'purchases_total >= 1', T)).ids).toEqual(['u1']);
    expect(await runsAt('backfill', T)).toHaveLength(1);
    // A backfill: u3 bought two days before T, stored now.
    await insertEvents(ch, 'backfill', [{ ...event('u3', T - 2 * DAY), received_at: Math.floor(Date.now() / 1000) }]);
    const r = await members('backfill', 'purchases_total >= 1', T, ['purchases_total']);
    expect(r.users).toEqual([{ user_id: 'u1', purchases_total: 2 }, { user_id: 'u3', purchases_total: 1 }]);
    expect(r.profilesAsOf).toBe(iso(T));
    // The same condition as an event condition agrees.
    expect((await members('backfill', 'did(purchase)', T)).ids).toEqual(['u1', 'u3']);
  });

  it('builds the run at a past as_of again when ingest repaired events since the run was built', async () => {
    await insertEvents(ch, 'repaired', EVENTS);
    expect((await members('repaired', 'purchases_total >= 1', T)).ids).toEqual(['u1']);
    // An insert that failed part-way, long ago by its received_at, re-derived by a repair now (ingest/repair.ts).
    await insertEvents(ch, 'repaired', [event('u3', T - 2 * DAY)]);
    await ch.insert('ingest_repairs', [{ app_id: 'repaired', user_id: 'u3', repaired_at: Math.floor(Date.now() / 1000) }]);
    const r = await members('repaired', 'purchases_total >= 1', T, ['purchases_total']);
    expect(r.users).toEqual([{ user_id: 'u1', purchases_total: 2 }, { user_id: 'u3', purchases_total: 1 }]);
    expect(r.profilesAsOf).toBe(iso(T));
  });

  it('gives the members the latest run does not hold their fields, computed as GET /v1/users computes them', async () => {
    await insertEvents(ch, 'newbie', EVENTS);
    await buildProfiles(ch, 'newbie', { asOf: at(T), mode: 'full' });
    // u2's only event is after the run: the run holds u1 and u3.
    const r = await members('newbie', 'did(purchase)', undefined, ['events_total', 'first_seen', 'purchases_total', 'random_bucket']);
    expect(r.profilesAsOf).toBe(iso(T));
    expect(r.users.map((u) => [u.user_id, u.events_total, u.first_seen, u.purchases_total])).toEqual([
      ['u1', 2, iso(T - 40 * DAY), 2],
      ['u2', 1, iso(T + DAY), 1],
    ]);
    for (const u of r.users) expect(u.random_bucket).toEqual(expect.any(Number));
  });
});
