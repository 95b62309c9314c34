// Local hours in each user's own time zone, for best_hour, in one expression
// whatever the number of zones.
//
// ClickHouse 18.16 only accepts a constant zone in toHour. Converting each
// user's timestamps with one constant-zone toHour per zone costs every row one
// array operation per zone of the app (20 zones: ~1 s of the profile job on 20M
// events; hundreds of zones would dominate it). Instead, ClickHouse itself
// tabulates each zone's UTC offset over the window once — ~17k constant-zone
// toHour calls per zone for 90 days — and the scan adds the offset:
//
//   local hour = ((t mod 86400) + offset(zone, t)) mod 86400 div 3600
//
// offset(zone, t) is a step function: the offset at the window's start plus
// one step per transition (DST) inside the window, so a row costs a few
// comparisons and additions, its steps looked up by the zone's name. The table comes
// from the same tz database toHour uses: the window is sampled every 15 minutes
// and each change is pinned to its exact second, so the result equals
// toHour(t, zone) for every t in the window (test/profiles/zones.test.ts
// checks this against toHour around DST changes and odd offsets). One
// exception, outside any realistic window: before 1972 some zones had offsets
// with seconds (Africa/Monrovia -0:44:30), for which 18.16's toMinute/toSecond
// and toHour disagree, so near an hour's edge the hour can differ from toHour's.
import { join, raw, sql, type Sql } from '../lib/sql.ts';

/**
 * Sampling interval. No zone of the tz database changes its offset twice
 * within 15 minutes, so each change shows between two samples and is then
 * pinned to its second.
 */
const STEP_S = 900;

/** Offsets as seconds east of UTC modulo a day (0..86399): only the hour of day matters. */
function offsetSql(t: Sql, zone: string): Sql {
  return sql`((toHour(${t}, ${zone}) * 3600 + toMinute(${t}, ${zone}) * 60 + toSecond(${t}, ${zone}) + 86400 - toUInt32(${t}) % 86400) % 86400)`;
}

/**
 * Rows (z, at, off) for zones[z] over [fromSec, toSec]: the offset at the first
 * sample (at or before fromSec), then each change with the exact second it
 * takes effect. One query for all zones.
 */
export function zoneOffsetsSql(zones: readonly string[], fromSec: number, toSec: number): Sql {
  const start = Math.floor(fromSec / STEP_S) * STEP_S;
  const samples = Math.max(1, Math.ceil((toSec - start) / STEP_S) + 1);
  const parts = zones.map((zone, z) => {
    const off = offsetSql(raw('t'), zone);
    const before = offsetSql(raw(`(t - ${STEP_S})`), zone);
    // A change between two samples: the first second of (t - STEP_S, t] with the new offset.
    const exact = sql`arrayFirst(s -> ${offsetSql(raw('s'), zone)} = off, arrayMap(i -> toDateTime(toUInt32(t) - ${STEP_S - 1} + i), range(${STEP_S})))`;
    return sql`SELECT toUInt32(${z}) AS z, if(first, toUInt32(t), toUInt32(${exact})) AS at, toInt32(off) AS off FROM (
      SELECT t, ${off} AS off, ${before} AS before, t = toDateTime(${start}) AS first
      FROM (SELECT toDateTime(${start} + number * ${STEP_S}) AS t FROM numbers(${samples}))
    ) WHERE first OR off != before`;
  });
  return sql`SELECT z, at, off FROM (${join(parts, ' UNION ALL ')}) ORDER BY z, at`;
}

/** Per zone: the offset at the window's start, then (instant, offset) for each change. */
export interface ZoneOffsets {
  start: number[];
  changes: { at: number; off: number }[][];
}

export function zoneOffsetsFromRows(zoneCount: number, rows: readonly { z: number | string; at: number | string; off: number | string }[]): ZoneOffsets {
  const start: number[] = Array.from({ length: zoneCount }, () => 0);
  const changes: { at: number; off: number }[][] = Array.from({ length: zoneCount }, () => []);
  const seen = new Set<number>();
  for (const r of rows) {
    const z = Number(r.z);
    if (!seen.has(z)) {
      seen.add(z);
      start[z] = Number(r.off);
    } else {
      changes[z]!.push({ at: Number(r.at), off: Number(r.off) });
    }
  }
  if (seen.size !== zoneCount) throw new Error(`zone offsets: ${seen.size} of ${zoneCount} zones tabulated`);
  return { start, changes };
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
 * Zones with more changes in the window keep one constant-zone toHour each.
 * 18.16's tz tables make some zones flip every half hour on a transition day
 * (Australia/Lord_Howe, ~50 "changes" per DST change), and every row pays for
 * the most steps any zone needs.
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
