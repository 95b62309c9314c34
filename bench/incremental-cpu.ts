// Where an incremental profile run's CPU goes, and what the pieces the
// incremental target depends on cost, from ClickHouse's own accounting
// (system.query_log: UserTimeMicroseconds + SystemTimeMicroseconds), on the
// data bench/profiles.ts keeps:
//   steps     a full run, then an incremental one an hour later (as
//             bench/profiles.ts runs them); the incremental run's queries
//             grouped by what they do, their CPU against the run's wall time
//             on this machine's 2 cores
//   analysis  the last step's query (profilesFromStateSql) over empty inputs:
//             what it costs before it reads a row
//   columns   the read of the changed users' previous rows, with and without
//             the packed lists of strings (the state's categories, the
//             traits), and with the traits read as arrays instead
//   caches    full runs keeping a state cache for the next run and keeping
//             none, and incremental runs reading it and reading the rows
//   final     one user slice of a full run's scan (profilesFromTimelineSql)
//             with FINAL and without it, on the merged timeline (one part, so
//             both give the same rows)
// Medians of --rounds. Results: bench/results/incremental-cpu.json and .md.
// Never asserted by tests.
// Usage: npx tsx bench/profiles.ts --db bench_profiles_kept   (once, to load)
//        npx tsx bench/incremental-cpu.ts [--db bench_profiles_kept] [--rounds 3]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig } from '../lib/config.ts';
import { migrate } from '../lib/migrate.ts';
import { ident, raw, sql, type Sql } from '../lib/sql.ts';
import { up } from '../lib/stack.ts';
import { buildProfiles, dropSupersededRuns, type BuildResult } from '../profiles/job.ts';
import { listRuns } from '../profiles/read.ts';
import { changedTableSql, newEventsTableSql, previousStateTableSql, profilesFromStateSql, profilesFromTimelineSql, windowOf } from '../profiles/sql.ts';
import { scanInputs } from './scan-inputs.ts';
import { median, queriesFinished, queryCpu, queryLogGap, say } from './report.ts';

const { values } = parseArgs({ options: { db: { type: 'string', default: 'bench_profiles_kept' }, rounds: { type: 'string', default: '3' } } });
const ROUNDS = Number(values.rounds);
const APP = 'bench';
const HOUR = 3600;
const EMPTY = { prev: 'cpu_bench_prev', next: 'cpu_bench_new', late: 'cpu_bench_late' };
const OUT = 'cpu_bench_out';

const stack = await up(loadConfig());
const ch = new ClickHouse({ url: stack.clickhouseUrl, database: values.db!, queryTimeoutS: 3600, settings: { log_queries: 1 } });
const pause = queryLogGap;
const logged = (from: Date, to: Date) => queriesFinished(ch, from, to);

/** What a query of the job does, from its text (profiles/sql.ts). */
const KINDS: [string, RegExp][] = [
  ['previous rows into memory', /^CREATE TABLE `profile_prev_/],
  ['newer events into memory', /^CREATE TABLE `profile_new_/],
  ['purchasers', /^INSERT INTO `profile_buyer(s|cache)_/],
  ['RFM thresholds', /^SELECT score/],
  ['rows from memory (step 3)', /^INSERT INTO `profiles`/],
  ['changed users', /^INSERT INTO `profile_(changed|late)_/],
  ['check for stored copies', /WHERE n_copied$/],
  ['state cache of this run', /^CREATE (TABLE `profile_state_|MATERIALIZED VIEW `profile_statefeed_)/],
];
const kindOf = (q: string) => KINDS.find(([, re]) => re.test(q.trimStart()))?.[0] ?? 'other (run records, zones, bounds, counts)';

const cpuOf = (q: Sql) => queryCpu(ch, q);

