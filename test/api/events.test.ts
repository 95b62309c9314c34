// POST /v1/events end to end: per-item answers, the key's app stamped on every
// event, Kafka → ingest consumer → ClickHouse, visible to segments and stats.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IngestConsumer } from '../../ingest/consumer.ts';
import { expectProblem, harness, type Harness } from './harness.ts';
import { uniqueName } from '../support/env.ts';

let h: Harness;
let consumer: IngestConsumer;

beforeAll(async () => {
  h = await harness({ prefix: 'apiev' });
}, 120_000);

afterAll(async () => {
  await consumer?.stop();
});

const count = async (app: 'app_a' | 'app_b', expression: string) =>
  ((await (await h.call('POST', '/v1/segments/evaluate', { as: [app, 'read'], body: { expression, limit: 0 } })).json()) as any).count as number;

describe('POST /v1/events', () => {
  it('answers per item and rejects an app_id other than the key\'s', async () => {
    const now = Date.now();
    const res = await h.call('POST', '/v1/events', {
      as: ['app_a', 'ingest'],
      body: {
        batch: [
          { user_id: 'u1', event: 'view', ts: new Date(now - 60_000).toISOString() },
          { user_id: 'u2', event: 'purchase', ts: now - 30_000, properties: { amount: 12.5 } },
          { user_id: 'u3', event: 'view' },
          { user_id: 'u4', event: 'view', ts: now, app_id: 'app_b' },
          { type: 'identify', user_id: 'u1', ts: now - 10_000, traits: { plan: 'pro' } },
        ],
      },
    });
    expect(res.status).toBe(202);
    const body: any = await res.json();
    expect(body.accepted).toBe(3);
    expect(body.rejected.map((r: any) => r.index)).toEqual([2, 3]);
    expect(body.rejected[0].errors[0].path).toBe('ts');
    expect(body.rejected[1].errors[0]).toEqual({ path: 'app_id', message: "app_id does not match the API key's app" });
  });

  it('answers a batch per item even when every item is rejected: 202, every index, paths relative to the item', async () => {
    const ts = new Date(Date.now() - 60_000).toISOString();
    // 150 items: more than the 100 errors the old all-rejected 400 listed.
    const batch = Array.from({ length: 150 }, (_, i) => (i % 3 === 0 ? { user_id: '', event: 'view', ts } : i % 3 === 1 ? { user_id: `u${i}`, event: 'view' } : { user_id: `u${i}`, event: 'view', ts, app_id: 'app_a' }));
    const res = await h.call('POST', '/v1/events', { as: ['app_b', 'ingest'], body: { batch } });
    expect(res.status).toBe(202);
    const body: any = await res.json();
    expect(body.accepted).toBe(0);
    expect(body.rejected.map((r: any) => r.index)).toEqual(batch.map((_, i) => i));
    expect(body.rejected.slice(0, 3).map((r: any) => r.errors.map((e: any) => e.path))).toEqual([['user_id'], ['ts'], ['app_id']]);
    expect(body.rejected[2].errors[0].message).toBe("app_id does not match the API key's app");
    // The document says so: accepted may be 0.
    const doc: any = await (await h.call('GET', '/openapi.json', { as: ['app_b', 'ingest'] })).json();
    expect(doc.components.schemas.EventsAccepted.properties.accepted.minimum).toBe(0);
  });

  it('answers 400 problem+json for a lone invalid event, with paths into the body', async () => {
    let p = await expectProblem(await h.call('POST', '/v1/events', { as: ['app_b', 'ingest'], body: { user_id: 'x', event: 'view' } }), 400);
    expect(p.errors).toEqual([{ path: 'body.ts', message: expect.any(String) }]);
    p = await expectProblem(await h.call('POST', '/v1/events', { as: ['app_b', 'ingest'], body: { user_id: 'x', event: 'view', ts: Date.now(), app_id: 'app_a' } }), 400);
    expect(p.errors).toEqual([{ path: 'body.app_id', message: "app_id does not match the API key's app" }]);
  });

  it('rejects a "__proto__" field in a single event as in a batch item', async () => {
    const event = `{"user_id":"pp","event":"view","ts":${Date.now() - 1000},"__proto__":{"a":1}}`;
    const p = await expectProblem(await h.call('POST', '/v1/events', { as: ['app_b', 'ingest'], body: event }), 400);
    expect(p.errors).toEqual([{ path: 'body.__proto__', message: 'unknown field "__proto__"' }]);
    const res = await h.call('POST', '/v1/events', { as: ['app_b', 'ingest'], body: `{"batch":[${event}]}` });
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ accepted: 0, rejected: [{ index: 0, errors: [{ path: '__proto__', message: 'unknown field "__proto__"' }] }] });
    await expectProblem(await h.call('POST', '/v1/events', { as: ['app_b', 'ingest'], body: `{"__proto__":{"batch":[]},"user_id":"pp"}` }), 400);
  });

  it('answers 400, not 413, past 10,000 events; 400 for an empty batch or a field next to batch', async () => {
    const ts = Date.now() - 60_000;
    let p = await expectProblem(
      await h.call('POST', '/v1/events', { as: ['app_b', 'ingest'], body: { batch: Array.from({ length: 10_001 }, (_, i) => ({ user_id: `u${i}`, event: 'view', ts })) } }),
      400,
    );
    expect(p.errors).toEqual([{ path: 'body.batch', message: expect.stringMatching(/10001 events; at most 10000/) }]);
    p = await expectProblem(await h.call('POST', '/v1/events', { as: ['app_b', 'ingest'], body: { batch: [] } }), 400);
    expect(p.errors[0].path).toBe('body.batch');
    await expectProblem(await h.call('POST', '/v1/events', { as: ['app_b', 'ingest'], body: { batch: [], extra: 1 } }), 400);
  });

  it('makes accepted events visible to segments and stats within seconds', async () => {
    consumer = new IngestConsumer({
      kafka: h.kafka,
      ch: h.ch,
      topic: h.config.WARBLER_EVENTS_TOPIC,
      dlqTopic: h.config.WARBLER_DLQ_TOPIC,
      groupId: uniqueName('api-ingest'),
      batchMaxEvents: 1000,
      batchMaxMs: 200,
      sessionTimeoutMs: 6000,
      rebalanceTimeoutMs: 6000,
      heartbeatIntervalMs: 500,
    });
    await consumer.start();
    const ts = Date.now() - 5000;
    const res = await h.call('POST', '/v1/events', { as: ['app_b', 'admin'], body: { user_id: 'b-only', event: 'click', ts } });
    expect(res.status).toBe(202);
    let seen = 0;
    for (let i = 0; i < 100 && (seen === 0 || (await count('app_a', 'did(purchase)')) === 0); i++) {
      await new Promise((r) => setTimeout(r, 300));
      seen = await count('app_b', 'did(click)');
    }
    expect(seen).toBe(1);
    expect(await count('app_a', 'did(view)')).toBe(1);
    expect(await count('app_a', 'did(click)')).toBe(0);
    expect(await count('app_b', 'did(view)')).toBe(0);

    const stats: any = await (await h.call('GET', '/v1/stats', { as: ['app_a', 'read'] })).json();
    expect(stats).toMatchObject({ app_id: 'app_a', users: 2, events: { total: 3, by_type: { track: 2, identify: 1 } }, dead_lettered: 0 });
    expect(stats.events.by_day.reduce((n: number, d: any) => n + d.track + d.identify, 0)).toBe(3);
    expect(stats.last_event_at).toMatch(/Z$/);
    expect(stats.ingest_lag.topic).toBe(h.config.WARBLER_EVENTS_TOPIC);
    const b = await (await h.call('GET', '/v1/stats', { as: ['app_b', 'read'] })).json();
    expect(b).toMatchObject({ users: 1, events: { total: 1 } });
    expect((await h.call('GET', '/v1/stats', { as: ['app_b', 'ingest'] })).status).toBe(403);
  });
});
