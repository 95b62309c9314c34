import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sql } from '../../lib/sql.ts';
import {
  checkSegment,
  fromJson,
  duration,
  parseInstant,
  parseSegment,
  PROFILE_FIELDS,
  re2Problem,
  resolveAttr,
  toJson,
  tryParseSegment,
} from '../../segments/index.ts';
import type { CheckContext, Expr, SavedSegment, SegmentError } from '../../segments/index.ts';
import { clickhouseUrl, testDatabase } from '../support/env.ts';

/** Problems the checker finds in a text expression (parse runs the checker). */
function problems(text: string): SegmentError[] {
  const r = tryParseSegment(text);
  return r.ok ? [] : r.errors;
}
const codes = (text: string): string[] => problems(text).map((e) => e.code);
const ok = (text: string): void => expect(problems(text)).toEqual([]);

describe('profile fields', () => {
  it('catalogs every built-in comparable field of events-and-profiles.md §2', () => {
    expect(PROFILE_FIELDS.map((f) => f.name)).toEqual([
      'user_id', 'first_seen', 'last_seen', 'events_total', 'events_7d', 'events_30d', 'active_days_30d', 'views_30d',
      'clicks_30d', 'purchases_30d', 'purchases_total', 'revenue_total', 'revenue_30d', 'avg_order_value',
      'last_purchase_at', 'recency_days', 'r_score', 'f_score', 'm_score', 'rfm_segment', 'top_category', 'best_hour',
      'platform', 'country', 'timezone', 'locale', 'app_version', 'cluster', 'cluster_label', 'random_bucket',
    ]);
    expect(PROFILE_FIELDS.filter((f) => f.type === 'timestamp').map((f) => f.name)).toEqual(['first_seen', 'last_seen', 'last_purchase_at']);
  });

  it('resolves bare names to fields when one exists, else to traits; traits.<key> is always a trait', () => {
    expect(resolveAttr('country')).toEqual({ kind: 'field', name: 'country', type: 'string', nullable: true });
    expect(resolveAttr('revenue_total')).toEqual({ kind: 'field', name: 'revenue_total', type: 'number', nullable: false });
    expect(resolveAttr('language')).toEqual({ kind: 'trait', key: 'language' });
    expect(resolveAttr('traits.country')).toEqual({ kind: 'trait', key: 'country' });
    expect(resolveAttr('Country')).toEqual({ kind: 'trait', key: 'Country' });
  });
});

