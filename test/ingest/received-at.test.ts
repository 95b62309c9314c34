// received_at is stamped at the INSERT attempt that stores a row, not when the
// consumer decoded the message: incremental profile runs find late arrivals by
// `received_at >= previous run's start - 300 s`, so a batch held back by failed
// INSERTs must carry the time it finally went in, or an incremental run would
// never see it and differ from a full run.
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Kafka } from 'kafkajs';
import { ClickHouse } from '../../lib/clickhouse.ts';
import { sql } from '../../lib/sql.ts';
import { ingestMetrics } from '../../ingest/stats.ts';
import { clickhouseUrl, testDatabase, uniqueName } from '../support/env.ts';
import { countEvents, newConsumer, produceRaw, testKafka, trackEvent, waitFor } from './support.ts';

let ch: ClickHouse;
let flaky: ClickHouse;
let kafka: Kafka;

beforeAll(async () => {
  ch = await testDatabase('ingest_received_at');
  kafka = testKafka();
  flaky = new ClickHouse({ url: clickhouseUrl(), database: ch.database });
});
afterAll(async () => {
  await flaky?.close();
});

it('stamps received_at at the INSERT attempt that succeeds, not when the message was decoded', async () => {
  const topic = uniqueName('received_at');
  const app = 'received_at';
  // The INSERT into events fails for 2.5 s after its first attempt; the dedup lookups before it succeed.
  let failUntil = 0;
  let insertAttempts = 0;
  const exec = flaky.client.exec.bind(flaky.client);
  flaky.client.exec = (async (params: Parameters<typeof exec>[0]) => {
    if (params.query.startsWith('INSERT INTO events ')) {
      insertAttempts++;
      if (failUntil === 0) failUntil = Date.now() + 2500;
      if (Date.now() < failUntil) throw new Error('simulated: ClickHouse refuses the INSERT');
    }
    return exec(params);
  }) as typeof flaky.client.exec;

  const consumer = newConsumer(kafka, flaky, topic, { retryInitialMs: 200, retryMaxMs: 400 });
  const errorsBefore = ingestMetrics.storeErrors.get();
  await consumer.start();
  try {
    const producedAt = Math.floor(Date.now() / 1000);
    await produceRaw(kafka, topic, Array.from({ length: 200 }, (_, i) => ({ value: JSON.stringify({ ...trackEvent(i), app_id: app, event_id: `r${i}` }) })));
    expect(await waitFor(async () => (await countEvents(ch, app)).rows === 200, 60_000)).toBe(true);
    expect(insertAttempts).toBeGreaterThan(1);
    expect(ingestMetrics.storeErrors.get()).toBeGreaterThan(errorsBefore);
    const r = await ch.one<{ lo: number; hi: number }>(
      sql`SELECT toUInt32(min(received_at)) AS lo, toUInt32(max(received_at)) AS hi FROM events WHERE app_id = ${app}`,
    );
    // Decoded before the first attempt, so a decode-time stamp would be < failUntil's second.
    expect(Number(r!.lo)).toBeGreaterThanOrEqual(Math.floor(failUntil / 1000));
    expect(Number(r!.lo)).toBeGreaterThan(producedAt);
    expect(Number(r!.hi)).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
  } finally {
    await consumer.stop();
  }
});
