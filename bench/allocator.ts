// What the ClickHouse server's allocator options (WARBLER_CLICKHOUSE_MALLOC_CONF)
// cost or save, on the profile bench's data. Debian's 18.16 links the system
// jemalloc (5.3) with its defaults; current ClickHouse builds its own with
// "percpu_arena:percpu,oversize_threshold:0,muzzy_decay_ms:5000,dirty_decay_ms:5000",
// Warbler's default. Under jemalloc's default oversize_threshold (8 MiB) every
// larger allocation, such as a column of a 1M-row block, takes fresh pages from
// the kernel, each faulted in on first touch; the third option turns off only that.
//
// Each round restarts the stack's ClickHouse with each of the three options (in
// an order that rotates from round to round), then measures:
//   synthetic    SELECT sum(floor(toFloat64(number) * 1e6 + 0.5)) FROM numbers(10M)
//                in 1M-row blocks, one thread, and the minor page faults of the
//                server while it runs (/proc/<pid>/stat)
//   baseline     the profile bench's SELECT user_id, count() … GROUP BY user_id
//   full         buildProfiles(full) at the bench's as_of
//   incremental  buildProfiles(incremental) an hour later, after its 1% new events
//   segments     three of bench/segments.ts' expressions (event, profile and
//                trait conditions) evaluated, counts only, at that later as_of,
//                after one unmeasured pass
// and reports each option's medians and its ratios to jemalloc's defaults, paired within rounds.
// Needs a database that bench/profiles.ts loaded and kept (--db, with the 1% new events).
// Restarts the stack's ClickHouse (Memory tables come back empty); leaves it
// running with the configured options.
// Usage: npx tsx bench/allocator.ts [--db bench_profiles_kept] [--rounds 3]
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ClickHouse } from '../lib/clickhouse.ts';
import { CLICKHOUSE_MALLOC_CONF, loadConfig } from '../lib/config.ts';
import { sql } from '../lib/sql.ts';
import { restartClickHouse, up } from '../lib/stack.ts';
import { buildProfiles, dropSupersededRuns } from '../profiles/job.ts';
import { evaluateSegment } from '../segments/evaluate.ts';
import { median, say, secs } from './report.ts';

const { values } = parseArgs({ options: { db: { type: 'string', default: 'bench_profiles_kept' }, rounds: { type: 'string', default: '3' } } });
const ROUNDS = Number(values.rounds);
const APP = 'bench';
const HOUR = 3600;
const OPTIONS = [
  { name: 'jemalloc defaults', conf: '' },
  { name: 'ClickHouse builds (default)', conf: CLICKHOUSE_MALLOC_CONF },
  { name: 'oversize_threshold:0 alone', conf: 'oversize_threshold:0' },
] as const;
type Measure = 'synthetic' | 'baseline' | 'full' | 'incremental' | 'segments';
const MEASURES: readonly Measure[] = ['synthetic', 'baseline', 'full', 'incremental', 'segments'];
const SEGMENTS = [
  'did(add_to_cart, within 3d) and not did(purchase, within 3d)',
  'rfm_segment in ("champions", "loyal") and country = "CN"',
  'rfm_segment = "at_risk" and revenue_total > 200',
];

const base = loadConfig();
if (process.env.WARBLER_CLICKHOUSE_URL) throw new Error('bench/allocator.ts restarts the stack\'s own ClickHouse; unset WARBLER_CLICKHOUSE_URL');
await up(base);

/** The server's minor page faults so far (field 10 of /proc/<pid>/stat; the name in field 2 holds no spaces). */
const minorFaults = (pid: number): number => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[9]);

const seconds: Record<string, Record<Measure, number[]>> = {};
const faults: Record<string, Record<Measure, number[]>> = {};
for (const o of OPTIONS) {
  seconds[o.name] = { synthetic: [], baseline: [], full: [], incremental: [], segments: [] };
  faults[o.name] = { synthetic: [], baseline: [], full: [], incremental: [], segments: [] };
}

let t0 = 0;
for (let round = 0; round < ROUNDS; round++) {
  const order = OPTIONS.map((_, i) => OPTIONS[(i + round) % OPTIONS.length]!);
  for (const o of order) {
    const cfg = { ...base, WARBLER_CLICKHOUSE_MALLOC_CONF: o.conf };
    let t = performance.now();
    const server = await restartClickHouse(cfg);
    say(`round ${round + 1}, ${o.name}: ClickHouse restarted (${secs(t)} s)`);
    const ch = new ClickHouse({ url: server.url, database: values.db, queryTimeoutS: 3600 });
    if (t0 === 0) {
      const meta = await ch.one<{ t0: string }>(sql`SELECT t0 FROM bench_meta LIMIT 1`).catch(() => undefined);
      const added = meta ? Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM events WHERE app_id = ${APP} AND ts > toDateTime(${Number(meta.t0)})`))?.n ?? 0) : 0;
      if (!meta || added === 0) throw new Error(`${values.db} holds no data of bench/profiles.ts; run \`npx tsx bench/profiles.ts --db ${values.db}\` first`);
      t0 = Number(meta.t0);
    }
    const measure = async (m: Measure, work: () => Promise<unknown>) => {
      const f = minorFaults(server.pid);
      t = performance.now();
      await work();
      seconds[o.name]![m].push(secs(t));
      faults[o.name]![m].push(minorFaults(server.pid) - f);
    };
    const scan = () => ch.exec(sql`SELECT count() FROM (SELECT user_id, count() FROM events WHERE app_id = ${APP} GROUP BY user_id)`, { timeoutS: 3600 });
    // A fresh server has empty caches (marks, for one): a first scan fills them for both options alike.
    await scan();
    await measure('synthetic', () =>
      ch.exec(sql`SELECT sum(floor(toFloat64(number) * 1000000 + 0.5)) FROM numbers(10000000)`, { settings: { max_block_size: 1_048_576, max_threads: 1 } }),
    );
    await measure('baseline', scan);
    let fullRun = '';
    await measure('full', async () => {
      fullRun = (await buildProfiles(ch, APP, { asOf: new Date(t0 * 1000), mode: 'full' })).run_id;
    });
    // The earlier round's run at as_of + 1 h would otherwise be the previous run (a no-op increment).
    await dropSupersededRuns(ch, APP, fullRun, 0, 0);
    const later = new Date((t0 + HOUR) * 1000);
    await measure('incremental', () => buildProfiles(ch, APP, { asOf: later, mode: 'incremental' }));
    const evaluateAll = async () => {
      for (const e of SEGMENTS) await evaluateSegment(ch, APP, e, { asOf: later, limit: 0 });
    };
    await evaluateAll();
    await measure('segments', evaluateAll);
    const s = seconds[o.name]!;
    say(`  synthetic ${s.synthetic.at(-1)} s, baseline ${s.baseline.at(-1)} s, full ${s.full.at(-1)} s, incremental ${s.incremental.at(-1)} s, segments ${s.segments.at(-1)} s`);
  }
}
// Left running with the options the configuration names.
await restartClickHouse(base);

