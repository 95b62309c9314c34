// What late arrivals cost an incremental profile run. A user with an event
// received since the previous run started (less the margin, 5 min by default)
// and stamped at or before its as_of may or may not be counted in the previous
// row, so the run rescans that user's whole history from user_timeline
// (planTimelineScan and scanTimeline with usersIn, the two user slices at once,
// as the job runs them: the merged part without FINAL, other parts joined on) instead of extending the previous row. In steady operation,
// with runs every few minutes and events arriving seconds late, most runs have
// some; the profile benchmark has none (its history was received long before).
// Measured on the data bench/profiles.ts keeps, for random sets of users, each
// against a full run's scan (all users, same query) in the same round.
// Results: bench/results/late.json and .md. Never asserted by tests.
// Usage: npx tsx bench/profiles.ts --db bench_profiles_kept   (once, to load)
//        npx tsx bench/late.ts [--db bench_profiles_kept] [--rounds 3]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig } from '../lib/config.ts';
import { migrate } from '../lib/migrate.ts';
import { ident, sql } from '../lib/sql.ts';
import { up } from '../lib/stack.ts';
import { planTimelineScan, scanTimeline } from '../profiles/job.ts';
import { scanInputs } from './scan-inputs.ts';
import { median, say, secs } from './report.ts';

const { values } = parseArgs({ options: { db: { type: 'string', default: 'bench_profiles_kept' }, rounds: { type: 'string', default: '3' } } });
const ROUNDS = Number(values.rounds);
const APP = 'bench';
const OUT = 'late_bench_out';
const LATE = 'late_bench_users';
const SIZES = [500, 5000, 30000];

const stack = await up(loadConfig());
const ch = new ClickHouse({ url: stack.clickhouseUrl, database: values.db, queryTimeoutS: 3600 });

await migrate(ch);
const { window: w, zones: { names, offsets }, slices } = await scanInputs(ch, APP, values.db!);

/** The scan as the job runs it (planTimelineScan, scanTimeline): for every user, or for those in `usersIn`. */
async function scan(usersIn?: string): Promise<number> {
  await ch.exec(sql`TRUNCATE TABLE ${ident(OUT)}`);
  const s = { appId: APP, runId: 'bench', window: w, zones: { names, offsets }, slices, into: OUT, ...(usersIn ? { usersIn: ident(usersIn) } : {}) };
  const t = performance.now();
  await scanTimeline(ch, s, await planTimelineScan(ch, APP));
  return secs(t);
}

const users = Number((await ch.one<{ n: string }>(sql`SELECT uniqExact(user_id) AS n FROM user_timeline WHERE app_id = ${APP}`))?.n ?? 0);
await ch.exec(sql`DROP TABLE IF EXISTS ${ident(OUT)}`);
await ch.exec(sql`CREATE TABLE ${ident(OUT)} AS profiles ENGINE = Memory`);
await ch.exec(sql`DROP TABLE IF EXISTS ${ident(LATE)}`);
await ch.exec(sql`CREATE TABLE ${ident(LATE)} (user_id String) ENGINE = Memory`);
const full: number[] = [];
const late: Record<number, number[]> = Object.fromEntries(SIZES.map((n) => [n, []]));
try {
  for (let round = 0; round < ROUNDS; round++) {
    full.push(await scan());
    for (const n of SIZES) {
      await ch.exec(sql`TRUNCATE TABLE ${ident(LATE)}`);
      // A different random set each round: users spread over the whole key range, as late arrivals are.
      await ch.exec(sql`INSERT INTO ${ident(LATE)} SELECT user_id FROM user_timeline WHERE app_id = ${APP} ORDER BY cityHash64(user_id, ${round}) LIMIT ${n}`);
      late[n]!.push(await scan(LATE));
    }
    say(`round ${round + 1}: full scan ${full[round]} s; ${SIZES.map((n) => `${n} late users ${late[n]![round]} s`).join(', ')}`);
  }
} finally {
  await ch.exec(sql`DROP TABLE IF EXISTS ${ident(OUT)}`);
  await ch.exec(sql`DROP TABLE IF EXISTS ${ident(LATE)}`);
}

const rows = SIZES.map((n) => {
  const ratios = late[n]!.map((s, i) => +(s / full[i]!).toFixed(3));
  return { late_users: n, share_of_users: +(n / users).toFixed(4), seconds: median(late[n]!), to_full_scan: median(ratios), round_ratios: ratios };
});
const out = { users, rounds: ROUNDS, full_scan_seconds: median(full), all_full_scan_seconds: full, late: rows, clickhouse: '18.16.1', machine: '2 cores' };
writeFileSync('bench/results/late.json', JSON.stringify(out, null, 2) + '\n');
writeFileSync(
  'bench/results/late.md',
  `# Late arrivals in an incremental profile run

\`npx tsx bench/late.ts\` — ${users.toLocaleString('en')} users (the data of bench/profiles.ts), ClickHouse 18.16 on 2 cores,
median of ${ROUNDS} rounds. Each round: the full run's scan of every user from \`user_timeline\`, then the same
scan for the late users only (random users, a new set each round), both as the job runs them (two user
slices at once, into a scratch table); each ratio is paired within its round.

Full scan: ${out.full_scan_seconds} s.

| late users | share of users | rescan (s) | × the full scan (rounds) |
|---:|---:|---:|---|
${rows.map((x) => `| ${x.late_users.toLocaleString('en')} | ${(x.share_of_users * 100).toFixed(2)}% | ${x.seconds} | ${x.to_full_scan} (${x.round_ratios.join(', ')}) |`).join('\n')}

The rescan reads the timeline as a full run does (the merged part without FINAL, the other parts' rows
joined on) and filters by user: users spread over the key range touch nearly every granule,
so even a few hundred cost a large part of the full scan.
`,
);
say(JSON.stringify(out, null, 2));
await ch.close();
