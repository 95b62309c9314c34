// The event contract (events-and-profiles.md §1), rule by rule, on all three
// paths: the pure normaliser, the HTTP accept function (real broker), and the
// Kafka consumer (real broker, real ClickHouse, invalid ones to the DLQ).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Kafka } from 'kafkajs';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { sql } from '../../lib/sql.ts';
import { acceptEvents, MAX_BATCH_EVENTS, MAX_BODY_BYTES } from '../../ingest/accept.ts';
import type { IngestConsumer } from '../../ingest/consumer.ts';
import { DLQ_HEADERS } from '../../ingest/dlq.ts';
import { normalizeEvent, canonicalJson } from '../../ingest/normalize.ts';
import { createEventProducer, type EventProducer } from '../../ingest/producer.ts';
import { ingestStats } from '../../ingest/stats.ts';
import { testDatabase, uniqueName } from '../support/env.ts';
import { countEvents, newConsumer, produceRaw, readTopic, testKafka, waitFor } from './support.ts';

const T = '2024-05-01T12:00:00Z';
const NOW = Date.now();
const base = { user_id: 'u1', event: 'view', ts: T };
/** `n` arrays one inside the other (inside `properties`, whose object is level 1). */
const nestedArrays = (n: number): unknown => Array.from({ length: n }).reduce((v: unknown) => [v], 'x');

