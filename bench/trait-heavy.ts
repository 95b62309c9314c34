// What trait changes cost a full profile run. The same events for the same
// users go into two apps: in `plain` only identify calls carry traits (as in
// bench/profiles.ts); in `context` every track event also carries the five
// context values (platform, app_version, country, timezone, locale), as mobile
// SDKs send them and demo/generate.ts does, each a trait change in
// user_timeline. Rounds of a full run of each app, alternating which goes
// first; the ratio of the two is paired within rounds, and each run is also
// set against the `GROUP BY user_id` scan of its app's events (the profile
// bench's baseline, the same events in both apps). Then rounds of one segment
// on a context trait, `country = "DE"`, evaluated as the API does
// (evaluateSegment), its count only, in each app.
// Runs in its own database, dropped at the end unless --db is given (then kept
// and reused by a later run with the same --users and --events-per-user).
// Results: bench/results/<--out>.json and .md (default trait-heavy). Never asserted by tests.
// Usage: npx tsx bench/trait-heavy.ts [--users 50000] [--events-per-user 40] [--rounds 3] [--db NAME] [--out NAME]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig } from '../lib/config.ts';
import { migrate } from '../lib/migrate.ts';
import { ident, raw, sql } from '../lib/sql.ts';
import { up } from '../lib/stack.ts';
import { buildProfiles } from '../profiles/job.ts';
import { evaluateSegment } from '../segments/evaluate.ts';
import { mergeFully } from './merged.ts';
import { median, say, secs } from './report.ts';

const { values } = parseArgs({
  options: { users: { type: 'string', default: '50000' }, 'events-per-user': { type: 'string', default: '40' }, rounds: { type: 'string', default: '3' }, db: { type: 'string' }, out: { type: 'string', default: 'trait-heavy' } },
});
const U = Number(values.users);
const N = U * Number(values['events-per-user']);
const ROUNDS = Number(values.rounds);
const APPS = ['plain', 'context'] as const;
const DAY = 86400;

const stack = await up(loadConfig());
const db = values.db ?? `bench_traits_${Date.now()}`;
const admin = new ClickHouse({ url: stack.clickhouseUrl, database: 'default', queryTimeoutS: 3600 });
await admin.exec(sql`CREATE DATABASE IF NOT EXISTS ${ident(db)}`);
const ch = new ClickHouse({ url: stack.clickhouseUrl, database: db, queryTimeoutS: 3600 });

