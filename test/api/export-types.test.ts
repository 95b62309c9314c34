// The Arrow export's column types: whole-number profile fields are Int32, the
// others Float64, timestamps and text Utf8 — what a dataframe reader expects.
import { tableFromIPC, Type } from 'apache-arrow';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildProfiles } from '../../profiles/job.ts';
import { insertEvents } from '../profiles/events.ts';
import type { TestEvent } from '../profiles/reference.ts';
import { harness, type Harness } from './harness.ts';

let h: Harness;
beforeAll(async () => {
  h = await harness({ prefix: 'api_export_types' });
});

const T = Date.parse('2026-09-01T00:00:00Z') / 1000;
const purchase = (user_id: string, ts: number, amount: number, n: number): TestEvent => ({
  event_id: `p${n}`, user_id, ts, type: 'track', event: 'purchase', properties: { amount }, traits: {}, context: {}, received_at: T,
});

describe('Arrow export types', () => {
  it('writes counts, scores, hours and buckets as Int32 and money as Float64', async () => {
    await insertEvents(h.ch, 'app_a', [purchase('u1', T - 3600, 12.5, 1), purchase('u1', T - 7200, 7.25, 2), purchase('u2', T - 60, 3, 3)]);
    const asOf = new Date(T * 1000).toISOString();
    await buildProfiles(h.ch, 'app_a', { asOf: new Date(T * 1000), mode: 'full' });
    const created = await h.call('POST', '/v1/segments', { as: ['app_a', 'admin'], body: { name: 'buyers', expression: 'did(purchase)' } });
    expect(created.status).toBe(201);
    const fields = 'events_total,purchases_30d,best_hour,random_bucket,r_score,recency_days,revenue_total,avg_order_value,last_purchase_at';
    const r = await h.call('GET', `/v1/segments/buyers/users?format=arrow&as_of=${asOf}&fields=${fields}`, { as: ['app_a', 'read'] });
    expect(r.status).toBe(200);
    const table = tableFromIPC(new Uint8Array(await r.arrayBuffer()));
    const types = Object.fromEntries(table.schema.fields.map((f) => [f.name, Type[f.type.typeId]]));
    expect(types).toEqual({
      user_id: 'Utf8', events_total: 'Int', purchases_30d: 'Int', best_hour: 'Int', random_bucket: 'Int', r_score: 'Int', recency_days: 'Int',
      revenue_total: 'Float', avg_order_value: 'Float', last_purchase_at: 'Utf8',
    });
    const u1 = table.toArray().map((x) => x.toJSON()).find((x) => x.user_id === 'u1')!;
    expect([u1.events_total, u1.purchases_30d, u1.recency_days, u1.revenue_total, u1.avg_order_value]).toEqual([2, 2, 0, 19.75, 9.875]);
  });
});
