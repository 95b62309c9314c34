// Keeps redelivered events out of `events` (see sql/README.md, "Deduplication").
// Before a batch is inserted, its (app_id, ts, event_id)s are looked up — in
// `event_ids` by time or in `events` by user, whichever reads fewer granules
// for the batch's shape (lookupStrategy) — and every id already stored, or
// seen earlier in the same batch, is dropped.
import type { ClickHouse } from '../lib/clickhouse.ts';
import { type Sql, sql } from '../lib/sql.ts';
import type { EventRow } from './normalize.ts';

/** Ids per lookup query: bounds the query text (~40 bytes an id) well under max_query_size below. */
const IDS_PER_QUERY = 10_000;
export const MAX_QUERY_SIZE = 16 * 1024 * 1024;
/** Headroom for large batches (18.16 defaults: 256 KiB of query text, 50,000 AST nodes). */
export const LOOKUP_SETTINGS = {
  max_query_size: String(MAX_QUERY_SIZE),
  max_ast_elements: '2000000',
  max_expanded_ast_elements: '2000000',
  max_execution_time: 60,
};

export interface DedupResult {
  fresh: EventRow[];
  /** Dropped because the same (app_id, event_id) appeared earlier in the batch. */
  inBatch: number;
  /** Dropped because the (app_id, ts, event_id) is already stored (in `event_ids` or `events`, as looked up). */
  stored: number;
  /** Those rows: after a failed INSERT, the consumer re-derives them into the views' tables (ingest/repair.ts). */
  storedRows: EventRow[];
}

/** Drops in-batch duplicates by (app_id, event_id); the first occurrence wins. Pure. */
export function dropInBatchDuplicates(rows: readonly EventRow[]): { unique: EventRow[]; dropped: number } {
  const seen = new Set<string>();
  const unique: EventRow[] = [];
  for (const r of rows) {
    const k = r.app_id + '\u0000' + r.event_id;
    if (seen.has(k)) continue;
    seen.add(k);
    unique.push(r);
  }
  return { unique, dropped: rows.length - unique.length };
}

/**
 * Where a batch's ids are looked up. `event_ids` is sorted by (app_id, ts,
 * event_id): a real-time batch (seconds to minutes of traffic, thousands of
 * users) touches only the granules of those seconds. A historical import is
 * usually ordered by user and spread over months: its timestamps hit nearly
 * every granule of `event_ids` (bench/results/ingest.md: the whole table read
 * per batch), while `events`, sorted by (app_id, user_id, ts, event_id), holds
 * each of its few users in one or two granules (21M events: 0.12 s against
 * 1.0–1.5 s for a 20,000-event batch of 949 users). Fewer distinct users than
 * distinct hours marks the second kind.
 */
export function lookupStrategy(rows: readonly EventRow[]): 'by_time' | 'by_user' {
  const users = new Set<string>();
  const hours = new Set<number>();
  for (const r of rows) {
    users.add(r.user_id);
    hours.add(Math.floor(r.ts / 3600));
  }
  return users.size < hours.size ? 'by_user' : 'by_time';
}

/**
 * The lookup for one app's rows, reading only the granules of the batch's
 * seconds (by_time) or users (by_user). The keys travel as array literals
 * turned into sets by subqueries: 18.16 parses an array literal as one AST
 * node, while an IN list of 20,000 toDateTime(…) calls takes ~4x longer to
 * analyse (bench/results/ingest.md); both forms read the same granules.
 * Either way the caller matches (ts, event_id), so both strategies find
 * exactly the same stored events.
 */
export function lookupSql(appId: string, rows: readonly EventRow[], strategy = lookupStrategy(rows)): Sql {
  const ids = [...new Set(rows.map((r) => r.event_id))];
  if (strategy === 'by_user') {
    const users = [...new Set(rows.map((r) => r.user_id))];
    return sql`SELECT toUInt32(ts) AS t, event_id FROM events
      WHERE app_id = ${appId}
        AND user_id IN (SELECT arrayJoin(${users}))
        AND event_id IN (SELECT arrayJoin(${ids}))`;
  }
  const tsSet = [...new Set(rows.map((r) => r.ts))];
  return sql`SELECT toUInt32(ts) AS t, event_id FROM event_ids
      WHERE app_id = ${appId}
        AND ts IN (SELECT toDateTime(arrayJoin(${tsSet})))
        AND event_id IN (SELECT arrayJoin(${ids}))`;
}

/** The (ts, event_id) keys of `rows` already present in event_ids, as `${ts}\0${event_id}` per app. */
export async function storedKeys(ch: ClickHouse, appId: string, rows: readonly EventRow[], strategy?: 'by_time' | 'by_user'): Promise<Set<string>> {
  const found = new Set<string>();
  for (let i = 0; i < rows.length; i += IDS_PER_QUERY) {
    const chunk = rows.slice(i, i + IDS_PER_QUERY);
    const rs = await ch.client.query({
      query: lookupSql(appId, chunk, strategy ?? lookupStrategy(chunk)).text,
      format: 'JSONEachRow',
      clickhouse_settings: LOOKUP_SETTINGS,
    });
    for (const r of (await rs.json()) as { t: number | string; event_id: string }[]) found.add(`${Number(r.t)}\u0000${r.event_id}`);
  }
  return found;
}

/** Rows grouped by app_id, in their order: lookups and repairs run per app. Pure. */
export function rowsByApp(rows: readonly EventRow[]): Map<string, EventRow[]> {
  const byApp = new Map<string, EventRow[]>();
  for (const r of rows) {
    let list = byApp.get(r.app_id);
    if (!list) byApp.set(r.app_id, (list = []));
    list.push(r);
  }
  return byApp;
}

/**
 * Removes in-batch duplicates and events already stored. `strategy` forces the
 * lookup: after an INSERT that failed part-way, only `events` (by_user), which
 * an INSERT writes before any view, tells exactly what is stored.
 */
export async function dedupBatch(ch: ClickHouse, rows: readonly EventRow[], strategy?: 'by_time' | 'by_user'): Promise<DedupResult> {
  const { unique, dropped } = dropInBatchDuplicates(rows);
  const byApp = rowsByApp(unique);
  const fresh: EventRow[] = [];
  const storedRows: EventRow[] = [];
  for (const [appId, list] of byApp) {
    const found = await storedKeys(ch, appId, list, strategy);
    if (found.size === 0) {
      for (const r of list) fresh.push(r);
      continue;
    }
    for (const r of list) {
      if (found.has(`${r.ts}\u0000${r.event_id}`)) storedRows.push(r);
      else fresh.push(r);
    }
  }
  return { fresh, inBatch: dropped, stored: storedRows.length, storedRows };
}
