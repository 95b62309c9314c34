// What user_timeline (100_user_timeline.sql) costs the profile scan and its
// migration, on the data bench/profiles.ts keeps:
//   parts     the full run's scan (profilesFromTimelineSql, two user slices at
//             once, into a scratch table) over the merged timeline, and over a
//             copy of it split into --parts parts with merges stopped (each
//             user in one part, as a backfill leaves it before merges catch
//             up): FINAL merges the parts at read time
//   steady    the full run's scan as the job reads a timeline taking inserts:
//             a copy merged into one part plus a new part holding rows of 1%
//             of the users (copies of theirs, which the scan counts once), read
//             with FINAL and the job's way (the merged part without FINAL, the
//             new part's rows grouped by user and joined on)
//   backfill  the migration's backfill GROUP BY into a scratch table, with its
//             spill setting and without it: peak memory from query_log
// Alternating rounds; the ratio is paired within each round. Results:
// bench/results/timeline.json and .md. Never asserted by tests.
// Usage: npx tsx bench/profiles.ts --db bench_profiles_kept   (once, to load)
//        npx tsx bench/timeline.ts [--db bench_profiles_kept] [--parts 16] [--rounds 3] [--no-backfill]
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig } from '../lib/config.ts';
import { loadMigrations, migrate } from '../lib/migrate.ts';
import { ident, raw, sql, type Sql } from '../lib/sql.ts';
import { up } from '../lib/stack.ts';
import { profilesFromTimelineSql } from '../profiles/sql.ts';
import { scanInputs } from './scan-inputs.ts';
import { median, queriesFinished, queryLogGap, say, secs } from './report.ts';

const { values } = parseArgs({
  options: { db: { type: 'string', default: 'bench_profiles_kept' }, parts: { type: 'string', default: '16' }, rounds: { type: 'string', default: '3' }, 'no-backfill': { type: 'boolean', default: false } },
});
const PARTS = Number(values.parts);
const ROUNDS = Number(values.rounds);
const APP = 'bench';
const OUT = 'timeline_bench_out';
const SPLIT = 'timeline_bench_parts';
const STEADY = 'timeline_bench_steady';

const stack = await up(loadConfig());
const ch = new ClickHouse({ url: stack.clickhouseUrl, database: values.db, queryTimeoutS: 3600, settings: { log_queries: 1 } });

await migrate(ch);
const { meta, window: w, zones: { names, offsets }, slices } = await scanInputs(ch, APP, values.db!);

/** The slice queries reading `table` instead of user_timeline. */
function scanOf(table: string): Sql[] {
  return slices.map((slice) => {
    const q = profilesFromTimelineSql({ appId: APP, runId: 'bench', window: w, zones: { names, offsets }, slice, into: OUT }).text;
    if (!q.includes('FROM user_timeline FINAL')) throw new Error('the scan no longer reads user_timeline FINAL: update bench/timeline.ts');
    return raw(q.replace('FROM user_timeline FINAL', `FROM ${table} FINAL`));
  });
}

await ch.exec(sql`DROP TABLE IF EXISTS ${ident(OUT)}`);
await ch.exec(sql`CREATE TABLE ${ident(OUT)} AS profiles`);
await ch.exec(sql`DROP TABLE IF EXISTS ${ident(SPLIT)}`);
await ch.exec(sql`CREATE TABLE ${ident(SPLIT)} AS user_timeline`);
await ch.exec(sql`SYSTEM STOP MERGES ${ident(SPLIT)}`);
for (let k = 0; k < PARTS; k++) await ch.exec(sql`INSERT INTO ${ident(SPLIT)} SELECT * FROM user_timeline WHERE cityHash64(user_id) % ${PARTS} = ${k}`);
const partCount = async (table: string) =>
  Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM system.parts WHERE database = currentDatabase() AND table = ${table} AND active`))?.n ?? 0);
const parts = { merged: await partCount('user_timeline'), split: await partCount(SPLIT) };
const sizes = Object.fromEntries(
  (
    await ch.rows<{ table: string; mb: number }>(sql`SELECT table, round(sum(bytes_on_disk) / 1e6) AS mb FROM system.parts
      WHERE database = currentDatabase() AND active AND table IN ('events', 'profile_events_by_time', 'user_timeline') GROUP BY table`)
  ).map((x) => [x.table, Number(x.mb)]),
);
say(`user_timeline in ${parts.merged} part(s); the copy in ${parts.split}`);

async function timeScan(table: string): Promise<number> {
  await ch.exec(sql`TRUNCATE TABLE ${ident(OUT)}`);
  const t = performance.now();
  await Promise.all(scanOf(table).map((q) => ch.exec(q, { timeoutS: 3600 })));
  return secs(t);
}
const merged: number[] = [];
const split: number[] = [];
for (let i = 0; i < ROUNDS; i++) {
  merged.push(await timeScan('user_timeline'));
  split.push(await timeScan(SPLIT));
  say(`round ${i + 1}: merged ${merged[i]} s, ${parts.split} parts ${split[i]} s`);
}
const ratios = merged.map((x, i) => +(split[i]! / x).toFixed(2));
const users = Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM ${ident(OUT)}`))?.n ?? 0);
await ch.exec(sql`DROP TABLE ${ident(SPLIT)}`);

