// `warbler demo`: the whole pipeline on the local default, as a user would run
// it — stack up, schema, demo events streamed through Kafka into ClickHouse by
// the ingest consumer, profiles, clusters, the API in the background — then a
// report made of real answers from the running API.
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureDemoKey } from '../api/auth.ts';
import { generateEvents, userIdOf, type DemoRecord } from '../demo/generate.ts';
import { type ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig, type Config } from '../lib/config.ts';
import { createKafka, createProducer } from '../lib/kafka.ts';
import { migrate } from '../lib/migrate.ts';
import { ident, sql } from '../lib/sql.ts';
import { startDaemon, stopDaemon, up } from '../lib/stack.ts';
import { buildProfiles } from '../profiles/job.ts';
import { IN_FLIGHT_MARGIN_S } from '../profiles/run-at.ts';
import { trainClusters } from '../profiles/clusters-job.ts';
import { clickhouseFromConfig } from './stack.ts';

const USAGE = `usage: warbler demo [--users N] [--days D] [--seed S] [--keep]

  --users N   demo users to generate (default 20000; the generator's own default is 100000)
  --days D    days of history ending now (default 90)
  --seed S    generator seed (default 42)
  --keep      keep the existing demo database instead of starting afresh`;

const APP = 'demo';

/** Segments the report evaluates through the API: the questions a campaign manager asks. */
const EXAMPLE_SEGMENTS: { name: string; expression: string }[] = [
  { name: 'cart abandoners (3d)', expression: 'did(add_to_cart, within 3d) and not did(purchase, within 3d)' },
  { name: 'big spenders, 90d', expression: 'sum(purchase.amount, within 90d) > 200' },
  { name: 'lapsed buyers (win-back)', expression: 'stopped(purchase, within 30d, before 60d)' },
  { name: 'champions or loyal in US/DE', expression: 'rfm_segment in ("champions", "loyal") and country in ("US", "DE")' },
  { name: 'evening people, push opted in', expression: 'best_hour between 19 and 22 and push_opt_in = true' },
  { name: 'view → cart → buy within 1d (30d)', expression: 'sequence(view, add_to_cart, purchase, within 1d, in_last 30d)' },
];

function say(line: string): void {
  process.stderr.write(`[demo] ${line}\n`);
}

function elapsed(t0: number): string {
  return `${((performance.now() - t0) / 1000).toFixed(1)} s`;
}

