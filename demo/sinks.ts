// Where generated records go: an NDJSON file (or stdout), or straight into the
// ClickHouse `events` table for benchmark set-up. A Kafka sink plugs in through
// the same interface: `write` may return a promise to apply backpressure, and
// the caller awaits it before producing more.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { Readable, type Writable } from 'node:stream';
import type { ClickHouse } from '../lib/clickhouse.ts';
import { recordLine, type DemoEvent, type DemoRecord } from './generate.ts';

export interface EventSink {
  /** Accepts one record; a returned promise means "wait before the next write". */
  write(rec: DemoRecord): Promise<void> | void;
  /** Flushes everything written and releases the destination. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------
// NDJSON

export interface NdjsonSinkOptions {
  /** Lines are encoded into buffers of this many bytes before hitting the stream (default 1 MiB). */
  chunkBytes?: number;
}

/**
 * Writes every record (valid, duplicate and invalid, non-JSON lines included)
 * one per line. Lines are UTF-8-encoded straight into large buffers: one
 * stream write per line, or one huge concatenated string per chunk, would
 * cost more than generating the event.
 */
export class NdjsonSink implements EventSink {
  private buf: Buffer;
  private used = 0;
  private readonly chunkBytes: number;
  private error: Error | undefined;
  lines = 0;

  constructor(
    private readonly stream: Writable,
    private readonly ownsStream: boolean,
    opts: NdjsonSinkOptions = {},
  ) {
    this.chunkBytes = opts.chunkBytes ?? 1 << 20;
    this.buf = Buffer.allocUnsafe(this.chunkBytes);
    stream.on('error', (err: Error) => {
      this.error ??= err;
    });
  }

  /** `path` '-' writes to stdout. */
  static toFile(path: string, opts: NdjsonSinkOptions = {}): NdjsonSink {
    if (path === '-') return new NdjsonSink(process.stdout, false, opts);
    return new NdjsonSink(createWriteStream(path), true, opts);
  }

  write(rec: DemoRecord): Promise<void> | void {
    return this.writeLine(recordLine(rec));
  }

  /** Appends one line (without its newline). */
  writeLine(line: string): Promise<void> | void {
    this.lines++;
    // A UTF-16 code unit never takes more than 3 UTF-8 bytes.
    const worst = line.length * 3 + 1;
    let wait: Promise<void> | void = undefined;
    if (this.used + worst > this.buf.length) {
      wait = this.flush();
      if (worst > this.buf.length) this.buf = Buffer.allocUnsafe(worst);
    }
    this.used += this.buf.write(line, this.used, 'utf8');
    this.buf[this.used++] = 0x0a;
    return wait;
  }

  private flush(): Promise<void> | void {
    if (this.error) throw this.error;
    if (this.used === 0) return;
    const full = this.buf.subarray(0, this.used);
    // The stream keeps the buffer until written, so the next lines go to a fresh one.
    this.buf = Buffer.allocUnsafe(Math.max(this.chunkBytes, this.buf.length));
    this.used = 0;
    if (!this.stream.write(full)) return this.drained();
  }

  private async drained(): Promise<void> {
    await once(this.stream, 'drain');
    if (this.error) throw this.error;
  }

  async close(): Promise<void> {
    await this.flush();
    if (this.ownsStream) {
      this.stream.end();
      await once(this.stream, 'finish');
    } else if (this.stream.writableNeedDrain) {
      await once(this.stream, 'drain');
    }
    if (this.error) throw this.error;
  }
}

// ---------------------------------------------------------------------------
// ClickHouse `events` rows

/** A row of the `events` table (sql/migrations/001_events.sql). */
export interface EventRow {
  app_id: string;
  user_id: string;
  /** Epoch seconds (UTC). */
  ts: number;
  event_id: string;
  type: 'track' | 'identify';
  event: string;
  prop_keys: string[];
  prop_strings: string[];
  prop_numbers: number[];
  properties: string;
  trait_keys: string[];
  trait_values: string[];
  trait_types: number[];
  context: string;
  /** Epoch seconds (UTC). */
  received_at: number;
}

