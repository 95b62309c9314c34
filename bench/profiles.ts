// The profile job at scale, against a baseline measured in the same run:
//   baseline     SELECT user_id, count() FROM events WHERE app_id = … GROUP BY user_id
//   full         buildProfiles(full) — every built-in field for every user
//   incremental  after 1% new events (sessions of recently active users, the
//                next hour) and as_of moved forward by that hour
// measured in rounds of baseline → full → incremental, each ratio paired
// within its round. Targets: full ≤ 3× baseline, incremental ≤ 15% of full
// (wall time). The same ratios in ClickHouse's CPU accounting are reported too.
// Also checks that the incremental run equals a full run at the same as_of
// (row checksums).
// Runs in its own database, dropped at the end unless --keep or --db: with
// --db NAME the generated events stay in NAME and a later run with the same
// --db (and --events/--users) reuses them instead of loading again (~6 min for 20M).
// Usage: npx tsx bench/profiles.ts [--events 20000000] [--users 1000000] [--runs 3] [--db NAME] [--keep]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig } from '../lib/config.ts';
import { migrate } from '../lib/migrate.ts';
import { ident, raw, sql } from '../lib/sql.ts';
import { up } from '../lib/stack.ts';
import { buildProfiles, dropSupersededRuns, type BuildResult } from '../profiles/job.ts';
import { listRuns } from '../profiles/read.ts';
import { runRowsSql } from '../profiles/sql.ts';
import { mergeFully } from './merged.ts';
import { median, queriesFinished, queryLogGap, say, secs } from './report.ts';

const { values } = parseArgs({ options: { events: { type: 'string', default: '20000000' }, users: { type: 'string', default: '1000000' }, runs: { type: 'string', default: '3' }, keep: { type: 'boolean', default: false }, db: { type: 'string' } } });
const N = Number(values.events);
const U = Number(values.users);
const RUNS = Number(values.runs);
const APP = 'bench';
const HOUR = 3600;

const cfg = loadConfig();
const stack = await up(cfg);
const db = values.db ?? `bench_profiles_${Date.now()}`;
const keep = values.keep || values.db !== undefined;
// log_queries: the CPU of each measured stretch comes from system.query_log.
const ch = new ClickHouse({ url: stack.clickhouseUrl, database: db, queryTimeoutS: 3600, settings: { log_queries: 1 } });

// Realistic shape, from numbers(): activity skewed across users (a few heavy,
// many light), more events recently than a year ago, 5% identify calls setting
// timezone (20 zones incl. DST ones and an invalid name), platform and country;
// 60% view, 20% click, 15% add_to_cart, 5% purchase with amount/category/item.
const ZONES = ['America/New_York', 'America/Los_Angeles', 'America/Chicago', 'America/Sao_Paulo', 'Europe/Berlin', 'Europe/London', 'Europe/Paris', 'Europe/Madrid', 'Europe/Moscow', 'Asia/Kolkata', 'Asia/Shanghai', 'Asia/Tokyo', 'Asia/Singapore', 'Asia/Dubai', 'Australia/Sydney', 'Pacific/Auckland', 'Africa/Lagos', 'UTC', 'Asia/Kathmandu', 'Mars/Olympus'];
const CATEGORIES = ['books', 'toys', 'garden', 'electronics', 'fashion', 'beauty', 'sports', 'food', 'home', 'music', 'games', 'office'];

