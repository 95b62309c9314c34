import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  fromJson,
  parseSegment,
  printSegment,
  readSegment,
  SegmentJsonSchema,
  SegmentSyntaxError,
  stripSpans,
  toJson,
  tryFromJson,
} from '../../segments/index.ts';
import type { SegmentError } from '../../segments/index.ts';

function errorsOf(input: unknown): SegmentError[] {
  const r = tryFromJson(input);
  if (r.ok) throw new Error(`expected ${JSON.stringify(input)} to be rejected`);
  return r.errors;
}
const brief = (input: unknown): [string, (string | number)[] | undefined][] => errorsOf(input).map((e) => [e.code, e.path]);

const CN = { attr: 'country', op: 'eq', value: 'CN' };

describe('JSON form: accepted shapes', () => {
  it('reads every node kind and writes it back unchanged (key order as in segments.md)', () => {
    const all = {
      or: [
        { and: [CN, { not: { tag: 'vip' } }] },
        { attr: 'traits.plan', op: 'in', value: ['a', 'b'] },
        { attr: 'ltv', op: 'between', value: [10, 100] },
        { attr: 'push_token', op: 'is_not_null' },
        { did: 'purchase', where: { prop: 'amount', op: 'gt', value: 100 }, count: { op: 'gte', value: 2 }, within: '30d' },
        { first_did: 'app_open', between: ['2026-01-01T00:00:00Z', '2026-02-01T00:00:00+08:00'] },
        { stopped: 'purchase', where: { not: { prop: 'x', op: 'is_null' } }, within: '14d', before: '60d' },
        { sequence: [{ event: 'a' }, { event: 'b', where: { or: [{ prop: 'p', op: 'eq', value: true }, { prop: 'q', op: 'matches', value: '^x' }] } }], within: '1h', in_last: '2w' },
        { agg: 'count_distinct', event: 'view', prop: 'item_id', where: { prop: 'page', op: 'starts_with', value: '/p' }, within: '90d', op: 'gte', value: 3 },
        { in_segment: 'churn-risk' },
      ],
    };
    const ast = fromJson(all);
    expect(JSON.stringify(toJson(ast))).toBe(JSON.stringify(all));
    expect(stripSpans(parseSegment(printSegment(ast)))).toEqual(ast);
  });

  it('flattens nested and/or and unwraps single-item groups, so JSON → AST → JSON is canonical', () => {
    const a = { tag: 'a' };
    const b = { tag: 'b' };
    const c = { tag: 'c' };
    expect(toJson(fromJson({ and: [{ and: [a, b] }, c] }))).toEqual({ and: [a, b, c] });
    expect(toJson(fromJson({ or: [a, { or: [b, { or: [c] }] }] }))).toEqual({ or: [a, b, c] });
    expect(toJson(fromJson({ and: [a] }))).toEqual(a);
    expect(toJson(fromJson({ not: { and: [{ and: [a, b] }] } }))).toEqual({ not: { and: [a, b] } });
    expect(toJson(fromJson({ did: 'e', where: { and: [{ and: [{ prop: 'x', op: 'is_null' }, { prop: 'y', op: 'is_null' }] }] } }))).toEqual({
      did: 'e',
      where: { and: [{ prop: 'x', op: 'is_null' }, { prop: 'y', op: 'is_null' }] },
    });
    // Mixed nesting keeps its structure.
    expect(toJson(fromJson({ and: [{ or: [a, b] }, c] }))).toEqual({ and: [{ or: [a, b] }, c] });
  });

  it('normalises durations and -0', () => {
    expect(toJson(fromJson({ did: 'e', within: '030d' }))).toEqual({ did: 'e', within: '30d' });
    expect(Object.is((toJson(fromJson({ attr: 'x', op: 'eq', value: -0 })) as { value: number }).value, 0)).toBe(true);
  });
});