export const EVENT_COLUMNS = [
  'app_id', 'user_id', 'ts', 'event_id', 'type', 'event', 'prop_keys', 'prop_strings', 'prop_numbers', 'properties',
  'trait_keys', 'trait_values', 'trait_types', 'context', 'received_at',
] as const;

const CONTEXT_KEYS = ['platform', 'app_version', 'country', 'timezone', 'locale'] as const;

/**
 * The stored row of a generated, contract-valid event.
 *
 * Local stand-in for the ingest normaliser (ingest/normalize.ts did not exist
 * when this was written): it handles only what the generator emits and does
 * not validate. The derived id must match ingest's derivation for the two
 * paths to agree on events without `event_id`; switch to `normalizeEvent`
 * once it exists.
 */
export function eventRow(e: DemoEvent, receivedAt: number): EventRow {
  const tsMs = typeof e.ts === 'number' ? e.ts : Date.parse(e.ts);
  const ts = Math.floor(tsMs / 1000);
  const prop_keys: string[] = [];
  const prop_strings: string[] = [];
  const prop_numbers: number[] = [];
  const trait_keys: string[] = [];
  const trait_values: string[] = [];
  const trait_types: number[] = [];
  let properties = '{}';
  let context = '{}';
  let event = '';
  if (e.type === 'track') {
    event = e.event;
    properties = JSON.stringify(e.properties);
    for (const k in e.properties) {
      const v = e.properties[k];
      if (typeof v === 'string') {
        prop_keys.push(k);
        prop_strings.push(v);
        prop_numbers.push(NaN);
      } else if (typeof v === 'number') {
        prop_keys.push(k);
        prop_strings.push(String(v));
        prop_numbers.push(v);
      } else if (typeof v === 'boolean') {
        prop_keys.push(k);
        prop_strings.push(v ? 'true' : 'false');
        prop_numbers.push(NaN);
      }
    }
    context = JSON.stringify(e.context);
    for (const k of CONTEXT_KEYS) {
      const v = e.context[k];
      if (typeof v === 'string') {
        trait_keys.push(k);
        trait_values.push(v);
        trait_types.push(1);
      }
    }
  } else {
    for (const k in e.traits) {
      const v = e.traits[k];
      trait_keys.push(k);
      if (v === null || v === undefined) {
        trait_values.push('');
        trait_types.push(0);
      } else if (typeof v === 'string') {
        trait_values.push(v);
        trait_types.push(1);
      } else if (typeof v === 'number') {
        trait_values.push(String(v));
        trait_types.push(2);
      } else {
        trait_values.push(v ? 'true' : 'false');
        trait_types.push(3);
      }
    }
  }
  return {
    app_id: e.app_id,
    user_id: e.user_id,
    ts,
    event_id: e.event_id ?? derivedEventId(e, ts),
    type: e.type,
    event,
    prop_keys,
    prop_strings,
    prop_numbers,
    properties,
    trait_keys,
    trait_values,
    trait_types,
    context,
    received_at: receivedAt,
  };
}

/** Deterministic id of an event without one: a hash of the fields the contract names. */
export function derivedEventId(e: DemoEvent, tsSeconds: number): string {
  const body =
    e.type === 'track'
      ? [e.app_id, e.user_id, e.type, e.event, tsSeconds, e.properties, null]
      : [e.app_id, e.user_id, e.type, '', tsSeconds, null, e.traits];
  return createHash('sha256').update(JSON.stringify(body)).digest('hex').slice(0, 32);
}

