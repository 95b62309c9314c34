// Builds the API over the real test services: a fresh migrated database, the
// broker of the test stack, and keys for two apps with every role, so each
// test file can check roles and tenant isolation on the same app.
import { Kafka, logLevel, type Consumer, type Producer } from 'kafkajs';
import { afterAll, expect } from 'vitest';
import { createApp, type AppDeps, type Limits } from '../../api/app.ts';
import { KeyStore, type Role } from '../../api/auth.ts';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { loadConfig, type Config } from '../../lib/config.ts';
import { createKafka, createProducer } from '../../lib/kafka.ts';
import { kafkaBrokers, testDatabase, uniqueName } from '../support/env.ts';

export const APPS = ['app_a', 'app_b'] as const;
export type TestApp = (typeof APPS)[number];
export const ROLE_NAMES: Role[] = ['ingest', 'read', 'admin'];

/** The plaintext key of `app` with exactly `role`. */
export function keyOf(app: TestApp, role: Role): string {
  return `test-key-${app}-${role}`;
}

export function auth(app: TestApp, role: Role): Record<string, string> {
  return { authorization: `Bearer ${keyOf(app, role)}` };
}

export interface Harness {
  ch: ClickHouse;
  kafka: Kafka;
  producer: Producer;
  config: Config;
  app: ReturnType<typeof createApp>['app'];
  ctx: ReturnType<typeof createApp>['ctx'];
  membershipTopic: string;
  /** app.request with a JSON body and a key. */
  call(method: string, path: string, opts?: { as?: [TestApp, Role]; body?: unknown; headers?: Record<string, string> }): Promise<Response>;
}

export async function harness(opts: { limits?: Partial<Limits>; prefix?: string } = {}): Promise<Harness> {
  const ch = await testDatabase(opts.prefix ?? 'api');
  const membershipTopic = uniqueName('membership');
  const config = loadConfig({
    ...process.env,
    WARBLER_CLICKHOUSE_DATABASE: ch.database,
    WARBLER_KAFKA_BROKERS: kafkaBrokers().join(','),
    WARBLER_MEMBERSHIP_TOPIC: membershipTopic,
    WARBLER_EVENTS_TOPIC: uniqueName('events'),
    WARBLER_DLQ_TOPIC: uniqueName('dlq'),
  });
  const kafka = createKafka(kafkaBrokers(), uniqueName('api-test'));
  const producer = createProducer(kafka);
  await producer.connect();
  const keys = KeyStore.fromPlain(APPS.flatMap((app) => ROLE_NAMES.map((role) => ({ key: keyOf(app, role), appId: app, roles: [role] }))));
  const deps: AppDeps = { ch, producer, kafka, config, keys, limits: opts.limits };
  const { app, ctx } = createApp(deps);
  afterAll(async () => {
    await producer.disconnect();
    await ctx.events?.close();
  });
  return {
    ch,
    kafka,
    producer,
    config,
    app,
    ctx,
    membershipTopic,
    call(method, path, o = {}) {
      const headers: Record<string, string> = { ...(o.as ? auth(o.as[0], o.as[1]) : {}), ...o.headers };
      let body: string | undefined;
      if (o.body !== undefined) {
        body = typeof o.body === 'string' ? o.body : JSON.stringify(o.body);
        headers['content-type'] ??= 'application/json';
      }
      return Promise.resolve(app.request(path, { method, headers, body }));
    },
  };
}

/** Reads every message of a topic from the beginning until `expected` arrived or `timeoutMs` passed. */
export async function consumeAll(kafka: Kafka, topic: string, expected: number, timeoutMs = 20_000): Promise<{ key: string; value: unknown }[]> {
  const consumer: Consumer = kafka.consumer({ groupId: uniqueName('api-test-consumer'), maxWaitTimeInMs: 200 });
  const out: { key: string; value: unknown }[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    let resolveDone!: () => void;
    const done = new Promise<void>((r) => (resolveDone = r));
    await consumer.run({
      eachMessage: async ({ message }) => {
        out.push({ key: message.key?.toString() ?? '', value: JSON.parse(message.value?.toString() ?? 'null') });
        if (out.length >= expected) resolveDone();
      },
    });
    if (expected > 0) await Promise.race([done, new Promise((r) => setTimeout(r, timeoutMs))]);
    // A short grace period catches messages beyond `expected` (there must be none).
    await new Promise((r) => setTimeout(r, 500));
  } finally {
    await consumer.disconnect();
  }
  return out;
}

/** Checks a problem+json answer (RFC 9457 members present) and returns its body. */
export function expectProblem(res: Response, status: number): Promise<any> {
  expect(res.status).toBe(status);
  expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  return res.json().then((p: any) => {
    expect(p).toMatchObject({ status, type: expect.any(String), title: expect.any(String), detail: expect.any(String) });
    return p;
  });
}

export { logLevel };
