// What each materialized view on `events` costs the ingest insert. Every view
// runs inside the INSERT that stores the events (that is what keeps a derived
// row from existing without its event), so its cost lands on ingest throughput.
//
// Demo-generator events (time-ordered, as live traffic arrives) are decoded
// into stored rows once, then inserted through the sink (RowBinary, batches of
// the consumer's default size) into a fresh database per configuration: all
// views attached, and all but one, for each view. Configurations are
// interleaved over several rounds and the median is kept, since this machine is
// noisy; a view's cost is (all − all but it) / all but it, from the same run.
// Results: bench/results/views.json and .md. Never asserted by tests.
//
//   npx tsx bench/views.ts [--events 300000] [--rounds 3]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { KafkaMessage } from 'kafkajs';
import { ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig } from '../lib/config.ts';
import { migrate } from '../lib/migrate.ts';
import { ident, sql } from '../lib/sql.ts';
import { up } from '../lib/stack.ts';
import { generateEvents } from '../demo/generate.ts';
import { decodeMessage } from '../ingest/consumer.ts';
import type { EventRow } from '../ingest/normalize.ts';
import { insertEventRows } from '../ingest/sink.ts';
import { median } from './report.ts';

const { values: args } = parseArgs({
  options: {
    events: { type: 'string', default: '300000' },
    rounds: { type: 'string', default: '3' },
  },
});
const N = Number(args.events);
const ROUNDS = Number(args.rounds);
const BATCH = 20_000;
const DB = 'bench_views';
const log = (msg: string, fields: Record<string, unknown> = {}) => process.stderr.write(JSON.stringify({ ts: new Date().toISOString(), msg, ...fields }) + '\n');

const stack = await up(loadConfig());
const root = new ClickHouse({ url: stack.clickhouseUrl, database: 'default', queryTimeoutS: 3600 });

log('generating', { events: N });
const rows: EventRow[] = [];
{
  const seen = new Set<string>();
  const now = Math.floor(Date.now() / 1000);
  let i = 0;
  for (const rec of generateEvents({ seed: 'bench-views', users: Math.ceil(N / 30), end: Date.UTC(2026, 10, 1), appId: 'bench' })) {
    if (i++ >= N) break;
    const msg = { key: null, value: Buffer.from(rec.line), offset: String(i), headers: {}, timestamp: '0', attributes: 0 } as unknown as KafkaMessage;
    const d = decodeMessage('bench', 0, msg, now);
    if ('reason' in d || seen.has(d.event_id)) continue;
    seen.add(d.event_id);
    rows.push(d);
  }
  rows.sort((a, b) => a.ts - b.ts);
}

async function freshDb(): Promise<ClickHouse> {
  await root.exec(sql`DROP DATABASE IF EXISTS ${ident(DB)}`);
  await root.exec(sql`CREATE DATABASE ${ident(DB)}`);
  const ch = root.withDatabase(DB);
  await migrate(ch);
  return ch;
}

const probe = await freshDb();
const views = (await probe.rows<{ name: string }>(sql`
  SELECT name FROM system.tables WHERE database = ${DB} AND engine = 'MaterializedView' ORDER BY name`)).map((r) => r.name);
log('views on events', { views });

/** Milliseconds to insert every row with `without` views dropped. */
async function insertAll(without: string | null): Promise<number> {
  const ch = await freshDb();
  if (without) await ch.exec(sql`DROP TABLE ${ident(without)}`);
  const t = performance.now();
  for (let i = 0; i < rows.length; i += BATCH) await insertEventRows(ch, rows.slice(i, i + BATCH));
  return performance.now() - t;
}

const configs: (string | null)[] = [null, ...views];
const times = new Map<string | null, number[]>(configs.map((c) => [c, []]));
for (let r = 0; r < ROUNDS; r++) {
  for (const c of configs) {
    const ms = await insertAll(c);
    times.get(c)!.push(ms);
    log('round', { round: r + 1, without: c ?? '(none: all views)', ms: Math.round(ms) });
  }
}
await root.exec(sql`DROP DATABASE IF EXISTS ${ident(DB)}`);

const all = median(times.get(null)!);
const perView = views.map((v) => {
  const without = median(times.get(v)!);
  return { view: v, without_ms: Math.round(without), cost: +((all - without) / without).toFixed(3) };
});
const result = {
  events: rows.length,
  batch: BATCH,
  rounds: ROUNDS,
  ranAt: new Date().toISOString(),
  all_views_ms: Math.round(all),
  all_views_rows_per_s: Math.round(rows.length / (all / 1000)),
  views: perView,
  raw_ms: Object.fromEntries([...times].map(([k, v]) => [k ?? 'all', v.map(Math.round)])),
};
writeFileSync('bench/results/views.json', JSON.stringify(result, null, 2) + '\n');
const md = [
  '# Cost of each materialized view on the ingest insert',
  '',
  `\`npx tsx bench/views.ts\` — ${rows.length.toLocaleString('en')} demo-generator events in time order, inserted through`,
  `ingest/sink.ts (RowBinary) in batches of ${BATCH.toLocaleString('en')}, ClickHouse 18.16 on 2 cores; median of ${ROUNDS} interleaved rounds.`,
  '',
  `All views: ${Math.round(all)} ms (${result.all_views_rows_per_s.toLocaleString('en')} rows/s).`,
  '',
  '| view | insert without it (ms) | its cost: all / without − 1 |',
  '|---|---:|---:|',
  ...perView.map((v) => `| \`${v.view}\` | ${v.without_ms} | ${(v.cost * 100).toFixed(1)}% |`),
  '',
  'A negative or near-zero cost is within this machine\'s noise.',
  '',
].join('\n');
writeFileSync('bench/results/views.md', md);
log('done', { all_views_ms: Math.round(all), views: perView });
await root.close();
