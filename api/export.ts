// Streaming exports of segment members: NDJSON, CSV or Arrow IPC (stream
// format), produced from a ClickHouse result stream without ever holding the
// whole result. The web ReadableStream is pull-based: ClickHouse is read only
// when the HTTP side asks for more, so a slow client slows the query down
// instead of filling memory. Cancelling the stream (client gone) stops the
// query inside ClickHouse with KILL QUERY.
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import {
  AsyncByteQueue,
  Bool,
  type DataType,
  Field,
  Float64,
  Int32,
  makeData,
  RecordBatch,
  RecordBatchStreamWriter,
  Schema,
  Struct,
  Utf8,
  vectorFromArray,
} from 'apache-arrow';
import type { ClickHouse } from '../lib/clickhouse.ts';
import { log } from '../lib/log.ts';
import { ident, raw, type Sql, sql } from '../lib/sql.ts';
import { runRowsSql, type RunLayer } from '../profiles/sql.ts';

export const EXPORT_FORMATS = ['ndjson', 'csv', 'arrow'] as const;
export type ExportFormat = (typeof EXPORT_FORMATS)[number];

export const EXPORT_CONTENT_TYPES: Record<ExportFormat, string> = {
  ndjson: 'application/x-ndjson',
  csv: 'text/csv; charset=utf-8',
  arrow: 'application/vnd.apache.arrow.stream',
};

/**
 * How a column's value is rendered. `json` values are objects/arrays (traits,
 * tags; JSON text in CSV and Arrow); `scalar` is a string, number or boolean
 * decided per row (a trait; text in CSV and Arrow); `timestamp` comes from
 * ClickHouse as epoch seconds (select a DateTime with toUInt32) and leaves as
 * ISO 8601 UTC.
 */
export type ColumnKind = 'string' | 'number' | 'integer' | 'boolean' | 'timestamp' | 'json' | 'scalar';

/** Profile fields that are whole numbers by definition (counts, days, scores, hours, buckets): Int32 in Arrow. */
const INTEGER_FIELDS: ReadonlySet<string> = new Set([
  'events_total', 'events_7d', 'events_30d', 'active_days_30d', 'views_30d', 'clicks_30d', 'purchases_30d', 'purchases_total',
  'recency_days', 'r_score', 'f_score', 'm_score', 'best_hour', 'random_bucket',
]);

export interface ExportColumn {
  name: string;
  kind: ColumnKind;
  /** Derives the value from the raw row (default: the row's column of the same name, normalised by kind). */
  value?: (row: Record<string, unknown>) => Value;
}

export interface ExportSource {
  /** Rows carry exactly `columns` by name, in user_id order. */
  query: Sql;
  columns: readonly ExportColumn[];
}

export interface ExportOptions {
  timeoutS?: number;
  /** Rows per Arrow record batch. */
  arrowBatchRows?: number;
  queryId?: string;
  /** Called once when the stream ends, however it ends (sent, cancelled, failed). */
  onEnd?: () => Promise<void>;
}

type Value = string | number | boolean | null | object;

/**
 * A DateTime selected as epoch seconds (toUInt32) → ISO 8601 UTC. Never read
 * ClickHouse's 'YYYY-MM-DD hh:mm:ss' text: it is in the server's zone, which
 * an external ClickHouse need not have set to UTC.
 */
