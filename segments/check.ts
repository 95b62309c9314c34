// Semantic rules of the segment language, applied to any AST — parsed from text,
// read from JSON, or built in code. parseSegment and fromJson run them (without a
// segment resolver) so malformed input is rejected where it is read; the API runs
// them again with a resolver to validate `in_segment` references. Pure: no I/O.

import { parseIsoInstant } from '../lib/instant.ts';
import { isWellFormedText } from '../lib/text.ts';
import { DURATION_SECONDS, unreachable } from './ast.ts';
import type { CompareOp, Duration, Expr, Literal, Predicate, PropExpr, Span, TimeWindow } from './ast.ts';
import { atOffset, shown } from './errors.ts';
import type { SegmentError } from './errors.ts';
import { NON_COMPARABLE_FIELDS, resolveAttr, TRAIT_BACKED_FIELDS, TRAITS_PREFIX } from './fields.ts';
import type { AttrTarget } from './fields.ts';

export const LIMITS = {
  /** UTF-8 bytes of the text form. */
  maxTextBytes: 16 * 1024,
  /** Conditions (Expr and where-clause nodes) in one expression. */
  maxNodes: 500,
  /** The root condition is depth 1; each and/or/not/where child adds one. */
  maxDepth: 32,
  maxListItems: 1000,
  minSequenceSteps: 2,
  maxSequenceSteps: 8,
  /**
   * Seconds are computed exactly up to 2^53 - 1 (about 285 million years). Every
   * window is clamped in JavaScript before it reaches SQL (a window reaching back
   * before 1970 covers all history), so ClickHouse itself never sees a bound it
   * could overflow; this limit keeps `amount × unit` an exact integer.
   */
  maxDurationSeconds: Number.MAX_SAFE_INTEGER,
  /** in_segment references followed while looking for cycles. */
  maxSegmentsVisited: 10_000,
} as const;

export const COMPARE_OPS: readonly CompareOp[] = ['eq', 'neq', 'gt', 'gte', 'lt', 'lte'];
export const AGG_FNS = ['sum', 'avg', 'min', 'max', 'count_distinct'] as const;
export const DURATION_UNITS: readonly Duration['unit'][] = ['s', 'm', 'h', 'd', 'w'];

/** Stored event names (events-and-profiles.md §1); any other name can never match. */
export const EVENT_NAME_PATTERN = '^[A-Za-z0-9_.:\\- ]{1,128}$';
const EVENT_NAME_RE = new RegExp(EVENT_NAME_PATTERN);

// ---- durations ----

export const DURATION_PATTERN = '^[0-9]+[smhdw]$';

/** Why `amount` of `unit` is not a usable duration, or undefined when it is. */
export function durationProblem(amount: number, unit: string): string | undefined {
  if (!(DURATION_UNITS as readonly string[]).includes(unit)) return `unknown duration unit ${shown(unit)}; use s, m, h, d or w`;
  if (!Number.isFinite(amount) || !Number.isInteger(amount)) return 'duration must be a whole number';
  if (amount <= 0) return 'duration must be > 0';
  if (amount * DURATION_SECONDS[unit as Duration['unit']] > LIMITS.maxDurationSeconds) {
    return `duration must be at most ${LIMITS.maxDurationSeconds} seconds (about 285 million years): longer ones cannot be computed exactly`;
  }
  return undefined;
}

// ---- instants ----

export interface Instant {
  /** Whole seconds since the Unix epoch (may be negative). */
  seconds: number;
  /** 0..999,999,999 */
  nanos: number;
}

/**
 * The instant an ISO 8601 string names (lib/instant.ts: any form, with an
 * offset or Z), or undefined when it is not one, or its fraction goes past the
 * nanosecond: comparisons with it are exact to the nanosecond.
 */
export function parseInstant(text: string): Instant | undefined {
  const p = parseIsoInstant(text);
  if (!p || p.fraction.length > 9) return undefined;
  return { seconds: p.seconds, nanos: p.fraction === '' ? 0 : Number(p.fraction.padEnd(9, '0')) };
}

export function compareInstants(a: Instant, b: Instant): number {
  return a.seconds !== b.seconds ? a.seconds - b.seconds : a.nanos - b.nanos;
}

export const INSTANT_HINT = 'an ISO 8601 timestamp with an offset or Z, e.g. "2026-01-01T00:00:00Z"';

/** Why a `between` time window is unusable, or undefined. */
export function windowProblem(from: string, to: string): { code: string; message: string; at: 0 | 1 } | undefined {
  const a = parseInstant(from);
  if (!a) return { code: 'bad_timestamp', message: `${shown(from)} is not ${INSTANT_HINT}`, at: 0 };
  const b = parseInstant(to);
  if (!b) return { code: 'bad_timestamp', message: `${shown(to)} is not ${INSTANT_HINT}`, at: 1 };
  // End equal to start is allowed: the window start <= ts < end is empty and matches no event.
  if (compareInstants(b, a) < 0) return { code: 'between_order', message: `between end ${shown(to)} precedes start ${shown(from)}`, at: 1 };
  return undefined;
}

