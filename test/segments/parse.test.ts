import { describe, expect, it } from 'vitest';
import {
  fromJson,
  parseSegment,
  printSegment,
  SegmentSyntaxError,
  stripSpans,
  toJson,
  tryParseSegment,
} from '../../segments/index.ts';
import type { Expr, SegmentError } from '../../segments/index.ts';
import { MAX_PARSE_NESTING } from '../../segments/parse.ts';

/** Every row of segments.md §2 (with concrete operands), text ≡ JSON. */
const SPEC_ROWS: [string, unknown][] = [
  ['tag("a") and tag("b")', { and: [{ tag: 'a' }, { tag: 'b' }] }],
  ['tag("a") or tag("b")', { or: [{ tag: 'a' }, { tag: 'b' }] }],
  ['not tag("a")', { not: { tag: 'a' } }],
  ['(tag("a"))', { tag: 'a' }],
  ['country = "CN"', { attr: 'country', op: 'eq', value: 'CN' }],
  ['country != "CN"', { attr: 'country', op: 'neq', value: 'CN' }],
  ['purchases_30d > 1', { attr: 'purchases_30d', op: 'gt', value: 1 }],
  ['purchases_30d >= 2', { attr: 'purchases_30d', op: 'gte', value: 2 }],
  ['purchases_30d < 3', { attr: 'purchases_30d', op: 'lt', value: 3 }],
  ['purchases_30d <= 4', { attr: 'purchases_30d', op: 'lte', value: 4 }],
  ['country in ("CN","SG")', { attr: 'country', op: 'in', value: ['CN', 'SG'] }],
  ['country not in ("CN","SG")', { attr: 'country', op: 'nin', value: ['CN', 'SG'] }],
  ['ltv between 10 and 100', { attr: 'ltv', op: 'between', value: [10, 100] }],
  ['email contains "@corp"', { attr: 'email', op: 'contains', value: '@corp' }],
  ['email starts_with "x"', { attr: 'email', op: 'starts_with', value: 'x' }],
  ['email matches "^a.*z$"', { attr: 'email', op: 'matches', value: '^a.*z$' }],
  ['push_token is null', { attr: 'push_token', op: 'is_null' }],
  ['push_token is not null', { attr: 'push_token', op: 'is_not_null' }],
  ['did(purchase)', { did: 'purchase' }],
  ['did(purchase, count >= 2, within 30d)', { did: 'purchase', count: { op: 'gte', value: 2 }, within: '30d' }],
  ['did(purchase, count = 0)', { did: 'purchase', count: { op: 'eq', value: 0 } }],
  [
    'did(purchase where amount > 100 and category = "shoes", within 7d)',
    {
      did: 'purchase',
      where: {
        and: [
          { prop: 'amount', op: 'gt', value: 100 },
          { prop: 'category', op: 'eq', value: 'shoes' },
        ],
      },
      within: '7d',
    },
  ],
  [
    'did(view, between "2026-01-01T00:00:00Z" and "2026-02-01T00:00:00Z")',
    { did: 'view', between: ['2026-01-01T00:00:00Z', '2026-02-01T00:00:00Z'] },
  ],
  ['first_did(app_open, within 7d)', { first_did: 'app_open', within: '7d' }],
  ['stopped(purchase, within 14d, before 60d)', { stopped: 'purchase', within: '14d', before: '60d' }],
  [
    'sequence(add_to_cart, purchase where amount > 0, within 1d, in_last 30d)',
    {
      sequence: [{ event: 'add_to_cart' }, { event: 'purchase', where: { prop: 'amount', op: 'gt', value: 0 } }],
      within: '1d',
      in_last: '30d',
    },
  ],
  [
    'sum(purchase.amount, within 90d) > 100',
    { agg: 'sum', event: 'purchase', prop: 'amount', within: '90d', op: 'gt', value: 100 },
  ],
  ['avg(purchase.amount) >= 10', { agg: 'avg', event: 'purchase', prop: 'amount', op: 'gte', value: 10 }],
  ['min(purchase.amount) < 1', { agg: 'min', event: 'purchase', prop: 'amount', op: 'lt', value: 1 }],
  ['max(purchase.amount) <= 1000', { agg: 'max', event: 'purchase', prop: 'amount', op: 'lte', value: 1000 }],
  [
    'count_distinct(view.item_id, within 30d) >= 5',
    { agg: 'count_distinct', event: 'view', prop: 'item_id', within: '30d', op: 'gte', value: 5 },
  ],
  ['tag("vip")', { tag: 'vip' }],
  ['in_segment("churn-risk")', { in_segment: 'churn-risk' }],
  ['did("add to cart")', { did: 'add to cart' }],
  ['sum("checkout.done".amount) > 0', { agg: 'sum', event: 'checkout.done', prop: 'amount', op: 'gt', value: 0 }],
];

