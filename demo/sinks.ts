// Where generated records go: an NDJSON file (or stdout), the events topic, or
// straight into the ClickHouse `events` table for benchmark set-up. `write` may
// return a promise to apply backpressure; the caller awaits it before producing more.
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import type { Writable } from 'node:stream';
import { parseIsoTimestamp, type ValidEvent } from '../ingest/event-schema.ts';
import { toEventRow, type EventRow } from '../ingest/normalize.ts';
import { insertEventRows } from '../ingest/sink.ts';
import type { ClickHouse } from '../lib/clickhouse.ts';
import { eventKey, type EventMessage, type EventProducer } from '../ingest/producer.ts';
import { recordLine, userIdOf, type DemoEvent, type DemoRecord } from './generate.ts';

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

/**
 * A generated event as ingest's validated form. The generator only labels
 * events `valid` when they follow the contract (the tests hold it to that with
 * ingest's own schema), so the sink skips re-validation — zod would cost more
 * than everything else here — and only does what validation would: ts to
 * epoch milliseconds at second precision.
 */
export function asValidEvent(e: DemoEvent): ValidEvent {
  const ms = typeof e.ts === 'number' ? e.ts : parseIsoTimestamp(e.ts);
  if (ms === undefined) throw new Error(`generated event with an unreadable ts: ${JSON.stringify(e.ts)}`);
  return { ...e, ts: Math.floor(ms / 1000) * 1000 } as ValidEvent;
}

export interface ClickHouseSinkOptions {
  /** Rows per INSERT (default 50 000): ClickHouse wants few, big inserts. */
  batchRows?: number;
  /** Called after each insert with the total rows stored so far. */
  onInsert?: (rowsStored: number) => void;
}

/**
 * Inserts valid events into `events` directly, bypassing Kafka — for
 * benchmark and demo set-up. Rows are built and encoded by ingest's own code
 * (toEventRow, insertEventRows), so they are exactly what ingest would store,
 * derived ids included. Ingest would also drop duplicates and invalid events;
 * the generator labels them, so they are skipped here.
 * One insert runs while the next batch fills; a second full batch waits.
 */
export class ClickHouseSink implements EventSink {
  private batch: EventRow[] = [];
  private inFlight: Promise<void> | undefined;
  private readonly batchRows: number;
  stored = 0;
  skipped = 0;

  constructor(
    private readonly ch: ClickHouse,
    private readonly opts: ClickHouseSinkOptions = {},
  ) {
    this.batchRows = opts.batchRows ?? 50_000;
  }

  write(rec: DemoRecord): Promise<void> | void {
    if (rec.kind !== 'valid') {
      this.skipped++;
      return;
    }
    this.batch.push(toEventRow(asValidEvent(rec.event), rec.event.app_id, receivedNow()));
    if (this.batch.length >= this.batchRows) return this.send();
  }

  private async send(): Promise<void> {
    const rows = this.batch;
    this.batch = [];
    if (this.inFlight) await this.inFlight;
    if (rows.length === 0) return;
    this.inFlight = this.insert(rows);
    // Surfaces at the latest on the next send or on close; never unhandled.
    this.inFlight.catch(() => undefined);
  }

  private async insert(rows: EventRow[]): Promise<void> {
    await insertEventRows(this.ch, rows, { timeoutS: 600 });
    this.stored += rows.length;
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

// ---------------------------------------------------------------------------
// Kafka

export interface KafkaSinkOptions {
  /** The generator's app id: with the user id, the message key (one user → one partition). */
  appId: string;
  /** Messages per produce call (default 5000). */
  batchMessages?: number;
  /** Awaited after each batch with the total sent: where a caller pauses while consumers lag. */
  afterBatch?: (sent: number) => Promise<void>;
}

/**
 * Produces every record — duplicates and invalid ones included, as a real
 * stream would carry them — through ingest's producer, keyed like every other
 * producer so redeliveries reach the same consumer as the original.
 */
export class KafkaSink implements EventSink {
  private batch: EventMessage[] = [];
  private readonly batchMessages: number;
  sent = 0;

  constructor(
    private readonly producer: EventProducer,
    private readonly opts: KafkaSinkOptions,
  ) {
    this.batchMessages = opts.batchMessages ?? 5000;
  }

  write(rec: DemoRecord): Promise<void> | void {
    this.batch.push({ key: eventKey(this.opts.appId, userIdOf(rec.user)), value: rec.line });
    if (this.batch.length >= this.batchMessages) return this.flush();
  }

  private async flush(): Promise<void> {
    const messages = this.batch;
    this.batch = [];
    if (messages.length === 0) return;
    await this.producer.send(messages);
    this.sent += messages.length;
    await this.opts.afterBatch?.(this.sent);
  }

  async close(): Promise<void> {
    await this.flush();
    await this.producer.close();
  }
}
