// `warbler ingest [--workers N]`: runs the ingest consumer, or N consumer
// processes in one group (they share the topic's partitions; adding one
// rebalances). Stops cleanly on SIGTERM/SIGINT; `warbler down` sends SIGTERM
// to the pid in $WARBLER_HOME/ingest.pid. If kafkajs crashes the consumer
// without restarting it, the process exits with status 1 (the --workers
// supervisor restarts such a worker).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig } from '../lib/config.ts';
import { kafkaFromConfig } from '../lib/kafka.ts';
import { log } from '../lib/log.ts';
import { migrate } from '../lib/migrate.ts';
import { IngestConsumer } from '../ingest/consumer.ts';
import { ingestNodeFlags } from '../lib/stack.ts';

const USAGE = `usage: warbler ingest [--workers N] [--topic T] [--group G] [--batch-size N] [--batch-ms MS]

Consumes events from Kafka into ClickHouse (at-least-once delivery, each event stored once).
  --workers N      run N consumer processes in one group (default 1)
  --topic T        events topic (default $WARBLER_EVENTS_TOPIC or "events")
  --group G        consumer group (default $WARBLER_CONSUMER_GROUP or "warbler-ingest")
  --batch-size N   close a batch at N messages (default $WARBLER_BATCH_MAX_EVENTS)
  --batch-ms MS    close a batch MS after its first message (default $WARBLER_BATCH_MAX_MS)
  --dlq T          dead-letter topic (default $WARBLER_DLQ_TOPIC or "events.dlq")
  --session-timeout-ms N  consumer group session timeout (default 30000; a dead worker's partitions move after it)`;

const CHILD_ENV = 'WARBLER_INGEST_CHILD';

function positiveInt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

/** Heartbeats a tenth of the session timeout, rebalances bounded by twice it. */
function groupTimings(sessionTimeoutMs: number | undefined): { sessionTimeoutMs?: number; heartbeatIntervalMs?: number; rebalanceTimeoutMs?: number } {
  if (sessionTimeoutMs === undefined) return {};
  return { sessionTimeoutMs, heartbeatIntervalMs: Math.max(100, Math.floor(sessionTimeoutMs / 10)), rebalanceTimeoutMs: sessionTimeoutMs * 2 };
}

function writePidFile(file: string): () => void {
  mkdirSync(join(file, '..'), { recursive: true });
  writeFileSync(file, String(process.pid));
  return () => {
    try {
      if (existsSync(file) && readFileSync(file, 'utf8').trim() === String(process.pid)) unlinkSync(file);
    } catch {
      /* best effort */
    }
  };
}

/** Resolves on the first SIGTERM or SIGINT. */
function terminationSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
}

export async function runIngest(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      workers: { type: 'string' },
      topic: { type: 'string' },
      group: { type: 'string' },
      'batch-size': { type: 'string' },
      'batch-ms': { type: 'string' },
      dlq: { type: 'string' },
      'session-timeout-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const cfg = loadConfig();
  const workers = positiveInt('workers', values.workers) ?? 1;
  const isChild = process.env[CHILD_ENV] === '1';

  if (workers > 1) return runWorkers(workers, argv, join(cfg.WARBLER_HOME, 'ingest.pid'));

  const ch = new ClickHouse({
    url: cfg.clickhouseUrl,
    database: cfg.WARBLER_CLICKHOUSE_DATABASE,
    username: cfg.WARBLER_CLICKHOUSE_USER,
    password: cfg.WARBLER_CLICKHOUSE_PASSWORD,
  });
  const removePid = isChild ? () => {} : writePidFile(join(cfg.WARBLER_HOME, 'ingest.pid'));
  const stopped = terminationSignal();
  try {
    if (!isChild) {
      // A service started before its database (a reboot, a deploy) waits for it
      // rather than exiting; nothing is consumed meanwhile, so nothing is lost.
      if (!(await reachable(ch, cfg.clickhouseUrl, stopped))) return 0;
      await migrate(ch);
    }
    const consumer = new IngestConsumer({
      kafka: kafkaFromConfig(cfg, `warbler-ingest-${process.pid}`),
      ch,
      topic: values.topic ?? cfg.WARBLER_EVENTS_TOPIC,
      dlqTopic: values.dlq ?? cfg.WARBLER_DLQ_TOPIC,
      groupId: values.group ?? cfg.WARBLER_CONSUMER_GROUP,
      batchMaxEvents: positiveInt('batch-size', values['batch-size']) ?? cfg.WARBLER_BATCH_MAX_EVENTS,
      batchMaxMs: positiveInt('batch-ms', values['batch-ms']) ?? cfg.WARBLER_BATCH_MAX_MS,
      ...groupTimings(positiveInt('session-timeout-ms', values['session-timeout-ms'])),
    });
    await consumer.start();
    const outcome = await Promise.race([stopped.then((signal) => ({ signal })), consumer.crashed.then((error) => ({ error }))]);
    if ('error' in outcome) {
      // kafkajs gave up on this consumer: staying up would look healthy while
      // consuming nothing. Exit non-zero so a supervisor (or --workers) restarts it.
      log.error('ingest consumer crashed and will not resume; exiting with status 1', { error: outcome.error });
      await consumer.stop().catch((err: unknown) => log.warn('stopping the crashed consumer failed', { error: err }));
      return 1;
    }
    log.info('stopping ingest', { signal: outcome.signal });
    await consumer.stop();
    return 0;
  } finally {
    removePid();
    await ch.close();
  }
}

