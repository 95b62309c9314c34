// What the HTTP layer costs: GET /v1/users/{id} and POST /v1/segments/evaluate
// (count only) through `warbler serve` on loopback, against the same work done
// directly in-process (getProfile / evaluateSegment: the same ClickHouse
// queries, no HTTP), at rising request rates. Open loop: requests are sent on
// a schedule, so a slow answer does not slow the offered load down.
// Bounded: each step lasts --seconds and at most --max-inflight requests are
// outstanding (a request that would exceed it is counted as dropped).
// Usage: npx tsx bench/api.ts [--users 50000] [--pairs 200] [--rates 5,10,20,40] [--seconds 4]
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { hashKey } from '../api/auth.ts';
import { ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig, REPO_ROOT } from '../lib/config.ts';
import { migrate } from '../lib/migrate.ts';
import { ident, sql } from '../lib/sql.ts';
import { up } from '../lib/stack.ts';
import { buildProfiles } from '../profiles/job.ts';
import { getProfile } from '../profiles/read.ts';
import { evaluateSegment } from '../segments/evaluate.ts';

const { values } = parseArgs({
  options: {
    users: { type: 'string', default: '50000' },
    rates: { type: 'string', default: '5,10,20,40' },
    pairs: { type: 'string', default: '200' },
    seconds: { type: 'string', default: '4' },
    'max-inflight': { type: 'string', default: '64' },
  },
});
const USERS = Number(values.users);
const RATES = values.rates.split(',').map(Number);
const SECONDS = Number(values.seconds);
const PAIRS = Number(values.pairs);
const MAX_INFLIGHT = Number(values['max-inflight']);
const APP = 'bench';
const KEY = 'bench-key-' + Date.now();
const EXPRESSION = 'did(view, count >= 3, within 30d) and not did(purchase, within 30d)';

const cfg = loadConfig();
const stack = await up(cfg);
const db = `bench_api_${Date.now()}`;
const ch = new ClickHouse({ url: stack.clickhouseUrl, database: db, queryTimeoutS: 3600 });
await migrate(ch);
const now = Math.floor(Date.now() / 1000);
process.stderr.write(`loading ${USERS * 20} events for ${USERS} users into ${db}…\n`);
await ch.exec(
  sql`INSERT INTO events (app_id, user_id, ts, event_id, type, event, prop_keys, prop_strings, prop_numbers, properties, context, received_at)
      SELECT ${APP}, concat('u', toString(intHash32(number) % ${USERS})), toDateTime(${now - 90 * 86400} + intHash64(number) % ${90 * 86400}),
             hex(intHash64(number + 7)), 'track', arrayElement(['view', 'view', 'click', 'purchase'], 1 + number % 4),
             ['amount'], [toString(number % 100)], [toFloat64(number % 100)], '{}', '{}', now()
      FROM numbers(${USERS * 20})`,
  { timeoutS: 3600 },
);
process.stderr.write('building profiles…\n');
const built = await buildProfiles(ch, APP, { mode: 'full' });
process.stderr.write(`profiles: ${built.users} users in ${built.seconds.toFixed(1)} s\n`);

// The API in its own process, as deployed (the load generator would otherwise share its event loop).
const home = mkdtempSync(join(tmpdir(), 'warbler-bench-api-'));
const server = spawn(process.execPath, ['--import', 'tsx', '-e', "import('./cli/serve.ts').then(m => m.runServe(['--port', '0', '--no-demo-key'])).then(c => process.exit(c))"], {
  cwd: REPO_ROOT,
  env: {
    ...process.env,
    WARBLER_HOME: home,
    WARBLER_CLICKHOUSE_URL: stack.clickhouseUrl,
    WARBLER_CLICKHOUSE_DATABASE: db,
    WARBLER_KAFKA_BROKERS: stack.kafkaBrokers.join(','),
    WARBLER_API_KEYS: JSON.stringify({ keys: [{ app_id: APP, roles: ['read'], sha256: hashKey(KEY) }] }),
    WARBLER_LOG_LEVEL: 'warn',
  },
  stdio: ['ignore', 'pipe', 'inherit'],
});
const url = await new Promise<string>((resolve, reject) => {
  let out = '';
  server.stdout!.on('data', (d) => {
    out += d;
    const m = /listening on (\S+)/.exec(out);
    if (m?.[1]) resolve(m[1]);
  });
  server.once('exit', (code) => reject(new Error(`serve exited with ${code}`)));
});

