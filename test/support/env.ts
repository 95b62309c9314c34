// Connections for integration tests: the real ClickHouse and broker started by
// the global setup. Every call to testDatabase() makes a fresh, migrated database.
import { afterAll, inject } from 'vitest';
import { ClickHouse } from '../../lib/clickhouse.ts';
import { migrate } from '../../lib/migrate.ts';
import { ident, sql } from '../../lib/sql.ts';

let counter = 0;
const open: ClickHouse[] = [];

afterAll(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

export function clickhouseUrl(): string {
  return inject('clickhouseUrl');
}

export function kafkaBrokers(): string[] {
  return inject('kafkaBrokers');
}

/** A unique name for topics, groups and databases within this run. */
export function uniqueName(prefix: string): string {
  counter += 1;
  return `${prefix}_${inject('runId')}_${process.pid}_${counter}`;
}

/** A fresh database with all migrations applied, and a client bound to it. Dropped after the file. */
export async function testDatabase(prefix = 'wt'): Promise<ClickHouse> {
  const name = uniqueName(prefix);
  const ch = new ClickHouse({ url: clickhouseUrl(), database: name });
  await migrate(ch);
  open.push(ch);
  afterAll(async () => {
    const root = new ClickHouse({ url: clickhouseUrl(), database: 'default' });
    try {
      await root.exec(sql`DROP DATABASE IF EXISTS ${ident(name)}`);
    } finally {
      await root.close();
    }
  });
  return ch;
}