// ---- counts ----

/** `count < 0` is allowed: it is never true, like any other comparison no count satisfies. */
export function countProblem(_op: CompareOp, value: number): string | undefined {
  if (!Number.isSafeInteger(value) || value < 0) return 'count must be a whole number >= 0';
  return undefined;
}

// ---- literals ----

/** Order strings by code point, as ClickHouse orders their UTF-8 bytes. */
export function compareStrings(a: string, b: string): number {
  const x = Array.from(a);
  const y = Array.from(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) {
    const d = x[i]!.codePointAt(0)! - y[i]!.codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

function kindOf(v: Literal): 'string' | 'number' | 'boolean' {
  return typeof v === 'string' ? 'string' : typeof v === 'number' ? 'number' : 'boolean';
}

export const LONE_SURROGATE_MESSAGE =
  'holds a lone UTF-16 surrogate (such as \\uD800 without its pair), which is not valid Unicode; write the character itself or both halves of its surrogate pair';

// ---- RE2 syntax ----

const POSIX_CLASSES = new Set([
  'alnum', 'alpha', 'ascii', 'blank', 'cntrl', 'digit', 'graph', 'lower', 'print', 'punct', 'space', 'upper', 'word', 'xdigit',
]);
const isWordChar = (c: string): boolean => /^[A-Za-z0-9_]$/.test(c);
const isOctal = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '7';
const isHex = (c: string | undefined): boolean => c !== undefined && /^[0-9A-Fa-f]$/.test(c);

// Estimated compiled size, in RE2 program instructions, measured on ClickHouse 18.16:
// its RE2 refuses patterns beyond ~700,000 instructions (697 × `(a{1000})` compile,
// 698 do not; `\pL` costs ~1,560, `.` ~12). A 16 KiB segment can reach that limit
// with counted repetitions or Unicode classes, so the estimate keeps a margin.
const MAX_RE2_PROGRAM = 650_000;
const UNICODE_CLASS_COST = 1_600;
const ANY_CHAR_COST = 12;
const PERL_CLASS_COST: Record<string, number> = { d: 1, s: 3, w: 4, D: ANY_CHAR_COST, S: ANY_CHAR_COST, W: ANY_CHAR_COST, C: 1 };

const LONG_NAMES_OF_FOUR_LETTERS = new Set(['Thai', 'Cham', 'Lisu', 'Modi', 'Newa', 'Toto']);

function unicodeClassKnown(name: string): boolean {
  if (name === 'Any') return true;
  if (/^[A-Z][a-z]?$/.test(name)) {
    try {
      new RegExp(`\\p{${name}}`, 'u');
      return true;
    } catch {
      return false;
    }
  }
  if (!/^[A-Z][A-Za-z_]*$/.test(name)) return false;
  // JavaScript also knows the four-letter ISO 15924 aliases (Grek, Latn); RE2 knows only long names.
  if (/^[A-Z][a-z]{3}$/.test(name) && !LONG_NAMES_OF_FOUR_LETTERS.has(name)) return false;
  try {
    new RegExp(`\\p{Script=${name}}`, 'u');
    return true;
  } catch {
    return false;
  }
}

/**
 * Validates a pattern against RE2's syntax (github.com/google/re2/wiki/Syntax) —
 * what ClickHouse's match() accepts. JavaScript's RegExp is no judge: it allows
 * lookarounds and backreferences, which RE2 rejects, and rejects (?P<n>…), \pN,
 * [[:alpha:]] and \Q…\E, which RE2 allows. Returns why the pattern is invalid.
 * Named groups must use (?P<name>…): the RE2 bundled with ClickHouse 18.16 predates (?<name>…).
 * Stricter than that old RE2 where current RE2 is: duplicate group names, a trailing backslash.
 */
export function re2Problem(pattern: string): string | undefined {
  if (!isWellFormedText(pattern)) return 'pattern is not valid UTF-8 (lone surrogate)';
  // ClickHouse's match() reads the pattern as a C string: a NUL would silently cut it short.
  if (pattern.includes('\u0000')) return 'pattern holds a NUL character (U+0000), which ClickHouse would cut the pattern at; write \\x00 instead';
  const cs = Array.from(pattern);
  const names = new Set<string>();
  // One frame per open group: the largest nested repeat product of its items so
  // far and that of the last item (the operand of a following repetition), and
  // the estimated compiled size of the group and of its last item.
  interface Frame { max: number; last: number | null; lastWasRepeat: boolean; size: number; lastSize: number; capture: boolean }
  const frame = (capture: boolean): Frame => ({ max: 1, last: null, lastWasRepeat: false, size: 0, lastSize: 0, capture });
  const stack: Frame[] = [frame(false)];
  const top = (): Frame => stack[stack.length - 1]!;
  const atom = (product = 1, size = 1): void => {
    const f = top();
    f.last = product;
    f.lastWasRepeat = false;
    f.max = Math.max(f.max, product);
    f.size += size;
    f.lastSize = size;
  };

  // One escaped character as RE2's ParseEscape reads it (outside or inside a class);
  // returns the index after it or an error.
  const escape = (i: number): number | string => {
    const c = cs[i];
    if (c === undefined) return 'trailing \\';
    if (c >= '1' && c <= '7') {
      // A lone \1..\7 is a backreference; with more octal digits it is an octal code.
      if (!isOctal(cs[i + 1])) return `backreferences (\\${c}) are not supported by RE2`;
    }
    if (c >= '0' && c <= '7') {
      let j = i + 1;
      while (j < i + 3 && isOctal(cs[j])) j++;
      return j;
    }
    if (c === '8' || c === '9') return `backreferences (\\${c}) are not supported by RE2`;
    if (c === 'x') {
      if (cs[i + 1] === '{') {
        let j = i + 2;
        let hex = '';
        while (isHex(cs[j])) hex += cs[j++];
        if (cs[j] !== '}' || hex === '' || parseInt(hex, 16) > 0x10ffff) return 'invalid escape sequence \\x{…}';
        return j + 1;
      }
      if (!isHex(cs[i + 1]) || !isHex(cs[i + 2])) return 'invalid escape sequence \\x';
      return i + 3;
    }
    if ('afnrtv'.includes(c)) return i + 1;
    // RE2 reads any escaped ASCII character other than a letter or digit as itself (\_ included).
    if (c.codePointAt(0)! < 0x80 && !/^[A-Za-z0-9]$/.test(c)) return i + 1;
    return `invalid escape sequence \\${c}${c === 'Z' ? ' (RE2 has \\z, not \\Z)' : ''}`;
  };

  // \pN, \p{Name}, \PN, \P{^Name}; `i` is at the p/P. Returns the index after it.
  const unicodeClass = (i: number): number | string => {
    const c = cs[i + 1];
    if (c === undefined) return 'invalid character class range \\p';
    let name: string;
    let end: number;
    if (c === '{') {
      const close = cs.indexOf('}', i + 2);
      if (close < 0) return 'invalid character class range \\p{';
      name = cs.slice(i + 2, close).join('');
      end = close + 1;
    } else {
      name = c;
      end = i + 2;
    }
    if (name.startsWith('^')) name = name.slice(1);
    if (!unicodeClassKnown(name)) return `unknown Unicode class \\p{${name}}`;
    return end;
  };

  let i = 0;
  while (i < cs.length) {
    const c = cs[i]!;
    if (c === '(') {
      if (cs[i + 1] === '?') {
        const rest = cs.slice(i + 2, i + 4).join('');
        if (rest.startsWith('=') || rest.startsWith('!') || rest === '<=' || rest === '<!') {
          return 'lookahead and lookbehind ((?=…), (?!…), (?<=…), (?<!…)) are not supported by RE2';
        }
        if (rest.startsWith('P<') || rest.startsWith('<')) {
          if (rest.startsWith('<')) return 'named groups must be written (?P<name>…) for RE2';
          let j = i + 4;
          let name = '';
          while (j < cs.length && isWordChar(cs[j]!)) name += cs[j++];
          if (cs[j] !== '>' || name === '') return 'invalid named capture group';
          if (names.has(name)) return `duplicate capture group name '${name}'`;
          names.add(name);
          stack.push(frame(true));
          i = j + 1;
          continue;
        }
        if (rest.startsWith('P=') || rest.startsWith('P>')) return 'backreferences and recursion are not supported by RE2';
        // Flags: (?imsU-imsU) or (?imsU-imsU:…)
        let j = i + 2;
        let sawMinus = false;
        let flagAfterMinus = false;
        for (;;) {
          const f = cs[j];
          if (f === undefined) return 'missing closing )';
          if ('imsU'.includes(f)) {
            if (sawMinus) flagAfterMinus = true;
            j++;
            continue;
          }
          if (f === '-' && !sawMinus) {
            sawMinus = true;
            j++;
            continue;
          }
          if ((f === ':' || f === ')') && (!sawMinus || flagAfterMinus)) {
            if (f === ':') stack.push(frame(false));
            i = j + 1;
            break;
          }
          return `invalid or unsupported Perl syntax ${shown(cs.slice(i, j + 1).join(''))}`;
        }
        // A flags-only group such as (?i) adds nothing: a following `*` repeats what came before it.
        top().lastWasRepeat = false;
        continue;
      }
      stack.push(frame(true));
      i++;
      continue;
    }
    if (c === ')') {
      if (stack.length === 1) return 'unexpected )';
      const inner = stack.pop()!;
      atom(inner.max, inner.size + (inner.capture ? 2 : 0));
      i++;
      continue;
    }
    if (c === '|') {
      top().size += 1;
      top().last = null;
      top().lastWasRepeat = false;
      i++;
      continue;
    }
    if (c === '*' || c === '+' || c === '?' || c === '{') {
      let weight = 1;
      let j = i + 1;
      if (c === '{') {
        const m = /^\{(\d+)(,(\d*))?\}/.exec(cs.slice(i, i + 24).join(''));
        // RE2 reads `{` literally unless a well-formed count follows (no leading zeros).
        const wellFormed = (d: string | undefined): boolean => d === undefined || d === '' || (d.length < 9 && !/^0\d/.test(d));
        if (!m || !wellFormed(m[1]) || !wellFormed(m[3])) {
          // Not a repetition: RE2 reads `{` literally.
          atom();
          i++;
          continue;
        }
        const lo = Number(m[1]);
        const hi = m[2] === undefined ? lo : m[3] === '' ? -1 : Number(m[3]);
        if (lo > 1000 || hi > 1000 || (hi >= 0 && hi < lo)) return `bad repetition operator ${m[0]}`;
        weight = hi >= 0 ? hi : lo;
        j = i + m[0].length;
      }
      const f = top();
      if (f.lastWasRepeat) return `bad repetition operator ${shown(cs.slice(i, j).join(''))}: repetitions cannot be stacked`;
      if (f.last === null) return `missing argument to repetition operator ${shown(c)}`;
      if (cs[j] === '?') j++;
      const product = f.last * Math.max(weight, 1);
      if (product > 1000) return 'bad repetition operator: nested repetition counts exceed 1000';
      f.max = Math.max(f.max, product);
      f.last = product;
      f.lastWasRepeat = true;
      const extra = f.lastSize * (Math.max(weight, 1) - 1) + 1;
      f.size += extra;
      f.lastSize += extra;
      i = j;
      continue;
    }
    if (c === '[') {
      let j = i + 1;
      const negated = cs[j] === '^';
      if (negated) j++;
      let first = true;
      let cost = 0;
      for (;;) {
        const d = cs[j];
        if (d === undefined) return 'missing closing ]';
        if (d === ']' && !first) break;
        first = false;
        if (d === '[' && cs[j + 1] === ':') {
          let close = j + 2;
          while (close + 1 < cs.length && !(cs[close] === ':' && cs[close + 1] === ']')) close++;
          if (close + 1 < cs.length) {
            let name = cs.slice(j + 2, close).join('');
            if (name.startsWith('^')) name = name.slice(1);
            if (!POSIX_CLASSES.has(name)) return `invalid character class range [:${name}:]`;
            j = close + 2;
            cost += 4;
            continue;
          }
        }
        let lo: number | null;
        if (d === '\\') {
          const e = cs[j + 1];
          if (e !== undefined && 'dDsSwW'.includes(e)) {
            j += 2;
            cost += PERL_CLASS_COST[e]!;
            continue;
          }
          if (e === 'p' || e === 'P') {
            const r = unicodeClass(j + 1);
            if (typeof r === 'string') return r;
            j = r;
            cost += UNICODE_CLASS_COST;
            continue;
          }
          const r = escape(j + 1);
          if (typeof r === 'string') return r;
          lo = decodeEscape(cs.slice(j + 1, r).join(''));
          j = r;
        } else {
          lo = d.codePointAt(0)!;
          j++;
        }
        // A range lo-hi, unless the '-' is the last character of the class.
        if (cs[j] === '-' && cs[j + 1] !== undefined && cs[j + 1] !== ']') {
          let hi: number | null;
          const h = cs[j + 1]!;
          if (h === '\\') {
            const r = escape(j + 2);
            if (typeof r === 'string') return r;
            hi = decodeEscape(cs.slice(j + 2, r).join(''));
            j = r;
          } else {
            hi = h.codePointAt(0)!;
            j += 2;
          }
          if (lo !== null && hi !== null && hi < lo) return 'invalid character class range';
          cost += hi !== null && hi < 0x80 ? 1 : 4;
          continue;
        }
        cost += lo !== null && lo < 0x80 ? 1 : 4;
      }
      atom(1, negated ? Math.max(cost, ANY_CHAR_COST) : Math.max(cost, 1));
      i = j + 1;
      continue;
    }
    if (c === '\\') {
      const e = cs[i + 1];
      if (e === undefined) return 'trailing \\';
      if ('AzbBdDsSwWC'.includes(e)) {
        atom(1, PERL_CLASS_COST[e] ?? 1);
        i += 2;
        continue;
      }
      if (e === 'p' || e === 'P') {
        const r = unicodeClass(i + 1);
        if (typeof r === 'string') return r;
        atom(1, UNICODE_CLASS_COST);
        i = r;
        continue;
      }
      if (e === 'Q') {
        // \Q…\E quotes everything up to \E (or the end of the pattern).
        let k = i + 2;
        while (k < cs.length && !(cs[k] === '\\' && cs[k + 1] === 'E')) k++;
        if (k > i + 2) atom(1, k - i - 2);
        i = k < cs.length ? k + 2 : cs.length;
        continue;
      }
      const r = escape(i + 1);
      if (typeof r === 'string') return r;
      atom();
      i = r;
      continue;
    }
    atom(1, c === '.' ? ANY_CHAR_COST : new TextEncoder().encode(c).length);
    i++;
  }
  if (stack.length > 1) return 'missing closing )';
  const size = stack[0]!.size;
  if (size > MAX_RE2_PROGRAM) {
    return `pattern too large for RE2 (an estimated ${size} instructions; the limit is about ${MAX_RE2_PROGRAM})`;
  }
  return undefined;
}

/** The code point an escape (without its backslash) denotes, for class ranges. */
function decodeEscape(body: string): number | null {
  const c = body[0];
  if (c === undefined) return null;
  if (c === 'x') return parseInt(body.replace(/^x\{?|\}$/g, ''), 16);
  if (c >= '0' && c <= '7') return parseInt(body, 8);
  const simple: Record<string, number> = { a: 7, f: 12, n: 10, r: 13, t: 9, v: 11 };
  return simple[c] ?? body.codePointAt(0)!;
}

// ---- the checker ----

/** A saved segment as the resolver returns it; `id` identifies it across id/name references. */
export interface SavedSegment {
  id: string;
  expr: Expr;
}

export interface CheckContext {
  /**
   * Looks a saved segment up by id or name. Without it `in_segment` references
   * are not checked (a parser cannot know them).
   */
  resolveSegment?: (ref: string) => Expr | SavedSegment | undefined;
  /** Ids and names of the segment being saved, so a reference to itself is a cycle. */
  self?: readonly string[];
  /** The text the expression was parsed from: errors then get line, column and excerpt. */
  source?: string;
}

type Path = (string | number)[];

function isSaved(x: Expr | SavedSegment): x is SavedSegment {
  return !('kind' in x);
}

class Checker {
  readonly errors: SegmentError[] = [];
  nodes = 0;
  private depthReported = false;

  constructor(private readonly ctx: CheckContext) {}

  add(code: string, message: string, path: Path, span: Span | undefined): void {
    const error: SegmentError = { code, message, path };
    this.errors.push(this.ctx.source !== undefined && span ? atOffset(error, this.ctx.source, span.start) : error);
  }

  private enter(depth: number, path: Path, span: Span | undefined): boolean {
    this.nodes++;
    if (depth <= LIMITS.maxDepth) return true;
    if (!this.depthReported) {
      this.depthReported = true;
      this.add('too_deep', `expression nests deeper than ${LIMITS.maxDepth} levels`, path, span);
    }
    return false;
  }

  expr(e: Expr, path: Path, depth: number): void {
    if (!this.enter(depth, path, e.span)) return;
    switch (e.kind) {
      case 'and':
      case 'or':
        if (e.items.length === 0) this.add('empty_group', `'${e.kind}' needs at least one condition`, [...path, e.kind], e.span);
        e.items.forEach((item, i) => this.expr(item, [...path, e.kind, i], depth + 1));
        return;
      case 'not':
        this.expr(e.item, [...path, 'not'], depth + 1);
        return;
      case 'attr':
        this.attr(e, path);
        return;
      case 'did':
        this.event(e.event, [...path, 'did'], e.span);
        if (e.where) this.prop(e.where, [...path, 'where'], depth + 1);
        if (e.count) {
          if (!COMPARE_OPS.includes(e.count.op)) {
            this.add('unknown_operator', `unknown count operator ${shown(String(e.count.op))}`, [...path, 'count', 'op'], e.span);
          }
          const p = countProblem(e.count.op, e.count.value);
          if (p) this.add('bad_count', p, [...path, 'count', 'value'], e.span);
        }
        if (e.window) this.window(e.window, path, e.span);
        return;
      case 'first_did':
        this.event(e.event, [...path, 'first_did'], e.span);
        if (e.where) this.prop(e.where, [...path, 'where'], depth + 1);
        if (e.window) this.window(e.window, path, e.span);
        return;
      case 'stopped':
        this.event(e.event, [...path, 'stopped'], e.span);
        if (e.where) this.prop(e.where, [...path, 'where'], depth + 1);
        this.duration(e.within, [...path, 'within'], e.span);
        this.duration(e.before, [...path, 'before'], e.span);
        return;
      case 'sequence': {
        const n = e.steps.length;
        if (n < LIMITS.minSequenceSteps || n > LIMITS.maxSequenceSteps) {
          this.add('sequence_steps', `sequence needs ${LIMITS.minSequenceSteps}..${LIMITS.maxSequenceSteps} steps, got ${n}`, [...path, 'sequence'], e.span);
        }
        e.steps.forEach((step, i) => {
          this.event(step.event, [...path, 'sequence', i, 'event'], e.span);
          if (step.where) this.prop(step.where, [...path, 'sequence', i, 'where'], depth + 1);
        });
        if (e.within) this.duration(e.within, [...path, 'within'], e.span);
        if (e.inLast) this.duration(e.inLast, [...path, 'in_last'], e.span);
        return;
      }
      case 'agg':
        if (!(AGG_FNS as readonly string[]).includes(e.fn)) {
          this.add('unknown_function', `unknown aggregate ${shown(String(e.fn))}; use ${AGG_FNS.join(', ')}`, [...path, 'agg'], e.span);
        }
        this.event(e.event, [...path, 'event'], e.span);
        this.name(e.prop, 'property name', [...path, 'prop'], e.span);
        if (e.where) this.prop(e.where, [...path, 'where'], depth + 1);
        if (e.window) this.window(e.window, path, e.span);
        if (!COMPARE_OPS.includes(e.op)) {
          this.add('unknown_operator', `unknown operator ${shown(String(e.op))} for an aggregate`, [...path, 'op'], e.span);
        }
        if (typeof e.value !== 'number' || !Number.isFinite(e.value)) {
          this.add('type_mismatch', `${e.fn}(…) compares with a finite number`, [...path, 'value'], e.span);
        }
        return;
      case 'tag':
        this.name(e.tag, 'tag', [...path, 'tag'], e.span);
        return;
      case 'in_segment':
        if (this.name(e.ref, 'segment reference', [...path, 'in_segment'], e.span)) this.segmentRef(e.ref, [...path, 'in_segment'], e.span);
        return;
      default:
        unreachable(e);
    }
  }

  prop(p: PropExpr, path: Path, depth: number): void {
    if (!this.enter(depth, path, p.span)) return;
    switch (p.kind) {
      case 'and':
      case 'or':
        if (p.items.length === 0) this.add('empty_group', `'${p.kind}' needs at least one condition`, [...path, p.kind], p.span);
        p.items.forEach((item, i) => this.prop(item, [...path, p.kind, i], depth + 1));
        return;
      case 'not':
        this.prop(p.item, [...path, 'not'], depth + 1);
        return;
      case 'prop':
        this.name(p.prop, 'property name', [...path, 'prop'], p.span);
        this.predicate(p, path, p.span, undefined);
        return;
      default:
        unreachable(p);
    }
  }

  private name(value: string, what: string, path: Path, span: Span | undefined): boolean {
    if (typeof value !== 'string' || value === '') {
      this.add('empty_name', `${what} must be a non-empty string`, path, span);
      return false;
    }
    return this.wellFormed(value, what, path, span);
  }

  private wellFormed(value: string, what: string, path: Path, span: Span | undefined): boolean {
    if (isWellFormedText(value)) return true;
    this.add('bad_string', `${what} ${LONE_SURROGATE_MESSAGE}`, path, span);
    return false;
  }

  private event(name: string, path: Path, span: Span | undefined): void {
    if (!this.name(name, 'event name', path, span)) return;
    if (!EVENT_NAME_RE.test(name)) {
      this.add(
        'bad_event_name',
        `event name ${shown(name)} can never match: event names are 1..128 characters of letters, digits, space and _ . : -`,
        path,
        span,
      );
    }
  }

  private attr(e: Extract<Expr, { kind: 'attr' }>, path: Path): void {
    const attrPath = [...path, 'attr'];
    if (!this.name(e.attr, 'attribute', attrPath, e.span)) return;
    if (e.attr === TRAITS_PREFIX) {
      this.add('empty_name', `trait key after 'traits.' must not be empty`, attrPath, e.span);
      return;
    }
    if (NON_COMPARABLE_FIELDS.has(e.attr)) {
      const hint = e.attr === 'tags' ? `use tag("…")` : `use traits.<key>`;
      this.add('not_comparable', `'${e.attr}' cannot be compared with a value; ${hint}`, attrPath, e.span);
      return;
    }
    this.predicate(e, path, e.span, resolveAttr(e.attr));
  }

  private duration(d: Duration, path: Path, span: Span | undefined): void {
    const p = durationProblem(d.amount, d.unit);
    if (p) this.add('bad_duration', p, path, span);
    else if (d.seconds !== d.amount * DURATION_SECONDS[d.unit]) {
      this.add('bad_duration', `duration seconds ${d.seconds} disagree with ${d.amount}${d.unit}`, path, span);
    }
  }

  private window(w: TimeWindow, path: Path, span: Span | undefined): void {
    if (w.kind === 'within') {
      this.duration(w.duration, [...path, 'within'], span);
      return;
    }
    const p = windowProblem(w.from, w.to);
    if (p) this.add(p.code, p.message, [...path, 'between', p.at], span);
  }

  /** Operator/value rules shared by attrs and where-clause props; `target` is undefined for props. */
  private predicate(pred: Predicate, path: Path, span: Span | undefined, target: AttrTarget | undefined): void {
    const name = target === undefined ? 'property' : target.kind === 'field' ? target.name : `traits.${target.key}`;
    // A strictly typed built-in field; the trait-backed ones (country, platform, …)
    // hold whatever identify stored, so they follow the value rules of traits.
    const field = target?.kind === 'field' && !TRAIT_BACKED_FIELDS.has(target.name) ? target : undefined;
    const valuePath = [...path, 'value'];
    const mismatch = (message: string, at: Path = valuePath): void => this.add('type_mismatch', message, at, span);

    // Whether one literal may stand on the right of `op` for this target. On a
    // strictly typed built-in field, a literal no stored value of its type could
    // ever match is an error (sql/README.md): a number field takes numbers, a
    // timestamp field ISO 8601 strings, a text field strings and true/false
    // (which match the text "true"/"false").
    const literal = (v: Literal, at: Path, ordered: boolean): void => {
      const kind = kindOf(v);
      if (kind === 'number' && !Number.isFinite(v)) {
        this.add('bad_number', 'numbers must be finite', at, span);
        return;
      }
      if (kind === 'string' && !this.wellFormed(v as string, 'string', at, span)) return;
      if (kind === 'boolean' && ordered) {
        mismatch('true/false can only be compared with =, !=, in or not in', at);
        return;
      }
      if (!field) return;
      if (field.type === 'timestamp') {
        if (kind !== 'string' || !parseInstant(v as string)) mismatch(`${field.name} is a timestamp; compare it with ${INSTANT_HINT}`, at);
      } else if (kind !== field.type && !(field.type === 'string' && kind === 'boolean')) {
        const allowed = field.type === 'string' ? 'a string (or true/false)' : `a ${field.type}`;
        mismatch(`${field.name} is a ${field.type}; compare it with ${allowed}, not a ${kind}: no stored value could match`, at);
      }
    };

    switch (pred.op) {
      case 'eq':
      case 'neq':
        literal(pred.value, valuePath, false);
        return;
      case 'gt':
      case 'gte':
      case 'lt':
      case 'lte':
        literal(pred.value, valuePath, true);
        return;
      case 'in':
      case 'nin': {
        const values = pred.value;
        if (!Array.isArray(values) || values.length < 1 || values.length > LIMITS.maxListItems) {
          const n = Array.isArray(values) ? values.length : 0;
          this.add('list_size', `list has ${n} values; it needs 1..${LIMITS.maxListItems}`, valuePath, span);
          return;
        }
        // Items may mix kinds (a trait holds any): each compares by its own kind's rule.
        values.forEach((v, i) => literal(v, [...valuePath, i], false));
        return;
      }
      case 'between': {
        const [lo, hi] = pred.value;
        if (kindOf(lo) !== kindOf(hi)) {
          this.add('type_mismatch', `between bounds must have the same type, got ${kindOf(lo)} and ${kindOf(hi)}`, valuePath, span);
          return;
        }
        const before = this.errors.length;
        literal(lo, [...valuePath, 0], true);
        literal(hi, [...valuePath, 1], true);
        if (this.errors.length > before) return;
        let order: number;
        if (field?.type === 'timestamp') order = compareInstants(parseInstant(hi as string)!, parseInstant(lo as string)!);
        else if (typeof lo === 'number') order = (hi as number) - lo;
        else order = compareStrings(hi as string, lo as string);
        if (order < 0) {
          const show = (v: Literal): string => (typeof v === 'string' ? shown(v) : String(v));
          this.add('between_order', `between end ${show(hi)} precedes start ${show(lo)}`, [...valuePath, 1], span);
        }
        return;
      }
      case 'contains':
      case 'starts_with':
      case 'matches': {
        if (typeof pred.value !== 'string') {
          mismatch(`'${pred.op}' needs a string`);
          return;
        }
        if (!this.wellFormed(pred.value, 'string', valuePath, span)) return;
        if (field && field.type !== 'string') {
          mismatch(`'${pred.op}' needs text, but ${name} is a ${field.type}`, [...path, 'op']);
          return;
        }
        if (pred.op === 'matches') {
          const p = re2Problem(pred.value);
          if (p) this.add('bad_regex', `invalid regular expression: ${p}`, valuePath, span);
        }
        return;
      }
      case 'is_null':
      case 'is_not_null':
        return;
      default:
        this.add('unknown_operator', `unknown operator ${shown(String((pred as { op: unknown }).op))}`, [...path, 'op'], span);
    }
  }

  // ---- in_segment: existence and cycles through saved segments ----

  private segmentRef(ref: string, path: Path, span: Span | undefined): void {
    const resolve = this.ctx.resolveSegment;
    if (!resolve) return;
    const self = new Set(this.ctx.self ?? []);
    // The segment being saved is a cycle, not an unknown segment, even when the
    // resolver leaves it out (it resolves the other saved segments).
    const selfCycle = (): void => this.add('segment_cycle', `in_segment(${shown(ref)}) refers to the segment itself`, path, span);
    if (self.has(ref)) return selfCycle();
    const start = resolve(ref);
    if (start === undefined) {
      this.add('unknown_segment', `segment ${shown(ref)} does not exist`, path, span);
      return;
    }
    const startId = isSaved(start) ? start.id : ref;
    if (self.has(startId)) return selfCycle();
    // Depth-first over references with an explicit stack (chains can be long).
    interface Visit { id: string; label: string; refs: string[]; next: number }
    const done = new Set<string>();
    const onPath = new Set<string>([startId]);
    const visit = (id: string, label: string, target: Expr | SavedSegment): Visit => ({
      id,
      label,
      refs: refsOf(isSaved(target) ? target.expr : target),
      next: 0,
    });
    const stack: Visit[] = [visit(startId, ref, start)];
    let visited = 1;
    while (stack.length > 0) {
      const v = stack[stack.length - 1]!;
      if (v.next >= v.refs.length) {
        stack.pop();
        onPath.delete(v.id);
        done.add(v.id);
        continue;
      }
      const r = v.refs[v.next++]!;
      const chain = (): string => [...stack.map((s) => shown(s.label)), shown(r)].join(' → ');
      if (self.has(r)) {
        this.add('segment_cycle', `in_segment cycle: this segment → ${chain()}`, path, span);
        return;
      }
      const target = resolve(r);
      if (target === undefined) {
        this.add('unknown_segment', `segment ${shown(r)} (used by ${shown(v.label)}) does not exist: ${chain()}`, path, span);
        return;
      }
      const id = isSaved(target) ? target.id : r;
      if (self.has(id) || onPath.has(id)) {
        this.add('segment_cycle', `in_segment cycle: ${self.size > 0 && !onPath.has(id) ? 'this segment → ' : ''}${chain()}`, path, span);
        return;
      }
      if (done.has(id)) continue;
      if (++visited > LIMITS.maxSegmentsVisited) {
        this.add('too_many_segments', `in_segment references reach more than ${LIMITS.maxSegmentsVisited} segments`, path, span);
        return;
      }
      onPath.add(id);
      stack.push(visit(id, r, target));
    }
  }
}

/** The in_segment references of an expression, found without recursion. */
function refsOf(root: Expr): string[] {
  const refs: string[] = [];
  const todo: Expr[] = [root];
  while (todo.length > 0) {
    const e = todo.pop()!;
    if (e.kind === 'in_segment') refs.push(e.ref);
    else if (e.kind === 'and' || e.kind === 'or') todo.push(...e.items);
    else if (e.kind === 'not') todo.push(e.item);
  }
  return refs;
}

/**
 * Every rule violation in `expr`, each with the JSON path of the offending node or
 * value (and line/column when `ctx.source` is given and nodes carry spans). Empty
 * means the expression is valid.
 */
export function checkSegment(expr: Expr, ctx: CheckContext = {}): SegmentError[] {
  const checker = new Checker(ctx);
  try {
    checker.expr(expr, [], 1);
  } catch (e) {
    // Only an object that is not an AST at all gets here (e.g. client JSON shaped
    // like one); read such input with fromJson, which validates its shape.
    return [{ code: 'invalid_ast', message: `not a segment AST: ${(e as Error).message}`, path: [] }];
  }
  if (checker.nodes > LIMITS.maxNodes) {
    checker.add('too_many_nodes', `expression has ${checker.nodes} conditions; at most ${LIMITS.maxNodes} are allowed`, [], expr.span);
  }
  return checker.errors;
}