describe('types that can never match', () => {
  it('numeric fields take numbers', () => {
    expect(problems('revenue_total contains "x"')[0]).toMatchObject({
      code: 'type_mismatch',
      path: ['op'],
      message: "'contains' needs text, but revenue_total is a number at line 1, column 1",
    });
    expect(codes('cluster = "3"')).toEqual(['type_mismatch']);
    // A list item no stored number could match is reported by itself.
    expect(problems('events_total in (1, "2")').map((e) => [e.code, e.path])).toEqual([['type_mismatch', ['value', 1]]]);
    expect(codes('events_total in ("1", "2")')).toEqual(['type_mismatch', 'type_mismatch']);
    expect(codes('purchases_30d = true')).toEqual(['type_mismatch']);
    expect(problems('revenue_total != "5"')[0]!.message).toMatch(/^revenue_total is a number; compare it with a number, not a string: no stored value could match/);
    ok('purchases_30d between 1 and 5 and cluster in (1, 2) and avg_order_value is null');
  });

  it('text fields take strings, and true/false (which match the text "true"/"false")', () => {
    expect(problems('rfm_segment > 5')[0]!.message).toMatch(/^rfm_segment is a string; compare it with a string \(or true\/false\), not a number/);
    expect(codes('cluster_label in ("a", 2)')).toEqual(['type_mismatch']);
    ok('user_id = true and top_category in ("shoes", false)');
    ok('country >= "A" and rfm_segment in ("champions", "loyal") and app_version starts_with "2." and locale matches "^zh"');
  });

  it('country, platform, timezone, locale and app_version are traits: any literal, as for traits.<name>', () => {
    // identify can store a number or a boolean in them (`traits.country = 7` matches such a user, so `country = 7` must too).
    ok('country = 5 and country = true and platform in ("ios", 1, false) and timezone > 3 and locale != 2.5 and app_version between 1 and 2');
    ok('country > "A" and not (country = 7) and app_version starts_with "2."');
    for (const f of ['country', 'platform', 'timezone', 'locale', 'app_version']) {
      expect(toJson(parseSegment(`${f} = 7`))).toEqual({ attr: f, op: 'eq', value: 7 });
      expect(codes(`${f} > true`)).toEqual(['type_mismatch']); // booleans are unordered, as for any trait
    }
  });

  it('timestamp fields compare with ISO 8601 strings with an offset or Z, as instants', () => {
    ok('first_seen > "2026-01-01T00:00:00Z" and last_purchase_at <= "2026-01-01T08:00:00+08:00"');
    expect(codes('first_seen > 5')).toEqual(['type_mismatch']);
    expect(problems('last_seen > "2026-01-01"')[0]!.message).toMatch(/last_seen is a timestamp; compare it with an ISO 8601 timestamp/);
    expect(codes('first_seen > "2026-01-01T00:00:00"')).toEqual(['type_mismatch']);
    expect(codes('first_seen contains "2026"')).toEqual(['type_mismatch']);
    // In instants, 09:00+08:00 (01:00Z) precedes 02:00Z though its text sorts after.
    ok('first_seen between "2026-01-01T09:00:00+08:00" and "2026-01-01T02:00:00Z"');
    expect(codes('first_seen between "2026-01-01T02:00:00Z" and "2026-01-01T09:00:00+08:00"')).toEqual(['between_order']);
  });

  it('traits and event properties take any literal, with operator rules', () => {
    ok('traits.plan = "pro" and traits.age > 30 and traits.beta = true and plan in ("a") and did(e where p = false)');
    expect(problems('traits.beta > true')[0]!.message).toMatch(/true\/false can only be compared with =, !=, in or not in/);
    expect(codes('did(e where p between true and false)')).toEqual(['type_mismatch', 'type_mismatch']);
    expect(codes('x between 1 and "z"')).toEqual(['type_mismatch']);
  });

  it('lists may mix kinds: each item compares by its own rule', () => {
    ok('x in (1, "a", true) and traits.plan not in ("pro", 2, false) and did(e where p in (2.5, "2.5"))');
    expect(toJson(parseSegment('x in (1, "a", true)'))).toEqual({ attr: 'x', op: 'in', value: [1, 'a', true] });
    expect(fromJson({ attr: 'x', op: 'nin', value: ['a', 1] })).toEqual({ kind: 'attr', attr: 'x', op: 'nin', value: ['a', 1] });
  });

  it('strings must be valid Unicode: a lone surrogate is an error in every string of a programmatic AST', () => {
    const attr = (value: unknown, op = 'eq'): Expr => ({ kind: 'attr', attr: 'x', op, value }) as Expr;
    const check = (e: Expr): [string, (string | number)[] | undefined][] => checkSegment(e).map((x) => [x.code, x.path]);
    expect(check(attr('a\ud800'))).toEqual([['bad_string', ['value']]]);
    expect(check(attr(['ok', '\udc00x'], 'in'))).toEqual([['bad_string', ['value', 1]]]);
    expect(check(attr('\ud800', 'contains'))).toEqual([['bad_string', ['value']]]);
    expect(check({ kind: 'attr', attr: 'traits.\ud800', op: 'is_null' })).toEqual([['bad_string', ['attr']]]);
    expect(check({ kind: 'tag', tag: '\udfff' })).toEqual([['bad_string', ['tag']]]);
    expect(check({ kind: 'in_segment', ref: 'a\ud800' })).toEqual([['bad_string', ['in_segment']]]);
    expect(check({ kind: 'did', event: 'e', where: { kind: 'prop', prop: '\ud800', op: 'is_null' } })).toEqual([['bad_string', ['where', 'prop']]]);
    expect(checkSegment(attr('a\ud800'))[0]!.message).toMatch(/lone UTF-16 surrogate/);
    // A surrogate pair is one character, not a problem.
    expect(check(attr('\ud83d\ude00'))).toEqual([]);
  });

  it('between end must not precede start (equal is allowed: both bounds are inclusive)', () => {
    expect(problems('ltv between 100 and 10')[0]!.message).toBe('between end 10 precedes start 100 at line 1, column 1');
    expect(codes('name between "b" and "a"')).toEqual(['between_order']);
    ok('ltv between 10 and 10');
    // Code point order, as ClickHouse compares UTF-8 bytes: U+FFFF < U+1F600.
    ok('x between "\uffff" and "😀"');
  });

  it('traits and tags are not comparable fields', () => {
    expect(problems('traits = 1')[0]).toMatchObject({ code: 'not_comparable', message: expect.stringMatching(/use traits\.<key>/) });
    expect(problems('tags contains "vip"')[0]!.message).toMatch(/use tag\("…"\)/);
  });

  it('event names that can never match a stored event', () => {
    expect(problems('did("a/b")')[0]).toMatchObject({ code: 'bad_event_name', path: ['did'] });
    expect(codes(`did("${'x'.repeat(129)}")`)).toEqual(['bad_event_name']);
    ok(`did("add to cart") and did("${'x'.repeat(128)}")`);
    expect(codes('tag("")')).toEqual(['empty_name']);
    expect(codes('traits."" = 1')).toEqual(['empty_name']);
  });
});

