// GET /v1/stats breaks the stored events down by day over every day that holds
// one, so the days add up to the total (the contract: "events stored (by type
// and day)"); `days` only narrows that list when a client asks.
import { beforeAll, describe, expect, it } from 'vitest';
import { normalizeEvent } from '../../ingest/normalize.ts';
import { insertEventRows } from '../../ingest/sink.ts';
import { harness, type Harness } from './harness.ts';

let h: Harness;
const DAY = 86_400_000;
const today = Math.floor(Date.now() / DAY) * DAY;
const dayOf = (ms: number) => new Date(ms).toISOString().slice(0, 10);
// A backfill: a year and a half ago, 40 days ago, and today.
const OLD = today - 550 * DAY + 3_600_000;
const MONTHS = today - 40 * DAY + 7_200_000;
const NOW = today; // midnight UTC: today, and never in the future

beforeAll(async () => {
  h = await harness({ prefix: 'apistats' });
  const events = [
    { type: 'identify', user_id: 'old', ts: OLD, traits: { plan: 'free' } },
    { user_id: 'old', event: 'view', ts: OLD + 1000 },
    { user_id: 'mid', event: 'view', ts: MONTHS },
    { user_id: 'new', event: 'click', ts: NOW },
  ];
  await insertEventRows(h.ch, events.map((e) => normalizeEvent(e, 'app_a').row!));
}, 120_000);

const stats = async (query = '') => {
  const res = await h.call('GET', `/v1/stats${query}`, { as: ['app_a', 'read'] });
  expect(res.status).toBe(200);
  return (await res.json()) as any;
};

describe('GET /v1/stats', () => {
  it('lists every day holding stored events by default, so the days add up to the total', async () => {
    const s = await stats();
    expect(s.events.total).toBe(4);
    expect(s.events.by_day).toEqual([
      { day: dayOf(OLD), track: 1, identify: 1 },
      { day: dayOf(MONTHS), track: 1, identify: 0 },
      { day: dayOf(NOW), track: 1, identify: 0 },
    ]);
    expect(s.events.by_day.reduce((n: number, d: any) => n + d.track + d.identify, 0)).toBe(s.events.total);
  });

  it('names the first day of 1970 as 1970-01-01 (18.16 writes day 0 as 0000-00-00)', async () => {
    const first = [0, 86_399_000, 86_400_000].map((ts, i) => normalizeEvent({ user_id: `epoch${i}`, event: 'view', ts }, 'app_b').row!);
    await insertEventRows(h.ch, first);
    const res = await h.call('GET', '/v1/stats', { as: ['app_b', 'read'] });
    expect(((await res.json()) as any).events.by_day).toEqual([
      { day: '1970-01-01', track: 2, identify: 0 },
      { day: '1970-01-02', track: 1, identify: 0 },
    ]);
  });

  it('narrows by_day to the last `days` UTC days when asked; the totals stay whole', async () => {
    expect((await stats('?days=1')).events.by_day).toEqual([{ day: dayOf(NOW), track: 1, identify: 0 }]);
    const s = await stats('?days=60');
    expect(s.events.by_day.map((d: any) => d.day)).toEqual([dayOf(MONTHS), dayOf(NOW)]);
    expect(s.events.total).toBe(4);
    expect((await stats('?days=')).events.by_day).toHaveLength(3);
    expect((await h.call('GET', '/v1/stats?days=0', { as: ['app_a', 'read'] })).status).toBe(400);
  });

  it('documents `days` as optional, with what it does', async () => {
    const doc: any = await (await h.call('GET', '/openapi.json', { as: ['app_a', 'read'] })).json();
    const days = doc.paths['/v1/stats'].get.parameters.find((p: any) => p.name === 'days');
    expect(days.required).toBeFalsy();
    expect(days.schema.default).toBeUndefined();
    expect(days.description ?? days.schema.description).toMatch(/default: every day/);
  });
});