// steady: a merged copy plus a new part with 1% of the users' rows.
await ch.exec(sql`DROP TABLE IF EXISTS ${ident(STEADY)}`);
await ch.exec(sql`CREATE TABLE ${ident(STEADY)} AS user_timeline`);
await ch.exec(sql`INSERT INTO ${ident(STEADY)} SELECT * FROM user_timeline`, { timeoutS: 3600 });
for (let i = 0; (await partCount(STEADY)) > 1; i++) {
  if (i > 300) throw new Error(`${STEADY} did not merge into one part`);
  await ch.exec(sql`OPTIMIZE TABLE ${ident(STEADY)} FINAL`, { timeoutS: 3600 }).catch(() => undefined); // refused while a merge runs: retried
  await new Promise((r) => setTimeout(r, 1000));
}
const steadyPart = (await ch.one<{ name: string }>(sql`SELECT name FROM system.parts WHERE database = currentDatabase() AND table = ${STEADY} AND active`))!.name;
await ch.exec(sql`SYSTEM STOP MERGES ${ident(STEADY)}`);
await ch.exec(sql`INSERT INTO ${ident(STEADY)} SELECT * FROM user_timeline WHERE cityHash64(user_id) % 100 = 0`);
const newPartUsers = Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM ${ident(STEADY)} WHERE _part != ${steadyPart}`))?.n ?? 0);
/** The slice queries over STEADY: with FINAL, or the job's way. */
function steadyScan(joined: boolean): Sql[] {
  return slices.map((slice) => {
    const q = profilesFromTimelineSql({ appId: APP, runId: 'bench', window: w, zones: { names, offsets }, slice, into: OUT, ...(joined ? { merged: { part: steadyPart, others: true } } : {}) }).text;
    if (!q.includes('FROM user_timeline')) throw new Error('the scan no longer reads user_timeline: update bench/timeline.ts');
    return raw(q.replaceAll('FROM user_timeline', `FROM ${STEADY}`));
  });
}
/** Seconds, and the CPU-ms query_log accounts to the slice queries (every thread, user + system). */
async function timeSteady(joined: boolean): Promise<{ s: number; cpu: number }> {
  await ch.exec(sql`TRUNCATE TABLE ${ident(OUT)}`);
  await queryLogGap();
  const from = new Date();
  const t = performance.now();
  await Promise.all(steadyScan(joined).map((q) => ch.exec(q, { timeoutS: 3600 })));
  const s = secs(t);
  const to = new Date();
  await queryLogGap();
  const cpu = (await queriesFinished(ch, from, to)).filter((q) => q.query.includes(STEADY)).reduce((a, q) => a + q.cpu, 0);
  return { s, cpu };
}
const steady = { final: [] as number[], joined: [] as number[] };
const steadyCpu = { final: [] as number[], joined: [] as number[] };
for (let i = 0; i < ROUNDS; i++) {
  for (const joined of [false, true]) {
    const r = await timeSteady(joined);
    steady[joined ? 'joined' : 'final'].push(r.s);
    steadyCpu[joined ? 'joined' : 'final'].push(r.cpu);
  }
  say(`round ${i + 1}: steady state with FINAL ${steady.final[i]} s (${steadyCpu.final[i]} CPU-ms), the job's way ${steady.joined[i]} s (${steadyCpu.joined[i]} CPU-ms)`);
}
const steadyRatios = steady.joined.map((x, i) => +(x / steady.final[i]!).toFixed(2));
const steadyCpuRatios = steadyCpu.joined.map((x, i) => +(x / steadyCpu.final[i]!).toFixed(2));
await ch.exec(sql`DROP TABLE ${ident(STEADY)}`);