function chTimestamp(v: unknown): string | null {
  if (v === null || v === undefined) return null;
  const s = Number(v);
  if (!Number.isFinite(s)) throw new TypeError(`a timestamp column must be selected as epoch seconds, got ${JSON.stringify(v)}`);
  return new Date(s * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** A ClickHouse JSON value as its API value. */
export function normalise(kind: ColumnKind, v: unknown): Value {
  if (v === null || v === undefined) return null;
  switch (kind) {
    case 'string':
      return String(v);
    case 'number':
    case 'integer': {
      const n = typeof v === 'number' ? v : Number(v); // 64-bit integers arrive quoted
      return Number.isFinite(n) ? n : null;
    }
    case 'boolean':
      return v === true || v === 1 || v === '1' || v === 'true';
    case 'timestamp':
      return chTimestamp(v);
    case 'json':
      return typeof v === 'string' ? (JSON.parse(v) as object) : (v as object);
    case 'scalar':
      return typeof v === 'object' ? JSON.stringify(v) : (v as string | number | boolean);
  }
}

function csvCell(v: Value): string {
  if (v === null) return '';
  const s = typeof v === 'object' ? JSON.stringify(v) : String(v);
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

function arrowType(kind: ColumnKind): DataType {
  switch (kind) {
    case 'number':
      return new Float64();
    case 'integer':
      return new Int32();
    case 'boolean':
      return new Bool();
    default:
      return new Utf8(); // strings, ISO timestamps, JSON text
  }
}

const valueOf = (c: ExportColumn, r: Record<string, unknown>): Value => (c.value ? c.value(r) : normalise(c.kind, r[c.name]));

export function arrowSchema(columns: readonly ExportColumn[]): Schema {
  return new Schema(columns.map((c) => new Field(c.name, arrowType(c.kind), c.name !== 'user_id')));
}

/** Collects the writer's bytes synchronously, so each batch is handed on as soon as it is encoded. */
class ByteCollector extends AsyncByteQueue {
  chunks: Uint8Array[] = [];
  override write(value: Uint8Array): void {
    if (value.byteLength > 0) this.chunks.push(value);
  }
  take(): Uint8Array {
    const out = Buffer.concat(this.chunks);
    this.chunks = [];
    return out;
  }
}

interface Encoder {
  head(): Uint8Array | undefined;
  /** Encodes buffered rows; returns bytes ready to send (may be empty while batching). */
  rows(rows: Record<string, unknown>[]): Uint8Array | undefined;
  end(): Uint8Array | undefined;
}

const utf8 = new TextEncoder();

function textEncoder(columns: readonly ExportColumn[], format: 'ndjson' | 'csv'): Encoder {
  return {
    head: () => (format === 'csv' ? utf8.encode(columns.map((c) => csvCell(c.name)).join(',') + '\r\n') : undefined),
    rows(rows) {
      let out = '';
      for (const r of rows) {
        if (format === 'ndjson') {
          const o: Record<string, Value> = {};
          for (const c of columns) o[c.name] = valueOf(c, r);
          out += JSON.stringify(o) + '\n';
        } else {
          out += columns.map((c) => csvCell(valueOf(c, r))).join(',') + '\r\n';
        }
      }
      return utf8.encode(out);
    },
    end: () => undefined,
  };
}

function arrowEncoder(columns: readonly ExportColumn[], batchRows: number): Encoder {
  const schema = arrowSchema(columns);
  const sink = new ByteCollector();
  const writer = new RecordBatchStreamWriter();
  let pending: Value[][] = columns.map(() => []);
  let pendingRows = 0;
  const encodeBatch = () => {
    if (pendingRows === 0) return;
    const children = columns.map((c, i) => {
      const values = pending[i] as Value[];
      const typed =
        c.kind === 'json' ? values.map((v) => (v === null ? null : JSON.stringify(v))) : c.kind === 'scalar' ? values.map((v) => (v === null ? null : String(v))) : values;
      return vectorFromArray(typed as never[], arrowType(c.kind)).data[0]!;
    });
    const data = makeData({ type: new Struct(schema.fields), length: pendingRows, nullCount: 0, children });
    writer.write(new RecordBatch(schema, data));
    pending = columns.map(() => []);
    pendingRows = 0;
  };
  return {
    head() {
      writer.reset(sink, schema);
      return sink.take();
    },
    rows(rows) {
      for (const r of rows) {
        columns.forEach((c, i) => (pending[i] as Value[]).push(valueOf(c, r)));
        pendingRows++;
        if (pendingRows >= batchRows) encodeBatch();
      }
      return sink.chunks.length ? sink.take() : undefined;
    },
    end() {
      encodeBatch();
      writer.finish(); // writes the end-of-stream marker
      return sink.take();
    },
  };
}

export function encoderFor(format: ExportFormat, columns: readonly ExportColumn[], arrowBatchRows = 65_536): Encoder {
  return format === 'arrow' ? arrowEncoder(columns, arrowBatchRows) : textEncoder(columns, format);
}

/** Stops a query inside ClickHouse (the HTTP connection closing is not enough on every version). */
export async function killQuery(ch: ClickHouse, queryId: string): Promise<void> {
  try {
    await ch.exec(sql`KILL QUERY WHERE query_id = ${queryId} ASYNC`);
  } catch (e) {
    log.warn('KILL QUERY failed', { queryId, error: e });
  }
}

export interface StartedExport {
  body: ReadableStream<Uint8Array>;
  contentType: string;
  queryId: string;
}

/**
 * Starts the query and returns the body to send. Awaiting the start means a
 * query that fails at once (bad SQL, unknown column, timeout before the first
 * row) becomes a normal error response instead of a broken stream.
 */
export async function startExport(ch: ClickHouse, source: ExportSource, format: ExportFormat, opts: ExportOptions = {}): Promise<StartedExport> {
  const queryId = opts.queryId ?? `export-${randomUUID()}`;
  let ended = false;
  const end = async () => {
    if (ended || !opts.onEnd) return;
    ended = true;
    await opts.onEnd().catch((e: unknown) => log.warn('an export\'s clean-up failed', { queryId, error: e }));
  };
  let stream: Readable;
  try {
    stream = await ch.stream(source.query, 'JSONEachRow', { queryId, timeoutS: opts.timeoutS });
  } catch (e) {
    await end();
    throw e;
  }
  const iterator = (stream as AsyncIterable<{ text: string }[]>)[Symbol.asyncIterator]();
  const encoder = encoderFor(format, source.columns, opts.arrowBatchRows);
  let finished = false;
  const head = encoder.head();
  const body = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        if (head) controller.enqueue(head);
      },
      async pull(controller) {
        try {
          // One pull reads until it has something to send (Arrow batches span many chunks).
          for (;;) {
            const { value, done } = await iterator.next();
            if (done) {
              finished = true;
              const tail = encoder.end();
              if (tail?.byteLength) controller.enqueue(tail);
              controller.close();
              await end();
              return;
            }
            const bytes = encoder.rows(value.map((row) => JSON.parse(row.text) as Record<string, unknown>));
            if (bytes?.byteLength) {
              controller.enqueue(bytes);
              return;
            }
          }
        } catch (e) {
          // The query may still hold the tables the clean-up drops.
          stream.destroy();
          if (!finished) await killQuery(ch, queryId);
          await end();
          throw e;
        }
      },
      async cancel() {
        stream.destroy();
        if (!finished) await killQuery(ch, queryId);
        await end();
      },
    },
    // A couple of chunks of read-ahead; the rest waits in ClickHouse.
    { highWaterMark: 2 },
  );
  return { body, contentType: EXPORT_CONTENT_TYPES[format], queryId };
}

