// Local hours in each user's own time zone, for best_hour, in one expression
// whatever the number of zones.
//
// ClickHouse 18.16 only accepts a constant zone in toHour. Converting each
// user's timestamps with one constant-zone toHour per zone costs every row one
// array operation per zone of the app (20 zones: ~1 s of the profile job on 20M
// events; hundreds of zones would dominate it). Instead each zone's UTC offset
// is tabulated over the window once and the scan adds the offset:
//
//   local hour = ((t mod 86400) + offset(zone, t)) mod 86400 div 3600
//
// offset(zone, t) is a step function: the offset at the window's start plus
// one step per transition (DST) inside the window, so a row costs a few
// comparisons and additions, its steps looked up by the zone's name.
//
// The table comes from Node's tz database (Intl), not from ClickHouse: 18.16's
// toHour is an hour off for the day after a DST change at local midnight
// (America/Santiago, Africa/Cairo, America/Havana, Asia/Beirut, Atlantic/Azores
// in 2026), and flips Australia/Lord_Howe every half hour on its transition
// days. test/profiles/zones.test.ts checks the hours against Intl second by
// second around every change.
import { join, raw, sql, type Sql } from '../lib/sql.ts';

/**
 * Sampling interval. A zone's offset changes a few times a year at most,
 * months apart, so each change shows between two samples and is then pinned
 * to its second (a change and its reversal within 6 hours would be missed).
 */
const STEP_S = 6 * 3600;

const wallClocks = new Map<string, Intl.DateTimeFormat>();

/** The offset of `zone` at `t` (epoch seconds), in seconds east of UTC. */
export function utcOffset(zone: string, t: number): number {
  let f = wallClocks.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: zone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' });
    wallClocks.set(zone, f);
  }
  // Instants here are DateTime's (1970..2106): years of the common era only.
  const parts: Record<string, string> = {};
  for (const p of f.formatToParts(new Date(t * 1000))) parts[p.type] = p.value;
  const wall = Date.UTC(Number(parts.year), Number(parts.month) - 1, Number(parts.day), Number(parts.hour), Number(parts.minute), Number(parts.second)) / 1000;
  return wall - t;
}

/** Whether Intl knows `zone` (it refuses tzcode's files that are not zones, such as posixrules). */
export function intlKnowsZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** Offsets as seconds east of UTC modulo a day (0..86399): only the hour of day matters. */
const ofDay = (off: number) => ((off % 86400) + 86400) % 86400;

/**
 * Each zone's offset at `fromSec`, then each change up to `toSec` with the
 * second it takes effect (modulo a day, as the scan adds them).
 */
export function zoneOffsets(zones: readonly string[], fromSec: number, toSec: number): ZoneOffsets {
  const start: number[] = [];
  const changes: { at: number; off: number }[][] = [];
  for (const zone of zones) {
    const first = ofDay(utcOffset(zone, fromSec));
    const own: { at: number; off: number }[] = [];
    let prev = first;
    for (let t = fromSec; t < toSec; t += STEP_S) {
      const next = Math.min(t + STEP_S, toSec);
      const off = ofDay(utcOffset(zone, next));
      if (off === prev) continue;
      // The first second of (t, next] with the new offset.
      let [lo, hi] = [t, next];
      while (hi - lo > 1) {
        const mid = Math.floor((lo + hi) / 2);
        if (ofDay(utcOffset(zone, mid)) === prev) lo = mid;
        else hi = mid;
      }
      own.push({ at: hi, off });
      prev = off;
    }
    start.push(first);
    changes.push(own);
  }
  return { start, changes };
}

/** Per zone: the offset at the window's start, then (instant, offset) for each change. */
export interface ZoneOffsets {
  start: number[];
  changes: { at: number; off: number }[][];
}

/**
 * One zone's offsets (`start` at `from`, then its `changes`) cut to a window
 * inside [from, to]: the changes up to `winFrom` folded into the start, those
 * after `winTo` dropped. Every instant in (winFrom, winTo] gets the same offset,
 * and the window keeps only its own changes, which every row pays for
 * (localHours). So one tabulation over a wider span serves the runs of the
 * days after it.
 */