/** segments.md §4, verbatim. */
export const SPEC_EXAMPLES: [string, string][] = [
  [
    'did(add_to_cart, within 3d) and not did(purchase, within 3d)',
    '{"and":[{"did":"add_to_cart","within":"3d"},{"not":{"did":"purchase","within":"3d"}}]}',
  ],
  [
    '(country = "CN" or traits.language = "zh") and purchases_30d >= 2 and tag("vip")',
    '{"and":[{"or":[{"attr":"country","op":"eq","value":"CN"},{"attr":"traits.language","op":"eq","value":"zh"}]},{"attr":"purchases_30d","op":"gte","value":2},{"tag":"vip"}]}',
  ],
  [
    'cluster = 3 and sum(purchase.amount where currency = "USD", within 90d) >= 500',
    '{"and":[{"attr":"cluster","op":"eq","value":3},{"agg":"sum","event":"purchase","prop":"amount","where":{"prop":"currency","op":"eq","value":"USD"},"within":"90d","op":"gte","value":500}]}',
  ],
];

function errorsOf(text: string): SegmentError[] {
  const r = tryParseSegment(text);
  if (r.ok) throw new Error(`expected ${JSON.stringify(text)} to be rejected, got ${JSON.stringify(toJson(r.value))}`);
  return r.errors;
}

const first = (text: string): SegmentError => errorsOf(text)[0]!;
const json = (text: string): unknown => toJson(parseSegment(text));

describe('segments.md §2: every row, text ≡ JSON', () => {
  it.each(SPEC_ROWS)('%s', (text, expected) => {
    const ast = parseSegment(text);
    expect(JSON.stringify(toJson(ast))).toBe(JSON.stringify(expected));
    expect(stripSpans(ast)).toEqual(fromJson(expected));
    expect(stripSpans(parseSegment(printSegment(ast)))).toEqual(stripSpans(ast));
  });
});

describe('segments.md §4 examples', () => {
  it.each(SPEC_EXAMPLES)('%s', (text, expected) => {
    const ast = parseSegment(text);
    expect(JSON.stringify(toJson(ast))).toBe(expected);
    expect(stripSpans(ast)).toEqual(fromJson(JSON.parse(expected)));
    // The examples are written in canonical form.
    expect(printSegment(ast)).toBe(text);
  });
});

describe('precedence and flattening', () => {
  it('not binds tightest, then and, then or', () => {
    expect(json('not tag("a") and tag("b") or tag("c")')).toEqual({
      or: [{ and: [{ not: { tag: 'a' } }, { tag: 'b' }] }, { tag: 'c' }],
    });
    expect(json('tag("a") or tag("b") and not tag("c")')).toEqual({
      or: [{ tag: 'a' }, { and: [{ tag: 'b' }, { not: { tag: 'c' } }] }],
    });
  });

  it('nested and/or flatten to one n-ary node', () => {
    const flat = { and: [{ tag: 'a' }, { tag: 'b' }, { tag: 'c' }, { tag: 'd' }] };
    expect(json('tag("a") and tag("b") and tag("c") and tag("d")')).toEqual(flat);
    expect(json('(tag("a") and tag("b")) and (tag("c") and (tag("d")))')).toEqual(flat);
    expect(json('((tag("a") or tag("b")) or tag("c"))')).toEqual({ or: [{ tag: 'a' }, { tag: 'b' }, { tag: 'c' }] });
    expect(json('not (tag("a") and tag("b"))')).toEqual({ not: { and: [{ tag: 'a' }, { tag: 'b' }] } });
  });

  it('where-clauses have the same precedence and flattening', () => {
    expect(json('did(e where a = 1 or b = 2 and not c = 3 and (d = 4 and f = 5))')).toEqual({
      did: 'e',
      where: {
        or: [
          { prop: 'a', op: 'eq', value: 1 },
          {
            and: [
              { prop: 'b', op: 'eq', value: 2 },
              { not: { prop: 'c', op: 'eq', value: 3 } },
              { prop: 'd', op: 'eq', value: 4 },
              { prop: 'f', op: 'eq', value: 5 },
            ],
          },
        ],
      },
    });
  });

  it('`and` after between bounds is the boolean and', () => {
    expect(json('ltv between 1 and 5 and tag("x")')).toEqual({
      and: [{ attr: 'ltv', op: 'between', value: [1, 5] }, { tag: 'x' }],
    });
  });
});