// ---- members with profile fields ----

export interface FieldSourceInput {
  appId: string;
  asOf: Date;
  /** `SELECT user_id … ORDER BY user_id` of the members. */
  members: Sql;
  /** The profile run the segment was evaluated against (null before the first run). */
  profileRunId: string | null;
  profileLayer?: RunLayer | undefined;
  fields: readonly string[];
  /**
   * A table of rows, as a run holds them, for members the run does not hold
   * (profiles/job.ts liveRowsOfMissing): their profile fields come from it.
   */
  liveRows?: string | undefined;
}

export interface FieldCatalog {
  /** Built-in fields by name → their type; `traits`, `tags` and `traits.<key>` are handled separately. */
  profileField(name: string): { type: 'string' | 'number' | 'timestamp' } | undefined;
  /** Fields that are current traits of the same name (read live, like `traits.<name>`). */
  liveTraitFields: ReadonlySet<string>;
  currentTraitsSql(appId: string, asOf: Date): Sql;
  currentTagsSql(appId: string): Sql;
  clusterAssignmentsSql(appId: string): Sql;
  typedTraitValue(value: string, type: number): string | number | boolean;
}

const TRAITS_PREFIX = 'traits.';

/** The requested fields a profile run holds (the rest are traits, tags and clusters, read live). */
export function profileColumns(fields: readonly string[], catalog: FieldCatalog): string[] {
  return fields.filter((f) => {
    const pf = catalog.profileField(f);
    return pf && f !== 'user_id' && !catalog.liveTraitFields.has(f) && f !== 'cluster' && f !== 'cluster_label';
  });
}

/**
 * The members with the requested fields, as one ClickHouse query in user_id
 * order. ClickHouse 18.16 allows one JOIN per SELECT, so each source (profiles,
 * traits, tags, clusters) wraps the previous query; a flag column tells a
 * missing right-hand row (defaults) from real values, which become null.
 */
