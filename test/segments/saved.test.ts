// Saved segments against the real ClickHouse: versioned rows, unique names,
// canonical JSON storage, in_segment evaluation by id and by name, cycles.
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import type { Expr } from '../../segments/ast.ts';
import { SegmentSyntaxError } from '../../segments/errors.ts';
import { evaluateSegment } from '../../segments/evaluate.ts';
import { explainSegment } from '../../segments/explain.ts';
import { createSegment, deleteSegment, getSegment, listSegments, SegmentConflictError, SegmentInUseError, updateSegment } from '../../segments/saved.ts';
import { testDatabase } from '../support/env.ts';
import { generateApp, loadApp, T0 } from './fixtures.ts';
import { Reference } from './reference.ts';

let ch: ClickHouse;
let ref: Reference;
const asOf = new Date(T0 * 1000);

beforeAll(async () => {
  ch = await testDatabase('wt_segsaved');
  const app = generateApp('app_s', 3);
  await loadApp(ch, app);
  ref = new Reference(app.ref);
});

describe('saved segments', () => {
  it('create, read by id and name, update, list, delete', async () => {
    const a = await createSegment(ch, 'app_s', { name: 'buyers', description: 'bought once', expression: 'did(purchase)' });
    expect(a.expression).toEqual({ did: 'purchase' });
    expect((await getSegment(ch, 'app_s', 'buyers'))?.id).toBe(a.id);
    expect((await getSegment(ch, 'app_s', a.id))?.name).toBe('buyers');
    await expect(createSegment(ch, 'app_s', { name: 'buyers', expression: { tag: 'vip' } })).rejects.toBeInstanceOf(SegmentConflictError);
    const b = await createSegment(ch, 'app_s', { name: 'big buyers', expression: { and: [{ in_segment: 'buyers' }, { agg: 'sum', event: 'purchase', prop: 'amount', op: 'gte', value: 100 }] } });
    const u = await updateSegment(ch, 'app_s', a.id, { name: 'buyers', description: 'bought twice', expression: 'did(purchase, count >= 2)' });
    expect(u.description).toBe('bought twice');
    expect(u.version).toBeGreaterThan(a.version);
    expect((await listSegments(ch, 'app_s')).map((s) => s.name)).toEqual(['big buyers', 'buyers']);
    // in_segment inlines the saved expression, by name and by id, at the same as_of.
    const inlined: Expr = {
      kind: 'and',
      items: [
        { kind: 'did', event: 'purchase', count: { op: 'gte', value: 2 } },
        { kind: 'agg', fn: 'sum', event: 'purchase', prop: 'amount', op: 'gte', value: 100 },
      ],
    };
    const direct = ref.evaluate(inlined, T0);
    for (const input of ['in_segment("big buyers")', `in_segment("${b.id}")`]) {
      const r = await evaluateSegment(ch, 'app_s', input, { asOf, limit: 10_000 });
      expect(r.users.map((x) => x.user_id)).toEqual(direct);
      expect(r.count).toBe(direct.length);
    }
    const ex = await explainSegment(ch, 'app_s', 'in_segment("big buyers") or tag("vip")', { asOf });
    expect(ex.nodes.map((n) => n.at)).toEqual(['', 'or[0]', 'or[1]']);
    // A segment in use cannot be deleted; an unused one can.
    await expect(deleteSegment(ch, 'app_s', a.id)).rejects.toBeInstanceOf(SegmentInUseError);
    await deleteSegment(ch, 'app_s', b.id);
    await deleteSegment(ch, 'app_s', a.id);
    expect(await listSegments(ch, 'app_s')).toEqual([]);
    await expect(evaluateSegment(ch, 'app_s', 'in_segment("buyers")', { asOf })).rejects.toBeInstanceOf(SegmentSyntaxError);
  });

  it('refuses cycles and unknown references before any query runs', async () => {
    const x = await createSegment(ch, 'app_s', { name: 'x', expression: 'tag("vip")' });
    await createSegment(ch, 'app_s', { name: 'y', expression: 'in_segment("x")' });
    await expect(updateSegment(ch, 'app_s', x.id, { name: 'x', expression: 'in_segment("y")' })).rejects.toBeInstanceOf(SegmentSyntaxError);
    await expect(createSegment(ch, 'app_s', { name: 'z', expression: 'in_segment("nope")' })).rejects.toBeInstanceOf(SegmentSyntaxError);
  });

  it('refuses a name shaped like a segment id, which lookups by id would shadow', async () => {
    const a = await createSegment(ch, 'app_s', { name: 'shadowed', expression: 'did(view)' });
    await expect(createSegment(ch, 'app_s', { name: a.id, expression: 'did(purchase)' })).rejects.toMatchObject({ errors: [{ code: 'bad_name', path: ['name'] }] });
    await expect(updateSegment(ch, 'app_s', a.id, { name: 'seg_abc123', expression: 'did(view)' })).rejects.toBeInstanceOf(SegmentSyntaxError);
    expect((await createSegment(ch, 'app_s', { name: 'seg_ but not an id', expression: 'did(view)' })).name).toBe('seg_ but not an id');
  });

  it('returns requested profile fields with each user', async () => {
    const r = await evaluateSegment(ch, 'app_s', 'did(purchase)', { asOf, limit: 3, fields: ['rfm_segment', 'country', 'tags', 'traits', 'first_seen'] });
    expect(r.users).toHaveLength(3);
    expect(r.profiles_as_of).toBe('2026-06-01T00:00:00Z');
    for (const u of r.users) {
      expect(Object.keys(u).sort()).toEqual(['country', 'first_seen', 'rfm_segment', 'tags', 'traits', 'user_id']);
      expect(Array.isArray(u.tags)).toBe(true);
    }
    await expect(evaluateSegment(ch, 'app_s', 'did(purchase)', { fields: ['nope'] })).rejects.toBeInstanceOf(SegmentSyntaxError);
    await expect(evaluateSegment(ch, 'app_s', 'did(purchase)', { limit: 10_001 })).rejects.toBeInstanceOf(SegmentSyntaxError);
  });
});
