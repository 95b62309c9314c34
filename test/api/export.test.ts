// Streaming exports through the node adapter: constant memory over 1M rows,
// backpressure from a stalled client, Arrow ≡ NDJSON, CSV quoting, and a
// client abort stopping the query inside ClickHouse.
import { tableFromIPC } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killQuery, startExport, type ExportColumn, type ExportFormat } from '../../api/export.ts';
import { listen, type RunningServer } from '../../api/node-server.ts';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { sql, type Sql } from '../../lib/sql.ts';
import { testDatabase } from '../support/env.ts';

let ch: ClickHouse;
let server: RunningServer;
const queries = new Map<string, { query: Sql; columns: ExportColumn[] }>();

const COLUMNS: ExportColumn[] = [
  { name: 'user_id', kind: 'string' },
  { name: 'country', kind: 'string' },
  { name: 'revenue_total', kind: 'number' },
  { name: 'last_seen', kind: 'timestamp' },
  { name: 'note', kind: 'string' },
];

beforeAll(async () => {
  ch = await testDatabase('export');
  await ch.exec(sql`CREATE TABLE wide_users (user_id String, country Nullable(String), revenue_total Float64, last_seen DateTime, note String)
    ENGINE = MergeTree ORDER BY user_id`);
  // 1M users, ~130 bytes each as NDJSON: far more than the memory bound below.
  await ch.exec(sql`INSERT INTO wide_users SELECT
      concat('user-', substring(toString(10000000 + number), 2)),
      if(number % 5 = 0, NULL, ['CN','SG','US','DE'][number % 4 + 1]),
      number / 7,
      toDateTime(1760000000 + number),
      if(number % 1000 = 0, 'has "quotes", commas\nand newlines', concat('note number ', toString(number)))
    FROM system.numbers LIMIT 1000000`);
  queries.set('wide', { query: sql`SELECT user_id, country, revenue_total, toUInt32(last_seen) AS last_seen, note FROM wide_users ORDER BY user_id`, columns: COLUMNS });
  queries.set('small', {
    query: sql`SELECT user_id, country, revenue_total, toUInt32(last_seen) AS last_seen, note FROM wide_users WHERE user_id < 'user-0100000' ORDER BY user_id`,
    columns: COLUMNS,
  });
  queries.set('endless', {
    query: sql`SELECT toString(number) AS user_id FROM system.numbers`,
    columns: [{ name: 'user_id', kind: 'string' }],
  });
  server = await listen(
    async (req) => {
      const u = new URL(req.url);
      const q = queries.get(u.searchParams.get('q') ?? '') as { query: Sql; columns: ExportColumn[] };
      const format = (u.searchParams.get('format') ?? 'ndjson') as ExportFormat;
      const exp = await startExport(ch, q, format, { queryId: u.searchParams.get('qid') ?? undefined, timeoutS: 60 });
      return new Response(exp.body, { headers: { 'content-type': exp.contentType } });
    },
    { host: '127.0.0.1', port: 0, maxBodyBytes: 1024 },
  );
}, 120_000);

afterAll(async () => server?.close(1000));

function memory(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

async function collect(url: string): Promise<Buffer> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return Buffer.from(await res.arrayBuffer());
}

describe('streaming export', () => {
  it('streams 1M rows in bounded memory', async () => {
    (globalThis as { gc?: () => void }).gc?.();
    const base = memory();
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, memory() - base)), 20);
    const res = await fetch(`${server.url}/?q=wide&format=ndjson`);
    expect(res.headers.get('content-type')).toBe('application/x-ndjson');
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let bytes = 0;
    let lines = 0;
    let first = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      bytes += value.byteLength;
      for (const b of value) if (b === 10) lines++;
      if (!first) first = Buffer.from(value).toString('utf8').split('\n')[0] as string;
    }
    clearInterval(sampler);
    expect(lines).toBe(1_000_000);
    expect(JSON.parse(first)).toEqual({ user_id: 'user-0000000', country: null, revenue_total: 0, last_seen: '2025-10-09T08:53:20Z', note: 'has "quotes", commas\nand newlines' });
    // The body is >100 MB; holding it (or its rows) would blow far past this.
    expect(bytes).toBeGreaterThan(100 * 1024 * 1024);
    expect(peak).toBeLessThan(64 * 1024 * 1024);
  }, 60_000);

  it('stops reading ClickHouse while the client stalls (backpressure)', async () => {
    const res = await fetch(`${server.url}/?q=wide&format=csv`);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    (globalThis as { gc?: () => void }).gc?.();
    const before = memory();
    await new Promise((r) => setTimeout(r, 1500));
    const during = memory() - before;
    await reader.cancel();
    // A producer that ignored backpressure would have buffered most of the 100+ MB by now.
    expect(during).toBeLessThan(32 * 1024 * 1024);
  });

  it('writes an Arrow stream equal to the NDJSON export, and CSV with RFC 4180 quoting', async () => {
    const ndjson = (await collect(`${server.url}/?q=small&format=ndjson`))
      .toString('utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const table = tableFromIPC(await collect(`${server.url}/?q=small&format=arrow`));
    expect(table.numRows).toBe(100_000);
    expect(table.schema.fields.map((f) => f.name)).toEqual(COLUMNS.map((c) => c.name));
    const rows = table.toArray().map((r) => r.toJSON() as Record<string, unknown>);
    expect(rows).toEqual(ndjson);
    expect(table.batches.length).toBeGreaterThan(1); // streamed in record batches, not one block

    const csv = (await collect(`${server.url}/?q=small&format=csv`)).toString('utf8');
    expect(csv.startsWith('user_id,country,revenue_total,last_seen,note\r\nuser-0000000,,0,2025-10-09T08:53:20Z,"has ""quotes"", commas\nand newlines"\r\n')).toBe(true);
    expect(csv.split('\r\n').length - 2).toBe(100_000);
  }, 60_000);

  it('kills the query in ClickHouse when the client goes away', async () => {
    const qid = `test-abort-${Date.now()}`;
    const ctl = new AbortController();
    const res = await fetch(`${server.url}/?q=endless&qid=${qid}`, { signal: ctl.signal });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    const running = async () =>
      Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM system.processes WHERE query_id = ${qid}`))?.n ?? 0);
    expect(await running()).toBe(1);
    ctl.abort();
    let n = 1;
    // Polls generously: on a loaded machine the kill takes effect at the next block boundary.
    for (let i = 0; i < 300 && n > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      n = await running();
    }
    expect(n).toBe(0);
    await killQuery(ch, qid); // idempotent: killing a finished query is harmless
  });
});
