// fast-check generators of valid segment ASTs over every node kind, drawing
// names and literals from the vocabulary of fixtures.ts (plus some that never
// occur), with literals of every kind in every value position.
import fc from 'fast-check';
import { duration, type CompareOp, type Duration, type Expr, type Literal, type Predicate, type PropExpr, type TimeWindow } from '../../segments/ast.ts';
import { AS_OFS, DAY, EDGE_DURATIONS, EVENT_NAMES, PROP_KEYS, TAGS, TRAIT_NUMBERS, T0 } from './fixtures.ts';

export { AS_OFS };

const iso = (sec: number, suffix = 'Z') => new Date(sec * 1000).toISOString().replace(/\.000Z$/, suffix);


const compareOp = fc.constantFrom<CompareOp>('eq', 'neq', 'gt', 'gte', 'lt', 'lte');

const literal: fc.Arbitrary<Literal> = fc.oneof(
  fc.constantFrom<Literal>(0, 1, 2, 2.5, 3, 5, 7, 10, 12.5, 40, 100, -3),
  fc.constantFrom<Literal>(...TRAIT_NUMBERS, 14.693999999999999, 2.2560000000000002, 0.1 + 0.2),
  fc.constantFrom<Literal>('CN', 'US', 'shoes', 'Shoes', '', 'true', 'false', '12', 'pro', 'champions', 'at_risk', 'label 2', 'ios', 'héllo', "it's", 'a\\b', 'u07', 'zh'),
  fc.constantFrom<Literal>(true, false),
  fc.constantFrom<Literal>(iso(T0 - 30 * DAY), iso(T0 - 5 * DAY, '.5Z'), iso(T0 - 10 * DAY + 3600).replace('Z', '+01:00')),
);

const stringLit = fc.constantFrom('s', 'o', 'shoe', '', 'é', 'true', "'", '\\', '%', 'CN', 'pro', 'lab');
const regex = fc.constantFrom('^s', 'e$', 'o.s', '^[A-Z]', '[0-9]', 'é|本', '^$', '^(true|false)$');

function predicate(): fc.Arbitrary<Predicate> {
  return fc.oneof(
    fc.record({ op: compareOp, value: literal }),
    fc.record({ op: fc.constantFrom('in' as const, 'nin' as const), value: fc.array(literal, { minLength: 1, maxLength: 4 }) }),
    fc.record({ op: fc.constant('between' as const), value: fc.tuple(literal, literal) }),
    fc.record({ op: fc.constantFrom('contains' as const, 'starts_with' as const), value: stringLit }),
    fc.record({ op: fc.constant('matches' as const), value: regex }),
    fc.record({ op: fc.constantFrom('is_null' as const, 'is_not_null' as const) }),
  ) as fc.Arbitrary<Predicate>;
}

const durationArb: fc.Arbitrary<Duration> = fc.oneof(
  fc
    .tuple(fc.integer({ min: 1, max: 90 }), fc.constantFrom<Duration['unit']>('s', 'm', 'h', 'd', 'w'))
    .map(([n, u]) => duration(u === 's' ? n * 997 : u === 'm' ? n * 61 : n, u)),
  // The data has events exactly on these windows' edges.
  fc.constantFrom(...EDGE_DURATIONS),
  // Longer than all history (no 100-year cap): clamped before it reaches SQL.
  { weight: 1, arbitrary: fc.constantFrom(duration(100_000, 'd'), duration(1_000_000_000, 'w')) },
);

const windowArb: fc.Arbitrary<TimeWindow> = fc.oneof(
  durationArb.map((d): TimeWindow => ({ kind: 'within', duration: d })),
  fc
    // len 0 (end == start) is an empty window: it matches no event.
    .tuple(fc.integer({ min: -120, max: 5 }), fc.integer({ min: 0, max: 60 }), fc.boolean())
    .map(([a, len, fraction]): TimeWindow => {
      const frac = fraction && len > 0;
      return { kind: 'between', from: iso(T0 + a * DAY + (frac ? 1800 : 0), frac ? '.25Z' : 'Z'), to: iso(T0 + (a + len) * DAY) };
    }),
);

