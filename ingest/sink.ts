// Writes event rows to ClickHouse as RowBinary: no text escaping and NaN as
// itself (JSON has no NaN, and 18.16 and current ClickHouse read a JSON null
// into Float64 differently). bench/ingest.ts compares it with JSONEachRow.
// One INSERT per batch; the materialized views fill event_ids and user_traits
// from that same INSERT.
import { Readable } from 'node:stream';
import type { ClickHouse } from '../lib/clickhouse.ts';
import type { EventRow } from './normalize.ts';

export const EVENT_COLUMNS = [
  'app_id', 'user_id', 'ts', 'event_id', 'type', 'event', 'prop_keys', 'prop_strings', 'prop_numbers',
  'properties', 'trait_keys', 'trait_values', 'trait_types', 'context', 'received_at',
] as const;

const TYPE_CODE = { track: 1, identify: 2 } as const;

/** A growable buffer with the few RowBinary primitives the events table needs. */
class RowBinaryWriter {
  buf: Buffer;
  pos = 0;
  constructor(initial = 1 << 20) {
    this.buf = Buffer.allocUnsafe(initial);
  }
  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  varint(n: number): void {
    this.ensure(10);
    while (n >= 0x80) {
      this.buf[this.pos++] = (n & 0x7f) | 0x80;
      n = Math.floor(n / 128);
    }
    this.buf[this.pos++] = n;
  }
  string(s: string): void {
    // Most strings are short ASCII (keys, ids, names): copied by hand they skip
    // Buffer#write's per-call overhead, which was ~15% of the pipeline's CPU.
    const len = s.length;
    if (len < 128) {
      this.ensure(len + 1);
      const buf = this.buf;
      let p = this.pos + 1;
      let i = 0;
      for (; i < len; i++) {
        const c = s.charCodeAt(i);
        if (c > 0x7f) break;
        buf[p++] = c;
      }
      if (i === len) {
        buf[this.pos] = len;
        this.pos = p;
        return;
      }
    }
    // Worst case 3 bytes per UTF-16 unit; write first, then the length prefix once known.
    const max = s.length * 3;
    const lenBytes = max < 0x80 ? 1 : max < 0x4000 ? 2 : max < 0x200000 ? 3 : 4;
    this.ensure(lenBytes + max + 5);
    const start = this.pos;
    const written = this.buf.write(s, start + lenBytes, 'utf8');
    // Re-emit the length with the exact varint size, shifting only when the guess was too wide.
    let n = written;
    let need = 1;
    while (n >= 0x80) {
      need++;
      n = Math.floor(n / 128);
    }
    if (need !== lenBytes) this.buf.copy(this.buf, start + need, start + lenBytes, start + lenBytes + written);
    this.pos = start;
    this.varint(written);
    this.pos = start + need + written;
  }
  u8(n: number): void {
    this.ensure(1);
    this.buf[this.pos++] = n;
  }
  u32(n: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(n, this.pos);
    this.pos += 4;
  }
  f64(n: number): void {
    this.ensure(8);
    this.buf.writeDoubleLE(n, this.pos);
    this.pos += 8;
  }
  strings(a: readonly string[]): void {
    this.varint(a.length);
    for (const s of a) this.string(s);
  }
  result(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

/** Encodes rows in EVENT_COLUMNS order as RowBinary. */
export function encodeRowBinary(rows: readonly EventRow[]): Buffer {
  const w = new RowBinaryWriter(Math.max(1 << 16, rows.length * 400));
  for (const r of rows) {
    w.string(r.app_id);
    w.string(r.user_id);
    w.u32(r.ts);
    w.string(r.event_id);
    w.u8(TYPE_CODE[r.type]);
    w.string(r.event);
    w.strings(r.prop_keys);
    w.strings(r.prop_strings);
    w.varint(r.prop_numbers.length);
    for (const x of r.prop_numbers) w.f64(x);
    w.string(r.properties);
    w.strings(r.trait_keys);
    w.strings(r.trait_values);
    w.varint(r.trait_types.length);
    for (const x of r.trait_types) w.u8(x);
    w.string(r.context);
    w.u32(r.received_at);
  }
  return w.result();
}

const INSERT_EVENTS = `INSERT INTO events (${EVENT_COLUMNS.join(', ')}) FORMAT RowBinary`;

/**
 * Inserts rows into `events` in one INSERT. Resolves only once ClickHouse has
 * acknowledged the whole block (the HTTP response after the data is written).
 */
export async function insertEventRows(ch: ClickHouse, rows: readonly EventRow[], opts: { timeoutS?: number } = {}): Promise<void> {
  if (rows.length === 0) return;
  const body = encodeRowBinary(rows);
  const r = await ch.client.exec({
    query: INSERT_EVENTS,
    values: Readable.from([body]),
    clickhouse_settings: { max_execution_time: opts.timeoutS ?? 120 },
  });
  // The response body is empty; it must still be drained so the socket is reused.
  for await (const _ of r.stream) void _;
}
