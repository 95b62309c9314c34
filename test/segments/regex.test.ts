// `matches` is an RE2 regular expression (segments.md §2), with RE2's defaults,
// on the real server: ClickHouse's match() turns dot-matches-newline on, and
// 18.16 prefilters a pattern such as `(?i)CORP` by a case-sensitive literal, so
// the pattern goes to match() in a group with flag s off (segments/values.ts).
// The expectations are RE2's documented semantics, written out by hand
// (JavaScript's RegExp has no inline flags, so it cannot be the reference).
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { evaluateSegment } from '../../segments/evaluate.ts';
import { re2Defaults } from '../../segments/values.ts';
import { insertEvents } from '../profiles/events.ts';
import type { TestEvent } from '../profiles/reference.ts';
import { testDatabase } from '../support/env.ts';

const APP = 'regex';
const T = Date.parse('2026-06-01T00:00:00Z') / 1000;
const TEXTS: Record<string, string> = {
  corp: 'alice@corp.com',
  shoes: 'shoes',
  upper: 'ABC',
  lower: 'abc',
  mixed: 'aBC',
  newline: 'a\nb',
  paren: 'x(y',
};

let ch: ClickHouse;
beforeAll(async () => {
  ch = await testDatabase('seg_regex');
  const events: TestEvent[] = Object.entries(TEXTS).map(([user_id, t], i) => ({
    event_id: `i${i}`, user_id, ts: T - 3600, type: 'identify', event: '', properties: {}, traits: { t }, context: {}, received_at: T - 3600,
  }));
  // The same texts as an event property, for `did(… where p matches …)`.
  events.push(...Object.entries(TEXTS).map(([user_id, p], i): TestEvent => ({
    event_id: `v${i}`, user_id, ts: T - 1800, type: 'track', event: 'view', properties: { p }, traits: {}, context: {}, received_at: T - 1800,
  })));
  await insertEvents(ch, APP, events);
});

async function members(expression: string): Promise<string[]> {
  const r = await evaluateSegment(ch, APP, expression, { asOf: new Date(T * 1000), limit: 100 });
  return r.users.map((u) => u.user_id as string).sort();
}

const quoted = (pattern: string) => JSON.stringify(pattern);

describe('matches', () => {
  const cases: [pattern: string, matching: string[]][] = [
    ['(?i)CORP', ['corp']],
    ['(?i)^SHOES$', ['shoes']],
    ['(?i)abc', ['lower', 'mixed', 'upper']],
    ['A(?i)bc', ['upper']],
    ['a(?i)bc', ['lower', 'mixed']],
    ['a.b', []], // `.` does not match a newline by default
    ['(?s)a.b', ['newline']],
    ['^b', []], // `^` is the start of the text, not of a line
    ['(?m)^b$', ['newline']],
    ['\\Qx(', ['paren']], // \Q… to the end of the pattern
    ['\\Qx(\\Ey$', ['paren']],
    ['corp|^sho', ['corp', 'shoes']], // the alternation stays whole inside the group
    ['^[a-z]+$', ['lower', 'shoes']],
  ];
  it.each(cases)('%j matches what RE2 matches, on traits and on event properties', async (pattern, matching) => {
    expect(await members(`t matches ${quoted(pattern)}`)).toEqual(matching);
    expect(await members(`did(view where p matches ${quoted(pattern)})`)).toEqual(matching);
  });

  it('closes an unterminated \\Q before the group it wraps the pattern in', () => {
    expect(re2Defaults('a.b')).toBe('(?-s:a.b)');
    expect(re2Defaults('\\Qx(')).toBe('(?-s:\\Qx(\\E)');
    expect(re2Defaults('\\Qx(\\Ey')).toBe('(?-s:\\Qx(\\Ey)');
    expect(re2Defaults('\\\\Q')).toBe('(?-s:\\\\Q)'); // an escaped backslash, then a plain Q
  });
});
