// Differential tests: random expressions over every node kind, compiled and run
// on the real ClickHouse, compared with the independent reference evaluator
// (reference.ts) over the same random data. Many expressions share one
// ClickHouse round trip (UNION ALL), and fast-check shrinks a failing batch
// down to a minimal expression.
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { latestRun } from '../../profiles/read.ts';
import { contextIncompleteSql, onlyContextTraits } from '../../profiles/traits.ts';
import type { Expr } from '../../segments/ast.ts';
import { compileSegment } from '../../segments/compile.ts';
import { testDatabase } from '../support/env.ts';
import { caseArb, AS_OFS } from './arbitraries.ts';
import { EDGE_DURATIONS, generateApp, loadApp, type AppData } from './fixtures.ts';
import { Reference } from './reference.ts';

// 105 + 35 batches of 8..25 expressions: over 2,000 random cases per CI run (checked below).
const RUNS = Number(process.env.SEGMENT_DIFF_RUNS ?? 105);
const BATCH = 25;
const CONCURRENCY = 4;

let ch: ClickHouse;
const apps: { app: AppData; ref: Reference; runs: Map<number, string | null> }[] = [];
let checked = 0;
/**
 * App 0 reads context traits from user_context_traits where a segment's traits
 * are all context ones (compile.ts contextTraitsSide), given each as_of's users
 * with a change to one after it; app 1 always from every change.
 */
const contextIncomplete = new Map<number, string[]>();
let contextSides = 0;

beforeAll(async () => {
  ch = await testDatabase('wt_segdiff');
  // Two apps with the same user ids and different data: any leak between them shows as a difference.
  for (const [appId, seed] of [
    ['app_a', 11],
    ['app_b', 29],
  ] as const) {
    const app = generateApp(appId, seed);
    await loadApp(ch, app);
    const runs = new Map<number, string | null>();
    for (const asOf of AS_OFS) runs.set(asOf, (await latestRun(ch, appId, new Date(asOf * 1000)))?.run_id ?? null);
    apps.push({ app, ref: new Reference(app.ref), runs });
  }
  for (const asOf of AS_OFS) {
    const rows = await ch.rows<{ user_id: string }>(contextIncompleteSql(apps[0]!.app.appId, new Date(asOf * 1000), 1_000_000));
    contextIncomplete.set(asOf, rows.map((r) => r.user_id));
  }
});

interface Case {
  expr: Expr;
  asOf: number;
}

function compileCase(appIndex: number, c: Case) {
  const { app, runs } = apps[appIndex]!;
  const compiled = compileSegment(c.expr, {
    appId: app.appId,
    asOf: new Date(c.asOf * 1000),
    profileRunId: runs.get(c.asOf) ?? null,
    savedSegments: app.ref.saved,
    ...(appIndex === 0 ? { contextIncomplete: contextIncomplete.get(c.asOf)! } : {}),
  });
  if (appIndex === 0 && onlyContextTraits(compiled.traitKeys)) contextSides++;
  return compiled;
}

/**
 * Members of every case, each through the members query it would run alone.
 * Queries run a few at a time: on 18.16 the cost of a small-data query is its
 * analysis, which grows faster than linearly when many are glued into one
 * UNION ALL (measured: 10 expressions 2 s, 60 expressions 49 s), so separate
 * concurrent queries are the fast batch.
 */