describe('RE2 regular expressions', () => {
  it.each([
    '^a.*z$', '', '(?i)vip', '(?i:ab)c', '(?-s:.)', '(?U)a*', '(?P<year>\\d{4})-(?P<m>\\d\\d)', '[[:alpha:]_]+', '[^[:space:]]',
    '\\pL+\\p{Greek}\\PN\\p{^Han}', '\\Q(.*)\\E', 'a{2}b{1,}c{0,3}?', 'a{,3}', '{', 'x{y}', '[]a]', '[a-]', '[\\d\\-x]',
    '\\x41\\x{1F600}\\123\\0', '\\A\\z\\b\\B\\C', 'a|b|', '()', '\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\^\\$\\\\\\/', '😀+', '(a{10}){100}', '(?)', '\\_', 'a(?i)*', 'a{01}{2}',
  ])('accepts %s', (pattern) => {
    expect(re2Problem(pattern)).toBeUndefined();
  });

  it.each([
    ['(?=a)', /lookahead and lookbehind/],
    ['(?!a)', /lookahead and lookbehind/],
    ['(?<=a)b', /lookahead and lookbehind/],
    ['(?<!a)b', /lookahead and lookbehind/],
    ['(a)\\1', /backreferences/],
    ['\\8', /backreferences/],
    ['(?P=n)', /backreferences/],
    ['(?<n>a)', /\(\?P<name>/],
    ['(?P<n>a)(?P<n>b)', /duplicate capture group name/],
    ['(?>a)', /unsupported Perl syntax/],
    ['(?#c)', /unsupported Perl syntax/],
    ['(?-)', /unsupported Perl syntax/],
    ['(?i-)', /unsupported Perl syntax/],
    ['a**', /repetitions cannot be stacked/],
    ['a*+', /repetitions cannot be stacked/],
    ['a{2}{3}', /repetitions cannot be stacked/],
    ['*a', /missing argument to repetition operator/],
    ['(|+)', /missing argument/],
    ['(?i)*', /missing argument/],
    ['a{1001}', /bad repetition operator/],
    ['a{3,2}', /bad repetition operator/],
    ['(a{100}){100}', /nested repetition counts exceed 1000/],
    ['(a', /missing closing \)/],
    ['a)', /unexpected \)/],
    ['[a', /missing closing \]/],
    ['[z-a]', /invalid character class range/],
    ['[[:foo:]]', /invalid character class range/],
    ['\\p{Klingon}', /unknown Unicode class/],
    ['\\Z', /RE2 has \\z, not \\Z/],
    ['\\p{Grek}', /unknown Unicode class/],
    ['\\k<n>', /invalid escape sequence/],
    ['a\\', /trailing \\/],
    ['\ud800', /not valid UTF-8/],
    ['a\u0000zzz', /NUL character .* write \\x00 instead/],
    ['(a{1000})'.repeat(700), /pattern too large for RE2/],
    ['\\pL{1,500}', /pattern too large for RE2/],
  ])('rejects %s', (pattern, message) => {
    expect(re2Problem(pattern)).toMatch(message);
  });

  it('reports the problem for `matches` with its path and position', () => {
    expect(problems('x = 1 and\n  email matches "(?=x)"')[0]).toMatchObject({ code: 'bad_regex', path: ['and', 1, 'value'], line: 2, column: 3 });
    expect(codes('did(e where p matches "a**")')).toEqual(['bad_regex']);
  });

  it('a NUL character in a pattern is an error in both forms; the escape \\x00 is the way to match one', () => {
    expect(problems('email matches "a\\u0000z"')[0]).toMatchObject({ code: 'bad_regex', line: 1, column: 1 });
    expect(() => fromJson({ attr: 'email', op: 'matches', value: 'a\u0000z' })).toThrow(/NUL character/);
    expect(checkSegment({ kind: 'did', event: 'e', where: { kind: 'prop', prop: 'p', op: 'matches', value: '\u0000' } }).map((e) => e.code)).toEqual(['bad_regex']);
    ok('email matches "a\\\\x00z" and email contains "a\\u0000z" and email starts_with "\\u0000"');
  });
});