describe('lexical rules', () => {
  it('keywords and function names are case-insensitive', () => {
    expect(json('NOT Did(purchase, COUNT >= 2, Within 30d) AND x IS NOT NULL Or y In (1) OR z BETWEEN 1 AND 2')).toEqual(
      json('not did(purchase, count >= 2, within 30d) and x is not null or y in (1) or z between 1 and 2'),
    );
    expect(json('x CONTAINS "a" and y Starts_With "b" and z MATCHES "c" and t = TRUE and u = False')).toEqual(
      json('x contains "a" and y starts_with "b" and z matches "c" and t = true and u = false'),
    );
  });

  it('event names: bare identifiers with . : -, keywords, or quoted strings', () => {
    expect(json('did(app:open-v2.x)')).toEqual({ did: 'app:open-v2.x' });
    expect(json('did("in")')).toEqual({ did: 'in' });
    // A keyword where only an event name can stand is that name (segments.md's pattern admits it), as written.
    expect(json('did(in)')).toEqual({ did: 'in' });
    expect(json('did(Count, count >= 2) and first_did(where) and stopped(within, within 1d, before 2d)')).toEqual({
      and: [{ did: 'Count', count: { op: 'gte', value: 2 } }, { first_did: 'where' }, { stopped: 'within', within: '1d', before: '2d' }],
    });
    expect(json('sequence(count, matches)')).toEqual({ sequence: [{ event: 'count' }, { event: 'matches' }] });
  });

  it('sum(E.P): the property follows the last dot', () => {
    expect(json('sum(a.b.c) > 1')).toMatchObject({ event: 'a.b', prop: 'c' });
    expect(json('sum("a.b".c) > 1')).toMatchObject({ event: 'a.b', prop: 'c' });
    expect(json('sum(purchase."unit price") > 1')).toMatchObject({ event: 'purchase', prop: 'unit price' });
    expect(json('sum("add to cart"."a.b") > 1')).toMatchObject({ event: 'add to cart', prop: 'a.b' });
    expect(first('sum(purchase) > 1').message).toMatch(/expected event\.property/);
    expect(first('sum("a.b".c.d) > 1').message).toMatch(/holding '\.' must be quoted/);
  });

  it('field paths: bare name, traits.<key>, traits."<key>", or a quoted whole path', () => {
    expect(json('traits.first_name = "a"')).toMatchObject({ attr: 'traits.first_name' });
    expect(json('traits."first name" = "a"')).toMatchObject({ attr: 'traits.first name' });
    expect(json('"count" = 1')).toMatchObject({ attr: 'count' });
    expect(json('traits.in = 1')).toMatchObject({ attr: 'traits.in' });
    expect(first('foo."bar" = 1').message).toMatch(/only a trait key can be quoted after a dot/);
  });

  it('strings: \\" \\\\ \\n \\r \\t \\uXXXX escapes; other escapes and raw control characters but TAB are errors', () => {
    expect(json('x = "a\\"b\\\\c\\n\\r\\t\\u00e9\\u0000"')).toMatchObject({ value: 'a"b\\c\n\r\t\u00e9\u0000' });
    expect(json('x = "日本 😀"')).toMatchObject({ value: '日本 😀' });
    expect(first('x = "a\\qb"')).toMatchObject({ code: 'bad_escape', column: 7 });
    expect(first('x = "a\\u12"')).toMatchObject({ code: 'bad_escape' });
    expect(first('x = "a\u0000b"')).toMatchObject({ code: 'bad_string', column: 7 });
    // A raw TAB is an ordinary character of the string, as in JSON text after unescaping.
    expect(json('x = "a\tb" and tag("\t")')).toEqual({ and: [{ attr: 'x', op: 'eq', value: 'a\tb' }, { tag: '\t' }] });
    expect(first('x = "a\u000bb"')).toMatchObject({ code: 'bad_string', column: 7 });
    // A string must be valid Unicode: a lone surrogate (escaped or raw) would reach ClickHouse as U+FFFD.
    expect(first('x = 1 and\n tag("a\\uD800")')).toMatchObject({ code: 'bad_string', line: 2, column: 6, message: expect.stringMatching(/lone UTF-16 surrogate/) });
    expect(first('x in ("ok", "\\udc00")')).toMatchObject({ code: 'bad_string', column: 13 });
    expect(first('did(e where p contains "\ud800")')).toMatchObject({ code: 'bad_string', column: 24 });
    expect(first('traits."\\ud800" = 1').code).toBe('bad_string');
    expect(json('x = "\\uD83D\\uDE00"')).toMatchObject({ value: '😀' });
    expect(first('x = "abc')).toMatchObject({ code: 'unterminated_string', column: 5 });
    expect(first('x = "ab\nc"')).toMatchObject({ code: 'unterminated_string', line: 1, column: 5 });
    expect(first("x = 'CN'").message).toMatch(/double quotes/);
  });

  it('numbers: decimal with optional sign and fraction; no exponent, no overflow', () => {
    expect(json('x = -12.5')).toMatchObject({ value: -12.5 });
    expect(json('x = +3')).toMatchObject({ value: 3 });
    expect(json('x = 007')).toMatchObject({ value: 7 });
    expect(Object.is((toJson(parseSegment('x = -0')) as { value: number }).value, 0)).toBe(true);
    expect(json(`x = ${'9'.repeat(300)}`)).toMatchObject({ value: Number('9'.repeat(300)) });
    expect(first('x = 1e5').message).toMatch(/exponent notation is not supported/);
    expect(first(`x = ${'9'.repeat(400)}`).message).toMatch(/out of range/);
    expect(first('x = .5').message).toMatch(/write 0\.5/);
    expect(first('x = 5.').message).toMatch(/expected digits after/);
    expect(first('x = 12abc').code).toBe('bad_number');
    expect(first('x = NaN').message).toMatch(/expected a value/);
    expect(first('x = Infinity').message).toMatch(/expected a value/);
  });

  it('durations: whole number > 0 with unit s m h d w', () => {
    for (const [text, seconds] of [['45s', 45], ['5m', 300], ['2h', 7200], ['3d', 259_200], ['2w', 1_209_600]] as const) {
      const ast = parseSegment(`did(e, within ${text})`);
      expect(ast).toMatchObject({ window: { kind: 'within', duration: { seconds } } });
    }
    expect(first('did(e, within 0d)')).toMatchObject({ code: 'bad_duration', message: 'duration must be > 0 at line 1, column 15' });
    expect(first('did(e, within 1.5d)').message).toMatch(/whole number/);
    expect(first('did(e, within -3d)').message).toMatch(/whole number > 0/);
    expect(first('did(e, within 30days)').code).toBe('bad_number');
    expect(first('did(e, within 30)').message).toMatch(/expected a duration such as 30d/);
    // No 100-year cap: a window reaching before 1970 covers all history. Only exactness bounds it.
    expect(json('did(e, within 36501d) and stopped(e, within 100000w, before 9999999d)')).toMatchObject({ and: [{ within: '36501d' }, { within: '100000w' }] });
    expect(json(`did(e, within ${Number.MAX_SAFE_INTEGER}s)`)).toMatchObject({ within: `${Number.MAX_SAFE_INTEGER}s` });
    expect(first(`did(e, within ${Number.MAX_SAFE_INTEGER}m)`).message).toMatch(/at most 9007199254740991 seconds .*cannot be computed exactly/);
  });

  it('between windows need ISO 8601 with an offset or Z and end after start', () => {
    expect(json('did(e, between "2026-01-01T08:00:00+08:00" and "2026-01-01T00:00:01Z")')).toMatchObject({
      between: ['2026-01-01T08:00:00+08:00', '2026-01-01T00:00:01Z'],
    });
    expect(first('did(e, between "2026-01-01T00:00:00" and "2026-02-01T00:00:00Z")')).toMatchObject({
      code: 'bad_timestamp',
      column: 16,
    });
    expect(first('did(e, between "2026-02-30T00:00:00Z" and "2026-03-01T00:00:00Z")').code).toBe('bad_timestamp');
    expect(first('did(e, between "2026-02-01T00:00:00Z" and "2026-01-01T00:00:00Z")')).toMatchObject({
      code: 'between_order',
      column: 43,
    });
    // Equal bounds make the half-open window [t, t) empty: allowed, it matches no event.
    expect(json('did(e, between "2026-01-01T08:00:00+08:00" and "2026-01-01T00:00:00Z")')).toMatchObject({
      between: ['2026-01-01T08:00:00+08:00', '2026-01-01T00:00:00Z'],
    });
  });

  it('count: whole number >= 0', () => {
    expect(first('did(e, count >= -1)')).toMatchObject({ code: 'bad_count', column: 17 });
    expect(first('did(e, count >= 1.5)').code).toBe('bad_count');
    // Never true, but not malformed: allowed.
    expect(json('did(e, count < 0)')).toEqual({ did: 'e', count: { op: 'lt', value: 0 } });
  });
});