try {
  await migrate(ch);
  const inputs = await scanInputs(ch, APP, values.db!);
  const t0 = Number(inputs.meta.t0);
  const [asOf1, asOf2] = [new Date(t0 * 1000), new Date((t0 + HOUR) * 1000)];
  await ch.exec(sql`TRUNCATE TABLE profiles`);
  await ch.exec(sql`TRUNCATE TABLE profile_runs`);
  await ch.exec(sql`TRUNCATE TABLE profile_run_layers`);

  // steps
  const byKind: Record<string, { cpu: number[]; ms: number[] }> = {};
  const runs: { seconds: number; cpu: number; recomputed: number }[] = [];
  let last: { full: string; incremental: string } | undefined;
  for (let round = 0; round < ROUNDS; round++) {
    const full = await buildProfiles(ch, APP, { asOf: asOf1, mode: 'full' });
    await dropSupersededRuns(ch, APP, full.run_id, 0, 0);
    await pause();
    const from = new Date();
    const inc = await buildProfiles(ch, APP, { asOf: asOf2, mode: 'incremental' });
    const to = new Date();
    await pause();
    const queries = await logged(from, to);
    const sums: Record<string, { cpu: number; ms: number }> = {};
    for (const q of queries) {
      const k = kindOf(q.query);
      sums[k] ??= { cpu: 0, ms: 0 };
      sums[k]!.cpu += q.cpu;
      sums[k]!.ms = Math.max(sums[k]!.ms, q.ms);
    }
    for (const [k, v] of Object.entries(sums)) {
      byKind[k] ??= { cpu: [], ms: [] };
      byKind[k]!.cpu.push(v.cpu);
      byKind[k]!.ms.push(v.ms);
    }
    const cpu = queries.reduce((a, q) => a + q.cpu, 0);
    runs.push({ seconds: inc.seconds, cpu, recomputed: inc.recomputed_users ?? 0 });
    last = { full: full.run_id, incremental: inc.run_id };
    say(`round ${round + 1}: incremental ${inc.seconds} s, ${cpu} CPU-ms in ${queries.length} queries (${inc.recomputed_users} users recomputed)`);
  }

  // analysis: the last step over empty inputs
  const base = (await listRuns(ch, APP)).find((r) => r.run_id === last!.full)!;
  for (const t of Object.values(EMPTY)) await ch.exec(sql`DROP TABLE IF EXISTS ${ident(t)}`);
  await ch.exec(changedTableSql(EMPTY.late));
  await ch.exec(previousStateTableSql({ appId: APP, previous: base, users: sql`(SELECT '' FROM system.one WHERE 0)`, into: EMPTY.prev }));
  await ch.exec(newEventsTableSql({ appId: APP, previousAsOf: asOf2, asOf: asOf2, late: EMPTY.late, copies: false, into: EMPTY.next }));
  const w2 = windowOf(asOf2);
  const analysis: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    analysis.push(await cpuOf(profilesFromStateSql({ appId: APP, runId: 'cpu_bench', window: w2, zones: inputs.zones, previousRows: EMPTY.prev, newEvents: EMPTY.next })));
  }

  // columns: the changed users' previous rows, read with and without the packed lists of strings
  const changedUsers = sql` AND user_id IN (SELECT user_id FROM profiles WHERE app_id = ${APP} AND run_id = ${last!.incremental})`;
  const SCALARS = ['user_id', 'first_seen', 'last_seen', 'events_total', 'purchases_total', 'revenue_total', 'last_purchase_at', 's_ts', 's_flags', 's_amounts'];
  const variants: [string, string[]][] = [
    ['every column the incremental run reads', [...SCALARS, 's_cats_packed', 's_traits_packed', 'trait_types']],
    ['the same with the traits as arrays (trait_keys, trait_values), as before migration 140', [...SCALARS, 's_cats_packed', 'trait_keys', 'trait_values', 'trait_types']],
    ['without the categories (s_cats_packed)', [...SCALARS, 's_traits_packed', 'trait_types']],
    ['without the traits', [...SCALARS, 's_cats_packed']],
    ['without either', SCALARS],
  ];
  const columns: Record<string, number[]> = Object.fromEntries(variants.map(([name]) => [name, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, cols] of variants) {
      // ignore() keeps every listed column read and returns 0.
      columns[name]!.push(await cpuOf(sql`SELECT count() FROM profiles WHERE app_id = ${APP} AND run_id = ${last!.full}${changedUsers} AND NOT ignore(${raw(cols.join(', '))})`));
    }
  }

  // caches: runs with the state cache a run leaves for the next against runs without it
  const cacheRuns: Record<'full_cached' | 'full_uncached' | 'incremental_cached' | 'incremental_uncached', { seconds: number[]; cpu: number[] }> = {
    full_cached: { seconds: [], cpu: [] },
    full_uncached: { seconds: [], cpu: [] },
    incremental_cached: { seconds: [], cpu: [] },
    incremental_uncached: { seconds: [], cpu: [] },
  };
  const measured = async (key: keyof typeof cacheRuns, build: () => Promise<BuildResult>) => {
    await pause();
    const from = new Date();
    const result = await build();
    const to = new Date();
    await pause();
    cacheRuns[key].seconds.push(result.seconds);
    cacheRuns[key].cpu.push((await logged(from, to)).reduce((a, q) => a + q.cpu, 0));
    return result;
  };
  // The full run's cost: full runs keeping a state cache and keeping none, alternating.
  for (let round = 0; round < ROUNDS; round++) {
    for (const keep of round % 2 ? [true, false] : [false, true]) {
      const full = await measured(keep ? 'full_cached' : 'full_uncached', () => buildProfiles(ch, APP, { asOf: asOf1, mode: 'full', ...(keep ? {} : { stateCacheMaxUsers: 0 }) }));
      await dropSupersededRuns(ch, APP, full.run_id, 0, 0);
    }
  }
  // What it saves: incremental runs after one more full run keeping one, reading its
  // state cache and reading its rows, alternating; each run dropped after.
  const cachedBase = await buildProfiles(ch, APP, { asOf: asOf1, mode: 'full' });
  await dropSupersededRuns(ch, APP, cachedBase.run_id, 0, 0);
  for (let round = 0; round < ROUNDS; round++) {
    for (const read of round % 2 ? [true, false] : [false, true]) {
      const inc = await measured(read ? 'incremental_cached' : 'incremental_uncached', () =>
        buildProfiles(ch, APP, { asOf: asOf2, mode: 'incremental', readStateCache: read, keepPreviousRuns: 1 }),
      );
      if (inc.previous_run_id !== cachedBase.run_id || inc.previous_state !== (read ? 'cache' : 'rows')) {
        throw new Error(`the incremental run built on ${inc.previous_run_id} and read ${inc.previous_state}`);
      }
      await ch.insert('profile_runs', [{ app_id: APP, run_id: inc.run_id, as_of: Math.floor(asOf2.getTime() / 1000), mode: 'incremental', state: 'dropped', users: 0, started_at: Math.floor(asOf1.getTime() / 1000), finished_at: Math.floor(Date.now() / 1000) + 60, previous_run_id: '' }]);
      await ch.exec(sql`ALTER TABLE profiles DROP PARTITION (${APP}, ${inc.run_id})`);
    }
    say(`caches round ${round + 1}: incremental ${cacheRuns.incremental_cached.seconds.at(-1)} s from the state cache, ${cacheRuns.incremental_uncached.seconds.at(-1)} s from the rows`);
  }
  const pairRatio = (a: number[], b: number[]) => median(a.map((x, i) => +(x / b[i]!).toFixed(3)));

  // final: one slice of the full scan with and without FINAL, on a merged timeline
  const parts = Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM system.parts WHERE database = currentDatabase() AND table = 'user_timeline' AND active`))?.n ?? 0);
  const final: { with: number[]; without: number[] } = { with: [], without: [] };
  if (parts === 1) {
    await ch.exec(sql`DROP TABLE IF EXISTS ${ident(OUT)}`);
    await ch.exec(sql`CREATE TABLE ${ident(OUT)} AS profiles ENGINE = Null`);
    const scan = profilesFromTimelineSql({ appId: APP, runId: 'cpu_bench', window: inputs.window, zones: inputs.zones, slice: inputs.slices[0]!, into: OUT });
    // One part: no user has rows to merge, so the scan without FINAL reads the same rows.
    const withoutFinal = raw(scan.text.replace('FROM user_timeline FINAL', 'FROM user_timeline'));
    if (withoutFinal.text === scan.text) throw new Error('the scan no longer reads user_timeline FINAL; update this benchmark');
    for (let round = 0; round < ROUNDS; round++) {
      final.with.push(await cpuOf(scan));
      final.without.push(await cpuOf(withoutFinal));
    }
  } else say(`user_timeline has ${parts} parts: the FINAL comparison needs one (run bench/profiles.ts, which merges it)`);

  const kinds = Object.entries(byKind)
    .map(([kind, v]) => ({ kind, cpu_ms: median(v.cpu), longest_query_ms: median(v.ms) }))
    .sort((a, b) => b.cpu_ms - a.cpu_ms);
  const out = {
    rounds: ROUNDS,
    recomputed_users: runs[runs.length - 1]!.recomputed,
    incremental: { seconds: median(runs.map((r) => r.seconds)), cpu_ms: median(runs.map((r) => r.cpu)), core_share: median(runs.map((r) => +(r.cpu / (r.seconds * 1000 * 2)).toFixed(2))) },
    steps_cpu_ms: kinds,
    caches: {
      ...Object.fromEntries(Object.entries(cacheRuns).map(([k, v]) => [k, { seconds: median(v.seconds), cpu_ms: median(v.cpu), rounds: v }])),
      incremental_cached_over_uncached: { seconds: pairRatio(cacheRuns.incremental_cached.seconds, cacheRuns.incremental_uncached.seconds), cpu: pairRatio(cacheRuns.incremental_cached.cpu, cacheRuns.incremental_uncached.cpu) },
      full_cached_over_uncached: { seconds: pairRatio(cacheRuns.full_cached.seconds, cacheRuns.full_uncached.seconds), cpu: pairRatio(cacheRuns.full_cached.cpu, cacheRuns.full_uncached.cpu) },
    },
    step3_analysis_cpu_ms: { median: median(analysis), rounds: analysis },
    previous_rows_read_cpu_ms: Object.fromEntries(Object.entries(columns).map(([k, v]) => [k, { median: median(v), rounds: v }])),
    full_scan_slice_cpu_ms: parts === 1 ? { with_final: median(final.with), without_final: median(final.without), rounds: final } : `skipped: user_timeline has ${parts} parts`,
    clickhouse: '18.16.1',
    machine: '2 cores',
  };
  writeFileSync('bench/results/incremental-cpu.json', JSON.stringify(out, null, 2) + '\n');
  const r = (n: number) => n.toLocaleString('en');
  writeFileSync(
    'bench/results/incremental-cpu.md',
    `# Where an incremental profile run's CPU goes