/** [name, event without app_id, expected error path or null when valid]. */
const CASES: [string, Record<string, unknown> | unknown, string | null][] = [
  ['minimal track', base, null],
  ['explicit type track', { ...base, type: 'track' }, null],
  ['identify with traits', { type: 'identify', user_id: 'u1', ts: T, traits: { plan: 'pro', age: 3, vip: true, gone: null } }, null],
  ['identify without traits', { type: 'identify', user_id: 'u1', ts: T }, null],
  ['unknown type', { ...base, type: 'page' }, 'type'],
  ['event_id 1 char', { ...base, event_id: 'x' }, null],
  ['event_id 128 chars', { ...base, event_id: 'e'.repeat(128) }, null],
  ['event_id empty', { ...base, event_id: '' }, 'event_id'],
  ['event_id 129 chars', { ...base, event_id: 'e'.repeat(129) }, 'event_id'],
  ['event_id not a string', { ...base, event_id: 7 }, 'event_id'],
  ['user_id missing', { event: 'view', ts: T }, 'user_id'],
  ['user_id empty', { ...base, user_id: '' }, 'user_id'],
  ['user_id 256 chars', { ...base, user_id: 'u'.repeat(256) }, null],
  ['user_id 257 chars', { ...base, user_id: 'u'.repeat(257) }, 'user_id'],
  ['user_id with a lone surrogate', { ...base, user_id: 'u\ud800' }, 'user_id'],
  ['user_id with a lone low surrogate', { ...base, user_id: '\udc00u' }, 'user_id'],
  ['user_id with a surrogate pair', { ...base, user_id: 'u\ud83d\ude00' }, null],
  ['event_id with a lone surrogate', { ...base, event_id: 'e\ud83d' }, 'event_id'],
  ['trait name with a lone surrogate', { type: 'identify', user_id: 'u1', ts: T, traits: { 'a\ud800': 1 } }, 'traits.a\ud800'],
  ['user_id number', { ...base, user_id: 12 }, 'user_id'],
  ['event missing on track', { user_id: 'u1', ts: T }, 'event'],
  ['event all allowed chars', { ...base, event: 'Az09_.:- x' }, null],
  ['event 128 chars', { ...base, event: 'e'.repeat(128) }, null],
  ['event 129 chars', { ...base, event: 'e'.repeat(129) }, 'event'],
  ['event empty', { ...base, event: '' }, 'event'],
  ['event with slash', { ...base, event: 'a/b' }, 'event'],
  ['event with unicode', { ...base, event: 'kauf€' }, 'event'],
  ['event on identify', { type: 'identify', user_id: 'u1', ts: T, event: 'x' }, 'event'],
  ['ts missing', { user_id: 'u1', event: 'view' }, 'ts'],
  ['ts with offset', { ...base, ts: '2024-05-01T14:00:00+02:00' }, null],
  ['ts with compact offset', { ...base, ts: '2024-05-01T14:00:00+0200' }, null],
  ['ts with fraction', { ...base, ts: '2024-05-01T12:00:00.999Z' }, null],
  ['ts epoch ms', { ...base, ts: Date.UTC(2024, 4, 1, 12) }, null],
  ['ts epoch 0', { ...base, ts: 0 }, null],
  ['ts without offset', { ...base, ts: '2024-05-01T12:00:00' }, 'ts'],
  ['ts date only', { ...base, ts: '2024-05-01' }, 'ts'],
  ['ts impossible date', { ...base, ts: '2024-02-30T00:00:00Z' }, 'ts'],
  ['ts garbage', { ...base, ts: 'yesterday' }, 'ts'],
  ['ts before 1970', { ...base, ts: '1969-12-31T23:59:59Z' }, 'ts'],
  ['ts year 0070 (not 1970)', { ...base, ts: '0070-05-01T12:00:00Z' }, 'ts'],
  ['ts negative epoch', { ...base, ts: -1000 }, 'ts'],
  ['ts 23h in future', { ...base, ts: NOW + 23 * 3600e3 }, null],
  ['ts 25h in future', { ...base, ts: NOW + 25 * 3600e3 }, 'ts'],
  ['ts boolean', { ...base, ts: true }, 'ts'],
  ['properties nested values', { ...base, properties: { a: { b: [1, 2] }, n: 1.5, s: 'x', t: true, z: null } }, null],
  ['properties array', { ...base, properties: [1] }, 'properties'],
  ['properties string', { ...base, properties: 'x' }, 'properties'],
  ['properties 16 KiB', { ...base, properties: { p: 'x'.repeat(16 * 1024 - 8) } }, null],
  ['properties over 16 KiB', { ...base, properties: { p: 'x'.repeat(16 * 1024 - 7) } }, 'properties'],
  ['properties multibyte over 16 KiB', { ...base, properties: { p: 'é'.repeat(8200) } }, 'properties'],
  ['properties nested 64 levels (the limit)', { ...base, properties: { a: nestedArrays(63) } }, null],
  ['properties nested 65 levels', { ...base, properties: { a: nestedArrays(64) } }, 'properties'],
  ['purchase with amount', { ...base, event: 'purchase', properties: { amount: 12.5, currency: 'EUR' } }, null],
  ['purchase with amount 0', { ...base, event: 'purchase', properties: { amount: 0 } }, null],
  ['purchase without amount', { ...base, event: 'purchase', properties: { item_id: 'i1' } }, null],
  ['purchase without properties', { ...base, event: 'purchase' }, null],
  ['purchase negative amount', { ...base, event: 'purchase', properties: { amount: -5 } }, 'properties.amount'],
  ['purchase amount string', { ...base, event: 'purchase', properties: { amount: '12.50' } }, 'properties.amount'],
  ['purchase amount boolean', { ...base, event: 'purchase', properties: { amount: true } }, 'properties.amount'],
  ['purchase amount null', { ...base, event: 'purchase', properties: { amount: null } }, 'properties.amount'],
  ['purchase amount object', { ...base, event: 'purchase', properties: { amount: { value: 3 } } }, 'properties.amount'],
  ['negative amount on another event', { ...base, event: 'refund', properties: { amount: -5 } }, null],
  ['properties on identify', { type: 'identify', user_id: 'u1', ts: T, properties: {} }, 'properties'],
  ['traits on track', { ...base, traits: { a: 1 } }, 'traits'],
  ['trait value object', { type: 'identify', user_id: 'u1', ts: T, traits: { a: { b: 1 } } }, 'traits.a'],
  ['trait value array', { type: 'identify', user_id: 'u1', ts: T, traits: { a: [1] } }, 'traits.a'],
  ['traits not object', { type: 'identify', user_id: 'u1', ts: T, traits: 'x' }, 'traits'],
  ['context all keys', { ...base, event_id: 'ctx-all', context: { platform: 'ios', app_version: '1.2', country: 'DE', timezone: 'Europe/Berlin', locale: 'de-DE' } }, null],
  ['context invalid timezone kept', { ...base, context: { timezone: 'Mars/Olympus' } }, null],
  ['context null value', { ...base, context: { platform: null } }, null],
  ['context unknown key', { ...base, context: { device: 'x' } }, 'context.device'],
  ['context non-string', { ...base, context: { platform: 3 } }, 'context.platform'],
  ['unknown top-level field', { ...base, foo: 1 }, 'foo'],
  ['not an object', [1, 2], ''],
  ['null', null, ''],
];

