// Evaluation resolves `in_segment` against the app's saved segments; an unknown
// or cyclic reference in TEXT input must be reported with line and column
// (segments.md §3), like every other text error. Also the limits the contract
// does not impose, evaluated on the real server: empty windows, count < 0,
// windows longer than all history.
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { prepareSegment } from '../../segments/evaluate.ts';
import { createSegment, updateSegment } from '../../segments/saved.ts';
import { SegmentSyntaxError } from '../../segments/errors.ts';
import type { SegmentError } from '../../segments/errors.ts';
import { compileSegment } from '../../segments/compile.ts';
import { parseSegment } from '../../segments/parse.ts';
import { testDatabase } from '../support/env.ts';

const APP = 'app_eval_errors';
let ch: ClickHouse;

async function errorsOf(input: unknown): Promise<SegmentError[]> {
  try {
    await prepareSegment(ch, APP, input, new Date('2026-06-01T00:00:00Z'));
  } catch (e) {
    if (e instanceof SegmentSyntaxError) return e.errors;
    throw e;
  }
  throw new Error(`expected ${JSON.stringify(input)} to be rejected`);
}

beforeAll(async () => {
  ch = await testDatabase('seg_eval_errors');
  // Saved segments written as rows (a cycle cannot be saved through segments/saved.ts,
  // but stored data is read as it is): loop_a → loop_b → loop_a, and a plain one.
  const row = (id: string, name: string, expression: unknown) => ({
    app_id: APP, segment_id: id, name, description: '', expression: JSON.stringify(expression), deleted: 0, updated_at: 1_780_000_000, version: 1,
  });
  await ch.insert('segments', [
    row('seg_a', 'loop_a', { in_segment: 'loop_b' }),
    row('seg_b', 'loop_b', { in_segment: 'seg_a' }),
    row('seg_ok', 'fine', { tag: 'vip' }),
  ]);
  await ch.insert('events', [
    { app_id: APP, user_id: 'u1', ts: 1_780_000_000, event_id: 'e1', type: 'track', event: 'view', prop_keys: [], prop_strings: [], prop_numbers: [] },
    { app_id: APP, user_id: 'u2', ts: 1_780_000_000 - 86_400, event_id: 'e2', type: 'track', event: 'view', prop_keys: [], prop_strings: [], prop_numbers: [] },
  ]);
});

describe('in_segment errors when evaluating', () => {
  it('text input: an unknown reference has line and column', async () => {
    const errors = await errorsOf('tag("vip") and\n   in_segment("nope")');
    expect(errors).toMatchObject([{ code: 'unknown_segment', line: 2, column: 4, path: ['and', 1, 'in_segment'] }]);
    expect(errors[0]!.message).toBe("segment 'nope' does not exist at line 2, column 4");
    expect(errors[0]!.excerpt).toBe('   in_segment("nope")\n   ^');
  });

  it('text input: a cycle through saved segments has line and column', async () => {
    const errors = await errorsOf('in_segment("fine") or in_segment("loop_a")');
    expect(errors).toMatchObject([{ code: 'segment_cycle', line: 1, column: 23 }]);
  });

  it('JSON input: the path, and no line/column (there is no text)', async () => {
    const errors = await errorsOf({ or: [{ in_segment: 'fine' }, { in_segment: 'nope' }] });
    expect(errors).toEqual([{ code: 'unknown_segment', message: "segment 'nope' does not exist", path: ['or', 1, 'in_segment'] }]);
  });

  it('a valid reference evaluates', async () => {
    await expect(prepareSegment(ch, APP, 'in_segment("fine") or did(view)', new Date('2026-06-01T00:00:00Z'))).resolves.toBeDefined();
  });
});

/** The segment errors a save is rejected with; none when it succeeds. */
async function savingErrors(p: Promise<unknown>): Promise<SegmentError[]> {
  try {
    await p;
  } catch (e) {
    if (e instanceof SegmentSyntaxError) return e.errors;
    throw e;
  }
  return [];
}

