// Runaway queries stop inside ClickHouse: max_execution_time answers 504, and a
// request whose client goes away has its queries killed.
import { randomUUID } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { requestClickHouse, toProblem } from '../../api/app.ts';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { sql } from '../../lib/sql.ts';
import { testDatabase } from '../support/env.ts';

let ch: ClickHouse;
const endless = sql`SELECT count() AS n FROM system.numbers WHERE number % 1000 = 1001`;

beforeAll(async () => {
  ch = await testDatabase('limits');
});

const running = async (prefix: string) =>
  Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM system.processes WHERE startsWith(query_id, ${prefix})`))?.n ?? 0);

describe('query limits', () => {
  it('cancels a query past its time limit in ClickHouse and answers 504', async () => {
    const rch = requestClickHouse(ch, new AbortController().signal, 1);
    const err = await rch.rows(endless).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeDefined();
    expect(toProblem(err)).toMatchObject({ status: 504, type: 'urn:warbler:problem:query-timeout' });
  });

  it('kills the request\'s queries when the client goes away', async () => {
    const ctl = new AbortController();
    const rch = requestClickHouse(ch, ctl.signal, 600);
    const queryId = `api-test-${randomUUID()}`;
    const pending = rch.rows(endless, { queryId }).then(
      () => 'finished',
      (e: unknown) => toProblem(e).status,
    );
    for (let i = 0; i < 50 && (await running(queryId)) === 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await running(queryId)).toBe(1);
    ctl.abort();
    expect(await pending).toBe(499);
    let n = await running(queryId);
    for (let i = 0; i < 100 && n > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      n = await running(queryId);
    }
    expect(n).toBe(0);
  });
});