describe('RE2 validation against the real thing', () => {
  // ClickHouse 18.16's match() compiles patterns with its bundled RE2. Whatever it
  // rejects, we must reject before a query runs. We are stricter only where current
  // RE2 is (duplicate group names), where ClickHouse skips RE2 for plain-text
  // patterns (a trailing backslash), and near the program-size limit, which we estimate.
  it('rejects every pattern ClickHouse rejects, on fixed and random patterns', async () => {
    const ch = await testDatabase('seg_re2');
    const alphabet = fc.constantFrom(...'ab()[]{}*+?|^$.\\-,0129:<>=!PpdQEzZxisU#_é'.split(''));
    const random = fc.sample(fc.array(alphabet, { maxLength: 8 }).map((a) => a.join('')), { numRuns: 400, seed: 20261128 });
    const fixed = [
      '(?)', '(?-)', '(?i)(?-i)', 'a(?i)*', '\\_', '\\p{Grek}', '\\p{Greek}', '\\pL', '[[:a:b:]]', 'a{01}', 'a{01}{2}', '[a-\\d]',
      '(?P<n>a)(?P<n>b)', '(a)\\', '(a{100}){100}', '(a{10}){100}', '\\Q(\\E', '(?=a)', '(a)\\1', '\\12', '\\8', '[z-a]', 'a**',
      // Compiled size: RE2 refuses programs beyond ~700k instructions.
      '(a{1000})'.repeat(600), '(a{1000})'.repeat(700), '(\\pL)'.repeat(400), '(\\pL)'.repeat(460), '\\pL{1,300}', '\\pL{1,500}',
      '[^a]{1000}', '(.){1000}'.repeat(40), '(.){1000}'.repeat(70),
    ];
    const disagreements: string[] = [];
    for (const pattern of [...fixed, ...random]) {
      // Plain HTTP rather than the client, which logs every refused query to stderr.
      const q = sql`SELECT match('abc', ${pattern}) AS m`;
      const response = await fetch(`${clickhouseUrl()}/?database=${encodeURIComponent(ch.database)}`, { method: 'POST', body: q.text });
      const body = await response.text();
      if (!response.ok && !/re2/i.test(body)) throw new Error(`ClickHouse failed: ${body.slice(0, 300)}`);
      const rejected = response.ok ? undefined : body;
      const mine = re2Problem(pattern);
      if (rejected !== undefined && mine === undefined) disagreements.push(`accepted ${JSON.stringify(pattern)}: ClickHouse says ${rejected.slice(0, 120)}`);
      if (rejected === undefined && mine !== undefined && !/duplicate capture group name|trailing \\|too large/.test(mine)) {
        disagreements.push(`rejected ${JSON.stringify(pattern)} (${mine}) which ClickHouse accepts`);
      }
    }
    expect(disagreements).toEqual([]);
  });

  it('ClickHouse cuts a pattern at a NUL character (why it is rejected) and reads the escape \\x00 as NUL', async () => {
    const ch = await testDatabase('seg_re2_nul');
    const [row] = await ch.rows<Record<string, number>>(
      sql`SELECT match('axyz', ${'a\u0000zzz'}) AS cut, match(${'a\u0000b'}, ${'a\\x00b'}) AS escaped, match('axb', ${'a\\x00b'}) AS other`,
    );
    expect(row).toEqual({ cut: 1, escaped: 1, other: 0 });
  });
});

