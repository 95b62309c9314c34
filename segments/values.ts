// How a stored value compares with a literal, as SQL. One rule set for event
// properties, traits and profile fields (segments.md §1 "Comparing values"):
//
// - a comparison matches only when the value is present and of the literal's
//   kind: a number literal needs a stored number, a string literal a stored
//   string (booleans count as their text "true"/"false"), a boolean literal a
//   stored boolean or the string "true"/"false" (ordered false < true);
// - `neq` is "present, same kind, different" — so `x != "a"` is false when x
//   is missing or a number, while `not (x = "a")` is true;
// - `in` is the `or` of `eq` over the list, `nin` the `and` of `neq`,
//   `between a and b` is `gte a and lte b`;
// - contains / starts_with / matches look at string (and boolean) values only;
// - instants (first_seen, last_seen, last_purchase_at) compare with ISO
//   literals as instants; any other literal never matches them.
//
// Every expression built here is a non-null UInt8 (0/1), so `not` over it is
// exact two-valued logic.
import type { CompareOp, Literal, Predicate } from './ast.ts';
import { unreachable } from './ast.ts';
import { parseInstant, type Instant } from './check.ts';
import { join, literal, raw, sql, type Sql } from '../lib/sql.ts';

/** SQL pieces describing one stored value of one row. */
export type StoredValue =
  | {
      /** A value that may be a number or text (event property, trait). */
      kind: 'dynamic';
      present: Sql;
      isNumber: Sql;
      number: Sql;
      text: Sql;
      /**
       * Set when `number` is parsed from stored text that is the number's
       * shortest round-trip form (JavaScript's String(n)): equality then compares
       * that text, and ordering is exact near the literal (see exactNumberCompare).
       */
      numberText?: Sql;
    }
  | { kind: 'number'; present: Sql; number: Sql }
  | { kind: 'string'; present: Sql; text: Sql }
  /** Epoch seconds (UInt32). */
  | { kind: 'instant'; present: Sql; seconds: Sql };

const OPS: Record<CompareOp, string> = { eq: '=', neq: '!=', gt: '>', gte: '>=', lt: '<', lte: '<=' };

export function compareOperator(op: CompareOp): Sql {
  return raw(OPS[op]);
}

/** A Float64 literal: typed, so a huge integer is not read as an exact UInt64 and compared "accurately". */
export function float(n: number): Sql {
  if (n !== 0 && Math.abs(n) < 2.2250738585072014e-308) {
    // ClickHouse's parser refuses subnormal literals (5e-324): send k × 2^-1074, exact in doubles.
    const k = n * 2 ** 600 * 2 ** 474;
    return sql`(toFloat64(${k}) * exp2(-1074))`;
  }
  return sql`toFloat64(${n})`;
}

const TRUE = raw('1');
const FALSE = raw('0');

export function and(parts: readonly Sql[]): Sql {
  if (parts.length === 0) return TRUE;
  if (parts.length === 1) return parts[0]!;
  return sql`(${join(parts, ' AND ')})`;
}

export function or(parts: readonly Sql[]): Sql {
  if (parts.length === 0) return FALSE;
  if (parts.length === 1) return parts[0]!;
  return sql`(${join(parts, ' OR ')})`;
}

export function not(part: Sql): Sql {
  return sql`(NOT ${part})`;
}

/**
 * `seconds op instant` for whole stored seconds, exact for fractional instants:
 * with a fraction, `=` never holds, `>=` means `>`, `<` means `<=`.
 */
function compareInstant(seconds: Sql, op: CompareOp, at: Instant): Sql {
  const s = at.seconds;
  if (at.nanos === 0) return sql`${seconds} ${compareOperator(op)} ${s}`;
  switch (op) {
    case 'eq':
      return FALSE;
    case 'neq':
      return TRUE;
    case 'gt':
    case 'gte':
      return sql`${seconds} > ${s}`;
    case 'lt':
    case 'lte':
      return sql`${seconds} <= ${s}`;
    default:
      return unreachable(op);
  }
}

function booleanText(v: StoredValue): Sql | undefined {
  switch (v.kind) {
    case 'dynamic':
      return sql`(${v.present} AND NOT ${v.isNumber} AND ${v.text} IN ('true', 'false'))`;
    case 'string':
      return sql`(${v.present} AND ${v.text} IN ('true', 'false'))`;
    case 'number':
    case 'instant':
      return undefined;
    default:
      return unreachable(v);
  }
}