describe('errors: precise, positioned, several at once', () => {
  it('names the unknown operator with line and column and a caret excerpt', () => {
    const e = first('country =~ "x"');
    expect(e).toEqual({
      code: 'unknown_operator',
      message: "unknown operator '=~' (use 'matches') at line 1, column 9",
      line: 1,
      column: 9,
      excerpt: 'country =~ "x"\n        ^',
    });
    expect(first('country like "x"').message).toMatch(/^unknown operator 'like' after 'country'/);
    expect(first('a == 1').message).toMatch(/'=='.*use '='/);
    expect(first('a <> 1').message).toMatch(/use '!='/);
  });

  it("reports expected ')' at the right place across lines", () => {
    const e = first('did(purchase,\n    within 3d\n  and tag("x")');
    expect(e).toMatchObject({ code: 'syntax', line: 3, column: 3 });
    expect(e.message).toMatch(/^expected ',' or '\)', found keyword 'and'/);
    expect(e.excerpt).toBe('  and tag("x")\n  ^');
    expect(first('(tag("a") or tag("b")').message).toMatch(/expected '\)', found the end of the expression at line 1, column 22/);
  });

  it('columns count code points; tabs stay tabs under the caret', () => {
    expect(first('x = "😀😀" and y ~ 1')).toMatchObject({ column: 16 });
    expect(first('\tx ~ 1').excerpt).toBe('\tx ~ 1\n\t  ^');
  });

  it('reports several lexical problems at once, in source order', () => {
    const errors = errorsOf('did(e, within 0d) and x = "a\\q" and did(f, count >= -2)');
    expect(errors.map((e) => [e.code, e.column])).toEqual([
      ['bad_duration', 15],
      ['bad_escape', 29],
      ['bad_count', 53],
    ]);
  });

  it('other syntax errors', () => {
    expect(first('').code).toBe('empty');
    expect(first('   ').message).toMatch(/empty/);
    expect(first('tag("a") tag("b")').message).toMatch(/expected 'and', 'or' or the end of the expression/);
    expect(first('tag("a"))').message).toMatch(/unmatched '\)'/);
    expect(first('foo(x)')).toMatchObject({ code: 'unknown_function' });
    expect(first('x = null').message).toMatch(/is null/);
    expect(first('x not = 1').message).toMatch(/expected 'in' after 'not'/);
    expect(first('did(e, where a = 1)').message).toMatch(/'where' must follow the event name directly/);
    expect(first('did(e, within 1d, between "2026-01-01T00:00:00Z" and "2026-01-02T00:00:00Z")').code).toBe('window_conflict');
    expect(first('did(e, within 1d, within 2d)').code).toBe('duplicate_option');
    expect(first('stopped(e, within 1d)').message).toMatch(/needs both 'within' and 'before'/);
    expect(first('sequence(a, within 1d, b)').message).toMatch(/steps must come before/);
    expect(first('sum(e.p)').message).toMatch(/expected a comparison after sum/);
    expect(first('sum(e.p) > "x"').message).toMatch(/compares with a number/);
    expect(first('did(e where did(f))').message).toMatch(/cannot be used in 'where'/);
    expect(first('x = 1 -- comment').message).toMatch(/there are no comments/);
    expect(first('did(购买)').message).toMatch(/quote names/);
    expect(first('x = 1; drop table events').code).toBe('unexpected_character');
  });

  it('parseSegment throws SegmentSyntaxError carrying every error', () => {
    try {
      parseSegment('x ~ 1 and y = "\\z"');
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(SegmentSyntaxError);
      expect((e as SegmentSyntaxError).errors.map((x) => x.code)).toEqual(['unknown_operator', 'bad_escape']);
      expect((e as Error).message).toMatch(/\(and 1 more\)$/);
    }
  });
});