describe('instants', () => {
  it('parses ISO 8601 with an offset or Z, and nothing else', () => {
    expect(parseInstant('1970-01-01T00:00:00Z')).toEqual({ seconds: 0, nanos: 0 });
    expect(parseInstant('2026-01-01T08:00:00+08:00')).toEqual(parseInstant('2026-01-01T00:00:00Z'));
    expect(parseInstant('2026-01-01T08:00+0800')).toEqual(parseInstant('2026-01-01T00:00:00Z'));
    expect(parseInstant('2026-01-01T00:00:00.5-01')).toEqual({ seconds: parseInstant('2026-01-01T01:00:00Z')!.seconds, nanos: 500_000_000 });
    expect(parseInstant('2024-02-29T00:00:00Z')!.seconds).toBe(Date.UTC(2024, 1, 29) / 1000);
    // RFC 3339 allows lower-case t and z, and request as_of takes them.
    expect(parseInstant('2026-01-01t08:00:00z')).toEqual(parseInstant('2026-01-01T08:00:00Z'));
    expect(checkSegment(parseSegment('did(e, between "2026-01-01t00:00:00z" and "2026-01-02T00:00:00+01:00")'))).toEqual([]);
    // Other ISO 8601 forms too (lib/instant.ts); 24:00 is the end of the day.
    expect(parseInstant('2026-01-01T24:00:00Z')).toEqual(parseInstant('2026-01-02T00:00:00Z'));
    expect(parseInstant('20260101T080000+0800')).toEqual(parseInstant('2026-01-01T00:00:00Z'));
    for (const bad of ['2026-01-01T00:00:00', '2026-01-01', '2025-02-29T00:00:00Z', '2026-13-01T00:00:00Z', '2026-01-01T24:00:01Z',
      '2026-01-01T00:60:00Z', '2026-01-01T00:00:60Z', '2026-01-01 00:00:00Z', '2026-01-01T00:00:00+24:00', ' 2026-01-01T00:00:00Z',
      '2026-01-01T00:00:00.1234567890Z', '+2026-01-01T00:00:00Z']) {
      expect(parseInstant(bad), bad).toBeUndefined();
    }
  });
});