async function membersOf(appIndex: number, cases: Case[]): Promise<string[][]> {
  const out: string[][] = cases.map(() => []);
  let next = 0;
  const worker = async () => {
    while (next < cases.length) {
      const i = next++;
      const rows = await ch.rows<{ user_id: string }>(compileCase(appIndex, cases[i]!).members);
      out[i] = rows.map((r) => r.user_id);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return out;
}

function referenceMembers(appIndex: number, c: Case): string[] {
  return apps[appIndex]!.ref.evaluate(c.expr, c.asOf);
}

describe('segment compiler vs reference evaluator', () => {
  it('the data has events on window edges and non-integer trait numbers (the generator covers them)', () => {
    for (const { app } of apps) {
      const events = app.ref.events;
      const at = (t: number) => events.filter((e) => e.ts === t).length;
      for (const asOf of AS_OFS) {
        expect(at(asOf), `events at as_of ${asOf}`).toBeGreaterThan(0);
        // On the lower edge of `within D` (outside) and one second later (inside), for some edge durations.
        expect(EDGE_DURATIONS.filter((d) => at(asOf - d.seconds) > 0 && at(asOf - d.seconds + 1) > 0).length).toBeGreaterThan(0);
      }
      const traitNumbers = events.flatMap((e) => Object.values(e.traits)).filter((v) => typeof v === 'number' && !Number.isInteger(v));
      expect(new Set(traitNumbers).size).toBeGreaterThanOrEqual(4);
      expect(events.some((e) => typeof e.traits.country === 'number')).toBe(true);
    }
  });

  it('reads the same profile run as the reference', () => {
    for (const { ref, runs } of apps) for (const asOf of AS_OFS) expect(runs.get(asOf) ?? null).toBe(ref.profileRun(asOf)?.run_id ?? null);
  });

  for (const appIndex of [0, 1]) {
    it(`random expressions give the reference's members (app ${appIndex})`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(caseArb, { minLength: 8, maxLength: BATCH }), async (cases) => {
          const got = await membersOf(appIndex, cases);
          checked += cases.length;
          cases.forEach((c, i) => {
            expect({ expr: c.expr, asOf: c.asOf, members: got[i] }).toEqual({ expr: c.expr, asOf: c.asOf, members: referenceMembers(appIndex, c) });
          });
        }),
        { numRuns: appIndex === 0 ? RUNS : Math.ceil(RUNS / 3), seed: Number(process.env.SEGMENT_DIFF_SEED ?? 20261128) + appIndex, endOnFailure: false },
      );
    });
  }

  it('compared thousands of random expressions', () => {
    // Guards the scale of the two properties above (a shrunk failure stops them early, and fails them anyway).
    if (RUNS >= 105) expect(checked).toBeGreaterThanOrEqual(2000);
    // Some read context traits from user_context_traits, at instants where some users have a change after.
    expect(contextSides).toBeGreaterThan(50);
    expect([...contextIncomplete.values()].some((users) => users.length > 0)).toBe(true);
    console.info(`segment differential: ${checked} random expressions compared with the reference, ${contextSides} compiled with a context traits side`);
  });

  it('count and per-node counts (explain) agree with the reference', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const compiled = compileCase(0, c);
        const [count] = await ch.rows<{ count: string }>(compiled.count);
        const [nodes] = await ch.rows<Record<string, string>>(compiled.nodeCounts);
        const { ref } = apps[0]!;
        expect(Number(count!.count)).toBe(ref.count(c.expr, c.asOf));
        expect(Number(nodes!.universe)).toBe(ref.universe(c.asOf).length);
        for (const n of compiled.nodes) {
          const sub = nodeAt(c.expr, n.path);
          expect({ path: n.path, count: Number(nodes![n.column]) }).toEqual({ path: n.path, count: ref.count(sub, c.asOf) });
        }
      }),
      { numRuns: Math.max(5, Math.floor(RUNS / 4)), seed: 7 },
    );
  });

  it('sequences need strictly increasing timestamps, and `within` bounds last minus first', async () => {
    // Hand-made data beats chance here: exact ties and the window edge.
    const seq = (within?: number): Expr => ({
      kind: 'sequence',
      steps: [{ event: 'a' }, { event: 'b' }, { event: 'c' }],
      ...(within ? { within: { amount: within, unit: 's', seconds: within } } : {}),
    });
    const t = 1_700_000_000;
    const rows = [
      ['tie', [['a', t], ['b', t], ['c', t + 5]]],
      ['ok', [['a', t], ['b', t + 1], ['c', t + 2]]],
      ['edge', [['a', t], ['b', t + 5], ['c', t + 10]]],
      ['late_start', [['a', t], ['a', t + 8], ['b', t + 9], ['c', t + 12]]],
    ] as const;
    await ch.insert(
      'events',
      rows.flatMap(([user, evs]) =>
        evs.map(([event, ts], i) => ({ app_id: 'app_seq', user_id: user, ts, event_id: `${user}${i}`, type: 'track', event, prop_keys: [], prop_strings: [], prop_numbers: [] })),
      ),
    );
    const run = async (e: Expr) =>
      (await ch.rows<{ user_id: string }>(compileSegment(e, { appId: 'app_seq', asOf: new Date((t + 100) * 1000), profileRunId: null }).members)).map((r) => r.user_id);
    expect(await run(seq())).toEqual(['edge', 'late_start', 'ok']);
    expect(await run(seq(10))).toEqual(['edge', 'late_start', 'ok']);
    expect(await run(seq(9))).toEqual(['late_start', 'ok']);
    expect(await run(seq(3))).toEqual(['ok']);
  });
});

function nodeAt(e: Expr, path: (string | number)[]): Expr {
  let cur: Expr = e;
  for (let i = 0; i < path.length; i++) {
    const key = path[i];
    if ((key === 'and' || key === 'or') && (cur.kind === 'and' || cur.kind === 'or')) cur = cur.items[path[++i] as number]!;
    else if (key === 'not' && cur.kind === 'not') cur = cur.item;
    else throw new Error(`bad path ${JSON.stringify(path)}`);
  }
  return cur;
}