describe('JSON form: errors with paths', () => {
  it('rejects unknown keys anywhere', () => {
    expect(brief({ did: 'x', foo: 1 })).toEqual([['unknown_key', ['foo']]]);
    expect(brief({ and: [{ tag: 'a' }, { ...CN, extra: true }] })).toEqual([['unknown_key', ['and', 1, 'extra']]]);
    expect(brief({ did: 'x', where: { prop: 'a', op: 'eq', value: 1, attr: 'b' } })).toEqual([['unknown_key', ['where', 'attr']]]);
    expect(brief({ attr: 'x', op: 'is_null', value: 1 })).toEqual([['unknown_key', ['value']]]);
    expect(errorsOf({ did: 'x', foo: 1 })[0]!.message).toBe("unknown key 'foo' (at foo)");
  });

  it('names unknown operators, missing and mistyped values', () => {
    expect(errorsOf({ attr: 'x', op: 'like', value: 'a' })[0]).toMatchObject({
      code: 'unknown_operator',
      path: ['op'],
      message: expect.stringMatching(/^unknown operator "like"; expected one of eq, neq/),
    });
    expect(brief({ attr: 'x', value: 'a' })).toEqual([['missing_key', []]]);
    expect(brief({ attr: 'x', op: 'eq' })).toEqual([['missing_key', ['value']]]);
    expect(brief({ attr: 'x', op: 'eq', value: { a: 1 } })).toEqual([['invalid_type', ['value']]]);
    expect(brief({ attr: 'x', op: 'eq', value: null })).toEqual([['invalid_type', ['value']]]);
    expect(brief({ attr: 'x', op: 'contains', value: 5 })).toEqual([['invalid_type', ['value']]]);
    expect(brief({ attr: 'x', op: 'between', value: [1] })).toEqual([['list_size', ['value']]]);
    expect(brief({ agg: 'median', event: 'e', prop: 'p', op: 'gt', value: 1 })).toEqual([['invalid_value', ['agg']]]);
    expect(brief({ did: 'e', where: { prop: 'a', op: 'eq' } })).toEqual([['missing_key', ['where', 'value']]]);
  });

  it('rejects values that are not a condition', () => {
    for (const v of [null, 5, 'did(x)', [], true]) expect(brief(v)).toEqual([['invalid_type', []]]);
    expect(errorsOf({ foo: 1 })[0]).toMatchObject({
      code: 'invalid_condition',
      path: [],
      message: expect.stringMatching(/one of the keys and, or, not, attr, did, first_did, stopped, sequence, agg, tag, in_segment; found 'foo'/),
    });
    expect(brief({ and: [{ tag: 'a' }, 7] })).toEqual([['invalid_type', ['and', 1]]]);
  });

  it('checks list sizes, durations, windows and counts', () => {
    expect(brief({ attr: 'x', op: 'in', value: [] })).toEqual([['list_size', ['value']]]);
    expect(brief({ attr: 'x', op: 'in', value: Array.from({ length: 1001 }, (_, i) => i) })).toEqual([['list_size', ['value']]]);
    expect(brief({ and: [] })).toEqual([['list_size', ['and']]]);
    expect(brief({ did: 'e', within: '30 days' })).toEqual([['invalid_format', ['within']]]);
    expect(errorsOf({ did: 'e', within: '0d' })[0]).toMatchObject({ code: 'bad_duration', path: ['within'], message: 'duration must be > 0 (at within)' });
    expect(brief({ stopped: 'e', within: '1d', before: '0s' })).toEqual([['bad_duration', ['before']]]);
    expect(brief({ did: 'e', between: ['2026-01-01T00:00:00', '2026-01-02T00:00:00Z'] })).toEqual([['bad_timestamp', ['between', 0]]]);
    expect(brief({ did: 'e', between: ['2026-01-01T00:00:00Z', '2026-02-31T00:00:00Z'] })).toEqual([['bad_timestamp', ['between', 1]]]);
    expect(brief({ did: 'e', between: ['2026-02-01T00:00:00Z', '2026-01-01T00:00:00Z'] })).toEqual([['between_order', ['between', 1]]]);
    expect(brief({ did: 'e', within: '1d', between: ['2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z'] })).toEqual([
      ['window_conflict', ['between']],
    ]);
    expect(errorsOf({ did: 'e', count: { op: 'gte', value: -1 } })[0]).toMatchObject({
      path: ['count', 'value'],
      message: 'count must be a whole number >= 0 (at count.value)',
    });
    expect(brief({ did: 'e', count: { op: 'gte', value: 1.5 } })).toMatchObject([[expect.any(String), ['count', 'value']]]);
    expect(errorsOf({ sequence: [{ event: 'a' }] })[0]).toMatchObject({ path: ['sequence'], message: expect.stringMatching(/sequence needs 2\.\.8 steps/) });
    expect(brief({ sequence: Array.from({ length: 9 }, () => ({ event: 'a' })) })).toMatchObject([[expect.any(String), ['sequence']]]);
  });

  it('semantic errors point into the input as given, before flattening', () => {
    const input = { and: [{ and: [{ tag: 'a' }, { attr: 'revenue_total', op: 'eq', value: 'x' }] }, { tag: 'b' }] };
    expect(brief(input)).toEqual([['type_mismatch', ['and', 0, 'and', 1, 'value']]]);
  });

  it('reports several errors at once', () => {
    const errors = errorsOf({ and: [{ did: 'e', within: '0d' }, { attr: 'first_seen', op: 'gt', value: 5 }, { attr: 'x', op: 'matches', value: '(?=a)' }] });
    expect(errors.map((e) => [e.code, e.path])).toEqual([
      ['bad_duration', ['and', 0, 'within']],
      ['type_mismatch', ['and', 1, 'value']],
      ['bad_regex', ['and', 2, 'value']],
    ]);
  });

  it('adversarial depth and size give clean errors, not RangeError', () => {
    let deep: unknown = { tag: 'a' };
    for (let i = 0; i < 100_000; i++) deep = { not: deep };
    expect(brief(deep)).toEqual([['too_deep', []]]);
    let deepAnd: unknown = { tag: 'a' };
    for (let i = 0; i < 50_000; i++) deepAnd = { and: [deepAnd] };
    expect(brief(deepAnd)).toEqual([['too_deep', []]]);
    // Sharing makes a small graph with an exponential number of paths.
    let shared: unknown = { tag: 'a' };
    for (let i = 0; i < 30; i++) shared = { and: [shared, shared] };
    expect(brief(shared)[0]![0]).toMatch(/too_(deep|large)/);
    const cyclic: Record<string, unknown> = { tag: 'a' };
    cyclic.not = cyclic;
    expect(brief(cyclic)).toEqual([['too_deep', []]]);
    let notDeepEnough: unknown = { tag: 'a' };
    for (let i = 0; i < 31; i++) notDeepEnough = { not: notDeepEnough };
    expect(tryFromJson(notDeepEnough).ok).toBe(true);
    expect(brief({ not: notDeepEnough })).toEqual([['too_deep', ['not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not', 'not']]]);
  });

  it('the depth and size limits hold for the flattened form, as for the text form', () => {
    // 33 nested binary ands: one and of 34 conditions once flattened.
    let chain: unknown = { attr: 'x', op: 'eq', value: 1 };
    let text = 'x = 1';
    for (let i = 0; i < 33; i++) {
      chain = { and: [chain, { attr: `y${i}`, op: 'eq', value: 1 }] };
      text = `(${text} and y${i} = 1)`;
    }
    expect(parseSegment(text).kind).toBe('and');
    expect(fromJson(chain)).toEqual(stripSpans(parseSegment(text)));
    // 200 ands of 2 inside an and: 601 nodes as given, 401 flattened.
    const pairs = Array.from({ length: 200 }, (_, i) => ({ and: [{ tag: `a${i}` }, { tag: `b${i}` }] }));
    expect(tryFromJson({ and: pairs }).ok).toBe(true);
    expect(brief({ and: [...pairs, ...pairs.slice(0, 50)] })).toEqual([['too_many_nodes', []]]);
    // Past the limits after flattening, as before.
    let notChain: unknown = { tag: 'a' };
    for (let i = 0; i < 33; i++) notChain = { not: { and: [notChain, { tag: `b${i}` }] } };
    expect(brief(notChain)[0]![0]).toBe('too_deep');
  });

  it('strings must be valid Unicode: a lone surrogate is rejected wherever it is', () => {
    expect(errorsOf({ attr: 'x', op: 'eq', value: 'a\ud800' })[0]).toMatchObject({
      code: 'bad_string',
      path: ['value'],
      message: expect.stringMatching(/lone UTF-16 surrogate .*\(at value\)$/),
    });
    expect(brief({ and: [{ tag: 'ok' }, { attr: 'x', op: 'in', value: [1, '\udfff'] }] })).toEqual([['bad_string', ['and', 1, 'value', 1]]]);
    expect(brief({ did: 'e', where: { prop: '\ud800', op: 'starts_with', value: '\udc00' } })).toEqual([
      ['bad_string', ['where', 'prop']],
      ['bad_string', ['where', 'value']],
    ]);
    expect(brief({ in_segment: '\ud800' })).toEqual([['bad_string', ['in_segment']]]);
    // Through JSON text too: JSON.parse reads "\ud800" as a lone surrogate.
    expect(brief(JSON.parse('{"attr":"traits.k","op":"neq","value":"\\ud800"}'))).toEqual([['bad_string', ['value']]]);
    expect(tryFromJson({ attr: 'x', op: 'eq', value: '\ud83d\ude00' }).ok).toBe(true);
  });

  it('lists may mix kinds', () => {
    expect(fromJson({ attr: 'traits.plan', op: 'in', value: ['pro', 2, true] })).toEqual({ kind: 'attr', attr: 'traits.plan', op: 'in', value: ['pro', 2, true] });
    expect(brief({ attr: 'events_total', op: 'in', value: [1, 'x'] })).toEqual([['type_mismatch', ['value', 1]]]);
  });

  it('fromJson throws SegmentSyntaxError', () => {
    expect(() => fromJson({ nope: 1 })).toThrow(SegmentSyntaxError);
  });
});