export function offsetsWithin(o: { start: number; changes: readonly { at: number; off: number }[] }, winFrom: number, winTo: number): { start: number; changes: { at: number; off: number }[] } {
  let start = o.start;
  const changes: { at: number; off: number }[] = [];
  for (const c of o.changes) {
    if (c.at <= winFrom) start = c.off;
    else if (c.at <= winTo) changes.push({ at: c.at, off: c.off });
  }
  return { start, changes };
}

const NEVER = 4294967295;

/**
 * A zone with more changes in the window than this (none of today's zones
 * over 90 days) keeps one constant-zone toHour: every row pays for the most
 * steps any zone needs.
 */
export const MAX_STEPS = 4;

/**
 * For the zone named by `zone` (an expression; any name not in `names` counts
 * as UTC), with `offsets` tabulated for `names` (which include 'UTC'): the
 * per-row columns that pick that zone's steps (`zone_off0`, `zone_at1`,
 * `zone_step1`, …; transform is a hash lookup), and the local hours (UInt8) of
 * an array of DateTime, in order. The columns go in as extra lambda arrays
 * rather than captured: 18.16 drops a column a lambda only captures from a
 * subquery's select list ("Unknown identifier").
 */
export function localHours(zone: Sql, names: readonly string[], offsets: ZoneOffsets): { columns: Sql[]; hoursOf: (times: Sql) => Sql } {
  const utc = names.indexOf('UTC');
  if (utc < 0) throw new Error("zone offsets must include 'UTC'");
  const irregular = names.filter((_, z) => offsets.changes[z]!.length > MAX_STEPS);
  const regular = offsets.changes.map((c) => (c.length > MAX_STEPS ? [] : c));
  const pick = (values: number[], alias: string) => sql`transform(${zone}, ${names}, ${values}, ${values[utc]!}) AS ${raw(alias)}`;
  const k = Math.max(0, ...regular.map((c) => c.length));
  const params = ['zone_off0'];
  const columns = [pick(offsets.start, 'zone_off0')];
  for (let i = 1; i <= k; i++) {
    // Step i adds the change from the previous offset; a zone with fewer changes never takes it.
    const at = regular.map((c) => c[i - 1]?.at ?? NEVER);
    const step = regular.map((c, z) => (c[i - 1] ? c[i - 1]!.off - (i === 1 ? offsets.start[z]! : c[i - 2]!.off) : 0));
    columns.push(pick(at, `zone_at${i}`), pick(step, `zone_step${i}`));
    params.push(`zone_at${i}`, `zone_step${i}`);
  }
  if (irregular.length > 0) columns.push(sql`${zone} IN (${join(irregular.map((z) => sql`${z}`))}) AS zone_irregular`);
  const hoursOf = (times: Sql) => {
    // The steps telescope to the offset in effect at t (0..86399), so the sum stays within [0, 2 days).
    const steps = Array.from({ length: k }, (_, j) => ` + (toUInt32(t) >= a${j + 1}) * s${j + 1}`).join('');
    const args = ['o0', ...Array.from({ length: k }, (_, j) => [`a${j + 1}`, `s${j + 1}`]).flat()];
    const repeated = params.map((p) => raw(`arrayResize([${p}], length(${times.text}), ${p})`));
    const tabulated = sql`arrayMap((t, ${raw(args.join(', '))}) -> toUInt8(intDiv((toUInt32(t) % 86400 + o0${raw(steps)}) % 86400, 3600)), ${times}, ${join(repeated)})`;
    if (irregular.length === 0) return tabulated;
    // Only the user's own zone gives a non-empty list, so the concatenation keeps their order.
    const own = irregular.map((z) => sql`arrayMap(t -> toHour(t, ${z}), if(${zone} = ${z}, ${times}, emptyArrayDateTime()))`);
    return sql`if(zone_irregular, arrayConcat(${join(own)}), ${tabulated})`;
  };
  return { columns, hoursOf };
}
