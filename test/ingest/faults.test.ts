// Faults: duplicates, ClickHouse unreachable mid-stream, a consumer killed
// mid-batch, a rebalance during ingest. After each, every accepted event is
// stored exactly once: rows == distinct ids == events sent.
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Kafka } from 'kafkajs';
import { ClickHouse } from '../../lib/clickhouse.ts';
import { ident, sql } from '../../lib/sql.ts';
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

  // An INSERT writes `events` first, then each view's table in turn (18.16: in
  // view name order), and stops at the first view that fails. A view that
  // fails while a switch is on stands for e.g. "Too many parts" on one table:
  // named a_… it fails before any other view (event_ids, the lookup's table,
  // misses the batch); named m_… after app_users and event_ids. With a
  // handover, the consumer that failed stops before any retry succeeds and
  // another one of the group gets the messages again: it learns of the failed
  // INSERT from the mark on the partitions' committed offsets.
  const partialCases = ['a_fail', 'm_fail'].flatMap((prefix) => [false, true].map((handover) => ({ failing: `${prefix}${handover ? '_h' : ''}_mv`, handover })));
  for (const { failing, handover } of partialCases) {
    it(`re-derives into every view's table the events a failed insert left in events only (${failing}${handover ? ', another consumer takes over' : ''})`, async () => {
      const topic = uniqueName('partial');
      const app = `partial_${failing}`;
      const sw = `${failing}_switch`;
      const messages = [
        ...messagesFor(app, 0, 400),
        ...Array.from({ length: 40 }, (_, i) => ({
          key: `${app}\u0000u${i}`,
          value: JSON.stringify({ type: 'identify', app_id: app, user_id: `u${i}`, ts: Date.UTC(2024, 4, 2) + i * 1000, traits: { plan: `p${i % 3}`, country: 'CN' } }),
        })),
      ];
      const sent = messages.map((m) => JSON.parse(m.value) as Record<string, unknown>);
      await ch.exec(sql`CREATE TABLE ${ident(sw)} (on UInt8) ENGINE = Memory`);
      await ch.exec(sql`INSERT INTO ${ident(sw)} VALUES (1)`);
      await ch.exec(sql`CREATE TABLE ${ident(`${failing}_sink`)} (x UInt8) ENGINE = Memory`);
      await ch.exec(sql`CREATE MATERIALIZED VIEW ${ident(failing)} TO ${ident(`${failing}_sink`)} AS
        SELECT throwIf(app_id = ${app} AND (SELECT count() FROM ${ident(sw)}) > 0) AS x FROM events`);
      const consumers = [newConsumer(kafka, ch, topic, { batchMaxEvents: 5000, batchMaxMs: 300, shutdownTimeoutMs: 1000 })];
      try {
        const errorsBefore = ingestMetrics.storeErrors.get();
        const repairedBefore = ingestMetrics.repaired.get();
        await consumers[0]!.start();
        await produceRaw(kafka, topic, messages);
        // A batch is in events, not in the tables of the views after the failing
        // one (the messages may arrive in two batches: the second waits).
        expect(await waitFor(async () => (await countEvents(ch, app)).rows > 0 && ingestMetrics.storeErrors.get() > errorsBefore + 1, 30_000)).toBe(true);
        const timeline = sql`SELECT uniqExact(h) AS n FROM (SELECT arrayJoin(finalizeAggregation(event_hash)) AS h FROM user_timeline WHERE app_id = ${app})`;
        expect(Number((await ch.one<{ n: string }>(timeline))?.n)).toBe(0);

        if (handover) {
          await consumers[0]!.stop(); // abandons the batch, uncommitted
          consumers.push(newConsumer(kafka, ch, topic, { batchMaxEvents: 5000, batchMaxMs: 300 }));
          await consumers[1]!.start();
          // The view still fails while the new consumer reads the messages again,
          // so only it can repair them (not an attempt of the stopped one still in flight).
          await sleep(3000);
        }
        // Every user with events stored so far got them from a failed INSERT, so
        // must be repaired. Messages the failing consumer never attempted (their
        // partitions came in a later batch, which waits) may be inserted cleanly
        // once the view works, and need no repair.
        const usersIn = async (table: string) =>
          (await ch.rows<{ user_id: string }>(sql`SELECT DISTINCT user_id FROM ${ident(table)} WHERE app_id = ${app}`)).map((r) => r.user_id).sort();
        const storedWhileFailing = await usersIn('events');
        await ch.exec(sql`TRUNCATE TABLE ${ident(sw)}`);
        await exactlyOnce(app, messages.length);
        expect(ingestMetrics.repaired.get()).toBeGreaterThan(repairedBefore);
        const count = async (q: ReturnType<typeof sql>) => Number((await ch.one<{ n: string }>(q))?.n);
        expect({
          timeline: await count(timeline),
          by_time: await count(sql`SELECT uniqExact(user_id, ts, id_hash) AS n FROM profile_events_by_time WHERE app_id = ${app}`),
          purchases: await count(sql`SELECT uniqExact(user_id, ts, id_hash) AS n FROM purchase_events WHERE app_id = ${app}`),
          traits: await count(sql`SELECT uniqExact(user_id, key, ts, event_id) AS n FROM user_traits WHERE app_id = ${app}`),
          users: await count(sql`SELECT uniqExact(user_id) AS n FROM app_users WHERE app_id = ${app}`),
          firsts: await count(sql`SELECT uniqExact(user_id, event) AS n FROM user_event_firsts WHERE app_id = ${app}`),
          ids: await count(sql`SELECT uniqExact(ts, event_id) AS n FROM event_ids WHERE app_id = ${app}`),
        }).toEqual({
          timeline: messages.length,
          by_time: messages.length,
          purchases: sent.filter((e) => e.event === 'purchase').length,
          traits: sent.reduce((n, e) => n + Object.keys((e.traits as object | undefined) ?? {}).length, 0),
          users: new Set(sent.map((e) => e.user_id)).size,
          firsts: new Set(sent.filter((e) => e.type !== 'identify').map((e) => `${String(e.user_id)} ${String(e.event)}`)).size,
          ids: messages.length,
        });
        const repaired = await usersIn('ingest_repairs');
        expect(storedWhileFailing.length).toBeGreaterThan(0);
        expect(storedWhileFailing.filter((u) => !repaired.includes(u))).toEqual([]);
        expect(repaired.filter((u) => !sent.some((e) => e.user_id === u))).toEqual([]);
      } finally {
        for (const c of consumers) await c.stop();
        await ch.exec(sql`DROP TABLE IF EXISTS ${ident(failing)}`);
      }
    });
  }

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