function textOf(v: StoredValue): { guard: Sql; text: Sql } | undefined {
  switch (v.kind) {
    case 'dynamic':
      return { guard: sql`${v.present} AND NOT ${v.isNumber}`, text: v.text };
    case 'string':
      return { guard: v.present, text: v.text };
    case 'number':
    case 'instant':
      return undefined;
    default:
      return unreachable(v);
  }
}

// ---- numbers stored as text ----
//
// A number trait is stored as text, String(n) of the double the ingest received
// (ingest/normalize.ts). ClickHouse 18.16 has no exactly rounded text → Float64
// parse: toFloat64OrZero, toFloat64, CAST and visitParamExtractFloat all use its
// "fast" reader, which lands one or two steps (adjacent doubles) off for ~0.5%
// of short decimals (14.694, 2.256) and ~23% of arbitrary bit patterns (measured
// on 650,000 values of every magnitude, subnormals included: never more than 2
// steps). Current releases parse exactly. The comparisons below are exact on both:
//
// - `=` / `!=` compare the stored text with String(literal): for doubles (with
//   -0 printed as 0) equal values have equal shortest texts and vice versa;
// - an ordering holds for a stored number v ⇔ its text is one of the doubles
//   within NEAR_STEPS steps of the literal that satisfy it, or its text is none
//   of those doubles and the parsed value satisfies it: a value further than
//   NEAR_STEPS steps away parses to the same side of the literal, since the
//   parse is off by at most 2 steps.

/** Doubles within this many steps of a literal are compared by their text. */
export const NEAR_STEPS = 8;

const f64 = new Float64Array(1);
const u64 = new BigInt64Array(f64.buffer);
const SIGN = -0x8000000000000000n;
const MAGNITUDE = 0x7fffffffffffffffn;

/** A double's position in the ordered sequence of doubles (0 for ±0). */
export function doubleOrdinal(x: number): bigint {
  f64[0] = x;
  const b = u64[0]!;
  return b < 0n ? -(b & MAGNITUDE) : b;
}

export function doubleAt(ordinal: bigint): number {
  u64[0] = ordinal < 0n ? -ordinal | SIGN : ordinal;
  return f64[0]!;
}

/** The finite doubles within `steps` steps of x, in increasing order. */
export function doublesNear(x: number, steps = NEAR_STEPS): number[] {
  const o = doubleOrdinal(x);
  const out: number[] = [];
  for (let k = -steps; k <= steps; k++) {
    const d = doubleAt(o + BigInt(k));
    if (Number.isFinite(d)) out.push(d);
  }
  return out;
}

/** `a op b` in JavaScript numbers: what a comparison gives for a known value. */
export function compareNumbers(a: number, op: CompareOp, b: number): boolean {
  switch (op) {
    case 'eq':
      return a === b;
    case 'neq':
      return a !== b;
    case 'gt':
      return a > b;
    case 'gte':
      return a >= b;
    case 'lt':
      return a < b;
    case 'lte':
      return a <= b;
    default:
      return unreachable(op);
  }
}

/** `v op lit` for a number held as its shortest text `text` and parsed (within 2 steps) as `number`. */
function exactNumberCompare(text: Sql, number: Sql, op: CompareOp, lit: number): Sql {
  const canonical = String(lit);
  if (op === 'eq') return sql`${text} = ${canonical}`;
  if (op === 'neq') return sql`${text} != ${canonical}`;
  const near = doublesNear(lit);
  const texts = (xs: number[]): Sql => join(xs.map((d) => sql`${String(d)}`));
  const holding = near.filter((d) => compareNumbers(d, op, lit));
  const byText = holding.length > 0 ? sql`${text} IN (${texts(holding)}) OR ` : raw('');
  return sql`(${byText}(${number} ${compareOperator(op)} ${float(lit)} AND ${text} NOT IN (${texts(near)})))`;
}

