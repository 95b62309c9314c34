// `warbler serve`: the HTTP API on Node's http server. Writes
// $WARBLER_HOME/api.pid (so `warbler down` can stop it) and shuts down
// gracefully on SIGTERM/SIGINT: stop accepting, let in-flight requests finish,
// then close the Kafka producer and ClickHouse. It also runs the profile
// schedule (WARBLER_PROFILE_INTERVAL_S).
//
// It listens whether or not Kafka answers: the producer connects in the
// background, retrying until it does. Until then /healthz says kafka is not ok
// (503), POST /v1/events answers 503 (nothing is taken without Kafka's ack),
// and the routes that only read ClickHouse work.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createApp } from '../api/app.ts';
import { ensureDemoKey, KeyStore } from '../api/auth.ts';
import { listen } from '../api/node-server.ts';
import { ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig } from '../lib/config.ts';
import { stopJobs } from '../lib/jobs.ts';
import type { Producer } from 'kafkajs';
import { createProducer, kafkaFromConfig } from '../lib/kafka.ts';
import { log } from '../lib/log.ts';
import { isAlive } from '../lib/stack.ts';
import { appsWithEvents, startProfileScheduler } from '../profiles/scheduler.ts';

const USAGE = `usage: warbler serve [--host H] [--port P] [--no-demo-key]

Serves the HTTP API (default ${'$'}WARBLER_API_HOST:${'$'}WARBLER_API_PORT, 127.0.0.1:8080).
API keys come from ${'$'}WARBLER_KEYS_FILE (default ${'$'}WARBLER_HOME/keys.json) and/or
${'$'}WARBLER_API_KEYS (the same JSON inline). When neither exists, an admin key for
the app "demo" is created and saved to ${'$'}WARBLER_HOME/demo-admin-key.txt (mode 600),
unless --no-demo-key is given.

Every ${'$'}WARBLER_PROFILE_INTERVAL_S seconds (default 300; 0 = never) it also runs a
profile job for each app with events: incremental, and full when the app's last
full run is ${'$'}WARBLER_PROFILE_FULL_EVERY_S old (default 86400; 0 = never).`;

/**
 * Connects `producer` in the background, retrying (1 s, doubling to 30 s between
 * attempts; each attempt is kafkajs's own connect with its retries) until it
 * connects or `stop` is called. `connected()` is true once it has, until the
 * producer disconnects.
 */
export function connectInBackground(producer: Producer): { connected(): boolean; settled(): boolean; stop(): void } {
  let connected = false;
  let stopped = false;
  let settled = false;
  const wake = new AbortController();
  producer.on(producer.events.CONNECT, () => (connected = true));
  producer.on(producer.events.DISCONNECT, () => (connected = false));
  void (async () => {
    for (let attempt = 0; !stopped; attempt++) {
      try {
        await producer.connect();
        connected = true;
        if (!stopped) log.info('kafka producer connected', { attempts: attempt + 1 });
        break;
      } catch (e) {
        if (stopped) break;
        const waitMs = Math.min(30_000, 1000 * 2 ** Math.min(attempt, 5));
        log.warn('kafka is unreachable; events are refused (503) until the producer connects', { error: (e as Error).message, retry_in_ms: waitMs });
        await sleep(waitMs, undefined, { signal: wake.signal }).catch(() => undefined);
      }
    }
    settled = true;
  })();
  return {
    connected: () => connected,
    settled: () => settled,
    stop() {
      stopped = true;
      wake.abort();
    },
  };
}

export async function runServe(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      host: { type: 'string' },
      port: { type: 'string' },
      'no-demo-key': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const cfg = loadConfig();
  const host = values.host ?? cfg.WARBLER_API_HOST;
  const port = values.port !== undefined ? Number(values.port) : cfg.WARBLER_API_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`warbler serve: --port must be 0..65535\n`);
    return 2;
  }

  const pidFile = join(cfg.WARBLER_HOME, 'api.pid');
  if (existsSync(pidFile)) {
    const other = Number(readFileSync(pidFile, 'utf8'));
    if (other !== process.pid && isAlive(other)) {
      process.stderr.write(`warbler serve: already running (pid ${other}, ${pidFile}); stop it with \`warbler down\` or kill ${other}\n`);
      return 1;
    }
  }

  if (!values['no-demo-key'] && !process.env.WARBLER_API_KEYS) {
    const demo = ensureDemoKey(cfg);
    if (demo.created) {
      process.stdout.write(`created an admin API key for app "demo": ${demo.key}\n  (saved to ${demo.keyFile}, mode 600; hashed in ${demo.file})\n`);
    }
  }
  const keys = KeyStore.fromConfig(cfg);

  // Jobs and exports run long; request queries get their own limit (limits.queryTimeoutS).
  const ch = new ClickHouse({
    url: cfg.clickhouseUrl,
    database: cfg.WARBLER_CLICKHOUSE_DATABASE,
    username: cfg.WARBLER_CLICKHOUSE_USER,
    password: cfg.WARBLER_CLICKHOUSE_PASSWORD,
    queryTimeoutS: 3600,
  });
  const kafka = kafkaFromConfig(cfg, 'warbler-api');
  const producer = createProducer(kafka);
  // Not awaited: the API listens (and /healthz reports Kafka) while Kafka is unreachable.
  const link = connectInBackground(producer);

  const { app, ctx } = createApp({ ch, producer, kafka, config: cfg, keys, kafkaConnected: link.connected });
  // The server's own cap on every body: the largest any route takes (each route enforces its own).
  const maxBodyBytes = Math.max(ctx.limits.maxBodyBytes, ...ctx.routes.map((r) => r.spec.bodyLimit ?? 0));
  const server = await listen(app.fetch, { host, port, maxBodyBytes });
  mkdirSync(cfg.WARBLER_HOME, { recursive: true });
  writeFileSync(pidFile, String(process.pid));
  log.info('api listening', { url: server.url, keys: keys.size, database: cfg.WARBLER_CLICKHOUSE_DATABASE, pid_file: pidFile });
  process.stdout.write(`warbler api listening on ${server.url} (pid ${process.pid})\n`);
  // Profiles stay fresh without anyone asking: a run per app every interval,
  // full once a day by default. Several API processes may run this; the job
  // registry lets one profile job per app run at a time.
  const scheduler = startProfileScheduler(ch, () => appsWithEvents(ch), cfg.WARBLER_PROFILE_INTERVAL_S, cfg.WARBLER_PROFILE_FULL_EVERY_S);

  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info('api stopping', { signal });
      // Queued jobs (an API job, a profile run a segment evaluation waits for) give up now.
      stopJobs();
      try {
        await server.close(15_000);
        link.stop();
        if (!(await scheduler.stop(15_000))) log.warn('a scheduled profile job was still running at shutdown; it is abandoned and a later run redoes it');
        await producer.disconnect().catch((e) => log.warn('producer disconnect failed', { error: e }));
        await ctx.events?.close().catch((e) => log.warn('events producer disconnect failed', { error: e }));
        await ch.close();
      } finally {
        if (existsSync(pidFile) && readFileSync(pidFile, 'utf8') === String(process.pid)) rmSync(pidFile);
        log.info('api stopped');
        // A connect attempt still retrying (kafkajs cannot cancel one) would hold
        // the process up to a minute after everything else stopped.
        if (!link.settled()) setTimeout(() => process.exit(), 100).unref();
        resolve();
      }
    };
    process.once('SIGTERM', () => void stop('SIGTERM'));
    process.once('SIGINT', () => void stop('SIGINT'));
  });
  return 0;
}
