// Edge cases of the faster read paths, on hand-made data where chance would
// rarely reach them: the universe from app_users (as_of before some users'
// first event, events stored out of order, unmerged and merged rows), trait
// ties on equal ts (broken by the event_id's bytes, whatever the insert
// order), and the semi-/anti-join forms of top-level conjuncts.
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { raw } from '../../lib/sql.ts';
import { compileSegment } from '../../segments/compile.ts';
import { parseSegment } from '../../segments/parse.ts';
import { testDatabase } from '../support/env.ts';

const APP = 'app_paths';
const T = 1_700_000_000;
let ch: ClickHouse;

type Row = { user_id: string; ts: number; event_id: string; event?: string; traits?: [string, string, number][] };

async function insertEvents(app: string, rows: Row[]): Promise<void> {
  await ch.insert(
    'events',
    rows.map((r) => ({
      app_id: app,
      user_id: r.user_id,
      ts: r.ts,
      event_id: r.event_id,
      type: r.traits ? 'identify' : 'track',
      event: r.traits ? '' : (r.event ?? 'view'),
      prop_keys: [],
      prop_strings: [],
      prop_numbers: [],
      trait_keys: (r.traits ?? []).map((t) => t[0]),
      trait_values: (r.traits ?? []).map((t) => t[1]),
      trait_types: (r.traits ?? []).map((t) => t[2]),
    })),
  );
}

async function members(text: string, asOf: number, app = APP, profileRunId: string | null = null): Promise<string[]> {
  const compiled = compileSegment(parseSegment(text), { appId: app, asOf: new Date(asOf * 1000), profileRunId });
  const rows = await ch.rows<{ user_id: string }>(compiled.members);
  const [count] = await ch.rows<{ count: string }>(compiled.count);
  const ids = rows.map((r) => r.user_id);
  expect(Number(count!.count)).toBe(ids.length);
  return ids;
}

async function universe(asOf: number, app = APP): Promise<number> {
  const compiled = compileSegment(parseSegment('tag("none")'), { appId: app, asOf: new Date(asOf * 1000), profileRunId: null });
  const [row] = await ch.rows<{ universe: string }>(compiled.nodeCounts);
  return Number(row!.universe);
}

beforeAll(async () => {
  ch = await testDatabase('wt_segpaths');
  // Separate inserts make separate parts (and app_users rows): c's earliest
  // event arrives last, after a later one.
  await insertEvents(APP, [{ user_id: 'a', ts: T, event_id: 'a1', event: 'open' }]);
  await insertEvents(APP, [
    { user_id: 'b', ts: T + 100, event_id: 'b1', event: 'open' },
    { user_id: 'c', ts: T + 200, event_id: 'c2', event: 'view' },
  ]);
  await insertEvents(APP, [{ user_id: 'c', ts: T + 50, event_id: 'c1', event: 'open' }]);
  // Another app with an earlier event for the same user ids must not leak in.
  await insertEvents('app_other', [{ user_id: 'b', ts: T - 1000, event_id: 'x1' }]);
});

describe('universe from app_users', () => {
  it('holds exactly the users with an event at or before as_of, for any as_of, merged or not', async () => {
    const [{ rows }] = (await ch.rows<{ rows: string }>(raw(`SELECT count() AS rows FROM app_users WHERE app_id = '${APP}' AND user_id = 'c'`))).map(
      (r) => ({ rows: Number(r.rows) }),
    ) as [{ rows: number }];
    expect(rows).toBe(2); // unmerged: one row per insert
    for (const merged of [false, true]) {
      if (merged) await ch.exec(raw('OPTIMIZE TABLE app_users FINAL'));
      expect(await members('not did(purchase)', T - 1)).toEqual([]);
      expect(await members('not did(purchase)', T)).toEqual(['a']);
      expect(await members('not did(purchase)', T + 49)).toEqual(['a']);
      expect(await members('not did(purchase)', T + 50)).toEqual(['a', 'c']);
      expect(await members('not did(purchase)', T + 100)).toEqual(['a', 'b', 'c']);
      expect(await universe(T + 99)).toBe(2);
      expect(await universe(T - 1)).toBe(0);
      expect(await members('not did(open)', T + 300)).toEqual([]);
      expect(await members('not did(view)', T + 199)).toEqual(['a', 'b', 'c']);
      expect(await members('not did(view)', T + 200)).toEqual(['a', 'b']);
      expect(await members('user_id = "b" and not did(view)', T + 300)).toEqual(['b']);
    }
    expect(await members('not did(purchase)', T - 1001, 'app_other')).toEqual([]);
    expect(await members('not did(purchase)', T - 1000, 'app_other')).toEqual(['b']);
  });
});

