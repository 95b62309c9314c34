// Whatever the text, the parser returns an AST or a SegmentSyntaxError with
// positioned errors — never another exception, never a stack overflow. Accepted
// texts also round-trip through the printer and the JSON form.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fromJson, parseSegment, printSegment, re2Problem, SegmentSyntaxError, stripSpans, toJson } from '../../segments/index.ts';
import type { Expr } from '../../segments/index.ts';

function outcome(text: string): Expr | SegmentSyntaxError {
  try {
    return parseSegment(text);
  } catch (e) {
    if (e instanceof SegmentSyntaxError) return e;
    throw new Error(`parser threw ${String(e)} for ${JSON.stringify(text.slice(0, 200))}`, { cause: e });
  }
}

function assertWellBehaved(text: string): void {
  const r = outcome(text);
  if (r instanceof SegmentSyntaxError) {
    expect(r.errors.length).toBeGreaterThan(0);
    for (const e of r.errors) {
      expect(typeof e.code).toBe('string');
      expect(e.message).toMatch(/ at line \d+, column \d+$/);
      expect(e.line).toBeGreaterThanOrEqual(1);
      expect(e.column).toBeGreaterThanOrEqual(1);
      expect(e.excerpt).toMatch(/\n[\t ]*\^$/);
    }
    return;
  }
  const printed = printSegment(r);
  const again = parseSegment(printed);
  expect(stripSpans(again)).toEqual(stripSpans(r));
  expect(printSegment(again)).toBe(printed);
  expect(fromJson(JSON.parse(JSON.stringify(toJson(r))))).toEqual(stripSpans(r));
}

const VOCABULARY = [
  'and', 'or', 'not', 'AND', 'Not', 'in', 'between', 'is', 'null', 'true', 'false', 'within', 'before', 'count', 'where',
  'in_last', 'contains', 'starts_with', 'matches', 'did', 'first_did', 'stopped', 'sequence', 'sum', 'avg', 'min', 'max',
  'count_distinct', 'tag', 'in_segment', 'country', 'traits.', 'traits.x', 'purchase', 'purchase.amount', 'first_seen',
  'revenue_total', 'e', '(', ')', ',', '.', '=', '!=', '>', '>=', '<', '<=', '==', '=~', '<>', '!', '&&', '||', '~',
  '"', '"a"', '"\\"', '"\\"', '\\', '"\\q"', '"\\u12"', "'x'", '"2026-01-01T00:00:00Z"', '"2026-02-30T00:00:00Z"',
  '"(?=a)"', '"[a-"', '0', '-1', '+2', '1.5', '.5', '5.', '1e9', '1E-3', '9'.repeat(400), '0.' + '0'.repeat(50) + '1',
  '-0', 'NaN', 'Infinity', '30d', '0d', '1.5h', '-3d', '30days', '99999999999999999999w', ' ', '  ', '\n', '\r\n', '\t',
  '\u0000', '\u00a0', '\u2028', '😀', '日本', '\ud800', '--', '/*', '*/', ';', "' OR 1=1 --", 'DROP TABLE events', '`',
  '{', '}', '[', ']', '$', '%', '#', '@',
];

const token = fc.constantFrom(...VOCABULARY);
const tokenSoup = fc.array(token, { maxLength: 30 }).chain((tokens) =>
  fc.array(fc.constantFrom(' ', '', '\n'), { minLength: tokens.length, maxLength: tokens.length }).map((seps) =>
    tokens.map((t, i) => t + seps[i]).join(''),
  ),
);

const SEEDS = [
  'did(add_to_cart, within 3d) and not did(purchase, within 3d)',
  '(country = "CN" or traits.language = "zh") and purchases_30d >= 2 and tag("vip")',
  'cluster = 3 and sum(purchase.amount where currency = "USD", within 90d) >= 500',
  'sequence(add_to_cart, purchase where amount > 0, within 1d, in_last 30d)',
  'did(view, between "2026-01-01T00:00:00Z" and "2026-02-01T00:00:00Z") or stopped(purchase, within 14d, before 60d)',
  'email matches "^a.*z$" and x not in (1, 2) and y is not null and traits."a b" between "a" and "b"',
];