export function membersWithFields(input: FieldSourceInput, catalog: FieldCatalog): ExportSource {
  const { appId, asOf, fields } = input;
  const columns: ExportColumn[] = [{ name: 'user_id', kind: 'string' }];
  let carried: string[] = []; // raw columns selected so far besides user_id
  let query: Sql = sql`SELECT user_id FROM (${input.members})`;
  const joinStep = (right: Sql, rightColumns: string[]) => {
    const all = [...carried, ...rightColumns];
    query = sql`SELECT user_id${raw(all.map((c) => ', ' + c).join(''))} FROM (${query}) ANY LEFT JOIN (${right}) USING user_id`;
    carried = all;
  };

  const profileCols = profileColumns(fields, catalog);
  const traitFields = fields.filter((f) => f === 'traits' || f.startsWith(TRAITS_PREFIX) || catalog.liveTraitFields.has(f));
  const wantsTags = fields.includes('tags');
  const wantsCluster = fields.includes('cluster') || fields.includes('cluster_label');

  if (profileCols.length > 0 && input.profileRunId) {
    // The fields as `<prefix><i>`, each after a comma: from the run's rows (p) and from live rows (l).
    const selected = (prefix: string) =>
      raw(
        profileCols
          .map((f, i) => {
            const col = ident(f);
            const as = raw(`${prefix}${i}`);
            return ', ' + (catalog.profileField(f)!.type === 'timestamp' ? sql`toNullable(toUInt32(${col})) AS ${as}` : sql`toNullable(${col}) AS ${as}`).text;
          })
          .join(''),
      );
    joinStep(sql`SELECT user_id, 1 AS has_p${selected('p')} FROM (${runRowsSql(appId, { run_id: input.profileRunId, layer: input.profileLayer })})`, [
      'has_p',
      ...profileCols.map((_, i) => `p${i}`),
    ]);
    if (input.liveRows) {
      joinStep(sql`SELECT user_id, 1 AS has_l${selected('l')} FROM ${ident(input.liveRows)}`, ['has_l', ...profileCols.map((_, i) => `l${i}`)]);
    }
  }
  if (traitFields.length > 0) {
    joinStep(
      sql`SELECT user_id, groupArray(key) AS t_keys, groupArray(value) AS t_values, groupArray(value_type) AS t_types
          FROM (${catalog.currentTraitsSql(appId, asOf)}) GROUP BY user_id`,
      ['t_keys', 't_values', 't_types'],
    );
  }
  if (wantsTags) {
    joinStep(sql`SELECT user_id, arraySort(groupArray(tag)) AS g_tags FROM (${catalog.currentTagsSql(appId)}) GROUP BY user_id`, ['g_tags']);
  }
  if (wantsCluster) {
    joinStep(
      sql`SELECT user_id, 1 AS has_c, toUInt32(cluster) AS c_cluster, cluster_label AS c_label FROM (${catalog.clusterAssignmentsSql(appId)})`,
      ['has_c', 'c_cluster', 'c_label'],
    );
  }

  const trait = (r: Record<string, unknown>, key: string): Value => {
    const keys = (r.t_keys as string[] | undefined) ?? [];
    const i = keys.indexOf(key);
    if (i < 0) return null;
    return catalog.typedTraitValue((r.t_values as string[])[i] as string, Number((r.t_types as number[])[i]));
  };
  for (const f of fields) {
    if (f === 'user_id') continue;
    const pi = profileCols.indexOf(f);
    if (pi >= 0) {
      const t = catalog.profileField(f)!.type;
      const kind: ColumnKind = t === 'number' ? (INTEGER_FIELDS.has(f) ? 'integer' : 'number') : t === 'timestamp' ? 'timestamp' : 'string';
      columns.push({
        name: f,
        kind,
        value: (r) => {
          const from = Number(r.has_p) === 1 ? 'p' : Number(r.has_l) === 1 ? 'l' : undefined;
          if (!input.profileRunId || !from) return null;
          const v = r[`${from}${pi}`];
          if (v === null || v === undefined) return null;
          return normalise(kind, v);
        },
      });
    } else if (f === 'traits') {
      columns.push({
        name: f,
        kind: 'json',
        value: (r) => {
          const keys = (r.t_keys as string[] | undefined) ?? [];
          const o: Record<string, string | number | boolean> = {};
          keys.forEach((k, i) => (o[k] = catalog.typedTraitValue((r.t_values as string[])[i] as string, Number((r.t_types as number[])[i]))));
          return o;
        },
      });
    } else if (f.startsWith(TRAITS_PREFIX) || catalog.liveTraitFields.has(f)) {
      const key = f.startsWith(TRAITS_PREFIX) ? f.slice(TRAITS_PREFIX.length) : f;
      columns.push({ name: f, kind: 'scalar', value: (r) => trait(r, key) });
    } else if (f === 'tags') {
      columns.push({ name: f, kind: 'json', value: (r) => (r.g_tags as string[] | undefined) ?? [] });
    } else if (f === 'cluster') {
      columns.push({ name: f, kind: 'integer', value: (r) => (Number(r.has_c) === 1 ? Number(r.c_cluster) : null) });
    } else if (f === 'cluster_label') {
      columns.push({ name: f, kind: 'string', value: (r) => (Number(r.has_c) === 1 ? String(r.c_label) : null) });
    } else {
      throw new Error(`unknown field ${JSON.stringify(f)}`);
    }
  }
  return { query: sql`${query} ORDER BY user_id`, columns };
}