describe('saving a segment that refers to itself (segments/saved.ts)', () => {
  it('is a cycle, not an unknown segment, by id, old name or new name, directly or through another segment', async () => {
    const app = 'app_self_ref';
    const cycleOf = async (p: Promise<unknown>): Promise<string[]> => (await savingErrors(p)).map((x) => x.code);
    const a = await createSegment(ch, app, { name: 'self_a', expression: 'tag("vip")' });
    expect(await cycleOf(updateSegment(ch, app, a.id, { name: 'self_a', expression: `in_segment("${a.id}")` }))).toEqual(['segment_cycle']);
    expect(await cycleOf(updateSegment(ch, app, a.id, { name: 'self_a', expression: 'tag("x") or in_segment("self_a")' }))).toEqual(['segment_cycle']);
    expect(await cycleOf(updateSegment(ch, app, a.id, { name: 'self_a2', expression: { in_segment: 'self_a2' } }))).toEqual(['segment_cycle']);
    expect(await cycleOf(createSegment(ch, app, { name: 'self_new', expression: 'in_segment("self_new")' }))).toEqual(['segment_cycle']);
    const b = await createSegment(ch, app, { name: 'self_b', expression: 'in_segment("self_a")' });
    expect(await cycleOf(updateSegment(ch, app, a.id, { name: 'self_a', expression: 'in_segment("self_b")' }))).toEqual(['segment_cycle']);
    expect(await cycleOf(updateSegment(ch, app, a.id, { name: 'self_a', expression: 'in_segment("nope")' }))).toEqual(['unknown_segment']);
    expect(b.name).toBe('self_b');
  });

  it('reports an unknown reference in text with line and column, and none for the JSON form', async () => {
    const app = 'app_save_pos';
    const text = await savingErrors(createSegment(ch, app, { name: 'pos', expression: 'did(view) and\n   in_segment("nope")' }));
    expect(text).toMatchObject([{ code: 'unknown_segment', line: 2, column: 4 }]);
    const json = await savingErrors(createSegment(ch, app, { name: 'pos', expression: { in_segment: 'nope' } }));
    expect(json[0]).toMatchObject({ code: 'unknown_segment' });
    expect(json[0]!.line).toBeUndefined();
  });
});

describe('what the contract allows, on the server', () => {
  const members = async (text: string): Promise<string[]> =>
    (await ch.rows<{ user_id: string }>(compileSegment(parseSegment(text), { appId: APP, asOf: new Date(1_780_000_000 * 1000), profileRunId: null }).members)).map(
      (r) => r.user_id,
    );

  it('an empty between window matches no event', async () => {
    const t = new Date(1_780_000_000 * 1000).toISOString().replace('.000Z', 'Z');
    expect(await members(`did(view, between "${t}" and "${t}")`)).toEqual([]);
    expect(await members(`did(view, between "${t}" and "${t}", count = 0)`)).toEqual(['u1', 'u2']);
    expect(await members(`first_did(view, between "${t}" and "${t}")`)).toEqual([]);
  });

  it('count < 0 is never true', async () => {
    expect(await members('did(view, count < 0)')).toEqual([]);
    expect(await members('not did(view, count < 0)')).toEqual(['u1', 'u2']);
  });

  it('windows longer than all history cover all of it', async () => {
    for (const w of ['36501d', '100000w', `${Number.MAX_SAFE_INTEGER}s`]) {
      expect(await members(`did(view, within ${w}, count = 2) or did(view, within ${w}) and first_did(view, within ${w})`), w).toEqual(['u1', 'u2']);
      // u1's event is at as_of itself, inside `within 1s`: only u2 stopped.
      expect(await members(`stopped(view, within 1s, before ${w})`), w).toEqual(['u2']);
      expect(await members(`sequence(view, view, within ${w}, in_last ${w})`), w).toEqual([]);
    }
  });
});
