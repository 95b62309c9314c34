// sendChunked (lib/kafka.ts), used by the API's producer, dead letters and the
// consumer's reroutes: every message goes out once, in order, in produce
// requests under MAX_PRODUCE_BYTES — a real broker refuses record batches over
// 1 MB, which the test broker (librdkafka's mock) does not enforce, so the
// requests are recorded here rather than sent.
import type { Message, Producer, ProducerRecord } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { MAX_PRODUCE_BYTES, sendChunked } from '../../lib/kafka.ts';

function recorder(): { producer: Producer; requests: ProducerRecord[] } {
  const requests: ProducerRecord[] = [];
  const producer = { send: async (r: ProducerRecord) => void requests.push(r) } as unknown as Producer;
  return { producer, requests };
}

const size = (m: Message) => Buffer.byteLength(String(m.key ?? '')) + Buffer.byteLength(String(m.value ?? ''));

describe('sendChunked', () => {
  it('sends every message once, in order, in requests under the limit', async () => {
    const { producer, requests } = recorder();
    const messages: Message[] = Array.from({ length: 3000 }, (_, i) => ({ key: `k${i}`, value: 'v'.repeat(1000 + (i % 7) * 100), headers: { h: 'x'.repeat(50) } }));
    await sendChunked(producer, 't', messages);
    expect(requests.length).toBeGreaterThan(5);
    expect(requests.flatMap((r) => r.messages)).toEqual(messages);
    for (const r of requests) {
      expect(r).toMatchObject({ topic: 't', acks: -1 });
      expect(r.messages.reduce((n, m) => n + size(m), 0)).toBeLessThanOrEqual(MAX_PRODUCE_BYTES);
    }
  });

  it('sends a message larger than the limit alone, and nothing for no messages', async () => {
    const { producer, requests } = recorder();
    await sendChunked(producer, 't', [{ value: 'a' }, { value: 'b'.repeat(MAX_PRODUCE_BYTES * 2) }, { value: 'c' }]);
    expect(requests.map((r) => r.messages.map((m) => String(m.value).slice(0, 1)))).toEqual([['a'], ['b'], ['c']]);
    const empty = recorder();
    await sendChunked(empty.producer, 't', []);
    expect(empty.requests).toEqual([]);
  });
});
