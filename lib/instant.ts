// ISO 8601 instants: a date and a time of day with an offset or Z, in every
// form the standard gives them (the contracts: "any ISO 8601 instant with an
// offset or Z"). One parser for event `ts`, request `as_of` and segment
// timestamps, so they agree on what an instant is.
//   dates   2026-11-29 / 20261129 (calendar), 2026-333 / 2026333 (ordinal),
//           2026-W48-7 / 2026W487 (week)
//   times   10:30:15 / 103015, 10:30 / 1030, 10; a fraction ([.,] digits) on the
//           last of them (10.5 is half past ten); 24:00 is the end of the day
//   offsets Z, ±hh:mm, ±hhmm, ±hh
//   `T` between date and time; `t` and `z` too (RFC 3339 allows them)
// Years are 0000..9999 of the proleptic Gregorian calendar; leap seconds (:60)
// are not instants ClickHouse can hold and are refused.

/** The last second ClickHouse's DateTime holds (2106-02-07T06:28:15Z); a later or earlier one is stored as another instant. */
export const DATETIME_MAX_S = 4294967295;

/** Whether epoch milliseconds `ms` fall in 1970-01-01T00:00:00Z..2106-02-07T06:28:15Z, the instants DateTime holds. */
export function isStorableInstant(ms: number): boolean {
  return ms >= 0 && Math.floor(ms / 1000) <= DATETIME_MAX_S;
}

export interface IsoInstant {
  /** Whole seconds since 1970-01-01T00:00:00Z (negative before). */
  seconds: number;
  /**
   * The digits of the fraction of a second, as written ('' without one). A
   * fraction of an hour or minute is converted, to at most 9 digits, and a
   * tenth digit 1 says it went on beyond them.
   */
  fraction: string;
}

// The date and the time each in one form, extended (with - or :) or basic.
const DATE = '(\\d{4})(?:-(\\d{2})-(\\d{2})|(\\d{2})(\\d{2})|-(\\d{3})|(\\d{3})|-W(\\d{2})-([1-7])|W(\\d{2})([1-7]))';
const TIME = '(\\d{2})(?::(\\d{2})(?::(\\d{2}))?|(\\d{2})(\\d{2})?)?';
const RE = new RegExp(`^${DATE}[Tt]${TIME}(?:[.,](\\d+))?(?:([Zz])|([+-])(\\d{2})(?::?(\\d{2}))?)$`);
/** Digits of an hour's or minute's fraction that are computed with; past them only whether any is not 0 counts. */
const FRACTION_DIGITS = 24;

/** The match's groups by meaning: each of the date's and time's forms has its own. */
function fields(m: RegExpExecArray) {
  const pick = (...i: number[]) => i.map((k) => m[k]).find((v) => v !== undefined);
  return {
    year: m[1]!,
    month: pick(2, 4),
    day: pick(3, 5),
    ordinal: pick(6, 7),
    week: pick(8, 10),
    weekday: pick(9, 11),
    hour: m[12]!,
    minute: pick(13, 15),
    second: pick(14, 16),
    fraction: m[17],
    zulu: m[18],
    sign: m[19],
    offsetHour: m[20],
    offsetMinute: m[21],
  };
}

/** Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's algorithm). */
export function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

const isLeap = (y: number) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;

function daysInMonth(y: number, m: number): number {
  if (m === 2) return isLeap(y) ? 29 : 28;
  return [4, 6, 9, 11].includes(m) ? 30 : 31;
}

/** ISO weeks in a year: 53 when it starts on a Thursday, or on a Wednesday in a leap year. */
function weeksIn(y: number): number {
  const jan1 = (((daysFromCivil(y, 1, 1) + 3) % 7) + 7) % 7; // 0 = Monday (1970-01-01 was a Thursday)
  return jan1 === 3 || (jan1 === 2 && isLeap(y)) ? 53 : 52;
}

/** Days from 1970-01-01 to the date, or undefined when there is no such date. */
function dayNumber(f: ReturnType<typeof fields>): number | undefined {
  const y = Number(f.year);
  if (f.month !== undefined) {
    const mo = Number(f.month);
    const d = Number(f.day);
    return mo >= 1 && mo <= 12 && d >= 1 && d <= daysInMonth(y, mo) ? daysFromCivil(y, mo, d) : undefined;
  }
  if (f.ordinal !== undefined) {
    const ord = Number(f.ordinal);
    return ord >= 1 && ord <= (isLeap(y) ? 366 : 365) ? daysFromCivil(y, 1, 1) + ord - 1 : undefined;
  }
  const week = Number(f.week);
  if (week < 1 || week > weeksIn(y)) return undefined;
  // Week 1 holds the year's first Thursday, so it holds January 4th.
  const jan4 = daysFromCivil(y, 1, 4);
  const mondayOfWeek1 = jan4 - ((((jan4 + 3) % 7) + 7) % 7);
  return mondayOfWeek1 + (week - 1) * 7 + Number(f.weekday) - 1;
}

/** `digits` (a decimal fraction) of `unit` seconds, as whole seconds and the fraction's digits (see IsoInstant). */
function fractionOf(digits: string, unit: number): { seconds: number; fraction: string } {
  if (unit === 1) return { seconds: 0, fraction: digits };
  // Bounded: BigInt arithmetic on a long fraction would hold the thread (a ts is request input).
  const past = digits.length > FRACTION_DIGITS && /[1-9]/.test(digits.slice(FRACTION_DIGITS));
  const used = digits.slice(0, FRACTION_DIGITS);
  const scale = 10n ** BigInt(used.length);
  const nanos = BigInt(used) * BigInt(unit) * 1_000_000_000n;
  const whole = nanos / scale;
  const inexact = past || nanos % scale !== 0n;
  const seconds = Number(whole / 1_000_000_000n);
  const rest = (whole % 1_000_000_000n).toString().padStart(9, '0');
  return { seconds, fraction: inexact ? `${rest}1` : rest.replace(/0+$/, '') };
}

/** The instant `text` names, or undefined when it is not an ISO 8601 date and time with an offset or Z. */
export function parseIsoInstant(text: string): IsoInstant | undefined {
  const m = RE.exec(text);
  if (!m) return undefined;
  const f = fields(m);
  const day = dayNumber(f);
  if (day === undefined) return undefined;
  const [h, mi, s] = [f.hour, f.minute, f.second].map((v) => (v === undefined ? 0 : Number(v))) as [number, number, number];
  const digits = f.fraction;
  const unit = f.second !== undefined ? 1 : f.minute !== undefined ? 60 : 3600;
  const frac = digits === undefined ? { seconds: 0, fraction: '' } : fractionOf(digits, unit);
  if (h === 24) {
    // The end of the day: 24:00, 24:00:00, with nothing past it.
    if (mi !== 0 || s !== 0 || frac.seconds !== 0 || /[1-9]/.test(frac.fraction)) return undefined;
  } else if (h > 23 || mi > 59 || s > 59) return undefined;
  let offset = 0;
  if (!f.zulu) {
    const oh = Number(f.offsetHour);
    const om = f.offsetMinute === undefined ? 0 : Number(f.offsetMinute);
    if (oh > 23 || om > 59) return undefined;
    offset = (f.sign === '-' ? -1 : 1) * (oh * 3600 + om * 60);
  }
  return { seconds: day * 86_400 + h * 3600 + mi * 60 + s + frac.seconds - offset, fraction: frac.fraction };
}

/** An instant as answers print it: ISO 8601 UTC, whole seconds (`2026-11-20T12:00:00Z`). */
export function isoSeconds(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
