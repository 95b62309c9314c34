// `warbler serve` with Kafka unreachable at start: it listens anyway (the
// producer connects in the background), /healthz answers 503 with kafka not
// ok, POST /v1/events answers 503 — never 202 for events Kafka has not
// acknowledged — and the routes that read ClickHouse work. SIGTERM still stops
// it at once, although a connect attempt is still retrying.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toProblem } from '../../api/app.ts';
import { hashKey } from '../../api/auth.ts';
import { REPO_ROOT } from '../../lib/config.ts';
import { createKafka, createProducer } from '../../lib/kafka.ts';
import { clickhouseUrl, kafkaBrokers, testDatabase, uniqueName } from '../support/env.ts';

const KEY = 'wbk_test_kafka_down_admin';

interface Serve {
  child: ChildProcess;
  home: string;
  url: string;
  exited: Promise<number | null>;
}
const started: Serve[] = [];
let serve: Serve;
let url: string;

/** Starts `warbler serve` (the command itself, bin/warbler.js, which ends by setting process.exitCode, not by process.exit). */
async function startServe(database: string, env: Record<string, string> = {}): Promise<Serve> {
  const home = mkdtempSync(join(tmpdir(), 'warbler-serve-kafka-'));
  const child = spawn(process.execPath, ['bin/warbler.js', 'serve', '--port', '0', '--no-demo-key'], {
    cwd: REPO_ROOT,
    env: {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'WARBLER_KEYS_FILE')),
      WARBLER_HOME: home,
      WARBLER_API_KEYS: JSON.stringify({ keys: [{ app_id: 'demo', roles: ['admin'], sha256: hashKey(KEY) }] }),
      WARBLER_CLICKHOUSE_URL: clickhouseUrl(),
      WARBLER_CLICKHOUSE_DATABASE: database,
      // Nothing listens on port 1: connections are refused, and one kafkajs connect retries for ~50 s.
      WARBLER_KAFKA_BROKERS: '127.0.0.1:1',
      WARBLER_LOG_LEVEL: 'error',
      WARBLER_PROFILE_INTERVAL_S: '0',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const s: Serve = { child, home, url: '', exited };
  started.push(s);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  // Well before kafkajs would give up connecting.
  for (let i = 0; i < 200 && !/listening on (\S+)/.test(out); i++) {
    if (child.exitCode !== null) throw new Error(`serve exited: ${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  s.url = /listening on (\S+)/.exec(out)?.[1] as string;
  expect(s.url, `serve did not listen within 20 s: ${err}`).toBeTruthy();
  return s;
}

let database: string;

beforeAll(async () => {
  database = (await testDatabase('servekafka')).database;
  serve = await startServe(database);
  url = serve.url;
}, 60_000);

afterAll(() => {
  for (const s of started) if (s.child.exitCode === null) s.child.kill('SIGKILL');
});

const headers = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
const event = (i: number, extra: Record<string, unknown> = {}) => ({ user_id: `u${i}`, event: 'view', ts: Date.now() - 60_000, ...extra });

describe('warbler serve while Kafka is unreachable', () => {
  it('reports Kafka not ok on /healthz (503), ClickHouse ok', async () => {
    const res = await fetch(`${url}/healthz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ status: 'degraded', clickhouse: { ok: true }, kafka: { ok: false } });
  });

  it('answers 503 problem+json to events, single or batch', async () => {
    for (const body of [event(1), { batch: [event(1), event(2)] }, { batch: [event(1), { user_id: '' }] }]) {
      const res = await fetch(`${url}/v1/events`, { method: 'POST', headers, body: JSON.stringify(body) });
      expect(res.status).toBe(503);
      expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      expect(await res.json()).toMatchObject({ status: 503, detail: 'Kafka is unreachable; events are not accepted; retry' });
    }
    // Nothing to produce needs no Kafka: invalid input is still answered as such.
    let res = await fetch(`${url}/v1/events`, { method: 'POST', headers, body: JSON.stringify({ batch: [{ user_id: '' }] }) });
    expect(res.status).toBe(202);
    expect(await res.json()).toMatchObject({ accepted: 0, rejected: [{ index: 0 }] });
    res = await fetch(`${url}/v1/events`, { method: 'POST', headers, body: JSON.stringify({ user_id: '' }) });
    expect(res.status).toBe(400);
  });

  it('reads a batch larger than the default body cap (64 MiB) before answering', async () => {
    // 10,000 events with 7 KB of properties each: ~70 MB, a valid batch.
    const blob = 'x'.repeat(7000);
    const body = JSON.stringify({ batch: Array.from({ length: 10_000 }, (_, i) => event(i, { properties: { blob } })) });
    expect(body.length).toBeGreaterThan(64 * 1024 * 1024);
    const res = await fetch(`${url}/v1/events`, { method: 'POST', headers, body });
    expect(res.status).toBe(503);
  }, 60_000);

  it('serves the routes that read ClickHouse', async () => {
    const res = await fetch(`${url}/v1/stats`, { headers });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ app_id: 'demo', events: { total: 0 }, ingest_lag: { messages: null } });
    const ev = await fetch(`${url}/v1/segments/evaluate`, { method: 'POST', headers, body: JSON.stringify({ expression: 'did(view)' }) });
    expect(ev.status).toBe(200);
  });

  it('stops at once on SIGTERM, although a connect attempt is still retrying', async () => {
    // A fresh one, stopped a second after it listens: its first connect attempt is far from over.
    const fresh = await startServe(database);
    await new Promise((r) => setTimeout(r, 1000));
    for (const s of [fresh, serve]) {
      const t0 = Date.now();
      s.child.kill('SIGTERM');
      expect(await s.exited).toBe(0);
      // ~0.1 s; without giving up the attempt, ~5 s for a fresh one (as long as the attempt's retries run): a liveness bound, wide for a loaded machine.
      expect(Date.now() - t0).toBeLessThan(4000);
      expect(existsSync(join(s.home, 'api.pid'))).toBe(false);
    }
  }, 60_000);
});

describe('warbler serve once Kafka answers', () => {
  it('takes events as soon as its producer has connected in the background', async () => {
    const s = await startServe(database, { WARBLER_KAFKA_BROKERS: kafkaBrokers().join(','), WARBLER_EVENTS_TOPIC: uniqueName('serve-events') });
    let res: Response | undefined;
    for (let i = 0; i < 100; i++) {
      res = await fetch(`${s.url}/v1/events`, { method: 'POST', headers, body: JSON.stringify(event(1)) });
      if (res.status !== 503) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(res!.status).toBe(202);
    expect(await res!.json()).toEqual({ accepted: 1, rejected: [] });
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
  }, 60_000);
});

describe('a send on a producer that has not connected', () => {
  it('is a 503, not a 500', async () => {
    const producer = createProducer(createKafka(['127.0.0.1:1'], 'never-connected'));
    const e = await producer.send({ topic: 't', messages: [{ value: 'x' }] }).then(() => undefined, (x: unknown) => x);
    expect(toProblem(e)).toMatchObject({ status: 503 });
  });
});
