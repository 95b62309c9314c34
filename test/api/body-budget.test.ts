// The app's budget of large request bodies: while bodies past LARGE_BODY_BYTES
// fill it, another large one gets 503 (retry), small ones are never held back,
// and the bytes come back when a request ends.
import { beforeAll, describe, expect, it } from 'vitest';
import { LARGE_BODY_BYTES } from '../../api/app.ts';
import { auth, expectProblem, harness, type Harness } from './harness.ts';

let h: Harness;
const MiB = 1024 * 1024;
beforeAll(async () => {
  h = await harness({ prefix: 'api_body_budget', limits: { largeBodyBudgetBytes: 5 * MiB } });
});

/** A valid batch of about `bytes` bytes of JSON. */
function batchOf(bytes: number): Uint8Array {
  const n = Math.ceil(bytes / 2000);
  const batch = Array.from({ length: n }, (_, i) => ({ user_id: `u${i}`, event: 'view', ts: '2026-11-01T00:00:00Z', properties: { pad: 'x'.repeat(1900) } }));
  return new TextEncoder().encode(JSON.stringify({ batch }));
}

/** A POST whose body is sent up to byte `sent` (default: all but the last), the rest when `release` resolves. */
function heldPost(bytes: Uint8Array, release: Promise<void>, sent = bytes.length - 1): Promise<Response> {
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      if (sent > 0) controller.enqueue(bytes.subarray(0, sent));
      await release;
      controller.enqueue(bytes.subarray(sent));
      controller.close();
    },
  });
  const headers = { ...auth('app_a', 'ingest'), 'content-type': 'application/json', 'content-length': String(bytes.length) };
  return Promise.resolve(h.app.request('/v1/events', { method: 'POST', headers, body, duplex: 'half' } as RequestInit));
}

describe('the budget of large request bodies', () => {
  it('refuses a large body while others hold the budget, never a small one, and frees it when they end', async () => {
    const big = batchOf(3 * MiB);
    expect(big.length).toBeGreaterThan(LARGE_BODY_BYTES);
    let release!: () => void;
    const held = heldPost(big, new Promise<void>((r) => (release = r)));
    await new Promise((r) => setTimeout(r, 200));
    // Reserved as it arrived: all but the last byte, which waits.
    expect(h.ctx.bodyBudget.inUse).toBe(big.length - 1);

    const refused = await expectProblem(await h.call('POST', '/v1/events', { as: ['app_a', 'ingest'], body: new TextDecoder().decode(big) }), 503);

    expect(refused.detail).toMatch(/retry/);
    const small = await h.call('POST', '/v1/events', { as: ['app_a', 'ingest'], body: { user_id: 'small', event: 'view', ts: '2026-11-01T00:00:00Z' } });
    expect(small.status).toBe(202);

    release();
    expect((await held).status).toBe(202);
    expect(h.ctx.bodyBudget.inUse).toBe(0);
    const again = await h.call('POST', '/v1/events', { as: ['app_a', 'ingest'], body: new TextDecoder().decode(big) });
    expect(again.status).toBe(202);
    expect(h.ctx.bodyBudget.inUse).toBe(0);
  });

  it('reserves what arrives, not what a connection declares', async () => {
    const big = batchOf(3 * MiB);
    let release!: () => void;
    const idle = heldPost(big, new Promise<void>((r) => (release = r)), 0);
    await new Promise((r) => setTimeout(r, 200));
    expect(h.ctx.bodyBudget.inUse).toBe(0);
    expect((await h.call('POST', '/v1/events', { as: ['app_a', 'ingest'], body: new TextDecoder().decode(big) })).status).toBe(202);
    release();
    expect((await idle).status).toBe(202);
  });
});
