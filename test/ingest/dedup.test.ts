// The dedup lookup's two strategies (ingest/dedup.ts) on the real ClickHouse:
// by time in `event_ids` and by user in `events` must find exactly the same
// stored events, for batches of either shape, and never another app's.
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { dedupBatch, lookupStrategy, storedKeys } from '../../ingest/dedup.ts';
import { type EventRow, normalizeEvent } from '../../ingest/normalize.ts';
import { insertEventRows } from '../../ingest/sink.ts';
import { testDatabase } from '../support/env.ts';

const T0 = Date.UTC(2026, 0, 1);
const HOUR = 3_600_000;

function row(app: string, user: string, tsMs: number, id: string): EventRow {
  const r = normalizeEvent({ app_id: app, user_id: user, event: 'view', ts: tsMs, event_id: id, properties: { n: 1 } });
  if (!r.row) throw new Error(JSON.stringify(r.errors));
  return r.row;
}

// A historical import: few users, each with events spread over 90 days.
const backfill = (app: string) =>
  Array.from({ length: 40 * 50 }, (_, i) => row(app, `u${Math.floor(i / 50)}`, T0 + ((i * 7919) % (90 * 24)) * HOUR + i * 1000, `b${i}`));
// Live traffic: many users, ten minutes.
const realtime = (app: string) => Array.from({ length: 2000 }, (_, i) => row(app, `u${i % 700}`, T0 + 100 * 24 * HOUR + i * 300, `r${i}`));

describe('dedup lookup strategies', () => {
  let ch: ClickHouse;
  beforeAll(async () => {
    ch = await testDatabase('dedup');
    // Every other event of each shape is stored, in app a1 only.
    await insertEventRows(ch, [...backfill('a1'), ...realtime('a1')].filter((_, i) => i % 2 === 0));
  });

  it('picks by_user for a user-ordered import and by_time for live traffic', () => {
    expect(lookupStrategy(backfill('a1'))).toBe('by_user');
    expect(lookupStrategy(realtime('a1'))).toBe('by_time');
  });

  for (const [shape, make] of [['backfill', backfill], ['realtime', realtime]] as const) {
    it(`${shape}: both strategies find exactly the stored half, and nothing of another app`, async () => {
      const rows = make('a1');
      const expected = new Set(rows.filter((_, i) => i % 2 === 0).map((r) => `${r.ts}\u0000${r.event_id}`));
      const byTime = await storedKeys(ch, 'a1', rows, 'by_time');
      const byUser = await storedKeys(ch, 'a1', rows, 'by_user');
      expect(byTime).toEqual(expected);
      expect(byUser).toEqual(expected);
      expect((await storedKeys(ch, 'a2', make('a2'), 'by_user')).size).toBe(0);
      expect((await storedKeys(ch, 'a2', make('a2'), 'by_time')).size).toBe(0);
    });
  }

  it('an id stored with another ts is not taken for the same event (both strategies)', async () => {
    const moved = backfill('a1').filter((_, i) => i % 2 === 0).slice(0, 10).map((r) => ({ ...r, ts: r.ts + 1 }));
    for (const strategy of ['by_user', 'by_time'] as const) {
      const found = await storedKeys(ch, 'a1', moved, strategy);
      for (const r of moved) expect(found.has(`${r.ts}\u0000${r.event_id}`)).toBe(false);
    }
  });

  it('dedupBatch drops stored and in-batch duplicates of a backfill batch', async () => {
    const rows = backfill('a1');
    const d = await dedupBatch(ch, [...rows, rows[1]!]);
    expect(d.inBatch).toBe(1);
    expect(d.stored).toBe(rows.length / 2);
    expect(d.fresh.map((r) => r.event_id)).toEqual(rows.filter((_, i) => i % 2 === 1).map((r) => r.event_id));
  });
});
