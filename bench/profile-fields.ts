// What groups of the profile job's fields cost, on the data bench/profiles.ts
// keeps. Two queries, each as the job generates it and with one group of
// expressions replaced by a constant of the same type:
//   full scan    the first user slice of a full run at the data's t0
//                (profilesFromTimelineSql)
//   incremental  the last step of an incremental run an hour later, over the
//                Memory tables such a run builds (profilesFromStateSql, one
//                query for all ~31k changed users)
// Groups: best_hour (local hours and their mode), top_category, and the packed
// state lists (packedList, migration 140). Each query writes into a copy of
// `profiles`, emptied before each run. CPU (user + system, every thread) from
// system.query_log; the variants alternate within each round, each round
// starting at the next one; medians of --rounds, differences paired within rounds. Results: bench/results/profile-fields.json and .md. Never asserted
// by tests.
// Usage: npx tsx bench/profiles.ts --db bench_profiles_kept   (once, to load)
//        npx tsx bench/profile-fields.ts [--db bench_profiles_kept] [--rounds 5]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig } from '../lib/config.ts';
import { migrate } from '../lib/migrate.ts';
import { ident, raw, sql, type Sql } from '../lib/sql.ts';
import { up } from '../lib/stack.ts';
import { buildProfiles } from '../profiles/job.ts';
import {
  changedTableSql,
  changedUsersSql,
  newEventsTableSql,
  packedList,
  previousStateTableSql,
  profilesFromStateSql,
  profilesFromTimelineSql,
  windowOf,
} from '../profiles/sql.ts';
import { median, queryCpu, say } from './report.ts';
import { scanInputs } from './scan-inputs.ts';

const { values } = parseArgs({ options: { db: { type: 'string', default: 'bench_profiles_kept' }, rounds: { type: 'string', default: '5' } } });
const ROUNDS = Number(values.rounds);
const APP = 'bench';
const HOUR = 3600;
const T = { changed: 'fields_bench_changed', late: 'fields_bench_late', prev: 'fields_bench_prev', next: 'fields_bench_new', out: 'fields_bench_out' };

const stack = await up(loadConfig());
const ch = new ClickHouse({ url: stack.clickhouseUrl, database: values.db!, queryTimeoutS: 3600, settings: { log_queries: 1 } });

/** `text` with the one line that defines `alias` made a constant (keeping its indentation and trailing comma). */
function withConstant(text: string, alias: string, constant: string): string {
  const re = new RegExp(`^(\\s*).* AS ${alias}(,?)$`, 'm');
  if (!re.test(text)) throw new Error(`no line defines ${alias}: update this benchmark`);
  return text.replace(re, `$1${constant} AS ${alias}$2`);
}

/** `text` with every occurrence of `part` replaced. */
function without(text: string, part: string, by: string): string {
  if (!text.includes(part)) throw new Error(`the query no longer holds ${part.slice(0, 60)}…: update this benchmark`);
  return text.split(part).join(by);
}

const variantsOf = (q: Sql): [string, Sql][] => [
  ['as generated', q],
  ['best_hour constant', raw(withConstant(q.text, 'best_hour', 'toNullable(toUInt8(0))'))],
  ['top_category constant', raw(withConstant(q.text, 'top_category', "toNullable('')"))],
  [
    'state lists not packed',
    raw(without(without(q.text, packedList(raw('s_cats')).text, "''"), packedList(raw('arrayConcat(trait_keys, trait_values)')).text, "''")),
  ],
];