describe('programmatic ASTs get the same checks', () => {
  const did = (extra: object): Expr => ({ kind: 'did', event: 'e', ...extra }) as Expr;

  it('counts, durations, windows, sequences, aggregates', () => {
    const check = (e: Expr): [string, (string | number)[] | undefined][] => checkSegment(e).map((x) => [x.code, x.path]);
    expect(check(did({ count: { op: 'gte', value: -1 } }))).toEqual([['bad_count', ['count', 'value']]]);
    expect(check(did({ count: { op: 'gte', value: 1.5 } }))).toEqual([['bad_count', ['count', 'value']]]);
    // count < 0 is never true, not an error (segments.md rejects only a negative count).
    expect(check(did({ count: { op: 'lt', value: 0 } }))).toEqual([]);
    expect(check(did({ window: { kind: 'within', duration: duration(0, 'd') } }))).toEqual([['bad_duration', ['within']]]);
    expect(check(did({ window: { kind: 'within', duration: { amount: 1, unit: 'd', seconds: 60 } } }))).toEqual([['bad_duration', ['within']]]);
    expect(check(did({ window: { kind: 'between', from: '2026-01-02T00:00:00Z', to: '2026-01-01T00:00:00Z' } }))).toEqual([
      ['between_order', ['between', 1]],
    ]);
    // An empty window (end == start) matches no event; only an end before the start is an error.
    expect(check(did({ window: { kind: 'between', from: '2026-01-01T00:00:00Z', to: '2026-01-01T00:00:00Z' } }))).toEqual([]);
    expect(check(did({ window: { kind: 'within', duration: duration(1_000_000, 'w') } }))).toEqual([]);
    expect(check(did({ window: { kind: 'within', duration: duration(Number.MAX_SAFE_INTEGER, 's') } }))).toEqual([]);
    expect(check(did({ window: { kind: 'within', duration: duration(Number.MAX_SAFE_INTEGER, 'm') } }))).toEqual([['bad_duration', ['within']]]);
    expect(check({ kind: 'sequence', steps: [{ event: 'a' }] })).toEqual([['sequence_steps', ['sequence']]]);
    expect(check({ kind: 'sequence', steps: Array.from({ length: 9 }, () => ({ event: 'a' })) })).toEqual([['sequence_steps', ['sequence']]]);
    expect(check({ kind: 'stopped', event: 'e', within: duration(1, 'd'), before: duration(0, 'w') })).toEqual([['bad_duration', ['before']]]);
    expect(check({ kind: 'agg', fn: 'sum', event: 'e', prop: '', op: 'gt', value: NaN })).toEqual([
      ['empty_name', ['prop']],
      ['type_mismatch', ['value']],
    ]);
    expect(check({ kind: 'agg', fn: 'median' as 'sum', event: 'e', prop: 'p', op: 'gt', value: 1 })).toEqual([['unknown_function', ['agg']]]);
    expect(check({ kind: 'and', items: [] })).toEqual([['empty_group', ['and']]]);
    expect(check({ kind: 'attr', attr: 'x', op: 'eq', value: Infinity })).toEqual([['bad_number', ['value']]]);
  });

  it('limits: 500 conditions, 32 levels, without recursion trouble on huge inputs', () => {
    const leaves = (n: number): Expr[] => Array.from({ length: n }, () => ({ kind: 'tag', tag: 't' }) as Expr);
    expect(checkSegment({ kind: 'and', items: leaves(499) })).toEqual([]);
    expect(checkSegment({ kind: 'and', items: leaves(500) }).map((e) => e.code)).toEqual(['too_many_nodes']);
    const nest = (n: number): Expr => {
      let e: Expr = { kind: 'tag', tag: 't' };
      for (let i = 1; i < n; i++) e = { kind: 'not', item: e };
      return e;
    };
    expect(checkSegment(nest(32))).toEqual([]);
    expect(checkSegment(nest(33)).map((e) => e.code)).toEqual(['too_deep']);
    expect(checkSegment(nest(200_000)).map((e) => e.code)).toEqual(['too_deep']);
    // A where-clause is one level below its event condition.
    const where = { kind: 'prop', prop: 'p', op: 'is_null' } as const;
    expect(checkSegment({ kind: 'not', item: { kind: 'did', event: 'e', where } })).toEqual([]);
  });
});

