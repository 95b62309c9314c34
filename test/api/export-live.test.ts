// An export's profile fields for members the profile run does not hold (their
// first events came after it): computed as GET /v1/users computes them, not
// null, and the table they come from is dropped when the export ends.
import { beforeAll, describe, expect, it } from 'vitest';
import { sql } from '../../lib/sql.ts';
import { buildProfiles } from '../../profiles/job.ts';
import { insertEvents } from '../profiles/events.ts';
import type { TestEvent } from '../profiles/reference.ts';
import { harness, type Harness } from './harness.ts';

let h: Harness;
beforeAll(async () => {
  h = await harness({ prefix: 'api_export_live' });
});

const DAY = 86_400;
const T = Date.parse('2026-09-01T00:00:00Z') / 1000;
const iso = (s: number) => new Date(s * 1000).toISOString().replace('.000Z', 'Z');
const purchase = (user_id: string, ts: number, amount: number, n: number): TestEvent => ({
  event_id: `p${n}`, user_id, ts, type: 'track', event: 'purchase', properties: { amount, category: 'books' }, traits: {}, context: {}, received_at: T,
});
const liveTables = async () =>
  (await h.ch.rows<{ name: string }>(sql`SELECT name FROM system.tables WHERE database = currentDatabase() AND match(name, '^profile_(live|missing)_')`)).map((r) => r.name);

describe('export of members newer than the profile run', () => {
  it('gives them their profile fields, as GET /v1/users does, and drops the table they come from', async () => {
    // u1 bought before the run's as_of T, u2 only after it: the run holds u1 alone.
    await insertEvents(h.ch, 'app_a', [purchase('u1', T - 3 * DAY, 12.5, 1), purchase('u1', T - DAY, 7.5, 2), purchase('u2', T + DAY, 3, 3), purchase('u2', T + 2 * DAY, 4, 4)]);
    await buildProfiles(h.ch, 'app_a', { asOf: new Date(T * 1000), mode: 'full' });
    const created = await h.call('POST', '/v1/segments', { as: ['app_a', 'admin'], body: { name: 'buyers', expression: 'did(purchase)' } });
    expect(created.status).toBe(201);

    const fields = ['events_total', 'purchases_total', 'revenue_total', 'first_seen', 'last_purchase_at', 'top_category', 'random_bucket', 'm_score'];
    const r = await h.call('GET', `/v1/segments/buyers/users?format=ndjson&fields=${fields.join(',')}`, { as: ['app_a', 'read'] });
    expect(r.status).toBe(200);
    const rows = (await r.text()).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(rows.map((x) => x.user_id)).toEqual(['u1', 'u2']);
    const u2 = rows[1]!;
    expect([u2.events_total, u2.purchases_total, u2.revenue_total, u2.first_seen, u2.last_purchase_at, u2.top_category]).toEqual([2, 2, 7, iso(T + DAY), iso(T + 2 * DAY), 'books']);
    // u1 comes from the run (as of T), u2 live (now): each as GET /v1/users gives it at that instant.
    const user = async (id: string, asOf?: number) =>
      (await (await h.call('GET', `/v1/users/${id}${asOf === undefined ? '' : `?as_of=${iso(asOf)}`}`, { as: ['app_a', 'read'] })).json()) as Record<string, unknown>;
    const [p1, p2] = [await user('u1', T), await user('u2')];
    for (const f of fields) {
      expect(rows[0]![f], `u1.${f}`).toEqual(p1[f] ?? null);
      expect(u2[f], `u2.${f}`).toEqual(p2[f] ?? null);
    }
    // The export is over once its body is read: its clean-up runs right after.
    for (let i = 0; i < 50 && (await liveTables()).length > 0; i++) await new Promise((res) => setTimeout(res, 100));
    expect(await liveTables()).toEqual([]);
  });

  it('reads no live rows when the run holds every member', async () => {
    await insertEvents(h.ch, 'app_b', [purchase('v1', T - DAY, 5, 11)]);
    await buildProfiles(h.ch, 'app_b', { asOf: new Date(T * 1000), mode: 'full' });
    expect((await h.call('POST', '/v1/segments', { as: ['app_b', 'admin'], body: { name: 'buyers', expression: 'did(purchase)' } })).status).toBe(201);
    const r = await h.call('GET', '/v1/segments/buyers/users?format=csv&fields=purchases_total', { as: ['app_b', 'read'] });
    expect(await r.text()).toBe('user_id,purchases_total\r\nv1,1\r\n');
  });
});
