// Poison input: messages that once broke the stream. A deeply nested event
// (a few KB of "[[[[…]]]]") overflowed the stack in canonicalJson and
// JSON.stringify; on Kafka the exception escaped eachBatch, kafkajs crashed the
// consumer for good and every partition stopped while the process ran on; on
// HTTP the whole batch answered 500. The contract: a bad message is
// dead-lettered (Kafka) or rejected on its own (HTTP), and the stream goes on.
// Also: an unforeseen exception while validating one message is that message's
// problem only, and a consumer kafkajs will not restart stops `warbler ingest`.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Kafka, KafkaMessage } from 'kafkajs';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { acceptEvents } from '../../ingest/accept.ts';
import { decodeMessage } from '../../ingest/consumer.ts';
import { DLQ_HEADERS, type DeadLetter } from '../../ingest/dlq.ts';
import { MAX_NESTING_DEPTH, jsonValueProblem } from '../../ingest/event-schema.ts';
import { normalizeEvent } from '../../ingest/normalize.ts';
import type { EventMessage, EventProducer } from '../../ingest/producer.ts';
import { testDatabase, uniqueName } from '../support/env.ts';
import { countEvents, newConsumer, produceRaw, readTopic, spawnIngest, testKafka, trackEvent, waitFor } from './support.ts';

// A user_id that makes normalizeEvent throw, standing in for any bug nobody has found yet.
const BOOM = 'boom-user';
vi.mock('../../ingest/normalize.ts', async (importOriginal) => {
  const orig = await importOriginal<typeof import('../../ingest/normalize.ts')>();
  return {
    ...orig,
    normalizeEvent: (raw: unknown, ...rest: [string?, number?]) => {
      if ((raw as { user_id?: unknown } | null)?.user_id === BOOM) throw new TypeError('simulated bug');
      return orig.normalizeEvent(raw, ...rest);
    },
  };
});

/** An event whose properties nest `levels` arrays deep, as JSON text (built without recursion). */
const deepEventJson = (levels: number, appId?: string) =>
  `{${appId ? `"app_id":"${appId}",` : ''}"user_id":"u-deep","event":"view","ts":1714564800000,"properties":{"a":${'['.repeat(levels)}${']'.repeat(levels)}}}`;

const message = (value: string): KafkaMessage => ({ key: null, value: Buffer.from(value), offset: '7', headers: {}, timestamp: '0', attributes: 0 }) as unknown as KafkaMessage;

describe('nesting limit', () => {
  it('finds too deep values and non-finite numbers without recursion', () => {
    /** `levels` arrays, one inside the other, around a number. */
    const nest = (levels: number): unknown => {
      let v: unknown = 1;
      for (let i = 0; i < levels; i++) v = [v];
      return v;
    };
    expect(jsonValueProblem({ a: nest(MAX_NESTING_DEPTH - 1) })).toBeUndefined(); // the object is level 1
    expect(jsonValueProblem({ a: nest(MAX_NESTING_DEPTH) })?.kind).toBe('depth');
    expect(jsonValueProblem(nest(1_000_000))?.kind).toBe('depth');
    expect(jsonValueProblem({ a: [1, { b: Infinity }] })).toEqual({ kind: 'number', path: ['a', 1, 'b'] });
    expect(jsonValueProblem(JSON.parse('{"x":[-1e400]}'))).toEqual({ kind: 'number', path: ['x', 0] });
  });

  it('rejects properties nested deeper than the limit with a per-item error, at any depth', () => {
    for (const levels of [MAX_NESTING_DEPTH, 3000, 5000, 1_000_000]) {
      const r = normalizeEvent(JSON.parse(deepEventJson(levels, 'a')));
      expect(r.errors, String(levels)).toEqual([{ path: 'properties', message: `properties are nested deeper than ${MAX_NESTING_DEPTH} levels of objects and arrays` }]);
    }
    // The limit itself is fine: "a" is level 2, so 63 arrays reach level 64.
    expect(normalizeEvent(JSON.parse(deepEventJson(MAX_NESTING_DEPTH - 1, 'a'))).errors).toBeUndefined();
  });

  it('rejects non-finite numbers anywhere in properties and in traits', () => {
    const track = (props: string) => normalizeEvent(JSON.parse(`{"app_id":"a","user_id":"u","event":"view","ts":1000,"properties":${props}}`));
    expect(track('{"n":1e400}').errors?.[0]?.path).toBe('properties.n');
    expect(track('{"o":{"list":[1,-1e999]}}').errors?.[0]?.path).toBe('properties.o.list.1');
    expect(track('{"n":1e308}').errors).toBeUndefined();
    const identify = normalizeEvent(JSON.parse('{"app_id":"a","type":"identify","user_id":"u","ts":1000,"traits":{"score":1e400}}'));
    expect(identify.errors?.[0]?.path).toBe('traits.score');
    expect(identify.errors?.[0]?.message).toMatch(/finite/);
  });
});