const userId = (i: number) => `u${(i * 7919) % USERS}`;
const headers = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };

type Op = (i: number) => Promise<void>;
const targets: Record<string, { api: Op; direct: Op }> = {
  'GET /v1/users/{id}': {
    api: async (i) => {
      const r = await fetch(`${url}/v1/users/${userId(i)}`, { headers });
      if (r.status !== 200) throw new Error(`status ${r.status}`);
      await r.arrayBuffer();
    },
    direct: async (i) => {
      if (!(await getProfile(ch, APP, userId(i)))) throw new Error('no profile');
    },
  },
  'POST /v1/segments/evaluate (count)': {
    api: async () => {
      const r = await fetch(`${url}/v1/segments/evaluate`, { method: 'POST', headers, body: JSON.stringify({ expression: EXPRESSION, limit: 0 }) });
      if (r.status !== 200) throw new Error(`status ${r.status}: ${await r.text()}`);
      await r.arrayBuffer();
    },
    direct: async () => {
      await evaluateSegment(ch, APP, EXPRESSION, { limit: 0 });
    },
  },
};

interface Step {
  rate: number;
  sent: number;
  ok: number;
  errors: number;
  dropped: number;
  throughput: number;
  p50_ms: number;
  p99_ms: number;
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;

async function step(op: Op, rate: number): Promise<Step> {
  const latencies: number[] = [];
  let inflight = 0;
  let sent = 0;
  let errors = 0;
  let dropped = 0;
  const pending: Promise<void>[] = [];
  const start = performance.now();
  const total = Math.round(rate * SECONDS);
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    if (inflight >= MAX_INFLIGHT) {
      dropped++;
      continue;
    }
    inflight++;
    sent++;
    const t = performance.now();
    pending.push(
      op(i).then(
        () => void latencies.push(performance.now() - t),
        () => void errors++,
      ).finally(() => inflight--),
    );
  }
  await Promise.all(pending);
  const elapsed = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return { rate, sent, ok: latencies.length, errors, dropped, throughput: +(latencies.length / elapsed).toFixed(1), p50_ms: +pct(latencies, 0.5).toFixed(2), p99_ms: +pct(latencies, 0.99).toFixed(2) };
}

/** One request at a time, API and direct alternating, so drift in the machine's load hits both alike. */
async function paired(t: { api: Op; direct: Op }, n: number): Promise<{ n: number; api_p50_ms: number; direct_p50_ms: number; api_p99_ms: number; direct_p99_ms: number; p50_overhead: number }> {
  const a: number[] = [];
  const d: number[] = [];
  for (let i = 0; i < n; i++) {
    let s = performance.now();
    await t.direct(i);
    d.push(performance.now() - s);
    s = performance.now();
    await t.api(i);
    a.push(performance.now() - s);
  }
  a.sort((x, y) => x - y);
  d.sort((x, y) => x - y);
  const ap50 = pct(a, 0.5);
  const dp50 = pct(d, 0.5);
  return { n, api_p50_ms: +ap50.toFixed(2), direct_p50_ms: +dp50.toFixed(2), api_p99_ms: +pct(a, 0.99).toFixed(2), direct_p99_ms: +pct(d, 0.99).toFixed(2), p50_overhead: +(ap50 / dp50 - 1).toFixed(3) };
}

