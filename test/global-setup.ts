// Starts (or reuses) the local ClickHouse and broker once per test run and hands
// their addresses to the test files. Each test file makes its own database.
import type { TestProject } from 'vitest/node';
import { loadConfig } from '../lib/config.ts';
import { up } from '../lib/stack.ts';
import { ClickHouse } from '../lib/clickhouse.ts';
import { ident, sql } from '../lib/sql.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    clickhouseUrl: string;
    kafkaBrokers: string[];
    runId: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const cfg = loadConfig();
  const stack = await up(cfg);
  const runId = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  project.provide('clickhouseUrl', stack.clickhouseUrl);
  project.provide('kafkaBrokers', stack.kafkaBrokers);
  project.provide('runId', runId);
  // Every test database is named by uniqueName() with this run's id; drop them
  // all at the end, including those a failed or interrupted file left behind.
  return async () => {
    const ch = new ClickHouse({ url: stack.clickhouseUrl, database: 'default' });
    try {
      const dbs = await ch.rows<{ name: string }>(sql`SELECT name FROM system.databases WHERE position(name, ${`_${runId}_`}) > 0`);
      for (const { name } of dbs) await ch.exec(sql`DROP DATABASE IF EXISTS ${ident(name)}`);
    } finally {
      await ch.close();
    }
  };
}