describe('first_did from user_event_firsts', () => {
  it('finds each user\'s first event of a name up to as_of, whatever the insert order, merged or not', async () => {
    // Same data as above: c's first 'open' (T + 50) was inserted after a later event
    // of c; here c gets one more 'open' later still, in its own part; a has an identify only after T.
    await insertEvents(APP, [{ user_id: 'c', ts: T + 400, event_id: 'c3', event: 'open' }]);
    await insertEvents(APP, [{ user_id: 'a', ts: T + 500, event_id: 'a2', traits: [['plan', 'pro', 1]] }]);
    const rows = await ch.rows<{ n: string }>(raw(`SELECT count() AS n FROM user_event_firsts WHERE app_id = '${APP}' AND user_id = 'c' AND event = 'open'`));
    expect(Number(rows[0]!.n)).toBe(2); // unmerged: one row per insert
    for (const merged of [false, true]) {
      if (merged) await ch.exec(raw('OPTIMIZE TABLE user_event_firsts FINAL'));
      // The first open of each user: a T, c T + 50, b T + 100.
      expect(await members('first_did(open)', T - 1)).toEqual([]);
      expect(await members('first_did(open)', T + 49)).toEqual(['a']);
      expect(await members('first_did(open, within 1h)', T + 100)).toEqual(['a', 'b', 'c']);
      expect(await members('first_did(open, within 51s)', T + 100)).toEqual(['b', 'c']);
      expect(await members('first_did(open, within 50s)', T + 100)).toEqual(['b']);
      // A later open never moves the first one: c is not "first opened in the last minute" at T + 430.
      expect(await members('first_did(open, within 60s)', T + 430)).toEqual([]);
      expect(await members('first_did(open, between "1970-01-01T00:00:00Z" and "2023-11-14T22:14:11Z")', T + 1000)).toEqual(['a', 'c']);
      // Users without such an event by as_of: c had only a view by T + 49 (its open came later).
      expect(await members('not first_did(open)', T + 49)).toEqual([]);
      expect(await members('not first_did(open) and did(view)', T + 200)).toEqual([]);
      expect(await members('not first_did(view)', T + 300)).toEqual(['a', 'b']);
      // a's identify at T + 500 is no event of any name for first_did.
      expect(await members('first_did(open, within 60s) or first_did(view, within 60s)', T + 520)).toEqual([]);
      // Combined with a scan condition and under `or`, where a user may lack scanned events.
      expect(await members('first_did(open) or did(view, within 10s)', T + 300)).toEqual(['a', 'b', 'c']);
      expect(await members('first_did(open, within 60s) or did(view, within 10s)', T + 205)).toEqual(['c']);
    }
    expect(await members('first_did(open)', T + 1000, 'app_other')).toEqual([]);
  });
});

describe('trait ties on equal ts', () => {
  it('take the value of the greatest event_id by bytes, whatever the insert order, a removal included', async () => {
    const app = 'app_ties';
    // 'e9' > 'e10' > 'e1' as bytes; the winner is inserted neither first nor last, in separate parts.
    await insertEvents(app, [{ user_id: 'u1', ts: T, event_id: 'e10', traits: [['plan', 'silver', 1]] }]);
    await insertEvents(app, [{ user_id: 'u1', ts: T, event_id: 'e9', traits: [['plan', 'gold', 1]] }]);
    await insertEvents(app, [{ user_id: 'u1', ts: T, event_id: 'e1', traits: [['plan', 'bronze', 1]] }]);
    // u2: the tie winner removes the trait; u3: a prefix id loses to its extension.
    await insertEvents(app, [
      { user_id: 'u2', ts: T, event_id: 'f2', traits: [['plan', '', 0]] },
      { user_id: 'u2', ts: T, event_id: 'f10', traits: [['plan', 'gold', 1]] },
      { user_id: 'u3', ts: T, event_id: 'g1', traits: [['plan', 'gold', 1], ['score', '7', 2]] },
      { user_id: 'u3', ts: T, event_id: 'g1x', traits: [['plan', 'tin', 1], ['score', '12.5', 2]] },
      // A later ts wins over any event_id.
      { user_id: 'u4', ts: T + 1, event_id: 'a', traits: [['plan', 'gold', 1]] },
      { user_id: 'u4', ts: T, event_id: 'zzz', traits: [['plan', 'tin', 1]] },
    ]);
    const at = T + 10;
    expect(await members('traits.plan = "gold"', at, app)).toEqual(['u1', 'u4']);
    expect(await members('traits.plan is null', at, app)).toEqual(['u2']);
    expect(await members('traits.plan = "tin"', at, app)).toEqual(['u3']);
    expect(await members('traits.score > 10', at, app)).toEqual(['u3']);
    expect(await members('traits.score = 7', at, app)).toEqual([]);
    // Before u4's later event its older value is current.
    expect(await members('traits.plan = "tin"', T, app)).toEqual(['u3', 'u4']);
    expect(await members('not (traits.plan = "gold")', at, app)).toEqual(['u2', 'u3']);
  });
});