const eventName = fc.constantFrom<string>(...EVENT_NAMES, 'never_happens');
const propKey = fc.constantFrom<string>(...PROP_KEYS, 'missing');

const propExpr: fc.Arbitrary<PropExpr> = fc.letrec<{ p: PropExpr }>((tie) => ({
  p: fc.oneof(
    { depthSize: 'small', maxDepth: 2, withCrossShrink: true },
    fc.tuple(propKey, predicate()).map(([prop, pr]): PropExpr => ({ kind: 'prop', prop, ...pr })),
    fc.array(tie('p'), { minLength: 2, maxLength: 3 }).map((items): PropExpr => ({ kind: 'and', items })),
    fc.array(tie('p'), { minLength: 2, maxLength: 3 }).map((items): PropExpr => ({ kind: 'or', items })),
    tie('p').map((item): PropExpr => ({ kind: 'not', item })),
  ),
})).p;

const where = fc.option(propExpr, { nil: undefined, freq: 2 });

const ATTRS = [
  'country', 'platform', 'language', 'plan', 'vip', 'traits.country', 'traits.plan', 'traits.vip', 'traits.missing', 'score', 'traits.score',
  'events_30d', 'revenue_total', 'avg_order_value', 'r_score', 'best_hour', 'rfm_segment', 'top_category',
  'first_seen', 'last_seen', 'last_purchase_at', 'cluster', 'cluster_label', 'user_id', 'random_bucket', 'timezone',
];

function strip<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

const leaf: fc.Arbitrary<Expr> = fc.oneof(
  fc.tuple(fc.constantFrom(...ATTRS), predicate()).map(([attr, p]): Expr => ({ kind: 'attr', attr, ...p })),
  fc
    .record({
      event: eventName,
      where,
      count: fc.option(fc.record({ op: compareOp, value: fc.integer({ min: 0, max: 4 }) }), { nil: undefined }),
      window: fc.option(windowArb, { nil: undefined }),
    })
    .map((r): Expr => strip({ kind: 'did', ...r })),
  fc.record({ event: eventName, where, window: fc.option(windowArb, { nil: undefined }) }).map((r): Expr => strip({ kind: 'first_did', ...r })),
  fc.record({ event: eventName, where, within: durationArb, before: durationArb }).map((r): Expr => strip({ kind: 'stopped', ...r })),
  fc
    .record({
      steps: fc.array(fc.record({ event: eventName, where }).map((s) => strip(s)), { minLength: 2, maxLength: 4 }),
      within: fc.option(durationArb, { nil: undefined }),
      inLast: fc.option(durationArb, { nil: undefined }),
    })
    .map((r): Expr => strip({ kind: 'sequence', ...r })),
  fc
    .record({
      fn: fc.constantFrom('sum' as const, 'avg' as const, 'min' as const, 'max' as const, 'count_distinct' as const),
      event: eventName,
      prop: propKey,
      where,
      window: fc.option(windowArb, { nil: undefined }),
      op: compareOp,
      value: fc.constantFrom(0, 1, 2, 2.5, 10, 12.5, 100, 250, -3),
    })
    .map((r): Expr => strip({ kind: 'agg', ...r })),
  fc.constantFrom<string>(...TAGS, 'nobody').map((tag): Expr => ({ kind: 'tag', tag })),
  fc.constantFrom('seg_buyers', 'big spenders').map((ref): Expr => ({ kind: 'in_segment', ref })),
);

export const exprArb: fc.Arbitrary<Expr> = fc.letrec<{ e: Expr }>((tie) => ({
  e: fc.oneof(
    // Shallow trees: on 18.16 a query's cost on small data is its analysis, which grows with its text.
    { depthSize: 'small', maxDepth: 3, withCrossShrink: true },
    leaf,
    fc.array(tie('e'), { minLength: 2, maxLength: 3 }).map((items): Expr => ({ kind: 'and', items })),
    fc.array(tie('e'), { minLength: 2, maxLength: 3 }).map((items): Expr => ({ kind: 'or', items })),
    tie('e').map((item): Expr => ({ kind: 'not', item })),
  ),
})).e;

export const caseArb = fc.record({ expr: exprArb, asOf: fc.constantFrom(...AS_OFS) });