/** Waits until ClickHouse answers (true), retrying with a growing pause, or until a signal stops the wait (false). */
async function reachable(ch: ClickHouse, url: string, stopped: Promise<string>): Promise<boolean> {
  let stop = false;
  void stopped.then(() => (stop = true));
  for (let delayMs = 1000; ; delayMs = Math.min(delayMs * 2, 30_000)) {
    if (await ch.ping()) return true;
    if (stop) return false;
    log.warn('ClickHouse is unreachable; waiting for it before consuming (start it with `warbler up`, or check WARBLER_CLICKHOUSE_URL)', { url, retry_in_ms: delayMs });
    await Promise.race([new Promise((r) => setTimeout(r, delayMs)), stopped]);
    if (stop) return false;
  }
}

/** The supervisor: N child processes running `warbler ingest`, restarted if they die, stopped together. */
async function runWorkers(n: number, argv: string[], pidFile: string): Promise<number> {
  const cfg = loadConfig();
  const ch = new ClickHouse({ url: cfg.clickhouseUrl, database: cfg.WARBLER_CLICKHOUSE_DATABASE, username: cfg.WARBLER_CLICKHOUSE_USER, password: cfg.WARBLER_CLICKHOUSE_PASSWORD });
  try {
    await migrate(ch); // once here, not racing in every child
  } finally {
    await ch.close();
  }
  const childArgs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--workers') i++;
    else if (!a.startsWith('--workers=')) childArgs.push(a);
  }
  // process.argv[1] is the entry (bin/warbler.js, cli/main.ts or this file); each takes `ingest …`.
  // execArgv carries tsx's loader when present.
  const entry = process.argv[1] as string;
  const removePid = writePidFile(pidFile);
  let stopping = false;
  const children = new Map<number, ChildProcess>();
  const exited: Promise<void>[] = [];
  const startChild = (slot: number): void => {
    const child = spawn(process.execPath, [...ingestNodeFlags(), ...process.execArgv, entry, 'ingest', ...childArgs], {
      env: { ...process.env, [CHILD_ENV]: '1' },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    children.set(slot, child);
    log.info('ingest worker started', { slot, pid: child.pid });
    exited.push(
      new Promise((resolve) => {
        child.once('exit', (code, signal) => {
          children.delete(slot);
          resolve();
          if (!stopping) {
            log.warn('ingest worker exited; restarting', { slot, pid: child.pid, code, signal });
            void sleep(1000).then(() => {
              if (!stopping) startChild(slot);
            });
          }
        });
      }),
    );
  };
  for (let i = 0; i < n; i++) startChild(i);
  const signal = await terminationSignal();
  stopping = true;
  log.info('stopping ingest workers', { signal, workers: children.size });
  for (const c of children.values()) c.kill('SIGTERM');
  await Promise.all(exited);
  removePid();
  return 0;
}

// Also runnable on its own: `node --import tsx cli/ingest.ts [ingest] [options]`.
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  if (args[0] === 'ingest') args.shift();
  runIngest(args).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      log.error('ingest failed', { error: err });
      process.exitCode = 1;
    },
  );
}
