import { describe, expect, it } from 'vitest';
import { loadMigrations, migrate, splitStatements } from '../../lib/migrate.ts';
import { raw } from '../../lib/sql.ts';
import { testDatabase } from '../support/env.ts';

describe('migrations', () => {
  it('split into statements, ignoring comments', () => {
    expect(splitStatements('-- a; b\nCREATE TABLE x (a UInt8) ENGINE = Memory;\nSELECT 1;\n')).toEqual([
      'CREATE TABLE x (a UInt8) ENGINE = Memory',
      'SELECT 1',
    ]);
  });

  it('apply once, in order, and are idempotent', async () => {
    const ch = await testDatabase('mig');
    const again = await migrate(ch);
    expect(again.applied).toEqual([]);
    expect(again.skipped).toEqual(loadMigrations().map((m) => m.name));
    const tables = (await ch.rows<{ name: string }>(raw('SELECT name FROM system.tables WHERE database = currentDatabase()'))).map((r) => r.name);
    for (const t of ['events', 'event_ids', 'user_traits', 'user_tags', 'profiles', 'profile_runs', 'schema_migrations']) {
      expect(tables).toContain(t);
    }
  });
});
