// The packed lists of a profile row's state (140_profile_state_packed.sql):
// whatever bytes the strings hold, an incremental run unpacks exactly what the
// previous run packed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { raw, sql } from '../../lib/sql.ts';
import { normalizeEvent } from '../../ingest/normalize.ts';
import { insertEventRows } from '../../ingest/sink.ts';
import { buildProfiles } from '../../profiles/job.ts';
import { packedList, unpackedList } from '../../profiles/sql.ts';
import { testDatabase } from '../support/env.ts';

// NUL separates packed elements and \x01 starts an escape: every combination of them.
const LISTS: string[][] = [
  [],
  [''],
  ['', ''],
  ['a'],
  ['a', '', 'b'],
  ['\u0000'],
  ['\u0001'],
  ['\u0000\u0000', '\u0001\u0001'],
  ['\u0001\u0002', '\u0001\u0003', '\u0002', '\u0003'],
  ['x\u0001\u0000y', '\u0000\u0001', 'ü€😀', ''],
  ['', '\u0000'],
  ['\u0000', ''],
];

let ch: ClickHouse;
beforeAll(async () => {
  ch = await testDatabase('pack');
});
afterAll(async () => {
  await ch?.close();
});

describe('packed state lists', () => {
  it('unpack to the list packed, for lists of empty strings and strings with NUL and \\x01', async () => {
    for (const list of LISTS) {
      const r = await ch.one<{ back: string[]; packed: string }>(
        sql`SELECT ${unpackedList(raw('packed'))} AS back, ${packedList(sql`CAST(${list} AS Array(String))`)} AS packed`,
      );
      expect(r?.back, JSON.stringify(list)).toEqual(list);
    }
  });

  it('pack an empty list as an empty string, and a list of n elements with n NUL separators', async () => {
    const r = await ch.one<{ empty: string; n: string }>(
      sql`SELECT ${packedList(raw('CAST([] AS Array(String))'))} AS empty, length(splitByChar(${'\u0000'}, ${packedList(sql`${['a', 'b', 'c']}`)})) - 1 AS n`,
    );
    expect(r?.empty).toBe('');
    expect(Number(r?.n)).toBe(3);
  });

  it('carry categories and traits with those bytes through an incremental run exactly as a full run computes them', async () => {
    const at = (h: number) => new Date(Date.UTC(2026, 0, 1) + h * 3600_000).toISOString();
    const CATEGORIES = ['a\u0000b', '\u0001', '', 'a', '\u0001\u0003'];
    const track = (i: number, h: number) => ({
      type: 'track',
      event: i % 3 === 0 ? 'purchase' : 'view',
      user_id: `u${(i % 3) + 1}`,
      event_id: `t${i}`,
      ts: at(h),
      properties: { amount: i, category: CATEGORIES[i % CATEGORIES.length] },
    });
    // Normalized when stored, as ingest does: received_at is then.
    const store = (events: object[]) =>
      insertEventRows(
        ch,
        events.map((e) => {
          const r = normalizeEvent(e, 'app');
          if (!r.row) throw new Error(JSON.stringify(r.errors));
          return r.row;
        }),
      );
    await store([
      ...['u1', 'u2', 'u3'].map((u, i) => ({ type: 'identify', user_id: u, event_id: `i${u}`, ts: at(i), traits: { ['k\u0000' + i]: `v\u0001${i}\u0000`, plan: '' } })),
      ...Array.from({ length: 24 }, (_, i) => track(i, 4 + i)),
    ]);
    await new Promise((r) => setTimeout(r, 1100));
    await buildProfiles(ch, 'app', { asOf: new Date(at(40)), mode: 'full' });
    // After the previous as_of: an incremental run adds them to each user's packed state.
    await store([
      ...Array.from({ length: 7 }, (_, i) => track(24 + i, 41 + i)),
      { type: 'identify', user_id: 'u2', event_id: 'i2b', ts: at(41), traits: { ['k\u00001']: null, x: '\u0000', y: '\u0001\u0002' } },
    ]);
    const inc = await buildProfiles(ch, 'app', { asOf: new Date(at(50)), mode: 'incremental', receivedMarginS: 0, layerShare: 1 });
    expect(inc.mode).toBe('incremental');
    expect(inc.recomputed_users).toBe(3);
    const full = await buildProfiles(ch, 'app', { asOf: new Date(at(50)), mode: 'full' });
    // The state's elements are in no particular order: compared sorted.
    const of = (runId: string) =>
      ch.rows(sql`SELECT user_id, events_total, events_30d, top_category, trait_keys, trait_values,
          arraySort(${unpackedList(raw('s_cats_packed'))}) AS cats, ${unpackedList(raw('s_traits_packed'))} AS traits
        FROM profiles WHERE app_id = 'app' AND run_id = ${runId} ORDER BY user_id`);
    const fullRows = await of(full.run_id);
    expect(fullRows).toHaveLength(3);
    expect(fullRows[1]).toMatchObject({ user_id: 'u2', trait_keys: ['plan', 'x', 'y'], trait_values: ['', '\u0000', '\u0001\u0002'] });
    expect((fullRows[1] as { traits: string[] }).traits).toEqual(['plan', 'x', 'y', '', '\u0000', '\u0001\u0002']);
    expect(await of(inc.run_id)).toEqual(fullRows);
  });
});
