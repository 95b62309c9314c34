// Small helpers every benchmark script shares: progress lines, timings, medians,
// and the CPU ClickHouse itself accounts to queries.
import type { ClickHouse } from '../lib/clickhouse.ts';
import { sql, type Sql } from '../lib/sql.ts';

/** A progress line on stderr (stdout stays free for results). */
export const say = (m: string): void => void process.stderr.write(m + '\n');

/** Seconds since `t` (a performance.now() reading), to the millisecond. */
export const secs = (t: number): number => +((performance.now() - t) / 1000).toFixed(3);

/** The median of a non-empty list (the upper one of an even count). */
export const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** A query that finished, from system.query_log: its text, wall and CPU (user + system, every thread) milliseconds. */
export interface LoggedQuery {
  query: string;
  ms: number;
  cpu: number;
}

/**
 * Waits until query_log's one-second resolution separates what runs before
 * from what runs after: call it before and after each measured stretch.
 */
export const queryLogGap = (): Promise<void> => new Promise((r) => setTimeout(r, 1100));

/**
 * The queries (logged with the setting log_queries = 1) that finished between
 * two instants. query_log stamps whole seconds, so callers leave a queryLogGap
 * on each side: a query of the stretch finishes by `to`, in second floor(to),
 * and one after the gap no earlier than the second after.
 */
export async function queriesFinished(ch: ClickHouse, from: Date, to: Date): Promise<LoggedQuery[]> {
  await ch.exec(sql`SYSTEM FLUSH LOGS`);
  const rows = await ch.rows<{ query: string; ms: string; cpu: string }>(sql`
    SELECT query, query_duration_ms AS ms,
      intDiv(ProfileEvents.Values[indexOf(ProfileEvents.Names, 'UserTimeMicroseconds')] + ProfileEvents.Values[indexOf(ProfileEvents.Names, 'SystemTimeMicroseconds')], 1000) AS cpu
    FROM system.query_log
    WHERE type = 2 AND event_time >= toDateTime(${Math.floor(from.getTime() / 1000)}) AND event_time <= toDateTime(${Math.floor(to.getTime() / 1000)})
      AND query NOT LIKE '%system.query_log%'`);
  return rows.map((r) => ({ query: r.query, ms: Number(r.ms), cpu: Number(r.cpu) }));
}

/** Runs `q` alone and returns the CPU milliseconds query_log accounts to it. */
export async function queryCpu(ch: ClickHouse, q: Sql): Promise<number> {
  await queryLogGap();
  const from = new Date();
  await ch.exec(q, { timeoutS: 3600 });
  const to = new Date();
  await queryLogGap();
  return (await queriesFinished(ch, from, to)).filter((l) => l.query === q.text).reduce((a, l) => a + l.cpu, 0);
}
