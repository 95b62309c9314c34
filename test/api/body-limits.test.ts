// POST /v1/events takes any valid batch: 10,000 events, each at every limit of
// the contract at once (16 KiB of properties, 256-character ids and context
// values written in the longest form JSON has for them), fits under the byte
// cap; a body past the cap is a 413 problem with `errors`. Events go to a
// recording producer: what is tested is the request, not Kafka.
import { beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../api/app.ts';
import { MAX_BATCH_EVENTS, MAX_BODY_BYTES, MAX_EVENT_JSON_BYTES } from '../../ingest/accept.ts';
import { CONTEXT_KEYS, MAX_PROPERTIES_BYTES, parseEvent } from '../../ingest/event-schema.ts';
import type { EventProducer } from '../../ingest/producer.ts';
import { auth, expectProblem, harness, type Harness } from './harness.ts';

let h: Harness;
let app: ReturnType<typeof createApp>['app'];
let produced = 0;

beforeAll(async () => {
  h = await harness({ prefix: 'apibody' });
  const events: EventProducer = {
    topic: 'recorded',
    async send(messages) {
      produced += messages.length;
    },
    async close() {},
  };
  ({ app } = createApp({ ch: h.ch, producer: h.producer, config: h.config, keys: h.ctx.keys, events }));
}, 120_000);

/** The largest event the contract allows: every string at its limit in control characters, which JSON writes as \u0001 (6 bytes). */
function largestEvent(i: number): Record<string, unknown> {
  const ctl = (n: number) => '\u0001'.repeat(n);
  const filler = MAX_PROPERTIES_BYTES - JSON.stringify({ blob: '', n: i }).length;
  return {
    type: 'track',
    event_id: ctl(128 - 6) + String(i).padStart(6, '0'),
    app_id: 'app_a',
    user_id: ctl(256),
    event: 'v'.repeat(128),
    ts: '2026-01-01T00:00:00.000+00:00',
    context: Object.fromEntries(CONTEXT_KEYS.map((k) => [k, ctl(256)])),
    properties: { blob: 'x'.repeat(filler), n: i },
  };
}

describe('the body cap of POST /v1/events', () => {
  it('is computed from the limits: the largest valid event fits its share', () => {
    const e = largestEvent(MAX_BATCH_EVENTS - 1);
    expect(parseEvent(e).success).toBe(true);
    expect(Buffer.byteLength(JSON.stringify(e.properties))).toBe(MAX_PROPERTIES_BYTES);
    const bytes = Buffer.byteLength(JSON.stringify(e));
    expect(bytes).toBeGreaterThan(26_000);
    expect(bytes).toBeLessThanOrEqual(MAX_EVENT_JSON_BYTES);
  });

  it('admits a batch of 10,000 of the largest valid events (~267 MB)', async () => {
    let body: string | undefined = JSON.stringify({ batch: Array.from({ length: MAX_BATCH_EVENTS }, (_, i) => largestEvent(i)) });
    const size = Buffer.byteLength(body);
    expect(size).toBeGreaterThan(250_000_000);
    expect(size).toBeLessThanOrEqual(MAX_BODY_BYTES);
    const res = await app.request('/v1/events', { method: 'POST', headers: { ...auth('app_a', 'ingest'), 'content-type': 'application/json' }, body });
    body = undefined;
    const text = await res.text();
    expect(res.status, text.slice(0, 500)).toBe(202);
    expect(JSON.parse(text)).toEqual({ accepted: MAX_BATCH_EVENTS, rejected: [] });
    expect(produced).toBe(MAX_BATCH_EVENTS);
  }, 180_000);

  it('refuses a larger body with 413 problem+json that carries errors', async () => {
    const p = await expectProblem(
      await app.request('/v1/events', {
        method: 'POST',
        headers: { ...auth('app_a', 'ingest'), 'content-type': 'application/json', 'content-length': String(MAX_BODY_BYTES + 1) },
        body: '{}',
      }),
      413,
    );
    expect(p.errors).toEqual([{ path: 'body', message: expect.stringContaining(String(MAX_BODY_BYTES)) }]);
  });
});
