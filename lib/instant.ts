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

const RE =
  /^(\d{4})(?:-?(\d{2})-?(\d{2})|-?(\d{3})|-?W(\d{2})-?([1-7]))[Tt](\d{2})(?::?(\d{2})(?::?(\d{2}))?)?(?:[.,](\d+))?(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)$/;

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
function dayNumber(m: RegExpExecArray): number | undefined {
  const y = Number(m[1]);
  if (m[2] !== undefined) {
    const mo = Number(m[2]);
    const d = Number(m[3]);
    return mo >= 1 && mo <= 12 && d >= 1 && d <= daysInMonth(y, mo) ? daysFromCivil(y, mo, d) : undefined;
  }
  if (m[4] !== undefined) {
    const ord = Number(m[4]);
    return ord >= 1 && ord <= (isLeap(y) ? 366 : 365) ? daysFromCivil(y, 1, 1) + ord - 1 : undefined;
  }
  const week = Number(m[5]);
  if (week < 1 || week > weeksIn(y)) return undefined;
  // Week 1 holds the year's first Thursday, so it holds January 4th.
  const jan4 = daysFromCivil(y, 1, 4);
  const mondayOfWeek1 = jan4 - ((((jan4 + 3) % 7) + 7) % 7);
  return mondayOfWeek1 + (week - 1) * 7 + Number(m[6]) - 1;
}

/** `digits` (a decimal fraction) of `unit` seconds, as whole seconds and the fraction's digits (see IsoInstant). */
function fractionOf(digits: string, unit: number): { seconds: number; fraction: string } {
  if (unit === 1) return { seconds: 0, fraction: digits };
  const scale = 10n ** BigInt(digits.length);
  const nanos = BigInt(digits) * BigInt(unit) * 1_000_000_000n;
  const whole = nanos / scale;
  const inexact = nanos % scale !== 0n;
  const seconds = Number(whole / 1_000_000_000n);
  const rest = (whole % 1_000_000_000n).toString().padStart(9, '0');
  return { seconds, fraction: inexact ? `${rest}1` : rest.replace(/0+$/, '') };
}

/** The instant `text` names, or undefined when it is not an ISO 8601 date and time with an offset or Z. */
export function parseIsoInstant(text: string): IsoInstant | undefined {
  const m = RE.exec(text);
  if (!m) return undefined;
  const day = dayNumber(m);
  if (day === undefined) return undefined;
  const [h, mi, s] = [m[7], m[8], m[9]].map((v) => (v === undefined ? 0 : Number(v))) as [number, number, number];
  const digits = m[10];
  const unit = m[9] !== undefined ? 1 : m[8] !== undefined ? 60 : 3600;
  const frac = digits === undefined ? { seconds: 0, fraction: '' } : fractionOf(digits, unit);
  if (h === 24) {
    // The end of the day: 24:00, 24:00:00, with nothing past it.
    if (mi !== 0 || s !== 0 || frac.seconds !== 0 || /[1-9]/.test(frac.fraction)) return undefined;
  } else if (h > 23 || mi > 59 || s > 59) return undefined;
  let offset = 0;
  if (!m[11]) {
    const oh = Number(m[13]);
    const om = m[14] === undefined ? 0 : Number(m[14]);
    if (oh > 23 || om > 59) return undefined;
    offset = (m[12] === '-' ? -1 : 1) * (oh * 3600 + om * 60);
  }
  return { seconds: day * 86_400 + h * 3600 + mi * 60 + s + frac.seconds - offset, fraction: frac.fraction };
}