describe('conjuncts as semi- and anti-joins', () => {
  it('give the same members as the joined form', async () => {
    const app = 'app_semi';
    await insertEvents(app, [
      { user_id: 'p', ts: T, event_id: 'p0', traits: [['country', 'CN', 1]] },
      { user_id: 'p', ts: T + 5, event_id: 'p1', event: 'view' },
      { user_id: 'q', ts: T, event_id: 'q0', traits: [['country', 'US', 1]] },
      { user_id: 'r', ts: T + 5, event_id: 'r1', event: 'buy' },
    ]);
    await ch.insert('user_tags', [
      { app_id: app, user_id: 'q', tag: 'vip', present: 1, changed_at: T, seq: 1 },
      { app_id: app, user_id: 'r', tag: 'vip', present: 1, changed_at: T, seq: 2 },
      { app_id: app, user_id: 'r', tag: 'vip', present: 0, changed_at: T + 1, seq: 3 },
      // A tag on a user without events is outside the universe.
      { app_id: app, user_id: 'ghost', tag: 'vip', present: 1, changed_at: T, seq: 4 },
    ]);
    const at = T + 10;
    expect(await members('tag("vip")', at, app)).toEqual(['q']);
    expect(await members('not tag("vip") and not did(view)', at, app)).toEqual(['r']);
    expect(await members('country = "CN" and did(view)', at, app)).toEqual(['p']);
    expect(await members('country != "CN" and not did(buy)', at, app)).toEqual(['q']);
    expect(await members('not (country = "CN") and not tag("vip")', at, app)).toEqual(['r']);
    expect(await members('did(buy) and not (country = "US" or tag("vip"))', at, app)).toEqual(['r']);
    expect(await members('tag("vip") and country is not null', at, app)).toEqual(['q']);
    expect(await members('tag("vip")', T - 1, app)).toEqual([]);

    // Profile conditions with trait/tag conditions: the sides aggregate only the profile's users.
    await ch.insert('profiles', [
      { app_id: app, run_id: 'r1', as_of: T + 8, user_id: 'p', rfm_segment: 'loyal', events_30d: 3 },
      { app_id: app, run_id: 'r1', as_of: T + 8, user_id: 'q', rfm_segment: 'loyal', events_30d: 1 },
      { app_id: app, run_id: 'r1', as_of: T + 8, user_id: 'r', rfm_segment: null, events_30d: 1 },
    ]);
    const withRun = (text: string) => members(text, at, app, 'r1');
    expect(await withRun('rfm_segment = "loyal" and country = "CN"')).toEqual(['p']);
    expect(await withRun('rfm_segment = "loyal" and country != "CN"')).toEqual(['q']);
    expect(await withRun('events_30d >= 1 and tag("vip")')).toEqual(['q']);
    expect(await withRun('events_30d >= 1 and not tag("vip")')).toEqual(['p', 'r']);
    expect(await withRun('rfm_segment is null and not tag("vip") and did(buy)')).toEqual(['r']);
    expect(await withRun('events_30d < 3 and country = "US" and tag("vip")')).toEqual(['q']);
    expect(await withRun('events_30d > 5 and country = "CN"')).toEqual([]);
  });
});