describe('the zod schema', () => {
  it('converts to JSON Schema (for OpenAPI)', () => {
    const schema = z.toJSONSchema(SegmentJsonSchema) as Record<string, unknown>;
    const text = JSON.stringify(schema);
    expect(text).toContain('"additionalProperties":false');
    expect(text).toContain('"in_segment"');
    expect(text).toContain('"$ref"');
    // Each node kind is one strict object among the options.
    expect(JSON.stringify(schema.anyOf ?? schema)).toContain('"required":["did"]');
  });

  it('validates the JSON form on its own (safeParse)', () => {
    expect(SegmentJsonSchema.safeParse({ did: 'x', within: '3d' }).success).toBe(true);
    expect(SegmentJsonSchema.safeParse({ did: 'x', within: '3d', junk: 1 }).success).toBe(false);
  });
});

describe('readSegment: either form, one answer', () => {
  it('reads text and JSON to the same AST and checks references', () => {
    const text = readSegment('did(purchase, count >= 2, within 30d)');
    const json = readSegment({ did: 'purchase', count: { op: 'gte', value: 2 }, within: '30d' });
    expect(text.ok && json.ok && stripSpans(text.value)).toEqual(json.ok && json.value);
    const resolveSegment = (ref: string) => (ref === 'vip' ? parseSegment('tag("vip")') : undefined);
    expect(readSegment('in_segment("vip")', { resolveSegment }).ok).toBe(true);
    expect(readSegment({ in_segment: 'nope' }, { resolveSegment })).toMatchObject({
      ok: false,
      errors: [{ code: 'unknown_segment', path: ['in_segment'] }],
    });
    expect(readSegment('in_segment("nope")', { resolveSegment })).toMatchObject({
      ok: false,
      errors: [{ code: 'unknown_segment', line: 1, column: 1 }],
    });
  });
});
