// Shared pieces of the ingest tests: fast-joining consumers, raw producers,
// a TCP proxy that can cut ClickHouse off from one consumer, and polling.
import { type Kafka, type KafkaMessage } from 'kafkajs';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { createKafka, createProducer } from '../../lib/kafka.ts';
import { sql } from '../../lib/sql.ts';
import { IngestConsumer, type IngestConsumerOptions } from '../../ingest/consumer.ts';
import { REPO_ROOT } from '../../lib/config.ts';
import { clickhouseUrl, kafkaBrokers, uniqueName } from '../support/env.ts';

/** Group timings low enough that joins and rebalances take a second or two. */
export const FAST_GROUP = { sessionTimeoutMs: 6000, rebalanceTimeoutMs: 6000, heartbeatIntervalMs: 300 } as const;

export function testKafka(): Kafka {
  return createKafka(kafkaBrokers(), uniqueName('ingest-test'));
}

export function newConsumer(kafka: Kafka, ch: ClickHouse, topic: string, extra: Partial<IngestConsumerOptions> = {}): IngestConsumer {
  return new IngestConsumer({
    kafka,
    ch,
    topic,
    dlqTopic: `${topic}.dlq`,
    groupId: `${topic}-group`,
    batchMaxEvents: 2000,
    batchMaxMs: 500,
    retryInitialMs: 100,
    retryMaxMs: 1000,
    ...FAST_GROUP,
    ...extra,
  });
}

/** Produces raw messages (string or bytes values) with acks -1. */
export async function produceRaw(kafka: Kafka, topic: string, messages: { key?: string; value: string | Buffer | null; headers?: Record<string, string> }[]): Promise<void> {
  const p = createProducer(kafka);
  await p.connect();
  try {
    for (let i = 0; i < messages.length; i += 1000) await p.send({ topic, acks: -1, messages: messages.slice(i, i + 1000) });
  } finally {
    await p.disconnect();
  }
}

/** Reads every message of a topic from the beginning until `expected` arrived (or the timeout). */
export async function readTopic(kafka: Kafka, topic: string, expected: number, timeoutMs = 30_000): Promise<KafkaMessage[]> {
  const c = kafka.consumer({ groupId: uniqueName('reader'), ...{ sessionTimeout: 6000, heartbeatInterval: 300, rebalanceTimeout: 6000 } });
  const got: KafkaMessage[] = [];
  await c.connect();
  await c.subscribe({ topic, fromBeginning: true });
  await c.run({ eachMessage: async ({ message }) => void got.push(message) });
  const end = Date.now() + timeoutMs;
  while (got.length < expected && Date.now() < end) await sleep(100);
  await sleep(300); // anything beyond `expected` shows up as a failure, not silence
  await c.disconnect();
  return got;
}

export async function countEvents(ch: ClickHouse, appId: string): Promise<{ rows: number; ids: number }> {
  const r = await ch.rows<{ rows: string; ids: string }>(
    sql`SELECT count() AS rows, uniqExact(event_id) AS ids FROM events WHERE app_id = ${appId}`,
  );
  return { rows: Number(r[0]?.rows ?? 0), ids: Number(r[0]?.ids ?? 0) };
}

/** Polls until `check` returns true or the timeout passes; returns the last value of `check`. */
export async function waitFor(check: () => Promise<boolean>, timeoutMs = 60_000, everyMs = 200): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > end) return false;
    await sleep(everyMs);
  }
}

/** A TCP proxy to a target port that can refuse and cut connections, to make ClickHouse unreachable for one client. */
export class TcpProxy {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  port = 0;
  constructor(private readonly targetPort: number) {}

  async open(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.targetPort, '127.0.0.1');
      this.sockets.add(client).add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  /** Stops listening and cuts every open connection. */
  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    for (const sock of this.sockets) sock.destroy();
    this.sockets.clear();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

export function trackEvent(i: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    user_id: `u${i % 97}`,
    event: i % 10 === 0 ? 'purchase' : 'view',
    ts: Date.UTC(2024, 4, 1) + i * 1000,
    properties: { i, amount: i % 10 === 0 ? 10 : undefined, category: `c${i % 5}` },
    ...extra,
  };
}

/**
 * Runs a script of the repo (cli/ingest.ts, or a test child) in its own
 * process against the test database and broker, with a fresh WARBLER_HOME;
 * its stderr (the structured log) is collected.
 */
export function spawnIngest(script: string, args: string[], ch: ClickHouse, env: Record<string, string> = {}): { child: ChildProcess; home: string; stderr: () => string } {
  const home = mkdtempSync(join(tmpdir(), 'warbler-ingest-'));
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, script), ...args], {
    env: {
      ...process.env,
      WARBLER_HOME: home,
      WARBLER_CLICKHOUSE_URL: clickhouseUrl(),
      WARBLER_CLICKHOUSE_DATABASE: ch.database,
      WARBLER_KAFKA_BROKERS: kafkaBrokers().join(','),
      WARBLER_LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return { child, home, stderr: () => stderr };
}