/** N events of U users over 180 days before t0, 5% identify calls; with `context`, every track event carries the five context traits. */
function eventsSql(app: (typeof APPS)[number], t0: number): ReturnType<typeof sql> {
  const u = raw('intHash64(number) % ' + U);
  const context = app === 'context';
  // Per user: fixed platform, country, zone and locale; app_version '3.1' from a per-user instant on, '3.0' before.
  const platform = sql`['ios', 'android', 'web'][1 + intHash64(${u} + 1) % 3]`;
  const country = sql`['DE', 'US', 'FR', 'IN', 'BR', 'JP'][1 + intHash64(${u} + 2) % 6]`;
  const zone = sql`['Europe/Berlin', 'America/New_York', 'Europe/Paris', 'Asia/Kolkata', 'America/Sao_Paulo', 'Asia/Tokyo'][1 + intHash64(${u} + 2) % 6]`;
  const locale = sql`['de-DE', 'en-US', 'fr-FR', 'en-IN', 'pt-BR', 'ja-JP'][1 + intHash64(${u} + 2) % 6]`;
  const version = sql`if(toUInt32(ts) > ${t0} - intHash64(${u} + 3) % ${180 * DAY}, '3.1', '3.0')`;
  const trackKeys = context ? sql`['platform', 'app_version', 'country', 'timezone', 'locale']` : sql`emptyArrayString()`;
  const trackValues = context ? sql`[${platform}, ${version}, ${country}, ${zone}, ${locale}]` : sql`emptyArrayString()`;
  const trackTypes = context ? sql`[1, 1, 1, 1, 1]` : sql`emptyArrayUInt8()`;
  return sql`INSERT INTO events (app_id, user_id, ts, event_id, type, event, prop_keys, prop_strings, prop_numbers, properties, trait_keys, trait_values, trait_types, context, received_at)
SELECT ${app}, concat('u', toString(${u})), ts, hex(intHash64(number + 7)), if(k < 5, 'identify', 'track'),
  multiIf(k < 5, '', k < 70, 'view', k < 95, 'click', 'purchase'),
  if(k >= 95, ['amount', 'category'], if(k >= 5 AND k < 70, ['category'], emptyArrayString())),
  if(k >= 95, ['12.5', cat], if(k >= 5 AND k < 70, [cat], emptyArrayString())),
  if(k >= 95, [12.5, nan], if(k >= 5 AND k < 70, [nan], emptyArrayFloat64())),
  if(k >= 95, concat('{"amount":12.5,"category":"', cat, '"}'), if(k >= 5 AND k < 70, concat('{"category":"', cat, '"}'), '{}')),
  if(k < 5, ['timezone', 'platform', 'country'], ${trackKeys}), if(k < 5, [${zone}, ${platform}, ${country}], ${trackValues}), if(k < 5, [1, 1, 1], ${trackTypes}),
  ${context ? sql`if(k < 5, '{}', concat('{"platform":"', ${platform}, '","app_version":"', ${version}, '","country":"', ${country}, '","timezone":"', ${zone}, '","locale":"', ${locale}, '"}'))` : sql`'{}'`},
  ts + 2
FROM (
  SELECT number, toDateTime(${t0} - intHash64(number + 99) % ${180 * DAY}) AS ts, intHash64(number * 13 + 5) % 100 AS k,
    ['books', 'toys', 'garden', 'music'][1 + intHash64(number * 11) % 4] AS cat
  FROM numbers(${N})
)`;
}

