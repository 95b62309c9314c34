// The tabulated offsets of profiles/zones.ts against ClickHouse's own constant-zone
// toHour, second by second around every change and every 7 minutes in between:
// DST both ways, half- and quarter-hour zones, a 30-minute DST (Lord_Howe, which
// 18.16's tables flip every half hour on transition days: kept on toHour), a
// negative DST, Morocco.
import { describe, expect, it } from 'vitest';
import { raw, sql } from '../../lib/sql.ts';
import { localHours, MAX_STEPS, offsetsWithin, zoneOffsetsFromRows, zoneOffsetsSql } from '../../profiles/zones.ts';
import { testDatabase } from '../support/env.ts';

const S = (iso: string) => Date.parse(iso) / 1000;

const CASES: { from: string; to: string; zones: string[] }[] = [
  {
    from: '2026-02-20T00:00:00Z',
    to: '2026-11-20T00:00:00Z',
    zones: ['UTC', 'Europe/Berlin', 'America/New_York', 'America/St_Johns', 'Australia/Lord_Howe', 'Asia/Kathmandu', 'Pacific/Chatham', 'Europe/Dublin', 'Africa/Casablanca', 'Asia/Kolkata', 'America/Sao_Paulo'],
  },
];

describe('zone offsets', () => {
  for (const c of CASES) {
    it(`give toHour's hour for every instant tested, ${c.from.slice(0, 10)} to ${c.to.slice(0, 10)}`, async () => {
      const ch = await testDatabase('wzones');
      const names = [...c.zones].sort();
      const [from, to] = [S(c.from), S(c.to)];
      const offsets = zoneOffsetsFromRows(names.length, await ch.rows(zoneOffsetsSql(names, from, to)));
      const changes = offsets.changes.flat().map((x) => x.at);
      // DST: zones change in this window.
      expect(changes.length).toBeGreaterThan(0);
      // Every 7 min 13 s over the window, and every second within 15 minutes of each change.
      const spread = sql`arrayMap(i -> toDateTime(${from} + i * 433), range(${Math.floor((to - from) / 433) + 1}))`;
      const near = changes.map((at) => sql`arrayFilter(t -> toUInt32(t) BETWEEN ${from} AND ${to}, arrayMap(i -> toDateTime(${at - 900} + i), range(1801)))`);
      const times = sql`arrayConcat(${spread}${raw(near.map((x) => ', ' + x.text).join(''))})`;
      const local = localHours(raw('zone'), names, offsets);
      for (const zone of names) {
        const row = await ch.one<{ wrong: string; n: string; first_wrong: string }>(sql`
          SELECT arraySum(arrayMap((a, b) -> a != b, ours, theirs)) AS wrong, length(ours) AS n,
            arrayFirst((t, a, b) -> a != b, ts, ours, theirs) AS first_wrong
          FROM (
            SELECT ts, ${local.hoursOf(raw('ts'))} AS ours, arrayMap(t -> toHour(t, ${zone}), ts) AS theirs
            FROM (SELECT *, ${raw(local.columns.map((x) => x.text).join(', '))} FROM (SELECT ${zone} AS zone, ${times} AS ts))
          )`);
        expect({ zone, wrong: Number(row?.wrong), first_wrong: row?.first_wrong, n: Number(row?.n) }).toEqual({ zone, wrong: 0, first_wrong: row?.first_wrong, n: Number(row?.n) });
      }
    });
  }

  it('cut from a tabulation over a wider span, equal the window\'s own (so a run reuses an earlier run\'s table)', async () => {
    const ch = await testDatabase('wzones');
    const DAY = 86400;
    for (const c of CASES) {
      const names = [...c.zones].sort();
      const [from, to] = [S(c.from), S(c.to)];
      const own = zoneOffsetsFromRows(names.length, await ch.rows(zoneOffsetsSql(names, from, to)));
      // Wider on both sides, by spans that hold DST changes of their own.
      const wide = zoneOffsetsFromRows(names.length, await ch.rows(zoneOffsetsSql(names, from - 200 * DAY, to + 150 * DAY)));
      expect(wide.changes.flat().length).toBeGreaterThan(own.changes.flat().length);
      const cut = names.map((_, z) => offsetsWithin({ start: wide.start[z]!, changes: wide.changes[z]! }, from, to));
      expect({ start: cut.map((o) => o.start), changes: cut.map((o) => o.changes) }).toEqual(own);
    }
  });

  it('fold the changes up to a window\'s start into its start offset and drop those after its end', () => {
    const o = { start: 0, changes: [{ at: 100, off: 3600 }, { at: 200, off: 7200 }, { at: 300, off: 3600 }, { at: 400, off: 0 }] };
    expect(offsetsWithin(o, 200, 399)).toEqual({ start: 7200, changes: [{ at: 300, off: 3600 }] });
    expect(offsetsWithin(o, 50, 1000)).toEqual(o);
    expect(offsetsWithin(o, 500, 600)).toEqual({ start: 0, changes: [] });
  });

  it('keep zones with many changes on toHour, and count a zone not in the table as UTC', () => {
    const many = { start: [0, 0], changes: [Array.from({ length: MAX_STEPS + 1 }, (_, i) => ({ at: 1000 + i, off: i % 2 ? 0 : 1800 })), []] };
    const l = localHours(raw('zone'), ['Australia/Lord_Howe', 'UTC'], many);
    expect(l.hoursOf(raw('ts')).text).toContain("toHour(t, 'Australia/Lord_Howe')");
    expect(l.columns.map((x) => x.text).join(' ')).not.toContain('zone_at1');
  });

  it('count a zone not in the table as UTC', () => {
    const offsets = { start: [3600, 0], changes: [[], []] };
    const sqlText = localHours(raw('zone'), ['Europe/Berlin', 'UTC'], offsets).columns.map((x) => x.text).join(' ');
    expect(sqlText).toContain("transform(zone, ['Europe/Berlin', 'UTC'], [3600, 0], 0)");
  });
});
