// Faults: duplicates, ClickHouse unreachable mid-stream, a consumer killed
// mid-batch, a rebalance during ingest. After each, every accepted event is
// stored exactly once: rows == distinct ids == events sent.
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Kafka } from 'kafkajs';
import { ClickHouse } from '../../lib/clickhouse.ts';
import { REPO_ROOT } from '../../lib/config.ts';
import { acceptEvents } from '../../ingest/accept.ts';
import { createEventProducer } from '../../ingest/producer.ts';
import { ingestMetrics } from '../../ingest/stats.ts';
import { clickhouseUrl, kafkaBrokers, testDatabase, uniqueName } from '../support/env.ts';
import { countEvents, newConsumer, produceRaw, TcpProxy, testKafka, trackEvent, waitFor } from './support.ts';

let ch: ClickHouse;
let kafka: Kafka;
const children: ChildProcess[] = [];

beforeAll(async () => {
  ch = await testDatabase('ingest_faults');
  kafka = testKafka();
});
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});

const messagesFor = (appId: string, from: number, to: number, extra: (i: number) => Record<string, unknown> = () => ({})) =>
  Array.from({ length: to - from }, (_, k) => {
    const i = from + k;
    const ev: Record<string, unknown> = { ...trackEvent(i), app_id: appId, ...extra(i) };
    return { key: `${appId}\u0000${String(ev.user_id)}`, value: JSON.stringify(ev) };
  });

const exactlyOnce = async (appId: string, n: number, timeoutMs = 60_000) => {
  const ok = await waitFor(async () => (await countEvents(ch, appId)).rows >= n, timeoutMs);
  await sleep(1500); // let anything that would be a duplicate arrive
  const c = await countEvents(ch, appId);
  expect({ ok, ...c }).toEqual({ ok: true, rows: n, ids: n });
};

describe('ingest faults', () => {
  it('counts an event sent twice once, with and without event_id, across restarts and via HTTP', async () => {
    const topic = uniqueName('dups');
    const app = 'dups';
    const withoutId = messagesFor(app, 0, 600);
    const withId = messagesFor(app, 600, 1200, (i) => ({ event_id: `e${i}` }));
    // The explicit id wins over content: same id, different properties → still one event.
    const sameIdOtherContent = messagesFor(app, 600, 700, (i) => ({ event_id: `e${i}`, properties: { changed: true } }));
    const c1 = newConsumer(kafka, ch, topic);
    await c1.start();
    await produceRaw(kafka, topic, [...withoutId, ...withId, ...withoutId.slice(0, 100)]); // in-batch duplicates
    await exactlyOnce(app, 1200);
    const dropped = () => ingestMetrics.deduplicated.get({ source: 'stored' }) + ingestMetrics.deduplicated.get({ source: 'batch' });
    const before = dropped();
    await produceRaw(kafka, topic, [...withoutId, ...withId, ...sameIdOtherContent]); // redelivery
    expect(await waitFor(async () => dropped() - before >= 1300)).toBe(true);
    await c1.stop();
    // A new group reads the whole topic again: everything is a redelivery.
    const c2 = newConsumer(kafka, ch, topic, { groupId: `${topic}-second` });
    await c2.start();
    const before2 = dropped();
    expect(await waitFor(async () => dropped() - before2 >= 2600)).toBe(true); // both rounds, 1300 each
    await c2.stop();
    await exactlyOnce(app, 1200);

    // HTTP: the same request twice (a client retry) stores each event once.
    const httpTopic = uniqueName('dups_http');
    const producer = createEventProducer(kafka, httpTopic);
    const body = { batch: Array.from({ length: 300 }, (_, i) => trackEvent(i, i % 2 ? { event_id: `h${i}` } : {})) };
    expect((await acceptEvents(producer, 'dups_http', body)).accepted).toBe(300);
    expect((await acceptEvents(producer, 'dups_http', body)).accepted).toBe(300);
    await producer.close();
    const c3 = newConsumer(kafka, ch, httpTopic);
    await c3.start();
    await exactlyOnce('dups_http', 300);
    await c3.stop();
  });

  it('stores every event once when ClickHouse becomes unreachable mid-stream', async () => {
    const topic = uniqueName('outage');
    const app = 'outage';
    const proxy = new TcpProxy(Number(new URL(clickhouseUrl()).port));
    await proxy.open();
    const viaProxy = new ClickHouse({ url: `http://127.0.0.1:${proxy.port}`, database: ch.database, queryTimeoutS: 5 });
    const consumer = newConsumer(kafka, viaProxy, topic, { batchMaxEvents: 1000, batchMaxMs: 300 });
    try {
      await consumer.start();
      await produceRaw(kafka, topic, messagesFor(app, 0, 3000));
      expect(await waitFor(async () => (await countEvents(ch, app)).rows === 3000)).toBe(true);

      const errorsBefore = ingestMetrics.storeErrors.get();
      await proxy.close();
      await produceRaw(kafka, topic, messagesFor(app, 3000, 6000));
      expect(await waitFor(async () => ingestMetrics.storeErrors.get() > errorsBefore + 1, 30_000)).toBe(true);
      expect(ingestMetrics.paused.get()).toBe(1);
      expect((await countEvents(ch, app)).rows).toBe(3000);

      await proxy.open(); // same port
      await exactlyOnce(app, 6000);
      expect(ingestMetrics.paused.get()).toBe(0);
    } finally {
      await consumer.stop();
      await proxy.close();
      await viaProxy.close();
    }
  });

  it('loses nothing and counts nothing twice when a consumer is SIGKILLed mid-batch', async () => {
    const topic = uniqueName('kill');
    const group = `${topic}-group`;
    const app = 'kill';
    const n = 12_000;
    await produceRaw(kafka, topic, messagesFor(app, 0, n));
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/ingest/consumer-child.ts'], {
      cwd: REPO_ROOT,
      env: { ...process.env, CH_URL: clickhouseUrl(), CH_DB: ch.database, BROKERS: kafkaBrokers().join(','), TOPIC: topic, GROUP: group, BATCH: '1500', BATCH_MS: '300' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    let stored = 0;
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      stored += chunk.split('\n').filter((l) => l.includes('"batch stored"')).length;
    });
    expect(await waitFor(async () => stored >= 1 || child.exitCode !== null, 60_000, 20)).toBe(true);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const atKill = (await countEvents(ch, app)).rows;
    expect(atKill).toBeGreaterThan(0);
    expect(atKill).toBeLessThan(n); // killed mid-stream, not after the end

    const successor = newConsumer(kafka, ch, topic, { groupId: group, batchMaxEvents: 1500, batchMaxMs: 300 });
    await successor.start();
    try {
      await exactlyOnce(app, n, 90_000);
    } finally {
      await successor.stop();
    }
  });

  it('stores every event once through a rebalance between two consumers during ingest', async () => {
    const topic = uniqueName('rebalance');
    const app = 'rebalance';
    const n = 16_000;
    const a = newConsumer(kafka, ch, topic, { batchMaxEvents: 1000, batchMaxMs: 300 });
    const b = newConsumer(kafka, ch, topic, { batchMaxEvents: 1000, batchMaxMs: 300 });
    await a.start();
    try {
      for (let i = 0; i < n; i += 1000) {
        await produceRaw(kafka, topic, messagesFor(app, i, i + 1000));
        if (i === 4000) await b.start(); // joins while A is mid-stream: both rejoin, partitions move
        if (i === 10_000) await b.stop(); // and leaves again: its partitions go back to A
        await sleep(150);
      }
      await exactlyOnce(app, n, 90_000);
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});
