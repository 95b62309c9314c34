// The shape of the generated SQL (pure, no ClickHouse): one shared events scan,
// app scoping in every subquery, values only as escaped literals, the choice
// of driver, and exhaustiveness over node kinds at the type level.
import { describe, expect, it } from 'vitest';
import type { Expr } from '../../segments/ast.ts';
import { compileSegment, type CompileContext } from '../../segments/compile.ts';
import { parseSegment } from '../../segments/parse.ts';

const ctx: CompileContext = { appId: 'app_x', asOf: new Date('2026-06-01T00:00:00.750Z'), profileRunId: 'run_1' };
const compile = (text: string, c: Partial<CompileContext> = {}) => compileSegment(parseSegment(text), { ...ctx, ...c });
const count = (haystack: string, needle: string) => haystack.split(needle).length - 1;

describe('compiled SQL', () => {
  it('reads events once for all behavioral conditions of an expression', () => {
    const { members } = compile(
      'did(add_to_cart, within 3d) and not did(purchase, within 3d) and sum(purchase.amount, within 90d) > 100 and sequence(view, purchase, within 1d) and first_did(app_open where os = "ios")',
    );
    expect(count(members.text, 'FROM events')).toBe(1);
    expect(members.text).toContain("event IN ('add_to_cart', 'purchase', 'view', 'app_open')");
  });

  it('answers first_did without a where from each user\'s first events, so the scan keeps its window', () => {
    const { members } = compile('did(view, within 3d) and first_did(app_open, within 7d) and not first_did(purchase)');
    expect(count(members.text, 'FROM events')).toBe(1);
    expect(members.text).toContain('FROM user_event_firsts');
    expect(members.text).toContain("event IN ('view')");
    expect(members.text).toContain("AND ts >= toDateTime(1780012801)");
  });

  it('scopes every table read to the app with a literal, and never uses FINAL', () => {
    const { members, nodeCounts } = compile(
      'not did(view) and (country = "CN" or rfm_segment = "loyal") and tag("vip") and cluster = 2 and traits.plan > 1',
    );
    for (const q of [members.text, nodeCounts.text]) {
      const reads = q.match(/FROM (events|app_users|user_traits|user_tags|user_event_firsts|profiles|cluster_assignments|cluster_models)\b/g) ?? [];
      const scoped = q.match(/FROM (events|app_users|user_traits|user_tags|user_event_firsts|profiles|cluster_assignments|cluster_models)\s+WHERE app_id = 'app_x'/g) ?? [];
      expect(reads.length).toBeGreaterThanOrEqual(6);
      expect(scoped.length).toBe(reads.length);
      expect(q).not.toMatch(/\bFINAL\b/);
    }
  });

  it('uses whole seconds of as_of and toDateTime literals for ts', () => {
    const { members } = compile('did(view, within 1d)');
    const asOf = Math.floor(ctx.asOf.getTime() / 1000);
    expect(members.text).toContain(`ts <= toDateTime(${asOf})`);
    expect(members.text).toContain(`ts >= toDateTime(${asOf - 86_400 + 1})`);
  });

  it('leaves out per-row conditions the scan WHERE already guarantees', () => {
    const { members, nodeCounts } = compile('did(purchase, within 7d)');
    expect(nodeCounts.text).toContain('countIf(1)');
    // "Some event matches" needs no count at all: the scan's WHERE is the whole condition.
    expect(members.text).not.toContain('countIf');
    expect(count(members.text, "event IN ('purchase')")).toBe(1);
    expect(count(members.text, 'ts >= ')).toBe(1);
  });

  it('drives from the events scan when the expression needs an event, else from a side or the universe', () => {
    expect(compile('did(view) and tag("vip")').usesUniverse).toBe(false);
    expect(compile('country = "CN" and tag("vip")').usesUniverse).toBe(false);
    expect(compile('rfm_segment = "loyal"').usesUniverse).toBe(false);
    expect(compile('rfm_segment = "loyal"', { profileRunId: null }).usesUniverse).toBe(true);
    expect(compile('not did(view)').usesUniverse).toBe(true);
    expect(compile('did(view, count = 0)').usesUniverse).toBe(true);
    expect(compile('country is null').usesUniverse).toBe(true);
    expect(compile('tag("vip")').usesUniverse).toBe(true);
    expect(compile('did(view) or tag("vip")').usesUniverse).toBe(true);
  });

  it('evaluates a top-level conjunct over one side as an IN / NOT IN set instead of a join', () => {
    const noJoin = (text: string) => expect(compile(text).members.text).not.toContain('JOIN');
    noJoin('rfm_segment in ("champions", "loyal") and country = "CN"');
    noJoin('cluster = 3 and tag("beta")');
    noJoin('not did(app_open, within 60d) and not did(view, within 60d)');
    noJoin('did(view, within 7d) and not (did(purchase, within 30d) or tag("vip"))');
    // Both sides in one conjunct: joined.
    expect(compile('did(view) and (tag("vip") or country = "CN")').members.text).toContain('ANY LEFT JOIN');
    // `not did(x)` and `not did(y)` share one NOT IN over the events' rows, without a GROUP BY.
    const dormant = compile('not did(app_open, within 60d) and not did(view, within 60d)').members.text;
    expect(count(dormant, 'NOT IN (SELECT user_id FROM events WHERE')).toBe(1);
    expect(count(dormant, 'FROM app_users WHERE')).toBe(1);
  });

  it('keeps values as escaped literals', () => {
    const { members } = compile(String.raw`country = "x' OR 1=1 -- \\" and traits.plan = "\\'"`);
    expect(members.text).toContain(String.raw`'x\' OR 1=1 -- \\'`);
    expect(members.text).not.toContain("'x' OR");
  });

  it('inlines saved segments and refuses an unresolved or cyclic one', () => {
    const saved = new Map<string, Expr>([
      ['buyers', { kind: 'did', event: 'purchase' }],
      ['loop', { kind: 'in_segment', ref: 'loop' }],
    ]);
    const { members } = compileSegment({ kind: 'in_segment', ref: 'buyers' }, { ...ctx, savedSegments: saved });
    expect(members.text).toContain("event IN ('purchase')");
    expect(() => compileSegment({ kind: 'in_segment', ref: 'nope' }, { ...ctx, savedSegments: saved })).toThrow(/not resolved/);
    expect(() => compileSegment({ kind: 'in_segment', ref: 'loop' }, { ...ctx, savedSegments: saved })).toThrow(/cycle/);
  });

  it('lists every node with its JSON-form path for explain', () => {
    const { nodes } = compile('did(view) and not (tag("a") or country = "CN")');
    expect(nodes.map((n) => n.path)).toEqual([[], ['and', 0], ['and', 1], ['and', 1, 'not'], ['and', 1, 'not', 'or', 0], ['and', 1, 'not', 'or', 1]]);
  });
});

// Type-level: a node kind without a compile rule must not type-check. This
// mirrors the compiler's switch; `@ts-expect-error` fails the typecheck if a
// new kind is added to ast.ts and the never-check stops complaining.
type Handled = 'and' | 'or' | 'not' | 'attr' | 'did' | 'first_did' | 'stopped' | 'sequence' | 'agg' | 'tag' | 'in_segment';
const exhaustive: [Exclude<Expr['kind'], Handled>] extends [never] ? true : false = true;
// @ts-expect-error — a kind missing from the list is a type error
const missingOne: [Exclude<Expr['kind'], Exclude<Handled, 'tag'>>] extends [never] ? true : false = true;
void exhaustive;
void missingOne;
