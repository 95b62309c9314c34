// Repairs the tables the materialized views on `events` fill, after an INSERT
// that failed part-way. ClickHouse writes an INSERT's block to `events` first,
// then pushes it through the views one after another (18.16: in name order) and
// stops at the first that fails: e.g. "Too many parts" on user_timeline leaves
// the batch in `events`, app_users and event_ids, and in none of the tables of
// the later views. The retry's id lookup then finds the events stored and would
// skip them, so profiles and segments would never see them (test/ingest/faults.test.ts).
//
// So a retry of a failed INSERT (or another consumer's first attempt, told by
// the mark on the partitions' committed offsets: ingest/consumer.ts) re-derives
// the events it finds stored into every view's table, with each view's own
// SELECT (read from ClickHouse, so a migration that changes a view changes its
// repair too) over just those rows of `events`. Tables whose view had succeeded then hold a copy, which
// their readers already tolerate, as they do for a copy that slips past the
// id lookup: the profile job counts an event once by its hash, traits and
// first-seen tables keep one value per key, and merges collapse the rest.
// Last, each repaired user is recorded in `ingest_repairs`
// (130_ingest_repairs.sql), which incremental profile runs treat as a late
// arrival: the events' received_at is the failed attempt's, which a run may
// have passed while the derived rows were missing.
import type { ClickHouse } from '../lib/clickhouse.ts';
import { ident, raw, sql, type Sql } from '../lib/sql.ts';
import { rowsByApp } from './dedup.ts';
import type { EventRow } from './normalize.ts';

/** A materialized view on `events`: the table it fills, its output columns and its SELECT. */
export interface EventsView {
  name: string;
  target: string;
  columns: string[];
  select: string;
}

const IDENTIFIER = String.raw`\x60?[A-Za-z_][A-Za-z0-9_]*\x60?`;
const unquote = (s: string) => s.replace(/`/g, '');

/**
 * Parses `CREATE MATERIALIZED VIEW db.v TO db.t (columns) AS SELECT …` as
 * system.tables.create_table_query shows it; undefined for a view that does
 * not read `database`.events. Pure.
 */
export function parseEventsView(name: string, createQuery: string, database: string, columns: string[]): EventsView | undefined {
  const to = new RegExp(String.raw`\bTO\s+(?:${IDENTIFIER}\.)?(${IDENTIFIER})`).exec(createQuery);
  const as = /\)\s+AS\s+(SELECT\b[\s\S]*)$/.exec(createQuery) ?? /\bAS\s+(SELECT\b[\s\S]*)$/.exec(createQuery);
  if (!to || !as) return undefined;
  const select = as[1]!;
  const from = sourcePattern(database);
  const matches = select.match(new RegExp(from.source, 'g')) ?? [];
  if (matches.length === 0) return undefined;
  if (matches.length > 1) throw new Error(`materialized view ${name} reads events more than once; ingest cannot repair its table after a failed insert`);
  return { name, target: unquote(to[1]!), columns, select };
}

function sourcePattern(database: string): RegExp {
  return new RegExp(String.raw`\bFROM\s+(?:\x60?${database}\x60?\.)?\x60?events\x60?(?![A-Za-z0-9_.])`);
}

/** The views on `events` in the client's database. */
export async function eventsViews(ch: ClickHouse): Promise<EventsView[]> {
  const views = await ch.rows<{ name: string; query: string }>(
    sql`SELECT name, create_table_query AS query FROM system.tables WHERE database = currentDatabase() AND engine = 'MaterializedView' ORDER BY name`,
  );
  const out: EventsView[] = [];
  for (const v of views) {
    // DESCRIBE lists them in order (18.16's system.columns has no position).
    const columns = (await ch.rows<{ name: string }>(sql`DESCRIBE TABLE ${ident(v.name)}`)).map((c) => c.name);
    const parsed = parseEventsView(v.name, v.query, ch.database, columns);
    if (parsed) out.push(parsed);
  }
  return out;
}

/** The stored rows of `events` that are `rows` (one app's), as a subquery. */
function storedRowsSql(appId: string, rows: readonly EventRow[]): Sql {
  const users = [...new Set(rows.map((r) => r.user_id))];
  // ts holds only digits, so the first NUL ends it: the key is unambiguous.
  const keys = [...new Set(rows.map((r) => `${r.ts}\u0000${r.event_id}`))];
  return sql`(SELECT * FROM events
    WHERE app_id = ${appId}
      AND user_id IN (SELECT arrayJoin(${users}))
      AND concat(toString(toUInt32(ts)), ${'\u0000'}, event_id) IN (SELECT arrayJoin(${keys})))`;
}

/** The INSERT that re-derives `rows` (one app's, stored in `events`) into one view's table. Pure. */
export function repairSql(view: EventsView, database: string, appId: string, rows: readonly EventRow[]): Sql {
  // The view's SELECT is our own schema's text, read back from ClickHouse, not input.
  const select = view.select.replace(sourcePattern(database), () => `FROM ${storedRowsSql(appId, rows).text} AS events`);
  return sql`INSERT INTO ${ident(view.target)} (${raw(view.columns.map((c) => ident(c).text).join(', '))}) ${raw(select)}`;
}

/**
 * Re-derives `rows` (found stored in `events` on the retry of a failed INSERT)
 * into every view's table, then records their users in ingest_repairs.
 */
export async function repairDerivedTables(ch: ClickHouse, rows: readonly EventRow[], opts: { timeoutS?: number } = {}): Promise<void> {
  if (rows.length === 0) return;
  const views = await eventsViews(ch);
  const byApp = rowsByApp(rows);
  const repairedAt = Math.floor(Date.now() / 1000);
  for (const [appId, list] of byApp) {
    for (const v of views) await ch.exec(repairSql(v, ch.database, appId, list), { timeoutS: opts.timeoutS ?? 120 });
    await ch.insert(
      'ingest_repairs',
      [...new Set(list.map((r) => r.user_id))].map((user_id) => ({ app_id: appId, user_id, repaired_at: repairedAt })),
    );
  }
}