// The migration's backfill, as written and without its SETTINGS clause.
const backfill: { spill: boolean; seconds: number; memoryGB: number; rows: number }[] = [];
if (!values['no-backfill']) {
  const stmt = loadMigrations().find((x) => x.name === '100_user_timeline.sql')!.statements.find((s) => s.startsWith('INSERT INTO user_timeline'));
  if (!stmt?.includes('SETTINGS')) throw new Error('the backfill statement changed: update bench/timeline.ts');
  const target = 'timeline_bench_backfill';
  for (const spill of [true, false]) {
    await ch.exec(sql`DROP TABLE IF EXISTS ${ident(target)}`);
    await ch.exec(sql`CREATE TABLE ${ident(target)} AS user_timeline`);
    const text = stmt.replace('INSERT INTO user_timeline', `INSERT INTO ${target}`);
    const queryId = randomUUID();
    const t = performance.now();
    await ch.client.command({ query: spill ? text : text.slice(0, text.indexOf('SETTINGS')), query_id: queryId, clickhouse_settings: { log_queries: 1, max_execution_time: 3600 } });
    const seconds = secs(t);
    await ch.exec(sql`SYSTEM FLUSH LOGS`);
    const mem = await ch.one<{ m: string }>(sql`SELECT max(memory_usage) AS m FROM system.query_log WHERE query_id = ${queryId} AND type = 2`);
    const rows = Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM ${ident(target)}`))?.n ?? 0);
    backfill.push({ spill, seconds, memoryGB: +(Number(mem?.m ?? 0) / 1e9).toFixed(2), rows });
    say(`backfill ${spill ? 'with' : 'without'} the spill setting: ${seconds} s, ${backfill.at(-1)!.memoryGB} GB, ${rows} rows`);
  }
  await ch.exec(sql`DROP TABLE ${ident(target)}`);
}
await ch.exec(sql`DROP TABLE ${ident(OUT)}`);

const out = {
  events: Number(meta.events),
  profile_users: users,
  parts,
  disk_mb: sizes,
  seconds: { merged, split },
  median_seconds: { merged: median(merged), split: median(split) },
  split_to_merged: { median: median(ratios), rounds: ratios },
  steady: {
    new_part_users: newPartUsers,
    seconds: steady,
    median_seconds: { final: median(steady.final), joined: median(steady.joined) },
    joined_to_final: { median: median(steadyRatios), rounds: steadyRatios },
    cpu_ms: steadyCpu,
    cpu_joined_to_final: { median: median(steadyCpuRatios), rounds: steadyCpuRatios },
  },
  backfill,
  clickhouse: (await ch.one<{ v: string }>(sql`SELECT version() AS v`))?.v,
};
writeFileSync('bench/results/timeline.json', JSON.stringify(out, null, 2) + '\n');
const md = `# user_timeline benchmark

\`npx tsx bench/timeline.ts --db ${values.db}\` — the data of \`bench/profiles.ts\` (${out.events.toLocaleString('en')} events, ${users.toLocaleString('en')} users profiled),
ClickHouse ${out.clickhouse} on this 2-core machine, ${ROUNDS} alternating rounds.

On disk: \`user_timeline\` ${sizes.user_timeline} MB, \`profile_events_by_time\` ${sizes.profile_events_by_time} MB, \`events\` ${sizes.events} MB.

**The full run's scan** (\`profilesFromTimelineSql\`, two user slices at once) over \`user_timeline\` in ${parts.merged} part(s) and over a copy
in ${parts.split} parts with merges stopped (each user in one part): \`FINAL\` merges the parts while reading.

| timeline | seconds (median) | rounds |
|---|---:|---|
| merged (${parts.merged} part(s)) | ${out.median_seconds.merged} | ${merged.join(', ')} |
| ${parts.split} parts | ${out.median_seconds.split} | ${split.join(', ')} |

${parts.split} parts / merged: **${out.split_to_merged.median}×** (rounds: ${ratios.join(', ')}). Both read with \`FINAL\`; since ca85a80 the job
reads a merged part without it.

**A timeline taking inserts**: a copy merged into one part, plus a new part with the rows of ${newPartUsers.toLocaleString('en')} users (1%; copies
of theirs, which the scan counts once), read by the full run's scan (two slices at once) with \`FINAL\`, and the job's way: the
merged part without \`FINAL\`, the new part's rows grouped by user and joined on (\`MergedPartRead\`, profiles/sql.ts).

| read | seconds (median) | rounds | CPU-ms (median) | rounds |
|---|---:|---|---:|---|
| \`FINAL\` | ${out.steady.median_seconds.final} | ${steady.final.join(', ')} | ${median(steadyCpu.final)} | ${steadyCpu.final.join(', ')} |
| merged part, other part joined on | ${out.steady.median_seconds.joined} | ${steady.joined.join(', ')} | ${median(steadyCpu.joined)} | ${steadyCpu.joined.join(', ')} |

Joined / \`FINAL\`: **${out.steady.joined_to_final.median}×** in seconds (rounds: ${steadyRatios.join(', ')}), **${out.steady.cpu_joined_to_final.median}×** in CPU
(rounds: ${steadyCpuRatios.join(', ')}; CPU from \`system.query_log\`, every thread, user + system).
${
  backfill.length
    ? `
**The migration's backfill** (\`GROUP BY app_id, user_id\` over every event, into a scratch table):

| | seconds | peak memory | rows |
|---|---:|---:|---:|
${backfill.map((b) => `| ${b.spill ? 'as written (spills past 2 GB)' : 'without the SETTINGS clause'} | ${b.seconds} | ${b.memoryGB} GB | ${b.rows} |`).join('\n')}
`
    : ''
}`;
writeFileSync('bench/results/timeline.md', md);
say(md);
await ch.client.close();