// TabSeparated text: backslash, tab and newline are escaped in every field;
// array elements are quoted strings in ClickHouse's literal syntax.
const TSV_ESCAPE = /[\\\t\n\r]/;
const TSV_ESCAPE_ALL = /[\\\t\n\r]/g;
const QUOTED_ESCAPE = /[\\'\t\n\r]/;
const QUOTED_ESCAPE_ALL = /[\\'\t\n\r]/g;
const ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', "'": "\\'" };

function tsvString(s: string): string {
  return TSV_ESCAPE.test(s) ? s.replace(TSV_ESCAPE_ALL, (c) => ESCAPES[c]!) : s;
}

function tsvStringArray(a: readonly string[]): string {
  let out = '[';
  for (let i = 0; i < a.length; i++) {
    const s = a[i]!;
    out += (i ? ",'" : "'") + (QUOTED_ESCAPE.test(s) ? s.replace(QUOTED_ESCAPE_ALL, (c) => ESCAPES[c]!) : s) + "'";
  }
  return out + ']';
}

function tsvNumberArray(a: readonly number[]): string {
  let out = '[';
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    out += (i ? ',' : '') + (Number.isNaN(x) ? 'nan' : x === Infinity ? 'inf' : x === -Infinity ? '-inf' : String(x));
  }
  return out + ']';
}

/** One TabSeparated line (with newline) in EVENT_COLUMNS order. */
export function tsvLine(r: EventRow): string {
  return (
    tsvString(r.app_id) + '\t' + tsvString(r.user_id) + '\t' + r.ts + '\t' + tsvString(r.event_id) + '\t' + r.type + '\t' +
    tsvString(r.event) + '\t' + tsvStringArray(r.prop_keys) + '\t' + tsvStringArray(r.prop_strings) + '\t' +
    tsvNumberArray(r.prop_numbers) + '\t' + tsvString(r.properties) + '\t' + tsvStringArray(r.trait_keys) + '\t' +
    tsvStringArray(r.trait_values) + '\t' + '[' + r.trait_types.join(',') + ']' + '\t' + tsvString(r.context) + '\t' +
    r.received_at + '\n'
  );
}

export interface ClickHouseSinkOptions {
  /** Rows per INSERT (default 200 000): ClickHouse wants few, big inserts. */
  batchRows?: number;
  /** Called after each insert with the total rows stored so far. */
  onInsert?: (rowsStored: number) => void;
}

/**
 * Inserts valid events into `events` directly, bypassing ingest — for
 * benchmark and demo set-up only. It therefore does ingest's job itself:
 * duplicates and invalid records are dropped (the generator labels them),
 * so the table holds each event once, as ingest would have left it.
 * One insert runs while the next batch fills; a second full batch waits.
 */
export class ClickHouseSink implements EventSink {
  private batch = '';
  private rows = 0;
  private inFlight: Promise<void> | undefined;
  private readonly batchRows: number;
  stored = 0;
  skipped = 0;

  constructor(
    private readonly ch: ClickHouse,
    private readonly opts: ClickHouseSinkOptions = {},
  ) {
    this.batchRows = opts.batchRows ?? 200_000;
  }

  write(rec: DemoRecord): Promise<void> | void {
    if (rec.kind !== 'valid') {
      this.skipped++;
      return;
    }
    this.batch += tsvLine(eventRow(rec.event, receivedNow()));
    this.rows++;
    if (this.rows >= this.batchRows) return this.send();
  }

  private async send(): Promise<void> {
    const text = this.batch;
    const rows = this.rows;
    this.batch = '';
    this.rows = 0;
    if (this.inFlight) await this.inFlight;
    if (rows === 0) return;
    this.inFlight = this.insert(text, rows);
    // Surface a failure at the latest on the next send or close; never unhandled.
    this.inFlight.catch(() => undefined);
  }

  private async insert(text: string, rows: number): Promise<void> {
    await this.ch.client.insert({
      table: 'events',
      values: Readable.from([Buffer.from(text)], { objectMode: false }),
      format: 'TabSeparated',
      columns: [...EVENT_COLUMNS],
    });
    this.stored += rows;
    this.opts.onInsert?.(this.stored);
  }

  async close(): Promise<void> {
    await this.send();
    if (this.inFlight) await this.inFlight;
  }
}

let receivedSecond = 0;
let receivedCheckedAt = 0;

/** Wall-clock seconds, read from the clock at most every 1000 rows. */
function receivedNow(): number {
  if (receivedCheckedAt++ % 1000 === 0) receivedSecond = Math.floor(Date.now() / 1000);
  return receivedSecond;
}
