// Applies sql/migrations/NNN_*.sql in order, once each, recording them in
// schema_migrations. Statements use IF NOT EXISTS so a run interrupted between
// a statement and its record is safe to repeat.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './config.ts';
import type { ClickHouse } from './clickhouse.ts';
import { ident, raw, sql } from './sql.ts';

export const MIGRATIONS_DIR = join(REPO_ROOT, 'sql', 'migrations');

export interface Migration {
  name: string;
  checksum: string;
  statements: string[];
}

/** Splits a migration file into statements: a statement ends with ';' at the end of a line. */
export function splitStatements(text: string): string[] {
  const withoutComments = text
    .split('\n')
    .map((line) => line.replace(/--.*$/, ''))
    .join('\n');
  return withoutComments
    .split(/;\s*(?:\n|$)/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((name) => {
      const text = readFileSync(join(dir, name), 'utf8');
      return {
        name,
        checksum: createHash('sha256').update(text).digest('hex').slice(0, 16),
        statements: splitStatements(text),
      };
    });
}

const COLUMN_IF = /^ALTER\s+TABLE\s+([A-Za-z_][A-Za-z0-9_]*)\s+(ADD\s+COLUMN\s+IF\s+NOT\s+EXISTS|DROP\s+COLUMN\s+IF\s+EXISTS)\s+([A-Za-z_][A-Za-z0-9_]*)\b([\s\S]*)$/i;

/**
 * An ALTER that adds or drops one column `IF [NOT] EXISTS`, as the statement
 * to run without that clause, or null when the column is already as wanted.
 * ClickHouse 18.16 has no IF [NOT] EXISTS on columns (current versions do), so
 * the runner checks system.columns itself: a migration interrupted after its
 * ALTER is then safe to repeat, like one whose statements say IF NOT EXISTS.
 */
export function columnAlter(stmt: string): { table: string; column: string; add: boolean; run: string } | undefined {
  const m = COLUMN_IF.exec(stmt.trim());
  if (!m) return undefined;
  const [, table, clause, column, rest] = m as unknown as [string, string, string, string, string];
  const add = /^ADD/i.test(clause);
  return { table, column, add, run: `ALTER TABLE ${table} ${add ? 'ADD' : 'DROP'} COLUMN ${column}${rest}` };
}

/** Runs one statement of a migration (columnAlter's emulation included). */
export async function applyStatement(ch: ClickHouse, stmt: string): Promise<void> {
  const alter = columnAlter(stmt);
  if (!alter) return void (await ch.exec(raw(stmt)));
  const found = await ch.one<{ n: string }>(
    sql`SELECT count() AS n FROM system.columns WHERE database = currentDatabase() AND table = ${alter.table} AND name = ${alter.column}`,
  );
  const exists = Number(found?.n ?? 0) > 0;
  if (exists !== alter.add) await ch.exec(raw(alter.run));
}

export interface MigrateResult {
  applied: string[];
  skipped: string[];
}

export async function migrate(ch: ClickHouse, opts: { onProgress?: (m: string) => void } = {}): Promise<MigrateResult> {
  const root = ch.withDatabase('default');
  try {
    await root.exec(sql`CREATE DATABASE IF NOT EXISTS ${ident(ch.database)}`);
  } finally {
    await root.close();
  }
  await ch.exec(
    raw(`CREATE TABLE IF NOT EXISTS schema_migrations (name String, checksum String, applied_at DateTime)
         ENGINE = ReplacingMergeTree(applied_at) ORDER BY name`),
  );
  const done = new Map(
    (await ch.rows<{ name: string; checksum: string }>(raw('SELECT name, any(checksum) AS checksum FROM schema_migrations GROUP BY name'))).map(
      (r) => [r.name, r.checksum],
    ),
  );
  const result: MigrateResult = { applied: [], skipped: [] };
  for (const m of loadMigrations()) {
    const prior = done.get(m.name);
    if (prior !== undefined) {
      if (prior !== m.checksum) {
        throw new Error(
          `migration ${m.name} changed after it was applied (checksum ${prior} → ${m.checksum}); add a new migration instead of editing an applied one`,
        );
      }
      result.skipped.push(m.name);
      continue;
    }
    for (const stmt of m.statements) await applyStatement(ch, stmt);
    await ch.insert('schema_migrations', [{ name: m.name, checksum: m.checksum, applied_at: Math.floor(Date.now() / 1000) }]);
    result.applied.push(m.name);
    opts.onProgress?.(m.name);
  }
  return result;
}