describe('text that is not UTF-8 or not well-formed', () => {
  // "u\xff": a user id whose byte 0xff is no UTF-8; decoded leniently it became "u\ufffd", like any other bad byte.
  const badBytes = Buffer.concat([Buffer.from('{"app_id":"a","user_id":"u'), Buffer.from([0xff]), Buffer.from('","event":"view","ts":1000}')]);

  it('dead-letters Kafka bytes that are not valid UTF-8, keeping a BOM invalid JSON as before', () => {
    expect(decodeMessage('t', 0, { ...message(''), value: badBytes }, 0)).toMatchObject({ reason: 'invalid_utf8', value: badBytes });
    const overlong = Buffer.concat([Buffer.from('{"app_id":"a","user_id":"u'), Buffer.from([0xc0, 0xaf]), Buffer.from('","event":"view","ts":1000}')]);
    expect(decodeMessage('t', 0, { ...message(''), value: overlong }, 0)).toMatchObject({ reason: 'invalid_utf8' });
    const surrogateBytes = Buffer.concat([Buffer.from('{"app_id":"a","user_id":"u'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('","event":"view","ts":1000}')]);
    expect(decodeMessage('t', 0, { ...message(''), value: surrogateBytes }, 0)).toMatchObject({ reason: 'invalid_utf8' });
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"app_id":"a","user_id":"u","event":"view","ts":1000}')]);
    expect(decodeMessage('t', 0, { ...message(''), value: bom }, 0)).toMatchObject({ reason: 'invalid_json' });
    const ok = decodeMessage('t', 0, message('{"app_id":"a","user_id":"ü😀","event":"view","ts":1000}'), 0);
    expect(ok).toMatchObject({ user_id: 'ü😀' });
  });

  it('dead-letters (Kafka) and rejects (HTTP) ids with lone surrogates escaped in JSON', async () => {
    const d = decodeMessage('t', 0, message('{"app_id":"a","user_id":"u\\ud800","event":"view","ts":1000}'), 0) as DeadLetter;
    expect([d.reason, d.errors[0]!.path]).toEqual(['invalid_user_id', 'user_id']);
    const sent: EventMessage[] = [];
    const producer = { send: async (m: EventMessage[]) => void sent.push(...m), close: async () => {} } as unknown as EventProducer;
    const r = await acceptEvents(producer, 'http', '{"batch":[{"user_id":"u\\ud800","event":"view","ts":1000},{"user_id":"u","event":"view","ts":1000}]}');
    expect([r.status, r.accepted, r.rejected.map((x) => x.errors[0]!.path)]).toEqual([202, 1, ['user_id']]);
    const raw = await acceptEvents(producer, 'http', new Uint8Array(Buffer.from(`{"batch":[${badBytes.toString('latin1')}]}`, 'latin1')));
    expect([raw.status, raw.errors]).toEqual([400, [{ path: '', message: 'request body is not valid UTF-8' }]]);
  });
});

describe('one message, one outcome: decoding never throws', () => {
  it('dead-letters a message whose validation throws, with reason internal_error', () => {
    const d = decodeMessage('t', 3, message(JSON.stringify({ app_id: 'a', user_id: BOOM, event: 'view', ts: 1000 })), 0) as DeadLetter;
    expect(d.reason).toBe('internal_error');
    expect(d.appId).toBe('a');
    expect(d.errors[0]!.message).toMatch(/internal error.*TypeError: simulated bug/);
    expect(decodeMessage('t', 3, message(deepEventJson(5000, 'a')), 0)).toMatchObject({ reason: 'invalid_properties' });
  });

  it('HTTP: a deep or crashing item is rejected alone; the rest of the batch is accepted', async () => {
    const sent: EventMessage[] = [];
    const producer = { send: async (m: EventMessage[]) => void sent.push(...m), close: async () => {} } as unknown as EventProducer;
    const ok = trackEvent(1);
    const body = `{"batch":[${JSON.stringify(ok)},${deepEventJson(3000)},${deepEventJson(5000)},${JSON.stringify({ ...ok, user_id: BOOM })},{"user_id":"u","event":"view","ts":1000,"properties":{"n":1e400}}]}`;
    for (const b of [body, JSON.parse(body) as unknown]) {
      sent.length = 0;
      const r = await acceptEvents(producer, 'http', b);
      expect(r.status).toBe(202);
      expect(r.accepted).toBe(1);
      expect(sent.length).toBe(1);
      expect(r.rejected.map((x) => [x.index, x.errors[0]!.path])).toEqual([[1, 'properties'], [2, 'properties'], [3, ''], [4, 'properties.n']]);
      expect(r.rejected[2]!.errors[0]!.message).toMatch(/internal error/);
    }
  });
});