/** One comparison `value op literal`, false unless the kinds agree. */
export function compareValue(v: StoredValue, op: CompareOp, lit: Literal): Sql {
  const o = compareOperator(op);
  if (typeof lit === 'number') {
    if (v.kind === 'dynamic' && v.numberText) {
      return sql`(${v.present} AND ${v.isNumber} AND ${exactNumberCompare(v.numberText, v.number, op, lit)})`;
    }
    if (v.kind === 'dynamic') return sql`(${v.present} AND ${v.isNumber} AND ${v.number} ${o} ${float(lit)})`;
    if (v.kind === 'number') return sql`(${v.present} AND ${v.number} ${o} ${float(lit)})`;
    return FALSE;
  }
  if (typeof lit === 'boolean') {
    const guard = booleanText(v);
    if (!guard) return FALSE;
    const t = textOf(v)!;
    return sql`(${guard} AND ${t.text} ${o} ${lit ? 'true' : 'false'})`;
  }
  if (v.kind === 'instant') {
    const at = parseInstant(lit);
    if (at === undefined) return FALSE;
    return sql`(${v.present} AND ${compareInstant(v.seconds, op, at)})`;
  }
  const t = textOf(v);
  if (!t) return FALSE;
  return sql`(${t.guard} AND ${t.text} ${o} ${lit})`;
}

/** The whole predicate (`op` + `value`) against a stored value. */
export function predicateSql(v: StoredValue, p: Predicate): Sql {
  switch (p.op) {
    case 'is_null':
      return not(v.present);
    case 'is_not_null':
      return sql`(${v.present} != 0)`;
    case 'eq':
    case 'neq':
    case 'gt':
    case 'gte':
    case 'lt':
    case 'lte':
      return compareValue(v, p.op, p.value);
    case 'in':
      return or(p.value.map((x) => compareValue(v, 'eq', x)));
    case 'nin':
      return and(p.value.map((x) => compareValue(v, 'neq', x)));
    case 'between':
      return and([compareValue(v, 'gte', p.value[0]), compareValue(v, 'lte', p.value[1])]);
    case 'contains': {
      const t = textOf(v);
      return t ? sql`(${t.guard} AND position(${t.text}, ${p.value}) > 0)` : FALSE;
    }
    case 'starts_with': {
      const t = textOf(v);
      // substring on bytes, not startsWith(): the same on 18.16 and current releases.
      return t ? sql`(${t.guard} AND substring(${t.text}, 1, ${Buffer.byteLength(p.value)}) = ${p.value})` : FALSE;
    }
    case 'matches': {
      const t = textOf(v);
      return t ? sql`(${t.guard} AND match(${t.text}, ${re2Defaults(p.value)}))` : FALSE;
    }
    default:
      return unreachable(p);
  }
}

/**
 * A checked RE2 pattern for ClickHouse's match() with RE2's own defaults: in a
 * group with flag s off, since match() turns dot-matches-newline on. The group
 * also keeps 18.16 from taking a literal out of a pattern such as `(?i)CORP` as
 * a case-sensitive prefilter (it then matched no lower-case text). An
 * unterminated \Q… is closed first: it would quote the group's end.
 */
export function re2Defaults(pattern: string): string {
  let quoteOpen = false;
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] !== '\\') continue;
    if (pattern[i + 1] === 'Q') {
      const end = pattern.indexOf('\\E', i + 2);
      if (end < 0) {
        quoteOpen = true;
        break;
      }
      i = end + 1;
    } else i++;
  }
  return `(?-s:${pattern}${quoteOpen ? '\\E' : ''})`;
}

export type DynamicValue = Extract<StoredValue, { kind: 'dynamic' }>;

/** A top-level scalar event property, read from the parallel arrays of `events`. */
export function eventProperty(key: string): DynamicValue {
  const idx = sql`indexOf(prop_keys, ${key})`;
  const number = sql`prop_numbers[${idx}]`;
  return {
    kind: 'dynamic',
    present: sql`has(prop_keys, ${key})`,
    isNumber: sql`NOT isNaN(${number})`,
    number,
    text: sql`prop_strings[${idx}]`,
  };
}

/** A current trait held in two columns: its text and its value_type (0 = removed or never set). */
export function traitValue(valueColumn: Sql, typeColumn: Sql): DynamicValue {
  return {
    kind: 'dynamic',
    present: sql`(${typeColumn} IN (1, 2, 3))`,
    isNumber: sql`(${typeColumn} = 2)`,
    number: sql`toFloat64OrZero(${valueColumn})`,
    numberText: valueColumn,
    // A boolean trait may be stored as 1/0; it compares as its text true/false.
    text: sql`if(${typeColumn} = 3, if(${valueColumn} IN ('true', '1'), 'true', 'false'), ${valueColumn})`,
  };
}

export { literal };