const validCount = CASES.filter((c) => c[2] === null).length;
/** Valid cases that are the same event (same derived id: e.g. context is not part of the identity) are stored once. */
const distinctValid = (appId: string) =>
  new Set(CASES.filter((c) => c[2] === null).map((c) => normalizeEvent({ ...(c[1] as object), app_id: appId }).row!.event_id)).size;

describe('event contract: normaliser', () => {
  it.each(CASES)('%s', (_name, ev, path) => {
    const r = normalizeEvent(typeof ev === 'object' && ev !== null && !Array.isArray(ev) ? { ...ev, app_id: 'a' } : ev);
    if (path === null) expect(r.errors).toBeUndefined();
    else expect(r.errors?.map((e) => e.path)).toContain(path);
  });

  it('requires app_id on Kafka and rejects a different one on HTTP', () => {
    expect(normalizeEvent(base).errors).toEqual([{ path: 'app_id', message: 'app_id is required in Kafka messages' }]);
    expect(normalizeEvent({ ...base, app_id: 'other' }, 'mine').errors?.[0]?.path).toBe('app_id');
    expect(normalizeEvent({ ...base, app_id: 'mine' }, 'mine').row?.app_id).toBe('mine');
    expect(normalizeEvent(base, 'mine').row?.app_id).toBe('mine');
  });

  it('stores ts in UTC at second precision', () => {
    const at = (ts: unknown) => normalizeEvent({ ...base, ts }, 'a').row?.ts;
    const s = Date.UTC(2024, 4, 1, 12) / 1000;
    expect(at('2024-05-01T14:00:00.999+02:00')).toBe(s);
    expect(at('2024-05-01T07:30:00-04:30')).toBe(s);
    expect(at(s * 1000 + 999)).toBe(s);
    expect(at('2024-05-01t12:00:00z')).toBe(s);
  });

  it('fills property arrays from top-level scalars only', () => {
    const r = normalizeEvent({ ...base, properties: { n: 12.5, s: 'abc', b: true, o: { x: 1 }, a: [1], z: null } }, 'a').row!;
    expect(r.prop_keys).toEqual(['n', 's', 'b']);
    expect(r.prop_strings).toEqual(['12.5', 'abc', 'true']);
    expect(r.prop_numbers[0]).toBe(12.5);
    expect(Number.isNaN(r.prop_numbers[1])).toBe(true);
    expect(Number.isNaN(r.prop_numbers[2])).toBe(true);
    expect(JSON.parse(r.properties)).toEqual({ n: 12.5, s: 'abc', b: true, o: { x: 1 }, a: [1], z: null });
  });

  it('turns identify traits and context values into trait columns; traits win over context', () => {
    const r = normalizeEvent(
      { type: 'identify', user_id: 'u', ts: T, traits: { plan: 'pro', n: 2, ok: false, gone: null, platform: 'web' }, context: { platform: 'ios', country: 'DE', locale: null } },
      'a',
    ).row!;
    const traits = Object.fromEntries(r.trait_keys.map((k, i) => [k, [r.trait_values[i], r.trait_types[i]]]));
    expect(traits).toEqual({ platform: ['web', 1], country: ['DE', 1], plan: ['pro', 1], n: ['2', 2], ok: ['false', 3], gone: ['', 0] });
    // A trait null beats a context value of the same key within the event: the key is removed.
    const removed = normalizeEvent({ type: 'identify', user_id: 'u', ts: T, traits: { platform: null }, context: { platform: 'ios' } }, 'a').row!;
    expect([removed.trait_keys, removed.trait_values, removed.trait_types]).toEqual([['platform'], [''], [0]]);
    const track = normalizeEvent({ ...base, context: { timezone: 'Asia/Tokyo' } }, 'a').row!;
    expect([track.trait_keys, track.trait_values, track.trait_types]).toEqual([['timezone'], ['Asia/Tokyo'], [1]]);
  });

  it('derives a deterministic event_id from the identifying fields only', () => {
    const id = (ev: Record<string, unknown>) => normalizeEvent(ev, 'a').row!.event_id;
    const ev = { ...base, properties: { a: 1, b: { c: 2, d: 3 } } };
    expect(id(ev)).toBe(id({ ...base, ts: '2024-05-01T14:00:00.5+02:00', properties: { b: { d: 3, c: 2 }, a: 1 } }));
    expect(id(ev)).toBe(id({ ...ev, context: { platform: 'ios' } })); // context is not part of the identity
    expect(id(ev)).not.toBe(id({ ...ev, user_id: 'u2' }));
    expect(id(ev)).not.toBe(id({ ...ev, event: 'click' }));
    expect(id(ev)).not.toBe(id({ ...ev, ts: '2024-05-01T12:00:01Z' }));
    expect(id(ev)).not.toBe(id({ ...ev, properties: { a: 2, b: { c: 2, d: 3 } } }));
    expect(normalizeEvent(ev, 'a').row!.event_id).not.toBe(normalizeEvent(ev, 'b').row!.event_id);
    expect(id({ ...ev, event_id: 'mine' })).toBe('mine');
    expect(canonicalJson({ b: 1, a: [{ d: 1, c: 2 }] })).toBe('{"a":[{"c":2,"d":1}],"b":1}');
  });
});