function eventsSql(p: { count: number; offset: number; userExpr: string; tsExpr: string; receivedExpr: string }) {
  // Every value here is a program constant or a number; the expressions are program text.
  const r = (salt: number) => `(intHash64(number * 7 + ${salt}) % 1000000) / 1000000.`;
  const kind = `(intHash64(number * 13 + 5) % 100)`;
  return sql`INSERT INTO events (app_id, user_id, ts, event_id, type, event, prop_keys, prop_strings, prop_numbers, properties, trait_keys, trait_values, trait_types, context, received_at)
SELECT ${APP}, user_id, ts, event_id, type, event, prop_keys, prop_strings, prop_numbers, properties, trait_keys, trait_values, trait_types, context, received_at FROM (
  SELECT
    concat('u', toString(${ident('__u')})) AS user_id,
    ts,
    hex(intHash64(number + ${p.offset} + 1000000007)) AS event_id,
    if(${ident('__k')} < 5, 'identify', 'track') AS type,
    multiIf(${ident('__k')} < 5, '', ${ident('__k')} < 65, 'view', ${ident('__k')} < 85, 'click', ${ident('__k')} < 100 - 5, 'add_to_cart', 'purchase') AS event,
    multiIf(event = 'purchase', ['amount', 'currency', 'category', 'item_id'], event = 'view', ['category', 'item_id', 'page'], event = 'click', ['target', 'campaign_id'], event = 'add_to_cart', ['item_id'], emptyArrayString()) AS prop_keys,
    multiIf(event = 'purchase', [toString(${ident('__amt')}), 'EUR', ${ident('__cat')}, ${ident('__item')}], event = 'view', [${ident('__cat')}, ${ident('__item')}, '/p'], event = 'click', ['banner', 'c1'], event = 'add_to_cart', [${ident('__item')}], emptyArrayString()) AS prop_strings,
    multiIf(event = 'purchase', [${ident('__amt')}, nan, nan, nan], event = 'view', [nan, nan, nan], event = 'click', [nan, nan], event = 'add_to_cart', [nan], emptyArrayFloat64()) AS prop_numbers,
    multiIf(event = 'purchase', concat('{"amount":', toString(${ident('__amt')}), ',"currency":"EUR","category":"', ${ident('__cat')}, '","item_id":"', ${ident('__item')}, '"}'),
            event = 'view', concat('{"category":"', ${ident('__cat')}, '","item_id":"', ${ident('__item')}, '","page":"/p"}'), '{}') AS properties,
    if(type = 'identify', ['timezone', 'platform', 'country'], emptyArrayString()) AS trait_keys,
    if(type = 'identify', [${ZONES}[1 + intHash64(${ident('__u')}) % ${ZONES.length}], ['ios', 'android', 'web'][1 + intHash64(${ident('__u')} + 1) % 3], ['DE', 'US', 'FR', 'IN', 'BR', 'JP', 'AU', 'GB', 'CN', 'NG'][1 + intHash64(${ident('__u')} + 2) % 10]], emptyArrayString()) AS trait_values,
    if(type = 'identify', [1, 1, 1], emptyArrayUInt8()) AS trait_types,
    '{}' AS context,
    ${raw(p.receivedExpr)} AS received_at
  FROM (
    SELECT number,
      ${raw(p.userExpr)} AS ${ident('__u')},
      ${raw(p.tsExpr)} AS ts,
      ${raw(kind)} AS ${ident('__k')},
      round(5 + 195 * ${raw(r(3))}, 2) AS ${ident('__amt')},
      ${CATEGORIES}[1 + intHash64(number * 11 + ${ident('__u')}) % ${CATEGORIES.length}] AS ${ident('__cat')},
      concat('i', toString(intHash64(number * 17) % 50000)) AS ${ident('__item')}
    FROM numbers(${p.offset}, ${p.count})
  )
)`;
}

/** Over the run's rows as readers see them (a layered run's inherited rows included). */
async function checksum(runId: string): Promise<string> {
  const run = (await listRuns(ch, APP)).find((r) => r.run_id === runId)!;
  const row = await ch.one<{ c: string; n: string }>(sql`
    -- avg_order_value is revenue_total / purchases_total, both compared; its last digits vary with float summation order.
    SELECT toString(sum(cityHash64(user_id, toUInt32(first_seen), toUInt32(last_seen), events_total, events_7d, events_30d, active_days_30d,
      views_30d, clicks_30d, purchases_30d, purchases_total, round(revenue_total, 2), round(revenue_30d, 2),
      ifNull(toUInt32(last_purchase_at), 0), ifNull(recency_days, 999999), ifNull(r_score, 0), ifNull(f_score, 0), ifNull(m_score, 0),
      ifNull(rfm_segment, ''), ifNull(top_category, '\\0'), ifNull(best_hour, 99), ifNull(timezone, '\\0'), ifNull(platform, '\\0'),
      ifNull(country, '\\0'), trait_keys, trait_values, random_bucket))) AS c, toString(count()) AS n
    FROM (${runRowsSql(APP, run)})`);
  return `${row?.n}:${row?.c}`;
}