describe('limits', () => {
  it('text of at most 16 KiB (UTF-8 bytes)', () => {
    const pad = ' '.repeat(16 * 1024 - 'tag("a")'.length);
    expect(tryParseSegment(`tag("a")${pad}`).ok).toBe(true);
    expect(first(`tag("a")${pad} `)).toMatchObject({ code: 'too_long' });
    expect(first(`x = "${'é'.repeat(8200)}"`)).toMatchObject({ code: 'too_long' });
  });

  it('nesting of at most 32 levels of the AST; parentheses add none; adversarial depth is a clean error', () => {
    // Redundant parentheses around one condition: AST depth 1, whatever their number.
    const parens = (n: number, leaf = 'x = 1'): string => '('.repeat(n) + leaf + ')'.repeat(n);
    expect(json(parens(33))).toEqual({ attr: 'x', op: 'eq', value: 1 });
    expect(json(parens(MAX_PARSE_NESTING - 1, 'tag("a")'))).toEqual({ tag: 'a' }); // the call is one more
    // `not` adds a level, and so does a where-clause below its condition (the root is depth 1).
    const nots = (n: number, leaf = 'tag("a")'): string => 'not ('.repeat(n) + leaf + ')'.repeat(n);
    expect(tryParseSegment(nots(31)).ok).toBe(true);
    expect(first(nots(32))).toMatchObject({ code: 'too_deep', column: 32 * 'not ('.length + 1 }); // at the 33rd level: tag("a")
    expect(tryParseSegment(nots(30, 'did(e where p = 1)')).ok).toBe(true);
    expect(first(nots(31, 'did(e where p = 1)'))).toMatchObject({ code: 'too_deep', column: 31 * 'not ('.length + 'did(e where '.length + 1 });
    expect(first('not '.repeat(4000) + 'tag("a")').code).toBe('too_deep');
    // and/or in parentheses flatten: nesting them adds nothing either.
    expect(tryParseSegment('(tag("a") and '.repeat(40) + 'tag("b")' + ')'.repeat(40)).ok).toBe(true);
    // The parser's own guard against stack overflow: an error with a position, never a RangeError.
    expect(first('('.repeat(16_000))).toMatchObject({ code: 'too_deep', column: MAX_PARSE_NESTING + 1 });
    expect(first(parens(MAX_PARSE_NESTING + 1)).message).toMatch(/parentheses, calls and 'where' nest deeper than 1000 levels/);
    expect(first('did(e where ' + '(not '.repeat(3000)).code).toBe('too_deep');
  });

  it('at most 500 conditions', () => {
    const chain = (n: number): string => Array.from({ length: n }, (_, i) => `x = ${i}`).join(' or ');
    expect(tryParseSegment(chain(499)).ok).toBe(true); // 499 leaves + the or node
    expect(first(chain(500))).toMatchObject({ code: 'too_many_nodes' });
  });

  it('lists of 1..1000 values', () => {
    const list = (n: number): string => `x in (${Array.from({ length: n }, (_, i) => i).join(',')})`;
    expect(tryParseSegment(list(1000)).ok).toBe(true);
    expect(first(list(1001)).code).toBe('list_size');
    expect(first('x in ()').message).toMatch(/expected a value/);
  });
});

describe('spans', () => {
  it('each node spans its source text', () => {
    const text = 'tag("a") and (did(e where p = 1) or not x in (1, 2))';
    const ast = parseSegment(text) as Extract<Expr, { kind: 'and' }>;
    const slice = (n: { span?: { start: number; end: number } }): string => text.slice(n.span!.start, n.span!.end);
    expect(slice(ast)).toBe(text);
    expect(slice(ast.items[0]!)).toBe('tag("a")');
    const or = ast.items[1] as Extract<Expr, { kind: 'or' }>;
    expect(slice(or)).toBe('did(e where p = 1) or not x in (1, 2)');
    const did = or.items[0] as Extract<Expr, { kind: 'did' }>;
    expect(slice(did)).toBe('did(e where p = 1)');
    expect(slice(did.where!)).toBe('p = 1');
    expect(slice(or.items[1]!)).toBe('not x in (1, 2)');
  });
});
