// Copies of one event on two partitions — a producer writing straight to Kafka
// without the app + user key, or hashing keys otherwise (librdkafka's default
// does) — would each be stored by whichever consumer owns their partition, and
// two consumers looking them up at once would both store them. A consumer
// produces such a message again with its key, to the partition the key leads
// to, so every copy is stored by one consumer, one batch after another. Over
// the real broker (librdkafka's mock cluster) and ClickHouse.
import type { Kafka } from 'kafkajs';
import { beforeAll, describe, expect, it } from 'vitest';
import { partitionOfKey, REROUTED_HEADER } from '../../ingest/consumer.ts';
import { eventKey } from '../../ingest/producer.ts';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { createProducer } from '../../lib/kafka.ts';
import { testDatabase, uniqueName } from '../support/env.ts';
import type { KafkaMessage } from 'kafkajs';
import { countEvents, newConsumer, testKafka, waitFor } from './support.ts';

let ch: ClickHouse;
let kafka: Kafka;
beforeAll(async () => {
  ch = await testDatabase('reroute');
  kafka = testKafka();
});

const PARTITIONS = 4; // what the mock cluster creates topics with

/** Every message of a topic with its partition, until `expected` arrived or the timeout. */
async function readWithPartitions(topic: string, expected: number, timeoutMs = 60_000): Promise<(KafkaMessage & { partition: number })[]> {
  const c = kafka.consumer({ groupId: uniqueName('reader'), sessionTimeout: 6000, heartbeatInterval: 300, rebalanceTimeout: 6000 });
  const got: (KafkaMessage & { partition: number })[] = [];
  await c.connect();
  await c.subscribe({ topic, fromBeginning: true });
  await c.run({ eachMessage: async ({ partition, message }) => void got.push({ ...message, partition }) });
  const end = Date.now() + timeoutMs;
  while (got.length < expected && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 500)); // anything beyond `expected` shows as a failure
  await c.disconnect();
  return got;
}

describe('messages on a partition their key does not lead to', () => {
  it('partitionOfKey is where this project\'s producers put a key', async () => {
    const topic = uniqueName('keys');
    const p = createProducer(kafka);
    await p.connect();
    const keys = Array.from({ length: 200 }, (_, i) => eventKey('app', `user-${i}`));
    await p.send({ topic, acks: -1, messages: keys.map((key) => ({ key, value: 'x' })) });
    await p.disconnect();
    const got = await readWithPartitions(topic, keys.length);
    expect(got).toHaveLength(keys.length);
    for (const m of got) {
      expect(m.partition, m.key?.toString()).toBe(partitionOfKey(topic, m.key!.toString(), PARTITIONS));
    }
  });

  it('are produced again to the right partition, keyed, and every event is stored once by two consumers', async () => {
    const topic = uniqueName('reroute');
    const app = 'rr';
    const events = Array.from({ length: 300 }, (_, i) => ({ app_id: app, user_id: `u${i % 60}`, event: 'view', event_id: `e${i}`, ts: Date.UTC(2026, 5, 1) + i * 1000 }));
    const right = (e: (typeof events)[number]) => partitionOfKey(topic, eventKey(app, e.user_id), PARTITIONS);
    const p = createProducer(kafka);
    await p.connect();
    // Each event twice: keyed as the API keys it, and unkeyed on another partition.
    await p.send({ topic, acks: -1, messages: events.map((e) => ({ key: eventKey(app, e.user_id), value: JSON.stringify(e) })) });
    await p.send({ topic, acks: -1, messages: events.map((e) => ({ value: JSON.stringify(e), partition: (right(e) + 1) % PARTITIONS })) });
    await p.disconnect();

    const consumers = [newConsumer(kafka, ch, topic), newConsumer(kafka, ch, topic)];
    await Promise.all(consumers.map((c) => c.start()));
    try {
      // 600 produced + 300 rerouted.
      const all = await readWithPartitions(topic, 900);
      expect(all).toHaveLength(900);
      const rerouted = all.filter((m) => m.headers?.[REROUTED_HEADER] !== undefined);
      expect(rerouted).toHaveLength(events.length);
      for (const m of rerouted) {
        const e = JSON.parse(m.value!.toString()) as (typeof events)[number];
        expect([m.key?.toString(), m.partition]).toEqual([eventKey(app, e.user_id), right(e)]);
      }
      expect(await waitFor(async () => (await countEvents(ch, app)).ids === events.length, 60_000)).toBe(true);
      // Every rerouted copy reached its consumer and was found stored: nothing counted twice.
      await new Promise((r) => setTimeout(r, 2000));
      expect(await countEvents(ch, app)).toEqual({ rows: events.length, ids: events.length });
    } finally {
      await Promise.all(consumers.map((c) => c.stop()));
    }
  }, 120_000);
});