try {
  await migrate(ch);
  // The generation parameters of kept data; t0 is the as_of of the full runs.
  await ch.exec(sql`CREATE TABLE IF NOT EXISTS bench_meta (events UInt64, users UInt64, t0 UInt32, load_seconds Float64) ENGINE = TinyLog`);
  const meta = await ch.one<{ events: string; users: string; t0: string; load_seconds: number }>(sql`SELECT events, users, t0, load_seconds FROM bench_meta LIMIT 1`);
  let t0: number;
  let loadS: number;
  let t = performance.now();
  if (meta && Number(meta.events) === N && Number(meta.users) === U) {
    t0 = Number(meta.t0);
    loadS = Number(meta.load_seconds);
    say(`reusing ${N} events for ${U} users in ${db} (t0 ${t0})`);
    // Runs of an earlier invocation would be the incremental runs' previous run.
    await ch.exec(sql`TRUNCATE TABLE profiles`);
    await ch.exec(sql`TRUNCATE TABLE profile_runs`);
  } else {
    if (meta) throw new Error(`${db} holds ${meta.events} events for ${meta.users} users; use another --db`);
    t0 = Math.floor(Date.now() / 1000) - HOUR * 2;
    say(`loading ${N} events for ${U} users into ${db}…`);
    const chunk = 5_000_000;
    for (let off = 0; off < N; off += chunk) {
      await ch.exec(
        eventsSql({
          count: Math.min(chunk, N - off),
          offset: off,
          // Skewed activity: user = floor(U * r^1.6).
          userExpr: `toUInt64(floor(${U} * pow((intHash64(number) % 1000000) / 1000000., 1.6)))`,
          // More events recently: age = 365 d * r^1.5.
          tsExpr: `toDateTime(${t0} - toUInt32(31536000 * pow((intHash64(number + 99) % 1000000) / 1000000., 1.5)))`,
          receivedExpr: `ts + 2`,
        }),
        { timeoutS: 3600 },
      );
      say(`  ${Math.min(off + chunk, N)} events`);
    }
    loadS = secs(t);
    say(`loaded in ${loadS} s; merging parts (OPTIMIZE … FINAL) for a steady state…`);
    t = performance.now();
    await mergeFully(ch, ['events', 'user_traits', 'profile_events_by_time', 'purchase_events', 'user_timeline']);
    say(`merged in ${secs(t)} s`);
    await ch.insert('bench_meta', [{ events: N, users: U, t0, load_seconds: loadS }]);
  }
  const stats = await ch.one<{ users: string; events: string }>(sql`SELECT uniqExact(user_id) AS users, count() AS events FROM events WHERE app_id = ${APP} AND ts <= toDateTime(${t0})`);
  const parts = await ch.rows<{ table: string; parts: string }>(sql`SELECT table, count() AS parts FROM system.parts WHERE database = currentDatabase() AND active AND table IN ('events', 'profile_events_by_time', 'user_timeline') GROUP BY table`);

  // 1% new events: sessions of 10 events by N/1000 recently active users during the next hour.
  // They are stamped after the full runs' as_of, so those runs ignore them.
  const newEvents = Math.round(N / 100);
  const sessions = Math.max(1, Math.round(newEvents / 10));
  t = performance.now();
  // Kept data may hold them from an earlier run already (same rows: same numbers).
  const added = Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM events WHERE app_id = ${APP} AND ts > toDateTime(${t0})`))?.n ?? 0);
  if (added === 0)
    await ch.exec(
      eventsSql({
        count: newEvents,
        offset: N,
        userExpr: `toUInt64(floor(${U} * pow((intHash64(intDiv(number, 10)) % 1000000) / 1000000., 1.6)))`,
        tsExpr: `toDateTime(${t0} + 1 + intHash64(intDiv(number, 10)) % ${HOUR - 600} + number % 10 * 60)`,
        receivedExpr: `now()`,
      }),
      { timeoutS: 3600 },
    );
  else if (added !== newEvents) throw new Error(`${db} holds ${added} events after t0, expected 0 or ${newEvents}`);
  say(`added ${newEvents} events in ${sessions} sessions (${secs(t)} s)`);

  // Rounds of baseline scan → full run → incremental run. The machine's speed
  // drifts over minutes, so each ratio pairs measurements taken seconds apart
  // (full / the baseline just before it, incremental / the full run it starts
  // from) and the reported ratio is the median of the rounds' ratios.
  const asOf1 = new Date(t0 * 1000);
  const asOf2 = new Date((t0 + HOUR) * 1000);
  const baseline: number[] = [];
  const full: BuildResult[] = [];
  const incremental: BuildResult[] = [];
  // CPU (every thread, user + system) that ClickHouse accounts to each stretch's
  // queries: less moved than wall time by other work on the machine. A run's
  // stretch also holds its clean-up after its `seconds` (dropping old runs and
  // stage tables), a few CPU-ms.
  const cpu = { baseline: [] as number[], full: [] as number[], incremental: [] as number[] };
  const cpuOf = async <T>(into: number[], work: () => Promise<T>): Promise<T> => {
    await queryLogGap();
    const from = new Date();
    const result = await work();
    const to = new Date();
    await queryLogGap();
    into.push((await queriesFinished(ch, from, to)).reduce((a, q) => a + q.cpu, 0));
    return result;
  };
  for (let i = 0; i < RUNS; i++) {
    await cpuOf(cpu.baseline, async () => {
      t = performance.now();
      await ch.exec(sql`SELECT count() FROM (SELECT user_id, count() FROM events WHERE app_id = ${APP} GROUP BY user_id)`, { timeoutS: 3600 });
      baseline.push(secs(t));
    });
    full.push(await cpuOf(cpu.full, () => buildProfiles(ch, APP, { asOf: asOf1, mode: 'full' })));
    // The earlier round's run at asOf2 would otherwise be the previous run (a no-op increment).
    await dropSupersededRuns(ch, APP, full[i]!.run_id, 0, 0);
    incremental.push(await cpuOf(cpu.incremental, () => buildProfiles(ch, APP, { asOf: asOf2, mode: 'incremental' })));
    say(
      `round ${i + 1}: baseline ${baseline[i]} s, full ${full[i]!.seconds} s ${JSON.stringify(full[i]!.steps)}, ` +
        `incremental ${incremental[i]!.seconds} s (${incremental[i]!.recomputed_users} of ${incremental[i]!.users} users recomputed) ${JSON.stringify(incremental[i]!.steps)}`,
    );
  }
  const last = incremental[incremental.length - 1]!;
  const check = await buildProfiles(ch, APP, { asOf: asOf2, mode: 'full' });
  const [incSum, fullSum] = [await checksum(last.run_id), await checksum(check.run_id)];
  say(`steps of the last full run: ${JSON.stringify(full[full.length - 1]!.steps)}; of the last incremental: ${JSON.stringify(last.steps)}`);
  say(`incremental = full at the same as_of: ${incSum === fullSum} (${incSum} vs ${fullSum})`);

  const b = median(baseline);
  const f = median(full.map((r) => r.seconds));
  const inc = median(incremental.map((r) => r.seconds));
  const fullRatios = full.map((r, i) => +(r.seconds / baseline[i]!).toFixed(2));
  const incRatios = incremental.map((r, i) => +(r.seconds / full[i]!.seconds).toFixed(3));
  const fullCpuRatios = cpu.full.map((c, i) => +(c / cpu.baseline[i]!).toFixed(2));
  const incCpuRatios = cpu.incremental.map((c, i) => +(c / cpu.full[i]!).toFixed(3));
  const out = {
    events: Number(stats?.events),
    users_with_events: Number(stats?.users),
    new_events: newEvents,
    runs: RUNS,
    load_seconds: loadS,
    seconds: { baseline_scan: b, full: f, incremental: inc, full_after_new_events: check.seconds },
    all_seconds: { baseline_scan: baseline, full: full.map((r) => r.seconds), incremental: incremental.map((r) => r.seconds) },
    // Medians of the rounds' paired ratios (see the loop above).
    ratios: { full_to_baseline: median(fullRatios), incremental_to_full: median(incRatios) },
    round_ratios: { full_to_baseline: fullRatios, incremental_to_full: incRatios },
    targets: { full_to_baseline: 3, incremental_to_full: 0.15 },
    // The same ratios in ClickHouse's CPU milliseconds (system.query_log), paired within rounds likewise.
    cpu_ms: cpu,
    cpu_ratios: { full_to_baseline: median(fullCpuRatios), incremental_to_full: median(incCpuRatios) },
    round_cpu_ratios: { full_to_baseline: fullCpuRatios, incremental_to_full: incCpuRatios },
    recomputed_users: last.recomputed_users,
    profile_users: last.users,
    incremental_equals_full: incSum === fullSum,
    active_parts: Object.fromEntries(parts.map((p) => [p.table, Number(p.parts)])),
    clickhouse: '18.16.1',
    machine: '2 cores',
  };
  writeFileSync('bench/results/profiles.json', JSON.stringify(out, null, 2) + '\n');
  const ok = (v: number, target: number) => (v <= target ? 'met' : 'NOT met');
  writeFileSync(
    'bench/results/profiles.md',
    `# Profile job benchmark

\`npx tsx bench/profiles.ts\` — ${out.events.toLocaleString('en')} events, ${out.users_with_events.toLocaleString('en')} users with events,
ClickHouse 18.16 on this 2-core machine (shared with other work while measuring), ${RUNS} rounds of
baseline scan → full run → incremental run; seconds are medians, ratios are medians of each round's pair
(full / that round's baseline, incremental / that round's full run), since the machine's speed drifts over minutes;
active parts: ${JSON.stringify(out.active_parts)}.

| measurement | seconds |
|---|---|
| baseline: \`SELECT user_id, count() … GROUP BY user_id\` | ${b} |
| full profile job | ${f} |
| incremental job after ${newEvents.toLocaleString('en')} new events (1%), as_of + 1 h | ${inc} |

| ratio | value | target | |
|---|---|---|---|
| full / baseline | ${out.ratios.full_to_baseline} (rounds: ${fullRatios.join(', ')}) | ≤ 3 | ${ok(out.ratios.full_to_baseline, 3)} |
| incremental / full | ${out.ratios.incremental_to_full} (rounds: ${incRatios.join(', ')}) | ≤ 0.15 | ${ok(out.ratios.incremental_to_full, 0.15)} |

The same ratios in CPU milliseconds that ClickHouse accounts to the queries (\`system.query_log\`, every thread,
user + system; less moved by other work on the machine than wall time, and blind to how many cores a run keeps busy):
full / baseline ${out.cpu_ratios.full_to_baseline} (rounds: ${fullCpuRatios.join(', ')}; baseline ${median(cpu.baseline).toLocaleString('en')} CPU-ms),
incremental / full ${out.cpu_ratios.incremental_to_full} (rounds: ${incCpuRatios.join(', ')}; full ${median(cpu.full).toLocaleString('en')} CPU-ms,
incremental ${median(cpu.incremental).toLocaleString('en')}).

Seconds per step — full: \`${JSON.stringify(full[full.length - 1]!.steps)}\`; incremental: \`${JSON.stringify(last.steps)}\`.

Incremental recomputed ${last.recomputed_users?.toLocaleString('en')} of ${last.users.toLocaleString('en')} users and equals a full run at the
same as_of (row checksums): **${out.incremental_equals_full}**.
`,
  );
  say(JSON.stringify(out, null, 2));
} finally {
  if (!keep) await ch.exec(sql`DROP DATABASE IF EXISTS ${ident(db)}`).catch(() => undefined);
  await ch.close();
}
