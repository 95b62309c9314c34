import { describe, expect, it } from 'vitest';
import { applyStatement, columnAlter, loadMigrations, migrate, splitStatements } from '../../lib/migrate.ts';
import { raw, sql } from '../../lib/sql.ts';
import { normalizeEvent, toEventRow } from '../../ingest/normalize.ts';
import { insertEventRows } from '../../ingest/sink.ts';
import { testDatabase } from '../support/env.ts';
import { buildProfiles } from '../../profiles/job.ts';
import { latestRun, listRuns } from '../../profiles/read.ts';
import { unpackedList } from '../../profiles/sql.ts';

/** Hour i of 2026-01-01 on: the events of the migration tests' small histories. */
const at = (i: number) => new Date(Date.UTC(2026, 0, 1) + i * 3600_000).toISOString();

/** Event i of a history of `users` users: every `identifyEvery`-th an identify (plan, timezone), else a view or, every 4th, a purchase. */
function historyEvent(i: number, identifyEvery: number, users: number) {
  const r =
    i % identifyEvery === 0
      ? normalizeEvent({ type: 'identify', user_id: `u${i % users}`, event_id: `e${i}`, ts: at(i), traits: { plan: `p${i}`, timezone: 'Asia/Tokyo' } }, 'app')
      : normalizeEvent({ type: 'track', event: i % 4 === 0 ? 'purchase' : 'view', user_id: `u${i % users}`, event_id: `e${i}`, ts: at(i), properties: { amount: i, category: `c${i % 3}` } }, 'app');
  if (!r.row) throw new Error(JSON.stringify(r.errors));
  return r.row;
}

