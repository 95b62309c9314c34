// The ClickHouse adapter: a thin layer over @clickhouse/client that only accepts
// `Sql` built by lib/sql.ts, so no caller can hand it a concatenated string.
import { ClickHouseLogLevel, createClient, type ClickHouseClient } from '@clickhouse/client';
import type { Readable } from 'node:stream';
import type { Sql } from './sql.ts';

export interface ClickHouseOptions {
  url: string;
  database: string;
  username?: string;
  password?: string;
  /** Seconds before ClickHouse itself cancels a query (max_execution_time). */
  queryTimeoutS?: number;
  /** Settings for every query of this client (benchmarks: log_queries). */
  settings?: Record<string, string | number>;
}

export class ClickHouse {
  readonly client: ClickHouseClient;
  readonly database: string;
  private readonly queryTimeoutS: number;

  constructor(readonly options: ClickHouseOptions) {
    this.database = options.database;
    this.queryTimeoutS = options.queryTimeoutS ?? 300;
    this.client = createClient({
      url: options.url,
      database: options.database,
      username: options.username ?? 'default',
      password: options.password ?? '',
      request_timeout: (this.queryTimeoutS + 30) * 1000,
      max_open_connections: 16,
      // The client warns about progress headers on every construction; its own
      // errors still reach us as exceptions.
      log: { level: ClickHouseLogLevel.ERROR },
    });
  }

  /** Runs a SELECT and returns all rows (JSONEachRow). For large results use `stream`. */
  async rows<T = Record<string, unknown>>(q: Sql, opts: { timeoutS?: number; queryId?: string } = {}): Promise<T[]> {
    const rs = await this.client.query({
      query: q.text,
      format: 'JSONEachRow',
      query_id: opts.queryId,
      clickhouse_settings: { ...this.options.settings, max_execution_time: opts.timeoutS ?? this.queryTimeoutS },
    });
    return (await rs.json()) as T[];
  }

  async one<T = Record<string, unknown>>(q: Sql): Promise<T | undefined> {
    return (await this.rows<T>(q))[0];
  }

  /** DDL and other statements without a result; `settings` for this statement only. */
  async exec(q: Sql, opts: { timeoutS?: number; settings?: Record<string, string | number> } = {}): Promise<void> {
    await this.client.command({
      query: q.text,
      clickhouse_settings: { ...this.options.settings, ...opts.settings, max_execution_time: opts.timeoutS ?? this.queryTimeoutS },
    });
  }

  /** Inserts JSON objects; keys must be column names of the table. */
  async insert(table: string, values: readonly Record<string, unknown>[]): Promise<void> {
    if (values.length === 0) return;
    await this.client.insert({ table, values: values as Record<string, unknown>[], format: 'JSONEachRow' });
  }

  /** Streams a SELECT in the given text format; the caller consumes the Node stream. */
  async stream(q: Sql, format: 'JSONEachRow' | 'TabSeparated' | 'CSV' | 'CSVWithNames', opts: { queryId?: string; timeoutS?: number } = {}): Promise<Readable> {
    const rs = await this.client.query({
      query: q.text,
      format,
      query_id: opts.queryId,
      clickhouse_settings: { ...this.options.settings, max_execution_time: opts.timeoutS ?? this.queryTimeoutS },
    });
    return rs.stream() as unknown as Readable;
  }

  /** A client on another database of the same server (tests, migrations). */
  withDatabase(database: string): ClickHouse {
    return new ClickHouse({ ...this.options, database });
  }

  async ping(): Promise<boolean> {
    try {
      const r = await this.client.ping();
      return r.success;
    } catch {
      return false;
    }
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

/**
 * The ClickHouse error code of a failed query: the client's parsed `code`, or
 * the leading "Code: N" of the text 18.16 sends, which the client leaves unparsed.
 */
export function clickhouseErrorCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^\d+$/.test(code)) return code;
  return e instanceof Error ? /^Code: (\d+)\b/.exec(e.message)?.[1] : undefined;
}