describe('in_segment: existence and cycles through saved segments', () => {
  // Saved segments by id, also reachable by name (`n-<id>`).
  function store(defs: Record<string, string>): CheckContext['resolveSegment'] {
    const saved = new Map<string, SavedSegment>();
    for (const [id, text] of Object.entries(defs)) {
      const s = { id, expr: parseSegment(text) };
      saved.set(id, s);
      saved.set(`n-${id}`, s);
    }
    return (ref) => saved.get(ref);
  }
  const check = (text: string, ctx: CheckContext): [string, string][] =>
    checkSegment(parseSegment(text), ctx).map((e) => [e.code, e.message]);

  it('a reference must resolve; without a resolver it is not checked', () => {
    const resolveSegment = store({ a: 'tag("x")' });
    expect(check('in_segment("a") and in_segment("n-a")', { resolveSegment })).toEqual([]);
    expect(check('in_segment("zzz")', { resolveSegment })).toEqual([['unknown_segment', "segment 'zzz' does not exist"]]);
    expect(check('in_segment("zzz")', {})).toEqual([]);
  });

  it('finds cycles through ids and names, and references to the segment being saved', () => {
    const resolveSegment = store({ a: 'in_segment("b")', b: 'tag("x") and in_segment("n-c")', c: 'not in_segment("a")' });
    expect(check('in_segment("a")', { resolveSegment })[0]![0]).toBe('segment_cycle');
    expect(check('in_segment("a")', { resolveSegment })[0]![1]).toBe("in_segment cycle: 'a' → 'b' → 'n-c' → 'a'");
    const acyclic = store({ a: 'in_segment("b") and in_segment("c")', b: 'in_segment("c")', c: 'tag("x")' });
    expect(check('in_segment("a") or in_segment("n-b")', { resolveSegment: acyclic })).toEqual([]);
    // Saving b as `in_segment("a")` while a uses b would close a cycle.
    const saving = store({ a: 'in_segment("n-b")', b: 'tag("old")' });
    expect(check('in_segment("a")', { resolveSegment: saving, self: ['b', 'n-b'] })[0]![0]).toBe('segment_cycle');
    expect(check('in_segment("n-b")', { resolveSegment: saving, self: ['b', 'n-b'] })[0]![1]).toMatch(/refers to the segment itself/);
  });

  it('a reference to the segment being saved is a cycle even when the resolver leaves that segment out', () => {
    // segments/saved.ts resolves the *other* saved segments: the one being saved is not found by id or name.
    const others = store({ a: 'in_segment("n-b")', c: 'tag("x")' });
    const self = ['b', 'n-b', 'n-b-renamed'];
    for (const ref of self) {
      expect(check(`in_segment("${ref}")`, { resolveSegment: others, self })).toEqual([
        ['segment_cycle', `in_segment('${ref}') refers to the segment itself`],
      ]);
    }
    // Through another segment that refers back to it.
    expect(check('in_segment("a")', { resolveSegment: others, self })).toEqual([['segment_cycle', "in_segment cycle: this segment → 'a' → 'n-b'"]]);
    // A new segment (no id yet) named in its own expression.
    expect(check('tag("y") or in_segment("fresh")', { resolveSegment: others, self: ['fresh'] }).map(([c]) => c)).toEqual(['segment_cycle']);
    expect(check('in_segment("c")', { resolveSegment: others, self })).toEqual([]);
    expect(check('in_segment("zzz")', { resolveSegment: others, self }).map(([c]) => c)).toEqual(['unknown_segment']);
  });

  it('reports a dangling reference inside a saved segment', () => {
    const resolveSegment = store({ a: 'in_segment("gone")' });
    expect(check('in_segment("a")', { resolveSegment })[0]![0]).toBe('unknown_segment');
  });

  it('follows long chains without recursion', () => {
    const defs: Record<string, string> = {};
    for (let i = 0; i < 20_000; i++) defs[`s${i}`] = i === 19_999 ? 'tag("x")' : `in_segment("s${i + 1}")`;
    const resolveSegment = store(defs);
    expect(check('in_segment("s0")', { resolveSegment }).map(([c]) => c)).toEqual(['too_many_segments']);
    expect(check('in_segment("s15000")', { resolveSegment })).toEqual([]);
  });

  it('parseSegment and tryParseSegment take the resolver too', () => {
    const resolveSegment = store({ a: 'tag("x")' });
    expect(tryParseSegment('in_segment("b")', { resolveSegment })).toMatchObject({
      ok: false,
      errors: [{ code: 'unknown_segment', line: 1, column: 1 }],
    });
  });

  it('errors on references carry line and column when the source text is given', () => {
    const resolveSegment = store({ a: 'in_segment("n-b")', b: 'in_segment("a")' });
    const text = 'tag("x") and\n  (in_segment("zzz") or in_segment("a"))';
    const errors = checkSegment(parseSegment(text), { resolveSegment, source: text });
    expect(errors.map((e) => [e.code, e.line, e.column])).toEqual([
      ['unknown_segment', 2, 4],
      ['segment_cycle', 2, 25],
    ]);
    expect(errors[0]!.message).toBe("segment 'zzz' does not exist at line 2, column 4");
  });
});

describe('malformed ASTs', () => {
  it('yield an invalid_ast error rather than a TypeError', () => {
    for (const junk of [{ kind: 'and' }, { kind: 'attr', attr: 'x', op: 'between', value: 5 }, { kind: 'nope' }, { kind: 'not' }]) {
      expect(checkSegment(junk as unknown as Expr).map((e) => e.code)).toEqual(['invalid_ast']);
    }
  });
});