describe('migrations', () => {
  it('split into statements, ignoring comments', () => {
    expect(splitStatements('-- a; b\nCREATE TABLE x (a UInt8) ENGINE = Memory;\nSELECT 1;\n')).toEqual([
      'CREATE TABLE x (a UInt8) ENGINE = Memory',
      'SELECT 1',
    ]);
  });

  it('emulate IF [NOT] EXISTS on a column, which ClickHouse 18.16 lacks, and leave other statements alone', () => {
    expect(columnAlter('ALTER TABLE profiles ADD COLUMN IF NOT EXISTS s_x String')).toEqual({
      table: 'profiles', column: 's_x', add: true, run: 'ALTER TABLE profiles ADD COLUMN s_x String',
    });
    expect(columnAlter('alter table t drop column if exists c')).toEqual({ table: 't', column: 'c', add: false, run: 'ALTER TABLE t DROP COLUMN c' });
    expect(columnAlter('ALTER TABLE t ADD COLUMN c String')).toBeUndefined();
    expect(columnAlter('CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = Memory')).toBeUndefined();
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

describe('070_user_traits_by_key', () => {
  const traitRows = (ch: Awaited<ReturnType<typeof testDatabase>>) =>
    ch.rows<{ user_id: string; key: string; value: string; value_type: number; event_id: string }>(
      raw('SELECT DISTINCT user_id, key, value, value_type, event_id FROM user_traits ORDER BY user_id, key, event_id'),
    );
  const identify = (i: number, traits: Record<string, unknown>) => {
    const r = normalizeEvent({ type: 'identify', user_id: `u${i % 7}`, event_id: `e${i}`, ts: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString(), traits }, 'app');
    if (!r.row) throw new Error(JSON.stringify(r.errors));
    return r.row;
  };

  it('rebuilds user_traits key-first from events, repeatably, and the view writes into the new table', async () => {
    const ch = await testDatabase('mig070');
    await insertEventRows(ch, Array.from({ length: 40 }, (_, i) => identify(i, { plan: `p${i % 3}`, score: i, vip: i % 2 === 0, gone: i % 5 === 0 ? null : 'x' })));
    const before = await traitRows(ch);
    expect(before).toHaveLength(160);
    const m = loadMigrations().find((x) => x.name === '070_user_traits_by_key.sql')!;
    // A repeated (or interrupted and repeated) run: same rows, key-first, no tables left behind.
    for (const stmt of m.statements) await ch.exec(raw(stmt));
    expect(await traitRows(ch)).toEqual(before);
    const create = await ch.one<{ statement: string }>(raw('SHOW CREATE TABLE user_traits'));
    expect(create?.statement).toContain('ORDER BY (app_id, key, user_id, ts, event_id)');
    const tables = (await ch.rows<{ name: string }>(raw("SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'user_traits%'"))).map((r) => r.name);
    expect(tables.sort()).toEqual(['user_traits', 'user_traits_mv']);
    // The view resolves `TO user_traits` by name, so new events reach the rebuilt table.
    await insertEventRows(ch, [identify(100, { plan: 'late' })]);
    expect((await traitRows(ch)).filter((r) => r.event_id === 'e100')).toEqual([{ user_id: 'u2', key: 'plan', value: 'late', value_type: 1, event_id: 'e100' }]);
  });
});

describe('080_purchase_events', () => {
  const track = (i: number, event: string, properties: Record<string, unknown>) => {
    const e = { type: 'track' as const, event, user_id: `u${i % 5}`, event_id: `p${i}`, ts: Date.UTC(2026, 0, 1) + i * 1000, properties };
    const r = normalizeEvent({ ...e, ts: new Date(e.ts).toISOString() }, 'app');
    // Ingest now rejects purchase amounts that are not numbers >= 0; rows stored before that rule can hold them.
    if (!r.row && r.errors.every((x) => x.path === 'properties.amount')) return toEventRow(e, 'app');
    if (!r.row) throw new Error(JSON.stringify(r.errors));
    return r.row;
  };
  // What the RFM step reads must be the profile job's event copy's purchases, amount for amount.
  const fromPurchases = raw('SELECT user_id, toUInt32(ts) AS t, amount, toString(id_hash) AS h FROM purchase_events ORDER BY user_id, t, h');
  const fromProfileEvents = raw('SELECT user_id, toUInt32(ts) AS t, amount, toString(id_hash) AS h FROM profile_events_by_time WHERE kind = 3 ORDER BY user_id, t, h');

  it('holds exactly the purchases of profile_events_by_time, from the view and from a repeated backfill', async () => {
    const ch = await testDatabase('mig080');
    const amounts: unknown[] = [12.5, '7', true, { value: 3 }, undefined, 0, 1e-7, -4];
    await insertEventRows(ch, [
      ...amounts.map((amount, i) => track(i, 'purchase', amount === undefined ? { category: 'c' } : { amount, category: 'c' })),
      track(20, 'view', { amount: 99 }),
      track(21, 'Purchase', { amount: 99 }),
      track(22, 'add_to_cart', { amount: 99 }),
    ]);
    const expected = await ch.rows(fromProfileEvents);
    expect(expected).toHaveLength(amounts.length);
    expect(await ch.rows(fromPurchases)).toEqual(expected);
    const m = loadMigrations().find((x) => x.name === '080_purchase_events.sql')!;
    await ch.exec(raw('TRUNCATE TABLE purchase_events'));
    // 080 backfills from profile_events, which 120 replaced by profile_events_by_time: here it is as it stood then.
    await ch.exec(raw('CREATE TABLE profile_events ENGINE = Memory AS SELECT * FROM profile_events_by_time'));
    for (const stmt of m.statements) await ch.exec(raw(stmt));
    expect(await ch.rows(fromPurchases)).toEqual(expected);
    // Repeated: the duplicates collapse.
    for (const stmt of m.statements) await ch.exec(raw(stmt));
    expect(await ch.rows(fromPurchases)).toEqual(expected);
  });
});

describe('090_profiles_by_user', () => {
  const profileRows = (ch: Awaited<ReturnType<typeof testDatabase>>) =>
    ch.rows(raw('SELECT * FROM profiles ORDER BY run_id, user_id'));

  it('rebuilds profiles sorted by user_id with every run kept, also when repeated after an interruption', async () => {
    const ch = await testDatabase('mig090');
    const rows = Array.from({ length: 30 }, (_, i) => {
      const r = normalizeEvent({ type: 'track', event: i % 4 === 0 ? 'purchase' : 'view', user_id: `u${i % 9}`, event_id: `e${i}`, ts: at(i), properties: { amount: i, category: `c${i % 3}` } }, 'app');
      if (!r.row) throw new Error(JSON.stringify(r.errors));
      return r.row;
    });
    await insertEventRows(ch, rows);
    await buildProfiles(ch, 'app', { asOf: new Date(at(20)), mode: 'full' });
    await buildProfiles(ch, 'app', { asOf: new Date(at(40)), mode: 'incremental' });
    const before = await profileRows(ch);
    expect(new Set(before.map((r) => (r as { run_id: string }).run_id)).size).toBe(2);
    const m = loadMigrations().find((x) => x.name === '090_profiles_by_user.sql')!;
    // Interrupted right after the RENAME, then run again in full.
    const rename = m.statements.findIndex((s) => s.startsWith('RENAME'));
    for (const stmt of m.statements.slice(0, rename + 1)) await ch.exec(raw(stmt));
    for (const stmt of m.statements) await ch.exec(raw(stmt));
    expect(await profileRows(ch)).toEqual(before);
    const create = await ch.one<{ statement: string }>(raw('SHOW CREATE TABLE profiles'));
    expect(create?.statement).toMatch(/PARTITION BY \(app_id, run_id\) ORDER BY user_id/);
    const tables = (await ch.rows<{ name: string }>(raw("SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'profiles%'"))).map((r) => r.name);
    expect(tables.sort()).toEqual(['profiles', 'profiles_latest']);
  });
});

describe('100_user_timeline', () => {
  const event = (i: number) => historyEvent(i, 5, 7);
  // What a full profile run makes of the timeline, run id aside.
  const profileOf = async (ch: Awaited<ReturnType<typeof testDatabase>>) => {
    const run = await buildProfiles(ch, 'app', { asOf: new Date(at(60)), mode: 'full' });
    return ch.rows(sql`SELECT user_id, first_seen, last_seen, events_total, events_30d, purchases_total, revenue_total, top_category, best_hour, trait_keys, trait_values
      FROM profiles WHERE app_id = 'app' AND run_id = ${run.run_id} ORDER BY user_id`);
  };
  const elements = async (ch: Awaited<ReturnType<typeof testDatabase>>) =>
    Number((await ch.one<{ n: string }>(raw('SELECT sum(length(finalizeAggregation(event_ts))) AS n FROM user_timeline')))!.n);

  it('holds every stored event of each user, from the view and from a repeated backfill', async () => {
    const ch = await testDatabase('mig100');
    await insertEventRows(ch, Array.from({ length: 40 }, (_, i) => event(i)));
    expect(await elements(ch)).toBe(40);
    const before = await profileOf(ch);
    expect(before).toHaveLength(7);
    const m = loadMigrations().find((x) => x.name === '100_user_timeline.sql')!;
    await ch.exec(raw('TRUNCATE TABLE user_timeline'));
    for (const stmt of m.statements) await ch.exec(raw(stmt));
    expect(await elements(ch)).toBe(40);
    expect(await profileOf(ch)).toEqual(before);
    // Repeated: every event twice in its user's row, counted once.
    for (const stmt of m.statements) await ch.exec(raw(stmt));
    expect(await elements(ch)).toBe(80);
    expect(await profileOf(ch)).toEqual(before);
    // The view still writes.
    await insertEventRows(ch, [event(41)]);
    expect(await elements(ch)).toBe(81);
  });
});

describe('120_profile_state', () => {
  const event = (i: number) => historyEvent(i, 6, 5);
  const copies = (ch: Awaited<ReturnType<typeof testDatabase>>) =>
    ch.rows(raw(`SELECT DISTINCT user_id, toUInt32(ts) AS t, kind, amount, has_category, category, toString(id_hash) AS h, trait_keys, trait_values, trait_types, trait_event
      FROM profile_events_by_time ORDER BY user_id, t, h`));

  it('copies every event into the time-sorted table, also when repeated, and a profile chain runs on the new rows', async () => {
    const ch = await testDatabase('mig120');
    await insertEventRows(ch, Array.from({ length: 48 }, (_, i) => event(i)));
    const fromView = await copies(ch);
    expect(fromView).toHaveLength(48);
    expect(fromView.filter((r) => (r as { trait_event: string }).trait_event !== '')).toHaveLength(8);
    const m = loadMigrations().find((x) => x.name === '120_profile_state.sql')!;
    // Repeated in full: the backfill writes every event again; readers see each once.
    for (const stmt of m.statements) await ch.exec(raw(stmt));
    // It recreated profiles as it was then: the later migrations of it again.
    for (const later of loadMigrations().filter((x) => x.name > m.name)) for (const stmt of later.statements) await applyStatement(ch, stmt);
    expect(await copies(ch)).toEqual(fromView);
    const n = await ch.one<{ n: string }>(raw('SELECT count() AS n FROM profile_events_by_time'));
    expect(Number(n!.n)).toBe(96);
    const tables = (await ch.rows<{ name: string }>(raw("SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'profile_events%'"))).map((r) => r.name);
    expect(tables.sort()).toEqual(['profile_events_by_time', 'profile_events_by_time_mv']);
    // The view writes new events; a full run and an incremental one from its state give the same rows as a full run.
    // (A second later, so no event counts as received after the run started: a late arrival would be rescanned instead.)
    await new Promise((r) => setTimeout(r, 1100));
    await buildProfiles(ch, 'app', { asOf: new Date(at(47)), mode: 'full' });
    await insertEventRows(ch, [event(60), event(61)]);
    expect(await copies(ch)).toHaveLength(50);
    const inc = await buildProfiles(ch, 'app', { asOf: new Date(at(70)), mode: 'incremental', receivedMarginS: 0, layerShare: 1 });
    expect(inc.mode).toBe('incremental');
    const full = await buildProfiles(ch, 'app', { asOf: new Date(at(70)), mode: 'full' });
    const rows = (runId: string) =>
      ch.rows(sql`SELECT user_id, events_total, events_7d, revenue_30d, top_category, best_hour, trait_keys, trait_values, arraySort(s_ts) AS ts, arraySort(${unpackedList(raw('s_cats_packed'))}) AS cats
        FROM profiles WHERE app_id = 'app' AND run_id = ${runId} ORDER BY user_id`);
    const incRows = await rows(inc.run_id);
    const fullRows = await rows(full.run_id);
    // The incremental run holds only the users it recomputed (layered on the full run).
    expect(inc.base_run_id).toBeDefined();
    for (const r of incRows) expect(fullRows).toContainEqual(r);
  });
});

describe('140_profile_state_packed', () => {
  const event = (i: number) => historyEvent(i, 6, 5);
  const rowsOf = (ch: Awaited<ReturnType<typeof testDatabase>>, runId: string) =>
    ch.rows(sql`SELECT user_id, events_total, events_30d, top_category, trait_keys, trait_values FROM profiles WHERE app_id = 'app' AND run_id = ${runId} ORDER BY user_id`);

  it('keeps the rows of an earlier run readable, runs full after it, and is safe to repeat', async () => {
    const ch = await testDatabase('mig140');
    await insertEventRows(ch, Array.from({ length: 40 }, (_, i) => event(i)));
    const old = await buildProfiles(ch, 'app', { asOf: new Date(at(40)), mode: 'full' });
    const before = await rowsOf(ch, old.run_id);
    expect(before.length).toBe(5);
    // The schema as it was before 140: the run's state unpacked, no state_format.
    for (const q of [
      'ALTER TABLE profiles DROP COLUMN s_cats_packed',
      'ALTER TABLE profiles DROP COLUMN s_traits_packed',
      'ALTER TABLE profiles ADD COLUMN s_cats Array(String)',
      'ALTER TABLE profile_runs DROP COLUMN state_format',
    ]) {
      await ch.exec(raw(q));
    }
    const m = loadMigrations().find((x) => x.name === '140_profile_state_packed.sql')!;
    for (let i = 0; i < 2; i++) for (const stmt of m.statements) await applyStatement(ch, stmt);
    const columns = (await ch.rows<{ name: string }>(raw("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'profiles' AND name LIKE 's_%'"))).map((r) => r.name);
    expect(columns.sort()).toEqual(['s_amounts', 's_cats_packed', 's_flags', 's_traits_packed', 's_ts']);
    expect(await rowsOf(ch, old.run_id)).toEqual(before);
    expect((await latestRun(ch, 'app'))?.state_format).toBe(0);
    // An incremental run cannot start from that run's state: it runs full, and a chain on it is exact.
    // (A second after the insert: an event received in the second a run starts counts as late for the next run.)
    await insertEventRows(ch, [event(41), event(42), event(43)]);
    await new Promise((r) => setTimeout(r, 1100));
    const next = await buildProfiles(ch, 'app', { asOf: new Date(at(44)), mode: 'incremental', receivedMarginS: 0 });
    expect(next.mode).toBe('full');
    expect((await listRuns(ch, 'app')).find((r) => r.run_id === next.run_id)?.state_format).toBe(1);
    await insertEventRows(ch, [event(50), event(54)]);
    const inc = await buildProfiles(ch, 'app', { asOf: new Date(at(55)), mode: 'incremental', receivedMarginS: 0, layerShare: 1 });
    expect(inc.mode).toBe('incremental');
    const full = await buildProfiles(ch, 'app', { asOf: new Date(at(55)), mode: 'full' });
    const fullRows = await rowsOf(ch, full.run_id);
    for (const r of await rowsOf(ch, inc.run_id)) expect(fullRows).toContainEqual(r);
  });
});