try {
  await migrate(ch);
  await ch.exec(sql`CREATE TABLE IF NOT EXISTS bench_meta (users UInt64, events UInt64, t0 UInt32) ENGINE = TinyLog`);
  const meta = await ch.one<{ users: string; events: string; t0: string }>(sql`SELECT users, events, t0 FROM bench_meta LIMIT 1`);
  let t0: number;
  if (meta && Number(meta.users) === U && Number(meta.events) === N) {
    t0 = Number(meta.t0);
    say(`reusing ${N} events of ${U} users per app in ${db}`);
    // A table a migration added since the load: backfilled, maybe not merged yet.
    await mergeFully(ch, ['user_context_traits']);
  } else {
    if (meta) throw new Error(`${db} holds ${meta.events} events of ${meta.users} users; use another --db`);
    t0 = Math.floor(Date.now() / 1000) - 3600;
    for (const app of APPS) {
      const t = performance.now();
      await ch.exec(eventsSql(app, t0), { timeoutS: 3600 });
      say(`loaded ${N} events of ${U} users into ${app} in ${secs(t)} s`);
    }
    await mergeFully(ch, ['events', 'user_traits', 'user_trait_values', 'user_context_traits', 'profile_events_by_time', 'purchase_events', 'user_timeline']);
    await ch.insert('bench_meta', [{ users: U, events: N, t0 }]);
  }
  const changes = await ch.rows<{ app: string; per_user: number }>(
    sql`SELECT app_id AS app, round(count() / uniqExact(user_id), 1) AS per_user FROM user_traits GROUP BY app_id ORDER BY app_id`,
  );

  const runs: Record<string, { full: number[]; baseline: number[] }> = { plain: { full: [], baseline: [] }, context: { full: [], baseline: [] } };
  for (let round = 0; round < ROUNDS; round++) {
    for (const app of round % 2 ? [...APPS].reverse() : APPS) {
      const t = performance.now();
      await ch.exec(sql`SELECT count() FROM (SELECT user_id, count() FROM events WHERE app_id = ${app} GROUP BY user_id)`);
      runs[app]!.baseline.push(secs(t));
      const full = await buildProfiles(ch, app, { asOf: new Date(t0 * 1000), mode: 'full' });
      runs[app]!.full.push(full.seconds);
    }
    say(`round ${round + 1}: full ${runs.plain!.full.at(-1)} s plain, ${runs.context!.full.at(-1)} s with context traits`);
  }
  const SEGMENT = 'country = "DE"';
  const segmentRuns: Record<string, number[]> = { plain: [], context: [] };
  for (let round = 0; round < ROUNDS; round++) {
    for (const app of round % 2 ? [...APPS].reverse() : APPS) {
      const t = performance.now();
      await evaluateSegment(ch, app, SEGMENT, { asOf: new Date(t0 * 1000), limit: 0 });
      segmentRuns[app]!.push(secs(t));
    }
  }
  const r3 = (x: number) => +x.toFixed(3);
  const segmentPaired = segmentRuns.context!.map((c, i) => r3(c / segmentRuns.plain![i]!));
  const paired = runs.context!.full.map((c, i) => r3(c / runs.plain!.full[i]!));
  const overBaseline = (app: string) => runs[app]!.full.map((f, i) => r3(f / runs[app]!.baseline[i]!));
  const out = {
    users: U,
    events_per_app: N,
    rounds: ROUNDS,
    trait_changes_per_user: Object.fromEntries(changes.map((c) => [c.app, Number(c.per_user)])),
    full_seconds: { plain: median(runs.plain!.full), context: median(runs.context!.full) },
    context_over_plain: { median: median(paired), rounds: paired },
    full_over_baseline: { plain: median(overBaseline('plain')), context: median(overBaseline('context')) },
    segment: { expression: SEGMENT, seconds: { plain: median(segmentRuns.plain!), context: median(segmentRuns.context!) }, context_over_plain: { median: median(segmentPaired), rounds: segmentPaired } },
  };
  writeFileSync(`bench/results/${values.out}.json`, JSON.stringify(out, null, 2) + '\n');
  writeFileSync(
    `bench/results/${values.out}.md`,
    `# What trait changes cost a full profile run

\`npx tsx bench/trait-heavy.ts --users ${U} --events-per-user ${N / U} --rounds ${ROUNDS}\` — ${N.toLocaleString('en')} events of
${U.toLocaleString('en')} users in each of two apps, the same events: in \`plain\` only identify calls (5%) carry traits; in \`context\`
every track event also carries the five context values, as mobile SDKs send them. ClickHouse 18.16 on this 2-core machine;
medians of ${ROUNDS} rounds, each a full run of both apps in alternating order.

| | plain | context |
|---|---:|---:|
| trait changes per user (\`user_traits\`) | ${out.trait_changes_per_user.plain} | ${out.trait_changes_per_user.context} |
| full run, s | ${out.full_seconds.plain} | ${out.full_seconds.context} |
| full run / its app's \`GROUP BY user_id\` scan | ${out.full_over_baseline.plain} | ${out.full_over_baseline.context} |

Full run with context traits / without, paired within rounds: **${out.context_over_plain.median}** (rounds: ${paired.join(', ')}).

Segment \`${SEGMENT}\` (count only, at the load's as_of), ${ROUNDS} rounds: ${out.segment.seconds.plain} s plain, ${out.segment.seconds.context} s with context;
with / without, paired: **${out.segment.context_over_plain.median}** (rounds: ${segmentPaired.join(', ')}).
`,
  );
  say(`context / plain: ${out.context_over_plain.median}; written to bench/results/${values.out}.md`);
} finally {
  if (values.db === undefined) await admin.exec(sql`DROP DATABASE IF EXISTS ${ident(db)}`);
}
