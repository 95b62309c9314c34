// best_hour's cost against the number of time zones: the tabulated offsets of
// profiles/zones.ts against one constant-zone toHour per zone (the job's former
// method), on the 90d timestamps of every user of the profile benchmark's data,
// each user given one of N zones by hash. The sums of the hours are compared
// (they differ only by 18.16's toHour errors, see profiles/zones.ts); the
// ratio is new / old in the same run.
//
// Needs the data of bench/profiles.ts kept with --db (default bench_profiles_kept).
// Usage: npx tsx bench/zones.ts [--db bench_profiles_kept] [--runs 3]
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig } from '../lib/config.ts';
import { join, raw, sql } from '../lib/sql.ts';
import { up } from '../lib/stack.ts';
import { windowOf } from '../profiles/sql.ts';
import { localHours, zoneOffsets } from '../profiles/zones.ts';
import { median, say } from './report.ts';

const { values } = parseArgs({ options: { db: { type: 'string', default: 'bench_profiles_kept' }, runs: { type: 'string', default: '3' } } });
const RUNS = Number(values.runs);
const stack = await up(loadConfig());
const ch = new ClickHouse({ url: stack.clickhouseUrl, database: values.db!, queryTimeoutS: 3600 });

const meta = await ch.one<{ t0: string }>(sql`SELECT t0 FROM bench_meta LIMIT 1`).catch(() => undefined);
if (!meta) throw new Error(`no profile benchmark data in ${values.db}: run npx tsx bench/profiles.ts --db ${values.db} first`);
const w = windowOf(new Date(Number(meta.t0) * 1000));
const [from, to] = [Math.floor(w.d90.getTime() / 1000) + 1, Math.floor(w.asOf.getTime() / 1000)];

// Real zone names from the system's tz database, in a fixed order.
const all: string[] = [];
for (const region of ['America', 'Europe', 'Asia', 'Africa', 'Australia', 'Pacific']) {
  for (const f of readdirSync(`/usr/share/zoneinfo/${region}`).sort()) if (statSync(`/usr/share/zoneinfo/${region}/${f}`).isFile()) all.push(`${region}/${f}`);
}

const timeQuery = async (q: ReturnType<typeof sql>) => {
  const times: number[] = [];
  let value = '';
  for (let i = 0; i < RUNS; i++) {
    const t = performance.now();
    value = (await ch.one<{ v: string }>(q))!.v;
    times.push((performance.now() - t) / 1000);
  }
  return { seconds: +median(times).toFixed(3), value };
};

const rows: Record<string, unknown>[] = [];
for (const n of [20, 150]) {
  const names = [...new Set([...all.slice(0, n - 1), 'UTC'])].sort();
  const t = performance.now();
  const offsets = zoneOffsets(names, from, to);
  const tabulate = +((performance.now() - t) / 1000).toFixed(3);
  const local = localHours(raw('timezone'), names, offsets);
  const base = sql`SELECT user_id, groupArrayIf(ts, kind != 0 AND ts > ${w.d90}) AS ts90 FROM profile_events_by_time WHERE app_id = 'bench' AND ts <= ${w.asOf} GROUP BY user_id`;
  const users = sql`SELECT *, ${names}[1 + cityHash64(user_id) % ${names.length}] AS timezone FROM (${base})`;
  const mode = raw(`arrayEnumerateUniq(hs) AS he, if(empty(hs), NULL, hs[indexOf(he, arrayReduce('max', he))]) AS bh`);
  const perZone = join(names.map((z) => sql`arrayMap(t -> toHour(t, ${z}), if(timezone = ${z}, ts90, emptyArrayDateTime()))`));
  const old = await timeQuery(sql`SELECT toString(sum(ifNull(bh, 99))) AS v FROM (SELECT *, arraySort(arrayConcat(${perZone})) AS hs, ${mode} FROM (${users}))`);
  const tab = await timeQuery(sql`SELECT toString(sum(ifNull(bh, 99))) AS v FROM (SELECT *, arraySort(${local.hoursOf(raw('ts90'))}) AS hs, ${mode} FROM (SELECT *, ${join(local.columns)} FROM (${users})))`);
  const none = await timeQuery(sql`SELECT toString(sum(length(ts90))) AS v FROM (${users})`);
  const row = {
    zones: names.length,
    scan_only_s: none.seconds,
    per_zone_tohour_s: old.seconds,
    tabulated_s: tab.seconds,
    tabulate_offsets_s: tabulate,
    best_hour_cost_ratio: +((tab.seconds - none.seconds) / Math.max(0.001, old.seconds - none.seconds)).toFixed(2),
    same_hours: old.value === tab.value,
  };
  // The offsets come from Intl since the tabulation stopped using 18.16's toHour, which is an hour off
  // the day after a DST change at local midnight (profiles/zones.ts): the sums can differ by those users.
  if (!row.same_hours) say(`best hours differ from 18.16's toHour with ${n} zones: ${old.value} vs ${tab.value}`);
  say(JSON.stringify(row));
  rows.push(row);
}

writeFileSync('bench/results/zones.json', JSON.stringify({ runs: RUNS, rows }, null, 2) + '\n');
writeFileSync(
  'bench/results/zones.md',
  [
    `# best_hour against the number of time zones`,
    ``,
    `\`npx tsx bench/zones.ts\` — the 90d timestamps of the profile benchmark's users (${values.db}), each user given one of N zones;`,
    `median of ${RUNS}; "cost" = seconds above the scan that builds the timestamp lists; tabulating = Intl in Node. Same hours (sums) as 18.16's toHour: ${rows.map((r) => `${r.zones} zones ${r.same_hours ? 'yes' : 'no (its toHour errors)'}`).join(', ')}.`,
    ``,
    `| zones | scan only s | one toHour per zone s | tabulated offsets s | tabulating s | cost ratio (tabulated / per zone) |`,
    `|---:|---:|---:|---:|---:|---:|`,
    ...rows.map((r) => `| ${r.zones} | ${r.scan_only_s} | ${r.per_zone_tohour_s} | ${r.tabulated_s} | ${r.tabulate_offsets_s} | ${r.best_hour_cost_ratio} |`),
    ``,
  ].join('\n'),
);
await ch.close();