const results: Record<string, { sequential: Awaited<ReturnType<typeof paired>>; api: Step[]; direct: Step[] }> = {};
for (const [name, t] of Object.entries(targets)) {
  // Warm both paths (connections, JIT, ClickHouse caches).
  for (let i = 0; i < 20; i++) {
    await t.api(i);
    await t.direct(i);
  }
  const sequential = await paired(t, PAIRS);
  process.stderr.write(`${name} sequential: api p50 ${sequential.api_p50_ms} ms, direct p50 ${sequential.direct_p50_ms} ms, overhead ${(sequential.p50_overhead * 100).toFixed(1)}%\n`);
  const api: Step[] = [];
  const direct: Step[] = [];
  for (const rate of RATES) {
    // Interleaved per rate so drift in the machine's load hits both alike.
    direct.push(await step(t.direct, rate));
    api.push(await step(t.api, rate));
    process.stderr.write(`${name} @${rate}/s: api p50 ${api.at(-1)!.p50_ms} ms p99 ${api.at(-1)!.p99_ms} ms | direct p50 ${direct.at(-1)!.p50_ms} ms p99 ${direct.at(-1)!.p99_ms} ms\n`);
  }
  results[name] = { sequential, api, direct };
}

server.kill('SIGTERM');
await new Promise((r) => server.once('exit', r));

const out = { users: USERS, events: USERS * 20, rates: RATES, seconds_per_step: SECONDS, max_inflight: MAX_INFLIGHT, expression: EXPRESSION, target_p50_overhead: 0.2, results };
writeFileSync('bench/results/api.json', JSON.stringify(out, null, 2) + '\n');
const table = (name: string) => {
  const r = results[name]!;
  const rows = r.api.map((a, i) => {
    const d = r.direct[i]!;
    return `| ${a.rate} | ${a.throughput} | ${a.p50_ms} | ${a.p99_ms} | ${d.throughput} | ${d.p50_ms} | ${d.p99_ms} | ${((a.p50_ms / d.p50_ms - 1) * 100).toFixed(0)}% | ${a.errors + a.dropped}/${d.errors + d.dropped} |`;
  });
  const q = r.sequential;
  return `## ${name}\n\nOne at a time, API and direct alternating (${q.n} pairs): API p50 ${q.api_p50_ms} ms (p99 ${q.api_p99_ms}), direct p50 ${q.direct_p50_ms} ms (p99 ${q.direct_p99_ms}) — **p50 overhead ${(q.p50_overhead * 100).toFixed(1)}%** (target ≤ 20%).\n\nAt rising offered rates:\n\n| offered req/s | API req/s | API p50 ms | API p99 ms | direct req/s | direct p50 ms | direct p99 ms | p50 overhead | errors+dropped (api/direct) |\n|---|---|---|---|---|---|---|---|---|\n${rows.join('\n')}\n`;
};
writeFileSync(
  'bench/results/api.md',
  `# API overhead over direct queries (${USERS.toLocaleString('en')} users, ${(USERS * 20).toLocaleString('en')} events)\n\n` +
    `Loopback, \`warbler serve\` in its own process, open-loop load for ${SECONDS} s per step (at most ${MAX_INFLIGHT} in flight). ` +
    `"direct" runs the same library calls (the same ClickHouse queries) in-process without HTTP. Target: the API adds ≤ 20% to the direct p50, measured one request at a time with the two alternating. ` +
    `The machine has 2 cores shared by ClickHouse, the API process and this load generator, so the rate steps show where that box saturates, not a server's capacity.\n\n` +
    Object.keys(results).map(table).join('\n'),
);
console.log(JSON.stringify(Object.fromEntries(Object.entries(results).map(([k, v]) => [k, v.sequential.p50_overhead]))));
const root = ch.withDatabase('default');
await root.exec(sql`DROP DATABASE ${ident(db)}`);
await root.close();
await ch.close();