async function consumerLag(admin: ReturnType<ReturnType<typeof createKafka>['admin']>, group: string, topic: string): Promise<number> {
  const [ends, committed] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId: group, topics: [topic] })]);
  const done = new Map((committed[0]?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
  let lag = 0;
  for (const p of ends) {
    const c = done.get(p.partition) ?? -1;
    lag += Number(p.high) - Math.max(c, Number(p.low));
  }
  return lag;
}

/**
 * Streams the generator's records into the events topic, keyed like every other
 * producer (app_id + user_id), pausing whenever the consumers fall behind: the
 * local mock broker keeps only a few MB per partition.
 */
async function produceDemoEvents(cfg: Config, records: Iterable<DemoRecord>, onProgress: (sent: number) => void): Promise<{ sent: number; valid: number }> {
  const kafka = createKafka(cfg.kafkaBrokers, 'warbler-demo');
  const producer = createProducer(kafka);
  const admin = kafka.admin();
  await Promise.all([producer.connect(), admin.connect()]);
  const topic = cfg.WARBLER_EVENTS_TOPIC;
  // Measured: the mock broker dropped unconsumed messages at 60k messages of lag
  // (~5 MB per partition); 20k stayed lossless (bench/results/ingest.md).
  const MAX_LAG = 20_000;
  let sent = 0;
  let valid = 0;
  let batch: { key: string; value: string }[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    await producer.send({ topic, acks: -1, messages: batch });
    sent += batch.length;
    batch = [];
    onProgress(sent);
  };
  try {
    for (const rec of records) {
      if (rec.kind === 'valid') valid += 1;
      batch.push({ key: `${APP}\u0000${userIdOf(rec.user)}`, value: rec.line });
      if (batch.length >= 5000) {
        await flush();
        while ((await consumerLag(admin, cfg.WARBLER_CONSUMER_GROUP, topic)) > MAX_LAG) await sleep(100);
      }
    }
    await flush();
    // Accepted by Kafka is not yet stored: wait until the group has committed
    // everything, which the consumer does only after ClickHouse has the rows.
    const t0 = performance.now();
    for (;;) {
      const lag = await consumerLag(admin, cfg.WARBLER_CONSUMER_GROUP, topic);
      if (lag === 0) break;
      if (performance.now() - t0 > 600_000) throw new Error(`ingest did not catch up (lag ${lag}); see ${cfg.WARBLER_HOME}/logs/ingest.log`);
      await sleep(250);
    }
  } finally {
    await Promise.all([producer.disconnect(), admin.disconnect()]);
  }
  return { sent, valid };
}

interface ApiClient {
  get<T>(path: string): Promise<T>;
  post<T>(path: string, body: unknown): Promise<T>;
}

function apiClient(base: string, key: string): ApiClient {
  const call = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path} → ${res.status}: ${text.slice(0, 500)}`);
    return JSON.parse(text) as T;
  };
  return { get: (p) => call('GET', p), post: (p, b) => call('POST', p, b) };
}

async function waitForApi(base: string, cfg: Config): Promise<void> {
  for (let i = 0; i < 120; i++) {
    try {
      const r = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (r.ok) return;
    } catch {
      /* not up yet */
    }
    await sleep(250);
  }
  throw new Error(`the API did not come up at ${base}; see ${cfg.WARBLER_HOME}/logs/api.log`);
}

async function resetDatabase(ch: ClickHouse): Promise<void> {
  const root = ch.withDatabase('default');
  try {
    await root.exec(sql`DROP DATABASE IF EXISTS ${ident(ch.database)}`);
  } finally {
    await root.close();
  }
}

export async function runDemo(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        users: { type: 'string', default: '20000' },
        days: { type: 'string', default: '90' },
        seed: { type: 'string', default: '42' },
        keep: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`warbler demo: ${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const users = Number(values.users);
  const days = Number(values.days);
  if (!Number.isInteger(users) || users < 100) throw new Error('--users must be an integer ≥ 100');
  if (!(days > 0 && days <= 3650)) throw new Error('--days must be in (0, 3650]');

  const tAll = performance.now();
  let cfg = loadConfig();
  say('starting the local stack (installs clickhouse-server, clickhouse-client and kcat when missing)…');
  await up(cfg);
  cfg = loadConfig(); // the broker's ports are known only now
  await stopDaemon(cfg, 'api');
  await stopDaemon(cfg, 'ingest');

  const ch = clickhouseFromConfig(cfg);
  try {
    if (!values.keep) {
      say(`resetting database ${ch.database} (demo data only lives here; --keep keeps it)`);
      await resetDatabase(ch);
    }
    const m = await migrate(ch);
    say(`schema: ${m.applied.length} migrations applied, ${m.skipped.length} already there`);

    say('starting the ingest consumer (warbler ingest) in the background');
    startDaemon(cfg, 'ingest', ['ingest']);

    const end = new Date(Math.floor(Date.now() / 60_000) * 60_000);
    say(`generating ${users.toLocaleString('en')} users × ${days} days of events (seed ${values.seed}) into Kafka topic ${cfg.WARBLER_EVENTS_TOPIC}…`);
    const tGen = performance.now();
    let lastShown = 0;
    const { sent: produced, valid } = await produceDemoEvents(cfg, generateEvents({ seed: values.seed, users, days, end, appId: APP }), (sent) => {
      if (sent - lastShown >= 250_000) {
        lastShown = sent;
        say(`  ${sent.toLocaleString('en')} messages sent`);
      }
    });
    const ingestSeconds = (performance.now() - tGen) / 1000;
    say(`  ${produced.toLocaleString('en')} messages produced and ingested in ${ingestSeconds.toFixed(1)} s`);

    // A reader at the demo's instant rebuilds a run that started within the
    // in-flight margin of an event's receipt (profiles/run-at.ts): the run is
    // built once the margin has passed, rather than twice by the first segments.
    const lastReceived = Number((await ch.one<{ t: string }>(sql`SELECT toUInt32(max(received_at)) AS t FROM events WHERE app_id = ${APP}`))?.t ?? 0);
    const waitMs = (lastReceived + IN_FLIGHT_MARGIN_S + 1) * 1000 - Date.now();
    if (waitMs > 0) {
      say(`waiting ${Math.ceil(waitMs / 1000)} s until the last events received are ${IN_FLIGHT_MARGIN_S} s old: a run started sooner is built again by its first reader at its instant (profiles/run-at.ts)`);
      await sleep(waitMs);
    }
    say('building profiles (full run)…');
    const tProf = performance.now();
    const run = await buildProfiles(ch, APP, { asOf: end, mode: 'full' });
    say(`  ${run.users.toLocaleString('en')} profiles in ${elapsed(tProf)}`);

    say('training clusters (k = auto)…');
    const tClu = performance.now();
    const clusters = await trainClusters(ch, APP, { k: 'auto' });
    say(`  k = ${clusters.k} in ${elapsed(tClu)}`);

    const key = ensureDemoKey(cfg);
    say('starting the API (warbler serve) in the background');
    startDaemon(cfg, 'api', ['serve']);
    const base = `http://${cfg.WARBLER_API_HOST}:${cfg.WARBLER_API_PORT}`;
    await waitForApi(base, cfg);
    if (!key.key) throw new Error(`the demo key's plaintext is missing from ${key.keyFile}; delete ${key.file} and rerun the demo to make a new one`);
    const api = apiClient(base, key.key);

    const stats = await api.get<{ events?: { total?: number } } & Record<string, unknown>>('/v1/stats');
    const stored = stats.events?.total ?? 0;
    // Every valid generated event must be stored exactly once; duplicates and
    // invalid events must not be. Say so loudly when that does not hold.
    const exact = stored === valid;
    const segmentLines: string[] = [];
    for (const s of EXAMPLE_SEGMENTS) {
      const t0 = performance.now();
      const r = await api.post<{ count: number }>('/v1/segments/evaluate', { expression: s.expression, as_of: end.toISOString(), limit: 0 });
      segmentLines.push(`  ${s.name.padEnd(36)} ${String(r.count).padStart(8)} users  ${((performance.now() - t0) / 1000).toFixed(3)} s   ${s.expression}`);
    }
    const model = await api.get<{ version: number; k: number; labels: string[]; sizes: number[]; silhouette?: number; quality?: Record<string, number> }>('/v1/clusters');
    const clusterLines = model.labels.map((l, i) => `  ${String(i + 1).padStart(2)}. ${l.padEnd(36)} ${String(model.sizes[i] ?? 0).padStart(8)} users`);

    const report = [
      '',
      '════════════════════════ Warbler demo ════════════════════════',
      `events produced to Kafka   ${produced.toLocaleString('en')} (incl. deliberate duplicates and invalid events)`,
      `events stored              ${stored.toLocaleString('en')} of ${valid.toLocaleString('en')} distinct valid events generated — ${exact ? 'exact' : 'MISMATCH: see ' + cfg.WARBLER_HOME + '/logs/ingest.log'}`,
      // by_day has a row per day of history: summarised, the rest as the API answers it.
      `stats (GET /v1/stats)      ${JSON.stringify({ ...stats, events: { ...stats.events, by_day: `${((stats.events as { by_day?: unknown[] } | undefined)?.by_day ?? []).length} days` } })}`,
      `profiles                   ${run.users.toLocaleString('en')} users at ${end.toISOString()}`,
      '',
      'example segments (POST /v1/segments/evaluate, count only, wall time through the API):',
      ...segmentLines,
      '',
      `clusters (GET /v1/clusters): model v${model.version}, k = ${model.k}`,
      ...clusterLines,
      '',
      `API        ${base}   (OpenAPI: ${base}/openapi.json, with the key below as a bearer token)`,
      `admin key  ${key.keyFile}   (app "demo"; keys file ${key.file})`,
      `try        curl -s -H "Authorization: Bearer $(cat ${key.keyFile})" -H 'content-type: application/json' \\`,
      `             -d '{"expression":"did(purchase, count >= 3, within 30d)","limit":5}' ${base}/v1/segments/evaluate`,
      `SQL        clickhouse-client --port ${cfg.WARBLER_CLICKHOUSE_TCP_PORT} --database ${ch.database}`,
      `stop       ./bin/warbler.js down`,
      `total      ${elapsed(tAll)}`,
      '',
    ];
    process.stdout.write(report.join('\n') + '\n');
    if (!exact) return 1;
  } finally {
    await ch.close();
  }
  return 0;
}