describe('event contract: HTTP accept and Kafka consumer', () => {
  let ch: ClickHouse;
  let kafka: Kafka;
  let topic: string;
  let producer: EventProducer;
  let consumer: IngestConsumer;

  beforeAll(async () => {
    ch = await testDatabase('ingest_contract');
    kafka = testKafka();
    topic = uniqueName('contract');
    producer = createEventProducer(kafka, topic);
    consumer = newConsumer(kafka, ch, topic);
    await consumer.start();
  });
  afterAll(async () => {
    await consumer?.stop();
    await producer?.close();
  });

  it('HTTP: answers per item, produces only the accepted ones', async () => {
    const r = await acceptEvents(producer, 'http_app', { batch: CASES.map((c) => c[1]) });
    expect(r.status).toBe(202);
    expect(r.accepted).toBe(validCount);
    expect(r.rejected.map((x) => x.index)).toEqual(CASES.flatMap((c, i) => (c[2] === null ? [] : [i])));
    for (const rej of r.rejected) expect(rej.errors.map((e) => e.path)).toContain(CASES[rej.index]![2]);
    expect(distinctValid('http_app')).toBeLessThan(validCount);
    expect(await waitFor(async () => (await countEvents(ch, 'http_app')).rows === distinctValid('http_app'))).toBe(true);
  });

  it('HTTP: body-level rules', async () => {
    expect((await acceptEvents(producer, 'http_app2', { ...base, app_id: 'other' })).status).toBe(400);
    const single = await acceptEvents(producer, 'http_app2', { ...base, event_id: 'single' });
    expect([single.status, single.accepted]).toEqual([202, 1]);
    // A batch is answered per item even when nothing in it is valid; a lone invalid event is a 400.
    const allBad = await acceptEvents(producer, 'http_app2', { batch: [{ user_id: 'x' }, { ...base, ts: 'no' }] });
    expect([allBad.status, allBad.accepted, allBad.rejected.map((r) => r.index)]).toEqual([202, 0, [0, 1]]);
    const oneBad = await acceptEvents(producer, 'http_app2', { ...base, ts: 'no' });
    expect([oneBad.status, oneBad.accepted, oneBad.rejected.length]).toEqual([400, 0, 1]);
    // Too many events is invalid input (400); 413 is only for the byte cap.
    const tooMany = await acceptEvents(producer, 'http_app2', { batch: Array.from({ length: MAX_BATCH_EVENTS + 1 }, () => base) });
    expect([tooMany.status, tooMany.errors]).toEqual([400, [{ path: 'batch', message: expect.any(String) }]]);
    expect((await acceptEvents(producer, 'http_app2', { batch: [] })).status).toBe(400);
    expect((await acceptEvents(producer, 'http_app2', { batch: {} })).status).toBe(400);
    expect((await acceptEvents(producer, 'http_app2', { batch: [base], extra: 1 })).status).toBe(400);
    expect((await acceptEvents(producer, 'http_app2', '{"user_id":')).status).toBe(400);
    expect((await acceptEvents(producer, 'http_app2', new Uint8Array(MAX_BODY_BYTES + 1))).status).toBe(413);
    const fromText = await acceptEvents(producer, 'http_app2', Buffer.from(JSON.stringify({ batch: [{ ...base, event_id: 'bytes' }] })));
    expect(fromText.status).toBe(202);
    expect(await waitFor(async () => (await countEvents(ch, 'http_app2')).rows === 2)).toBe(true);
  });

  it('Kafka: stores valid messages and dead-letters the rest with reasons and source', async () => {
    const messages = CASES.map((c) => ({
      key: `k${c[0]}`,
      value: JSON.stringify(typeof c[1] === 'object' && c[1] !== null && !Array.isArray(c[1]) ? { ...c[1], app_id: 'kafka_app' } : c[1]),
      headers: { 'x-origin': 'contract-test' },
    }));
    messages.push({ key: 'knoapp', value: JSON.stringify(base), headers: { 'x-origin': 'contract-test' } });
    messages.push({ key: 'kjson', value: '{"user_id": "u1", ', headers: { 'x-origin': 'contract-test' } });
    const invalid = messages.length - validCount;
    await produceRaw(kafka, topic, messages);
    expect(await waitFor(async () => (await countEvents(ch, 'kafka_app')).rows === distinctValid('kafka_app'))).toBe(true);

    const dlq = await readTopic(kafka, `${topic}.dlq`, invalid);
    expect(dlq.length).toBe(invalid);
    const byKey = new Map(dlq.map((d) => [d.key!.toString(), d]));
    for (const [i, c] of CASES.entries()) {
      const d = byKey.get(`k${c[0]}`);
      if (c[2] === null) {
        expect(d, c[0]).toBeUndefined();
        continue;
      }
      expect(d, c[0]).toBeDefined();
      expect(d!.value!.toString()).toBe(messages[i]!.value); // the original bytes
      const errors = JSON.parse(d!.headers![DLQ_HEADERS.errors]!.toString()) as { path: string }[];
      expect(errors.map((e) => e.path)).toContain(c[2]);
      expect(d!.headers![DLQ_HEADERS.topic]!.toString()).toBe(topic);
      expect(Number(d!.headers![DLQ_HEADERS.partition]!.toString())).toBeGreaterThanOrEqual(0);
      expect(d!.headers![DLQ_HEADERS.offset]!.toString()).toMatch(/^\d+$/);
      expect(d!.headers!['x-origin']!.toString()).toBe('contract-test');
    }
    expect(byKey.get('knoapp')!.headers![DLQ_HEADERS.reason]!.toString()).toBe('invalid_app_id');
    expect(byKey.get('kjson')!.headers![DLQ_HEADERS.reason]!.toString()).toBe('invalid_json');

    const stats = await ingestStats(ch);
    expect(stats.dead_lettered).toBe(invalid);
    expect(stats.dead_lettered_by_reason.invalid_json).toBe(1);
    // null, [1,2], the one without app_id and the non-JSON one count under app ''.
    expect((await ingestStats(ch, 'kafka_app')).dead_lettered).toBe(invalid - 4);
  });

  it('stored rows carry the normalised values and feed user_traits', async () => {
    const times = await ch.rows<{ t: number }>(
      sql`SELECT DISTINCT toUInt32(ts) AS t FROM events WHERE app_id = 'kafka_app' ORDER BY t`,
    );
    const s = Date.UTC(2024, 4, 1, 12) / 1000;
    // epoch 0, the contract's base time (whatever the offset or fraction it was sent with), and the 23h-ahead case.
    expect(times.map((r) => Number(r.t)).slice(0, 2)).toEqual([0, s]);
    expect(times.length).toBe(3);
    const traits = await ch.rows<{ key: string; value: string; value_type: number }>(
      sql`SELECT key, value, value_type FROM traits_current WHERE app_id = 'kafka_app' AND user_id = 'u1' ORDER BY key`,
    );
    expect(traits.map((t) => t.key)).toEqual(expect.arrayContaining(['plan', 'age', 'vip', 'platform', 'country', 'timezone', 'locale', 'app_version']));
    expect(traits.find((t) => t.key === 'gone')).toBeUndefined();
  });
});