const dflt = seconds[OPTIONS[0].name]!;
/** One option's seconds over jemalloc's defaults', paired within rounds. */
const paired = (name: string, m: Measure) => seconds[name]![m].map((v, i) => +(v / dflt[m][i]!).toFixed(3));
const ratiosOf = (s: Record<Measure, number[]>) => ({
  full_to_baseline: median(s.full.map((v, i) => +(v / s.baseline[i]!).toFixed(2))),
  incremental_to_full: median(s.incremental.map((v, i) => +(v / s.full[i]!).toFixed(3))),
});
const others = OPTIONS.slice(1);
const out = {
  db: values.db,
  rounds: ROUNDS,
  options: Object.fromEntries(OPTIONS.map((o) => [o.name, o.conf])),
  median_seconds: Object.fromEntries(OPTIONS.map((o) => [o.name, Object.fromEntries(MEASURES.map((m) => [m, median(seconds[o.name]![m])]))])),
  median_minor_faults: Object.fromEntries(OPTIONS.map((o) => [o.name, Object.fromEntries(MEASURES.map((m) => [m, median(faults[o.name]![m])]))])),
  all_seconds: seconds,
  all_minor_faults: faults,
  // Each option's seconds / jemalloc's defaults', paired within rounds, and their medians.
  round_ratios: Object.fromEntries(others.map((o) => [o.name, Object.fromEntries(MEASURES.map((m) => [m, paired(o.name, m)]))])),
  ratios: Object.fromEntries(others.map((o) => [o.name, Object.fromEntries(MEASURES.map((m) => [m, median(paired(o.name, m))]))])),
  profile_bench_ratios: Object.fromEntries(OPTIONS.map((o) => [o.name, ratiosOf(seconds[o.name]!)])),
  clickhouse: '18.16.1',
  machine: '2 cores',
};
writeFileSync('bench/results/allocator.json', JSON.stringify(out, null, 2) + '\n');
const WHAT: Record<Measure, string> = {
  synthetic: '10M numbers in 1M-row blocks, one thread',
  baseline: 'baseline: `SELECT user_id, count() … GROUP BY user_id`',
  full: 'full profile job',
  incremental: 'incremental job after 1% new events',
  segments: 'three segments evaluated (counts), one after another',
};
const cell = (name: string, m: Measure) => `${out.median_seconds[name]![m]} (${out.median_minor_faults[name]![m]!.toLocaleString('en')})`;
const ratio = (name: string, m: Measure) => `${out.ratios[name]![m]} (${out.round_ratios[name]![m]!.join(', ')})`;
const pr = (name: string) => `full / baseline ${out.profile_bench_ratios[name]!.full_to_baseline}, incremental / full ${out.profile_bench_ratios[name]!.incremental_to_full}`;
writeFileSync(
  'bench/results/allocator.md',
  `# ClickHouse's allocator options

\`npx tsx bench/allocator.ts --db ${values.db} --rounds ${ROUNDS}\` — the profile bench's data, ClickHouse 18.16 (Debian, system jemalloc 5.3)
on this 2-core machine, restarted for each option in each round (the order rotates from round to round).
Seconds are medians, in brackets the server's minor page faults while the step ran (medians too);
ratios are an option's seconds over jemalloc's defaults', the median of each round's pair (in brackets the rounds').

${OPTIONS.map((o) => `- ${o.name}: \`${o.conf || '(empty)'}\``).join('\n')}

| measurement | ${OPTIONS.map((o) => `${o.name}: s (faults)`).join(' | ')} | ${others.map((o) => `${o.name} / defaults`).join(' | ')} |
|---|${OPTIONS.map(() => '---|').join('')}${others.map(() => '---|').join('')}
${MEASURES.map((m) => `| ${WHAT[m]} | ${OPTIONS.map((o) => cell(o.name, m)).join(' | ')} | ${others.map((o) => ratio(o.name, m)).join(' | ')} |`).join('\n')}

The profile benchmark's ratios under each option (medians of the rounds' pairs):
${OPTIONS.map((o) => `- ${o.name}: ${pr(o.name)}`).join('\n')}
`,
);
say(readFileSync('bench/results/allocator.md', 'utf8'));
process.exit(0);