/** A valid text with a few characters inserted, deleted or replaced. */
const mutated = fc
  .tuple(
    fc.constantFrom(...SEEDS),
    fc.array(fc.tuple(fc.nat(), fc.constantFrom('insert', 'delete', 'replace'), fc.oneof(token, fc.string({ maxLength: 2 }))), {
      minLength: 1,
      maxLength: 4,
    }),
  )
  .map(([seed, edits]) => {
    let s = seed;
    for (const [at, kind, text] of edits) {
      const i = at % (s.length + 1);
      if (kind === 'insert') s = s.slice(0, i) + text + s.slice(i);
      else if (kind === 'delete') s = s.slice(0, i) + s.slice(i + 1);
      else s = s.slice(0, i) + text + s.slice(i + text.length);
    }
    return s;
  });

describe('fuzz: the parser only ever returns an AST or a SegmentSyntaxError', () => {
  it('random strings of any code units', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 60 }), assertWellBehaved), { numRuns: 1000 });
    fc.assert(
      fc.property(fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), maxLength: 40 }), assertWellBehaved),
      { numRuns: 500 },
    );
  });

  it('token soup: keywords, operators, quotes, escapes, comment markers, huge numbers', () => {
    fc.assert(fc.property(tokenSoup, assertWellBehaved), { numRuns: 2000 });
  });

  it('mutations of valid expressions', () => {
    fc.assert(fc.property(mutated, assertWellBehaved), { numRuns: 1500 });
  });

  it('the RE2 validator answers (string or undefined) for any pattern', () => {
    const regexUnit = fc.oneof(fc.constantFrom(...'()[]{}*+?|^$.\\-,:<>=!PpQEx0123456789^_'.split('')), fc.string({ unit: 'binary', maxLength: 1 }));
    fc.assert(
      fc.property(fc.string({ unit: regexUnit, maxLength: 40 }), (pattern) => {
        const r = re2Problem(pattern);
        expect(r === undefined || typeof r === 'string').toBe(true);
      }),
      { numRuns: 2000 },
    );
    for (const p of ['['.repeat(8000), '[[:'.repeat(5000), '('.repeat(16_000), '\\p{'.repeat(4000), 'a{1000}'.repeat(2000)]) {
      expect(typeof re2Problem(p)).toBe('string');
    }
    expect(re2Problem('\\Q'.repeat(5000))).toBeUndefined(); // all quoted literal text
  });

  it('adversarial shapes: depth, length, repetition', () => {
    const cases = [
      '('.repeat(100_000),
      '('.repeat(16_000),
      '('.repeat(8_000) + 'x = 1' + ')'.repeat(8_000),
      ')'.repeat(16_000),
      'not '.repeat(4_000) + 'x = 1',
      'did(e where '.repeat(1_300),
      'did(e where ' + '(not '.repeat(3_000),
      '"'.repeat(16_000),
      '\\'.repeat(16_000),
      `x = "${'\\"'.repeat(8_000)}"`,
      `x = ${'9'.repeat(16_000)}`,
      `x in (${'1,'.repeat(5_000)}1)`,
      Array.from({ length: 1_600 }, (_, i) => `x = ${i}`).join(' or '),
      'tag("a") and '.repeat(1_200) + 'tag("a")',
      `x matches "${'('.repeat(5_000)}"`,
      `x matches "${'a{1000}'.repeat(500)}"`,
      '\u0000'.repeat(16_000),
      '😀'.repeat(4_000),
      '\n'.repeat(16_000) + '~',
      '',
    ];
    for (const text of cases) assertWellBehaved(text);
  });
});