describe('poison messages on Kafka', () => {
  let ch: ClickHouse;
  let kafka: Kafka;
  beforeAll(async () => {
    ch = await testDatabase('ingest_poison');
    kafka = testKafka();
  });

  it('stores the valid messages around poison ones, dead-letters the poison, and keeps consuming', async () => {
    const topic = uniqueName('poison');
    const app = 'poison';
    const valid = (from: number, to: number) =>
      Array.from({ length: to - from }, (_, k) => ({ key: `${app}\u0000u${from + k}`, value: JSON.stringify({ ...trackEvent(from + k), app_id: app, event_id: `v${from + k}` }) }));
    const poison = [
      { key: 'deep3000', value: deepEventJson(3000, app) },
      { key: 'deep5000', value: deepEventJson(5000, app) },
      { key: 'deep100k', value: deepEventJson(100_000, app) },
      { key: 'inf', value: `{"app_id":"${app}","user_id":"u","event":"view","ts":1000,"properties":{"n":1e400}}` },
      { key: 'boom', value: JSON.stringify({ app_id: app, user_id: BOOM, event: 'view', ts: 1000 }) },
      { key: 'utf8', value: Buffer.concat([Buffer.from(`{"app_id":"${app}","user_id":"u`), Buffer.from([0xff]), Buffer.from('","event":"view","ts":1000}')]) },
    ];
    const consumer = newConsumer(kafka, ch, topic, { batchMaxEvents: 50, batchMaxMs: 200 });
    let crashed = false;
    void consumer.crashed.then(() => (crashed = true));
    await consumer.start();
    try {
      // Poison in the middle of one batch, and alone in one (one partition per key spreads them).
      await produceRaw(kafka, topic, [...valid(0, 20), ...poison, ...valid(20, 40)]);
      expect(await waitFor(async () => (await countEvents(ch, app)).rows === 40, 60_000)).toBe(true);
      // The consumer is still consuming: a later message is stored too.
      await produceRaw(kafka, topic, valid(40, 60));
      expect(await waitFor(async () => (await countEvents(ch, app)).rows === 60, 60_000)).toBe(true);
      await sleep(500);
      expect(await countEvents(ch, app)).toEqual({ rows: 60, ids: 60 });
      expect(crashed).toBe(false);

      const dlq = await readTopic(kafka, `${topic}.dlq`, poison.length);
      const reasons = Object.fromEntries(dlq.map((d) => [d.key!.toString(), d.headers![DLQ_HEADERS.reason]!.toString()]));
      expect(reasons).toEqual({ deep3000: 'invalid_properties', deep5000: 'invalid_properties', deep100k: 'invalid_properties', inf: 'invalid_properties', boom: 'internal_error', utf8: 'invalid_utf8' });
      for (const d of dlq) expect(d.value!.equals(Buffer.from(poison.find((p) => p.key === d.key!.toString())!.value))).toBe(true); // the original bytes
    } finally {
      await consumer.stop();
    }
  });

  it('reports a crash kafkajs does not restart from', async () => {
    const topic = uniqueName('crash');
    const consumer = newConsumer(kafka, ch, topic);
    // Any exception escaping eachBatch that kafkajs deems unrecoverable (RangeError, TypeError, …).
    (consumer as unknown as { onBatch: () => Promise<void> }).onBatch = async () => {
      throw new RangeError('Maximum call stack size exceeded');
    };
    await consumer.start();
    try {
      await produceRaw(kafka, topic, [{ value: JSON.stringify({ ...trackEvent(1), app_id: 'crash' }) }]);
      const err = await Promise.race([consumer.crashed, sleep(30_000).then(() => undefined)]);
      expect(err?.message).toMatch(/Maximum call stack/);
    } finally {
      await consumer.stop();
    }
  });

  it('warbler ingest exits with status 1 and says why when the consumer crashes for good', async () => {
    const topic = uniqueName('crash_cli');
    const { child, stderr } = spawnIngest('test/ingest/crash-child.ts', ['--topic', topic, '--group', `${topic}-g`, '--batch-ms', '200', '--session-timeout-ms', '6000'], ch);
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      expect(await waitFor(async () => stderr().includes('ingest consumer started'), 30_000)).toBe(true);
      await produceRaw(kafka, topic, [{ value: JSON.stringify({ ...trackEvent(1), app_id: 'crash_cli' }) }]);
      expect(await Promise.race([exited, sleep(45_000).then(() => 'still running')])).toBe(1);
      expect(stderr()).toContain('ingest consumer crashed and will not resume; exiting with status 1');
    } catch (err) {
      process.stderr.write(`crash child stderr:\n${stderr().slice(-4000)}\n`);
      throw err;
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});

afterAll(() => vi.restoreAllMocks());