\`npx tsx bench/incremental-cpu.ts --db ${values.db}\` — the data of \`bench/profiles.ts\`, ClickHouse 18.16 on this 2-core machine,
CPU (user + system) from \`system.query_log\`, medians of ${ROUNDS} rounds.

**The incremental run** after 1% new events (${r(out.recomputed_users)} users recomputed): ${out.incremental.seconds} s,
${r(out.incremental.cpu_ms)} CPU-ms, so it kept ${Math.round(out.incremental.core_share * 100)}% of the 2 cores busy on average.

| what the queries do | CPU-ms | longest query, ms |
|---|---:|---:|
${kinds.map((k) => `| ${k.kind} | ${r(k.cpu_ms)} | ${r(k.longest_query_ms)} |`).join('\n')}

**The state cache a run leaves for the next** (in ClickHouse's memory, fed as the run writes; see sql/README.md):
full runs keeping one and keeping none, alternating (${ROUNDS} of each); then, after one more full run keeping one,
incremental runs reading its state cache and reading the changed users' previous rows from its partition, alternating
(${ROUNDS} of each; each built on that full run and dropped after; both read the previous purchasers from the buyers
cache); ratios paired within rounds:

| run | seconds | CPU-ms |
|---|---:|---:|
| full, keeping a state cache | ${cacheRuns.full_cached.seconds.length ? median(cacheRuns.full_cached.seconds) : '—'} | ${r(median(cacheRuns.full_cached.cpu))} |
| full, keeping no state cache | ${median(cacheRuns.full_uncached.seconds)} | ${r(median(cacheRuns.full_uncached.cpu))} |
| incremental, from the state cache | ${median(cacheRuns.incremental_cached.seconds)} | ${r(median(cacheRuns.incremental_cached.cpu))} |
| incremental, from the previous run's rows | ${median(cacheRuns.incremental_uncached.seconds)} | ${r(median(cacheRuns.incremental_uncached.cpu))} |

Incremental from the state cache / from the rows: ${out.caches.incremental_cached_over_uncached.seconds} in seconds, ${out.caches.incremental_cached_over_uncached.cpu} in CPU;
full keeping a state cache / keeping none: ${out.caches.full_cached_over_uncached.seconds} in seconds, ${out.caches.full_cached_over_uncached.cpu} in CPU.

**The last step's query over empty inputs** (\`profilesFromStateSql\`, one query since 8d6e293; it pays this before it
reads a row): ${out.step3_analysis_cpu_ms.median} CPU-ms (rounds: ${analysis.join(', ')}).

**Reading the changed users' previous rows** from the full run's partition (every granule holds one of them; what a
run without the caches reads):

| columns | CPU-ms | rounds |
|---|---:|---|
${Object.entries(columns).map(([k, v]) => `| ${k} | ${median(v)} | ${v.join(', ')} |`).join('\n')}

**One user slice of a full run's scan** over the merged timeline (one part, where both read the same rows; full runs read
such a part without \`FINAL\` since ca85a80):
${parts === 1 ? `with \`FINAL\` ${r(median(final.with))} CPU-ms (rounds: ${final.with.join(', ')}), without it ${r(median(final.without))} CPU-ms (rounds: ${final.without.join(', ')}).` : `skipped: \`user_timeline\` has ${parts} parts.`}
`,
  );
  say(JSON.stringify(out, null, 2));
} finally {
  for (const t of [...Object.values(EMPTY), OUT]) await ch.exec(sql`DROP TABLE IF EXISTS ${ident(t)}`).catch(() => undefined);
  await ch.close();
}
