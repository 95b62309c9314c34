// GET /v1/users/{id}?as_of=: the profile at exactly that instant, whatever
// later runs exist (a job at an earlier as_of is readable back), built when missing.
import { beforeAll, describe, expect, it } from 'vitest';
import { buildProfiles } from '../../profiles/job.ts';
import { insertEvents } from '../profiles/events.ts';
import type { TestEvent } from '../profiles/reference.ts';
import { harness, type Harness } from './harness.ts';

let h: Harness;
beforeAll(async () => {
  h = await harness({ prefix: 'api_users_asof' });
});

const DAY = 86_400;
const T = Date.parse('2026-09-01T00:00:00Z') / 1000;
const iso = (s: number) => new Date(s * 1000).toISOString().replace('.000Z', 'Z');
const purchase = (user_id: string, ts: number, n: number): TestEvent => ({
  event_id: `p${n}`,
  user_id,
  ts,
  type: 'track',
  event: 'purchase',
  properties: { amount: 10 },
  traits: {},
  context: {},
  received_at: T - 100 * DAY,
});

describe('GET /v1/users/{id}?as_of=', () => {
  it('reads the run at exactly as_of, builds it when missing, 404 before the first event', async () => {
    await insertEvents(h.ch, 'app_a', [purchase('u1', T - 10 * DAY, 1), purchase('u1', T + 5 * DAY, 2), purchase('u2', T + 5 * DAY, 3)]);
    await buildProfiles(h.ch, 'app_a', { asOf: new Date((T + 20 * DAY) * 1000), mode: 'full' });
    await buildProfiles(h.ch, 'app_a', { asOf: new Date(T * 1000), mode: 'full' });
    const get = async (path: string) => h.call('GET', path, { as: ['app_a', 'read'] });

    // Without as_of: the run with the latest as_of.
    let p = (await (await get('/v1/users/u1')).json()) as Record<string, unknown>;
    expect([p.as_of, p.purchases_total]).toEqual([iso(T + 20 * DAY), 2]);
    // The earlier run, asked for by its as_of.
    p = (await (await get(`/v1/users/u1?as_of=${iso(T)}`)).json()) as Record<string, unknown>;
    expect([p.as_of, p.purchases_total, p.recency_days]).toEqual([iso(T), 1, 10]);
    // An instant without a run: built, exact.
    p = (await (await get(`/v1/users/u1?as_of=${encodeURIComponent('2026-09-07T00:00:00+01:00')}`)).json()) as Record<string, unknown>;
    expect([p.as_of, p.purchases_total, p.purchases_30d, p.recency_days]).toEqual([iso(T + 6 * DAY - 3600), 2, 2, 0]);
    // u2's first event is after T: not a user yet.
    const missing = await get(`/v1/users/u2?as_of=${iso(T)}`);
    expect(missing.status).toBe(404);
    // Its detail prints the instant as every answer does: whole seconds.
    expect(((await missing.json()) as { detail: string }).detail).toContain(` at ${iso(T)} (`);
    expect((await get('/v1/users/u1?as_of=yesterday')).status).toBe(400);
    expect((await get('/v1/users/u1?asof=x')).status).toBe(400);
  });
});
