// Why events are deduplicated at ingest and not at query time: the same
// per-user aggregation over N synthetic events, read plainly, with FINAL,
// with a GROUP BY event_id dedup subquery and with LIMIT 1 BY.
// Usage: npx tsx bench/storage.ts [--events 20000000] [--users 1000000]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig } from '../lib/config.ts';
import { migrate } from '../lib/migrate.ts';
import { ident, raw, sql } from '../lib/sql.ts';
import { up } from '../lib/stack.ts';

const { values } = parseArgs({ options: { events: { type: 'string', default: '20000000' }, users: { type: 'string', default: '1000000' }, runs: { type: 'string', default: '3' } } });
const N = Number(values.events);
const U = Number(values.users);
const RUNS = Number(values.runs);

const cfg = loadConfig();
const stack = await up(cfg);
const db = `bench_storage_${Date.now()}`;
const ch = new ClickHouse({ url: stack.clickhouseUrl, database: db, queryTimeoutS: 3600 });
await migrate(ch);
process.stderr.write(`loading ${N} events for ${U} users into ${db}…\n`);
const t0 = performance.now();
await ch.exec(
  sql`INSERT INTO events (app_id, user_id, ts, event_id, type, event, prop_keys, prop_strings, prop_numbers, properties, received_at)
      SELECT 'bench', concat('u', toString(intHash32(number) % ${U})), toDateTime(1730000000 + intHash64(number) % 31536000),
             hex(intHash64(number + 7)), 'track', arrayElement(['view', 'click', 'purchase', 'add_to_cart'], 1 + number % 4),
             ['amount', 'category'], [toString(number % 100), concat('c', toString(number % 20))], [toFloat64(number % 100), nan],
             '', now()
      FROM numbers(${N})`,
  { timeoutS: 3600 },
);
process.stderr.write(`loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);

const agg = `count() AS n, max(ts) AS last, sumIf(prop_numbers[1], event = 'purchase') AS revenue,
  countIf(event = 'view' AND ts > toDateTime(1760000000)) AS views`;
const variants: Record<string, string> = {
  plain: `SELECT user_id, ${agg} FROM events WHERE app_id = 'bench' GROUP BY user_id`,
  final: `SELECT user_id, ${agg} FROM events FINAL WHERE app_id = 'bench' GROUP BY user_id`,
  group_by_event_id: `SELECT user_id, ${agg} FROM (SELECT user_id, event_id, any(ts) AS ts, any(event) AS event, any(prop_numbers) AS prop_numbers FROM events WHERE app_id = 'bench' GROUP BY user_id, event_id) GROUP BY user_id`,
  limit_1_by: `SELECT user_id, ${agg} FROM (SELECT user_id, event_id, ts, event, prop_numbers FROM events WHERE app_id = 'bench' LIMIT 1 BY user_id, event_id) GROUP BY user_id`,
};
const results: Record<string, number> = {};
for (const [name, q] of Object.entries(variants)) {
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const s = performance.now();
    await ch.exec(raw(`SELECT count() FROM (${q})`), { timeoutS: 3600 });
    times.push((performance.now() - s) / 1000);
  }
  times.sort((a, b) => a - b);
  results[name] = times[Math.floor(times.length / 2)] as number;
  process.stderr.write(`${name}: median ${results[name]?.toFixed(2)} s\n`);
}
const base = results.plain as number;
const out = { events: N, users: U, runs: RUNS, seconds: results, ratio_to_plain: Object.fromEntries(Object.entries(results).map(([k, v]) => [k, +(v / base).toFixed(2)])) };
writeFileSync('bench/results/storage.json', JSON.stringify(out, null, 2) + '\n');
writeFileSync(
  'bench/results/storage.md',
  `# Query-time deduplication cost (${N.toLocaleString('en')} events, ${U.toLocaleString('en')} users, median of ${RUNS})\n\n| variant | seconds | × plain |\n|---|---|---|\n` +
    Object.entries(results).map(([k, v]) => `| ${k} | ${v.toFixed(2)} | ${(v / base).toFixed(2)} |`).join('\n') + '\n',
);
console.log(JSON.stringify(out));
const root = ch.withDatabase('default');
await root.exec(sql`DROP DATABASE ${ident(db)}`);
await root.close();
await ch.close();