try {
  await migrate(ch);
  const inputs = await scanInputs(ch, APP, values.db!);
  const t0 = Number(inputs.meta.t0);
  const [asOf1, asOf2] = [new Date(t0 * 1000), new Date((t0 + HOUR) * 1000)];
  for (const t of Object.values(T)) await ch.exec(sql`DROP TABLE IF EXISTS ${ident(t)}`);
  await ch.exec(sql`CREATE TABLE ${ident(T.out)} AS profiles`);

  // The incremental run's Memory tables, as buildProfiles builds them after a full run at t0.
  say('a full run at t0, then the incremental run’s Memory tables…');
  const full = await buildProfiles(ch, APP, { asOf: asOf1, mode: 'full' });
  await ch.exec(changedTableSql(T.changed));
  await ch.exec(changedTableSql(T.late));
  for (const q of changedUsersSql({ appId: APP, changed: T.changed, late: T.late, previousAsOf: asOf1, asOf: asOf2 }).changed) await ch.exec(q);
  await ch.exec(previousStateTableSql({ appId: APP, previous: { run_id: full.run_id }, users: sql`(SELECT user_id FROM ${ident(T.changed)})`, into: T.prev }));
  await ch.exec(newEventsTableSql({ appId: APP, previousAsOf: asOf1, asOf: asOf2, late: T.late, copies: false, into: T.next }));
  const changed = Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM ${ident(T.prev)}`))?.n ?? 0);

  const into = (q: Sql) => raw(without(q.text, 'INSERT INTO `profiles`', `INSERT INTO \`${T.out}\``));
  const queries = {
    full_scan_slice: variantsOf(
      into(profilesFromTimelineSql({ appId: APP, runId: 'fields_bench', window: inputs.window, zones: inputs.zones, slice: inputs.slices[0]! })),
    ),
    incremental_last_step: variantsOf(
      into(profilesFromStateSql({ appId: APP, runId: 'fields_bench', window: windowOf(asOf2), zones: inputs.zones, previousRows: T.prev, newEvents: T.next })),
    ),
  };
  const cpu: Record<string, Record<string, number[]>> = {};
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, variants] of Object.entries(queries)) {
      cpu[name] ??= {};
      // Each round starts at another variant, so none always runs first.
      for (let k = 0; k < variants.length; k++) {
        const [variant, q] = variants[(round + k) % variants.length]!;
        await ch.exec(sql`TRUNCATE TABLE ${ident(T.out)}`);
        (cpu[name]![variant] ??= []).push(await queryCpu(ch, q));
      }
    }
    say(`round ${round + 1} of ${ROUNDS}`);
  }

  // The difference to the query as generated: the median of the rounds' differences (paired within a round).
  const difference = (name: string, variant: string) => median(cpu[name]![variant]!.map((x, i) => x - cpu[name]!['as generated']![i]!));
  const out = {
    rounds: ROUNDS,
    incremental_changed_users: changed,
    cpu_ms: Object.fromEntries(
      Object.entries(cpu).map(([name, v]) => [
        name,
        Object.fromEntries(Object.entries(v).map(([variant, xs]) => [variant, { median: median(xs), difference: difference(name, variant), rounds: xs }])),
      ]),
    ),
    clickhouse: '18.16.1',
    machine: '2 cores',
  };
  writeFileSync('bench/results/profile-fields.json', JSON.stringify(out, null, 2) + '\n');
  const table = (name: string) =>
    Object.entries(cpu[name]!)
      .map(([variant, xs]) => `| ${variant} | ${median(xs).toLocaleString('en')} | ${variant === 'as generated' ? '' : difference(name, variant).toLocaleString('en')} | ${xs.join(', ')} |`)
      .join('\n');
  writeFileSync(
    'bench/results/profile-fields.md',
    `# What groups of the profile job's fields cost

\`npx tsx bench/profile-fields.ts --db ${values.db}\` — the data of \`bench/profiles.ts\`, ClickHouse 18.16 on this 2-core machine,
CPU (user + system, every thread) from \`system.query_log\`, medians of ${ROUNDS} rounds, variants alternating within each round.
Each variant replaces one group of expressions by a constant of the same type; the difference (the median of each round's
variant minus that round's query as generated) is what that group costs, within the machine's noise.

**One user slice of a full run's scan** (\`profilesFromTimelineSql\`):

| variant | CPU-ms | difference | rounds |
|---|---:|---:|---|
${table('full_scan_slice')}

**The last step of an incremental run** (\`profilesFromStateSql\`, one query for its ${changed.toLocaleString('en')} changed users):

| variant | CPU-ms | difference | rounds |
|---|---:|---:|---|
${table('incremental_last_step')}
`,
  );
  say(JSON.stringify(out, null, 2));
} finally {
  for (const t of Object.values(T)) await ch.exec(sql`DROP TABLE IF EXISTS ${ident(t)}`).catch(() => undefined);
  await ch.close();
}
