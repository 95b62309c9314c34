// The tabulated offsets of profiles/zones.ts, applied by the scan's SQL
// (localHours), against Intl's hour (the reference implementation's), second by
// second around every change and every half hour in between: DST both ways,
// half- and quarter-hour zones, a 30-minute DST (Lord_Howe), a negative DST,
// Morocco, and the zones whose DST starts at local midnight, where 18.16's own
// toHour is an hour off for the day after (Santiago, Cairo, Havana, Beirut, Azores).
import { describe, expect, it } from 'vitest';
import { raw, sql } from '../../lib/sql.ts';
import { intlKnowsZone, localHours, MAX_STEPS, offsetsWithin, zoneOffsets } from '../../profiles/zones.ts';
import { testDatabase } from '../support/env.ts';
import { localHour } from './reference.ts';

const S = (iso: string) => Date.parse(iso) / 1000;

const CASES: { from: string; to: string; zones: string[] }[] = [
  {
    from: '2026-02-20T00:00:00Z',
    to: '2026-11-20T00:00:00Z',
    zones: [
      'UTC', 'Europe/Berlin', 'America/New_York', 'America/St_Johns', 'Australia/Lord_Howe', 'Asia/Kathmandu', 'Pacific/Chatham', 'Europe/Dublin',
      'Africa/Casablanca', 'Asia/Kolkata', 'America/Sao_Paulo', 'America/Santiago', 'Africa/Cairo', 'America/Havana', 'Asia/Beirut', 'Atlantic/Azores',
    ],
  },
];

describe('zone offsets', () => {
  for (const c of CASES) {
    it(`give Intl's hour for every instant tested, ${c.from.slice(0, 10)} to ${c.to.slice(0, 10)}`, async () => {
      const ch = await testDatabase('wzones');
      const names = [...c.zones].sort();
      const [from, to] = [S(c.from), S(c.to)];
      const offsets = zoneOffsets(names, from, to);
      // Two changes a year at most, so none falls back to toHour.
      expect(Math.max(...offsets.changes.map((x) => x.length))).toBeLessThanOrEqual(MAX_STEPS);
      const local = localHours(raw('zone'), names, offsets);
      for (const [z, zone] of names.entries()) {
        // Every half hour (and 7 s) over the window, and every second within 15 minutes of each change.
        const times: number[] = [];
        for (let t = from; t <= to; t += 1807) times.push(t);
        for (const { at } of offsets.changes[z]!) for (let t = at - 900; t <= at + 900; t++) times.push(t);
        const row = await ch.one<{ ours: number[] }>(sql`
          SELECT ${local.hoursOf(raw('ts'))} AS ours
          FROM (SELECT *, ${raw(local.columns.map((x) => x.text).join(', '))} FROM (SELECT ${zone} AS zone, arrayMap(t -> toDateTime(t), CAST(${times} AS Array(UInt32))) AS ts))`);
        const wrong = times.filter((t, i) => row!.ours[i] !== localHour(t, zone));
        expect({ zone, tested: times.length, wrong: wrong.length, first: wrong[0] }).toEqual({ zone, tested: times.length, wrong: 0, first: undefined });
      }
    });
  }

  it('pin the changes of a zone whose DST starts at local midnight to their second', () => {
    // Santiago: -04 to -03 at 2026-09-06T04:00:00Z (00:00 → 01:00 local).
    const o = zoneOffsets(['America/Santiago'], S('2026-09-01T00:00:00Z'), S('2026-09-10T00:00:00Z'));
    expect(o).toEqual({ start: [86400 - 4 * 3600], changes: [[{ at: S('2026-09-06T04:00:00Z'), off: 86400 - 3 * 3600 }]] });
  });

  it('know the IANA zones and their links, not tzcode\'s other files', () => {
    expect(['America/Santiago', 'US/Eastern', 'Etc/GMT+5', 'UTC'].map(intlKnowsZone)).toEqual([true, true, true, true]);
    expect(['posixrules', 'localtime', 'Mars/Olympus', 'right/UTC'].map(intlKnowsZone)).toEqual([false, false, false, false]);
  });

  it('cut from a tabulation over a wider span, equal the window\'s own (so a run reuses an earlier run\'s table)', () => {
    const DAY = 86400;
    for (const c of CASES) {
      const names = [...c.zones].sort();
      const [from, to] = [S(c.from), S(c.to)];
      const own = zoneOffsets(names, from, to);
      // Wider on both sides, by spans that hold DST changes of their own.
      const wide = zoneOffsets(names, from - 200 * DAY, to + 150 * DAY);
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
