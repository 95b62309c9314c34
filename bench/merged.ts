// A steady state for benchmarks: tables merged as background merges would
// eventually leave them, not as a bulk load leaves them.
import type { ClickHouse } from '../lib/clickhouse.ts';
import { ident, sql } from '../lib/sql.ts';

/** OPTIMIZE … FINAL each table, after its running background merges: 18.16 silently skips OPTIMIZE while one runs. */
export async function mergeFully(ch: ClickHouse, tables: readonly string[]): Promise<void> {
  for (const table of tables) {
    while (Number((await ch.one<{ n: string }>(sql`SELECT count() AS n FROM system.merges WHERE database = currentDatabase() AND table = ${table}`))?.n) > 0) {
      await new Promise((r) => setTimeout(r, 1000));
    }
    await ch.exec(sql`OPTIMIZE TABLE ${ident(table)} FINAL`, { timeoutS: 3600 });
  }
}
