// The text form of the segment language (segments.md): a hand-written lexer and
// a recursive-descent parser with precedence not > and > or.
//
// Style: parseSegment throws SegmentSyntaxError (all errors, sorted by position,
// each with line, column and excerpt); tryParseSegment returns a SegmentResult.
// A successful parse has also passed checkSegment without a segment resolver, so
// the only thing left for the caller to check is whether `in_segment` refs exist.
//
// Decisions beyond the spec:
// - Numbers: optional sign, digits, optional fraction. No exponent (`1e5` is an
//   error), no leading dot (`.5`); a value that overflows to ±Infinity is an error.
// - Strings: `\"` `\\` as the spec says, plus `\n` `\r` `\t` and `\uXXXX`, so
//   every JSON string has a text form; any other escape, and raw control
//   characters other than TAB (including a raw newline), are errors. Single
//   quotes are an error. A string must be valid Unicode: a lone surrogate
//   (`"\uD800"`) is an error, a pair (`"\uD83D\uDE00"`) is one character.
// - Names that are not bare identifiers, or are keywords, are double-quoted:
//   events `did("add to cart")`, trait keys `traits."first name"`, whole
//   attribute paths `"count" = 1`, where-clause properties `"unit price" > 1`.
// - Function names (did, sum, tag, …) are case-insensitive like keywords.
// - Nesting: the limit of 32 levels is on the AST (checkSegment), so redundant
//   parentheses cost nothing. The parser recurses for each `(`, call and
//   `where`; more than MAX_PARSE_NESTING of those open at once is an error that
//   keeps adversarial input off the JS stack (`not` runs are read in a loop).
// - Spans are UTF-16 offsets (JavaScript string indices), so
//   `text.slice(span.start, span.end)` is the node's source; `( … )` around a
//   node are not part of its span.

import { duration, unreachable } from './ast.ts';
import type {
  AggFn,
  CompareOp,
  Duration,
  Expr,
  Literal,
  Predicate,
  PropExpr,
  SequenceStep,
  Span,
  TimeWindow,
} from './ast.ts';
import { isWellFormedText } from '../lib/text.ts';
import { checkSegment, countProblem, durationProblem, LIMITS, LONE_SURROGATE_MESSAGE, windowProblem } from './check.ts';
import type { CheckContext } from './check.ts';
import { atOffset, MAX_REPORTED_ERRORS, SegmentSyntaxError, shown } from './errors.ts';
import type { SegmentError, SegmentResult } from './errors.ts';

export const KEYWORDS = [
  'and', 'or', 'not', 'in', 'between', 'is', 'null', 'true', 'false', 'within', 'before', 'count', 'where', 'in_last',
  'contains', 'starts_with', 'matches',
] as const;
export type Keyword = (typeof KEYWORDS)[number];
const KEYWORD_SET: ReadonlySet<string> = new Set(KEYWORDS);

export function isKeyword(word: string): boolean {
  return KEYWORD_SET.has(word.toLowerCase());
}

/** A bare identifier in the text form (event names, field paths). */
export const IDENTIFIER_RE = /^[A-Za-z_][A-Za-z0-9_.:-]*$/;

/** Open `(`, calls and `where`s the recursive parser follows before giving up (stack safety, not a language limit). */
export const MAX_PARSE_NESTING = 1000;

const AGG_FN_SET: ReadonlySet<string> = new Set(['sum', 'avg', 'min', 'max', 'count_distinct']);
const FUNCTIONS = ['did', 'first_did', 'stopped', 'sequence', 'sum', 'avg', 'min', 'max', 'count_distinct', 'tag', 'in_segment'];

const COMPARE_TOKENS: Record<string, CompareOp> = { '=': 'eq', '!=': 'neq', '>': 'gt', '>=': 'gte', '<': 'lt', '<=': 'lte' };
const OPERATOR_HINTS: Record<string, string> = {
  '==': "use '='",
  '<>': "use '!='",
  '!': "use 'not'",
  '&&': "use 'and'",
  '||': "use 'or'",
  '=>': "use '>='",
  '=<': "use '<='",
  '=~': "use 'matches'",
};

// ---- lexer ----

type TokenType = 'ident' | 'kw' | 'string' | 'number' | 'duration' | 'op' | '(' | ')' | ',' | '.' | 'eof';

interface Token {
  type: TokenType;
  start: number;
  end: number;
  /** Source text of the token. */
  text: string;
  /** kw: the lowercase keyword; string: the unescaped value. */
  word?: string;
  num?: number;
  dur?: Duration;
  /** op: the comparison; undefined for an unknown operator (already reported). */
  op?: CompareOp;
}

interface Problem {
  code: string;
  message: string;
  offset: number;
}

const isSpace = (c: string): boolean => c === ' ' || c === '\t' || c === '\n' || c === '\r';
const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9';
const isIdentStart = (c: string | undefined): boolean => c !== undefined && /[A-Za-z_]/.test(c);
const isIdentChar = (c: string | undefined): boolean => c !== undefined && /[A-Za-z0-9_.:-]/.test(c);
const isWordChar = (c: string | undefined): boolean => c !== undefined && /[A-Za-z0-9_]/.test(c);
const OP_CHARS = '=!<>~&|';

function codePointLabel(ch: string): string {
  return `U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
}

function lex(src: string, problems: Problem[]): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  const push = (type: TokenType, start: number, extra: Partial<Token> = {}): void => {
    tokens.push({ type, start, end: i, text: src.slice(start, i), ...extra });
  };
  let lastUnexpected = -2;

  while (i < src.length) {
    const c = src[i]!;
    const start = i;
    if (isSpace(c)) {
      i++;
      continue;
    }
    if (isIdentStart(c)) {
      while (isIdentChar(src[i])) i++;
      const text = src.slice(start, i);
      const lower = text.toLowerCase();
      if (KEYWORD_SET.has(lower)) push('kw', start, { word: lower });
      else push('ident', start);
      continue;
    }
    if (isDigit(c) || ((c === '-' || c === '+') && isDigit(src[i + 1])) || (c === '.' && isDigit(src[i + 1]))) {
      lexNumber(src, start, problems, (end, extra) => {
        i = end;
        push(extra.dur ? 'duration' : 'number', start, extra);
      });
      continue;
    }
    if (c === '"' || c === "'") {
      const { end, value } = lexString(src, start, problems);
      i = end;
      push('string', start, { word: value });
      continue;
    }
    if (c === '(' || c === ')' || c === ',' || c === '.') {
      i++;
      push(c, start);
      continue;
    }
    if (OP_CHARS.includes(c)) {
      while (i < src.length && OP_CHARS.includes(src[i]!)) i++;
      const text = src.slice(start, i);
      const op = COMPARE_TOKENS[text];
      if (!op) {
        const hint = OPERATOR_HINTS[text];
        problems.push({
          code: 'unknown_operator',
          message: `unknown operator ${shown(text)}${hint ? ` (${hint})` : ''}`,
          offset: start,
        });
      }
      push('op', start, op ? { op } : {});
      continue;
    }
    // Anything else: report once per run of unexpected characters.
    const ch = String.fromCodePoint(src.codePointAt(i)!);
    i += ch.length;
    if (lastUnexpected !== start) {
      const hint =
        c === '-' && src[i] === '-'
          ? ' (there are no comments)'
          : /\p{L}/u.test(ch)
            ? '; quote names that are not plain ASCII identifiers'
            : '';
      problems.push({
        code: 'unexpected_character',
        message: `unexpected character ${shown(ch)} (${codePointLabel(ch)})${hint}`,
        offset: start,
      });
    }
    lastUnexpected = i;
  }
  tokens.push({ type: 'eof', start: src.length, end: src.length, text: '' });
  return tokens;
}

function lexNumber(
  src: string,
  start: number,
  problems: Problem[],
  done: (end: number, extra: Partial<Token>) => void,
): void {
  let i = start;
  const signed = src[i] === '-' || src[i] === '+';
  if (signed) i++;
  if (src[i] === '.') problems.push({ code: 'bad_number', message: 'a number needs a digit before the point (write 0.5, not .5)', offset: start });
  while (isDigit(src[i])) i++;
  let fraction = false;
  if (src[i] === '.' && isDigit(src[i + 1])) {
    fraction = true;
    i++;
    while (isDigit(src[i])) i++;
  } else if (src[i] === '.' && !isIdentStart(src[i + 1])) {
    problems.push({ code: 'bad_number', message: "expected digits after '.' in a number", offset: i });
    i++;
  }
  if ((src[i] === 'e' || src[i] === 'E') && (isDigit(src[i + 1]) || ((src[i + 1] === '-' || src[i + 1] === '+') && isDigit(src[i + 2])))) {
    i += 2;
    while (isDigit(src[i])) i++;
    problems.push({ code: 'bad_number', message: 'exponent notation is not supported; write the number out in full', offset: start });
    done(i, { num: 0 });
    return;
  }
  const numberText = src.slice(start, i);
  if (isWordChar(src[i]) || isIdentChar(src[i]) && src[i] !== '.' && src[i] !== '-') {
    const suffixStart = i;
    while (isWordChar(src[i])) i++;
    const suffix = src.slice(suffixStart, i);
    if (/^[smhdw]$/.test(suffix) && !isIdentChar(src[i])) {
      if (signed || fraction) {
        problems.push({ code: 'bad_duration', message: 'duration must be a whole number > 0, like 30d', offset: start });
        done(i, { dur: duration(1, suffix as Duration['unit']) });
        return;
      }
      const amount = Number(numberText);
      const problem = durationProblem(amount, suffix);
      if (problem) problems.push({ code: 'bad_duration', message: problem, offset: start });
      done(i, { dur: duration(problem ? 1 : amount, suffix as Duration['unit']) });
      return;
    }
    while (isIdentChar(src[i])) i++;
    problems.push({
      code: 'bad_number',
      message: `invalid number or duration ${shown(src.slice(start, i))}; durations are a whole number and one of s, m, h, d, w (30d)`,
      offset: start,
    });
    done(i, { num: 0 });
    return;
  }
  let value = Number(numberText);
  if (!Number.isFinite(value)) {
    problems.push({ code: 'bad_number', message: `number ${shown(numberText)} is out of range`, offset: start });
    value = 0;
  }
  done(i, { num: value === 0 ? 0 : value }); // -0 reads as 0
}

const ESCAPES: Record<string, string> = { '"': '"', '\\': '\\', n: '\n', r: '\r', t: '\t' };

function lexString(src: string, start: number, problems: Problem[]): { end: number; value: string } {
  const quote = src[start]!;
  if (quote === "'") {
    problems.push({ code: 'bad_string', message: 'strings use double quotes ("…"), not single quotes', offset: start });
  }
  let i = start + 1;
  let value = '';
  for (;;) {
    const c = src[i];
    if (c === undefined) {
      problems.push({ code: 'unterminated_string', message: 'unterminated string', offset: start });
      return { end: i, value };
    }
    if (c === quote) {
      if (!isWellFormedText(value)) problems.push({ code: 'bad_string', message: `string ${LONE_SURROGATE_MESSAGE}`, offset: start });
      return { end: i + 1, value };
    }
    if (c === '\n' || c === '\r') {
      problems.push({
        code: 'unterminated_string',
        message: 'unterminated string (a string cannot span lines; write \\n for a newline)',
        offset: start,
      });
      return { end: i, value };
    }
    if (c === '\\') {
      const e = src[i + 1];
      if (e === undefined) {
        i++;
        continue;
      }
      const simple = ESCAPES[e];
      if (simple !== undefined || e === quote) {
        value += simple ?? e;
        i += 2;
        continue;
      }
      if (e === 'u' && /^[0-9A-Fa-f]{4}$/.test(src.slice(i + 2, i + 6))) {
        value += String.fromCharCode(parseInt(src.slice(i + 2, i + 6), 16));
        i += 6;
        continue;
      }
      const bad = e === 'u' ? src.slice(i, i + 6) : `\\${String.fromCodePoint(src.codePointAt(i + 1)!)}`;
      problems.push({
        code: 'bad_escape',
        message: `unknown escape ${shown(bad)} in string; use \\" \\\\ \\n \\r \\t or \\uXXXX`,
        offset: i,
      });
      i += 2;
      continue;
    }
    const code = c.charCodeAt(0);
    if ((code < 0x20 && c !== '\t') || code === 0x7f) {
      const hex = code.toString(16).padStart(4, '0');
      problems.push({
        code: 'bad_string',
        message: `control character U+${hex.toUpperCase()} in string; write it as \\u${hex}`,
        offset: i,
      });
    }
    value += c;
    i++;
  }
}

// ---- parser ----

const ABORT = Symbol('abort');

type Group<T> = { kind: 'and' | 'or'; items: T[]; span: Span };

class Parser {
  private pos = 0;
  private depth = 0;

  constructor(
    private readonly tokens: Token[],
    private readonly problems: Problem[],
  ) {}

  // -- token helpers --

  private peek(k = 0): Token {
    return this.tokens[Math.min(this.pos + k, this.tokens.length - 1)]!;
  }

  private next(): Token {
    const t = this.peek();
    if (t.type !== 'eof') this.pos++;
    return t;
  }

  private get lastEnd(): number {
    return this.pos === 0 ? 0 : this.tokens[this.pos - 1]!.end;
  }

  private isKw(word: Keyword, k = 0): boolean {
    const t = this.peek(k);
    return t.type === 'kw' && t.word === word;
  }

  private report(code: string, message: string, offset: number): void {
    this.problems.push({ code, message, offset });
  }

  private fail(message: string, at: Token = this.peek(), code = 'syntax'): never {
    this.report(code, message, at.start);
    throw ABORT;
  }

  private describe(t: Token): string {
    switch (t.type) {
      case 'eof':
        return 'the end of the expression';
      case 'string':
        return `string ${shown(t.text)}`;
      case 'kw':
        return `keyword '${t.word}'`;
      case 'number':
      case 'duration':
        return shown(t.text);
      default:
        return shown(t.text);
    }
  }

  private expect(type: TokenType, what: string): Token {
    const t = this.peek();
    if (t.type !== type) this.fail(`expected ${what}, found ${this.describe(t)}`);
    return this.next();
  }

  private expectKw(word: Keyword, context: string): Token {
    if (!this.isKw(word)) this.fail(`expected '${word}' ${context}, found ${this.describe(this.peek())}`);
    return this.next();
  }

  /** One more level of parser recursion; the language's depth limit is checked on the AST. */
  private enter(at: Token): void {
    if (++this.depth > MAX_PARSE_NESTING) {
      this.fail(`parentheses, calls and 'where' nest deeper than ${MAX_PARSE_NESTING} levels`, at, 'too_deep');
    }
  }

  private leave(levels = 1): void {
    this.depth -= levels;
  }

  // -- entry --

  parseTop(): Expr {
    if (this.peek().type === 'eof') this.fail('the expression is empty', this.peek(), 'empty');
    const expr = this.parseOr(() => this.condition());
    const t = this.peek();
    if (t.type !== 'eof') {
      if (t.type === ')') this.fail("unmatched ')'");
      this.fail(`expected 'and', 'or' or the end of the expression, found ${this.describe(t)}`);
    }
    return expr;
  }

  // -- boolean structure, shared by conditions and where-clauses --

  private parseOr<T extends Expr | PropExpr>(leaf: () => T): T {
    const start = this.peek().start;
    const items = [this.parseAnd(leaf)];
    while (this.isKw('or')) {
      this.next();
      items.push(this.parseAnd(leaf));
    }
    return items.length === 1 ? items[0]! : this.group('or', items, start);
  }

  private parseAnd<T extends Expr | PropExpr>(leaf: () => T): T {
    const start = this.peek().start;
    const items = [this.parseUnary(leaf)];
    while (this.isKw('and')) {
      this.next();
      items.push(this.parseUnary(leaf));
    }
    return items.length === 1 ? items[0]! : this.group('and', items, start);
  }

  /** Nested groups of the same kind (from parentheses) merge into one n-ary node. */
  private group<T extends Expr | PropExpr>(kind: 'and' | 'or', items: T[], start: number): T {
    const flat = items.flatMap((item) => (item.kind === kind ? (item as unknown as Group<T>).items : [item]));
    return { kind, items: flat, span: { start, end: this.lastEnd } } as unknown as T;
  }

  private parseUnary<T extends Expr | PropExpr>(leaf: () => T): T {
    // Iterative, so a long run of `not` cannot recurse. Each `not` is one level of
    // the AST, which checkSegment limits (its walk stops at the limit).
    const nots: Token[] = [];
    while (this.isKw('not')) nots.push(this.next());
    let node = this.parsePrimary(leaf);
    for (let k = nots.length - 1; k >= 0; k--) {
      node = { kind: 'not', item: node, span: { start: nots[k]!.start, end: this.lastEnd } } as unknown as T;
    }
    return node;
  }

  private parsePrimary<T extends Expr | PropExpr>(leaf: () => T): T {
    const t = this.peek();
    if (t.type === '(') {
      this.next();
      this.enter(t);
      const inner = this.parseOr(leaf);
      this.expect(')', "')'");
      this.leave();
      return inner;
    }
    return leaf();
  }

  // -- user conditions --

  private condition(): Expr {
    const t = this.peek();
    if (t.type === 'ident' && this.peek(1).type === '(') {
      const name = t.text.toLowerCase();
      if (!FUNCTIONS.includes(name)) {
        this.fail(`unknown function ${shown(t.text)}; expected one of ${FUNCTIONS.join(', ')}`, t, 'unknown_function');
      }
      return this.call(name);
    }
    if (t.type === 'ident' || t.type === 'string') {
      const attr = this.attrPath();
      const pred = this.predicate(attr);
      return { kind: 'attr', attr, ...pred, span: { start: t.start, end: this.lastEnd } };
    }
    this.fail(`expected a condition, found ${this.describe(t)}`);
  }

  /** `country`, `traits.language`, `traits."first name"`, `"count"`. */
  private attrPath(): string {
    const t = this.next();
    if (t.type === 'string') return t.word!;
    const after = this.peek();
    if (t.text.endsWith('.') && after.type === 'string' && after.start === t.end) {
      if (t.text !== 'traits.') {
        this.fail(`only a trait key can be quoted after a dot, as in traits."first name"; quote the whole path instead`, t);
      }
      this.next();
      return t.text + after.word!;
    }
    return t.text;
  }

  /** The operator and value after a field path or property name. */
  private predicate(name: string): Predicate {
    const t = this.peek();
    if (t.type === 'op') {
      this.next();
      return { op: t.op ?? 'eq', value: this.literal() };
    }
    if (t.type === 'kw') {
      switch (t.word) {
        case 'in':
          this.next();
          return { op: 'in', value: this.list() };
        case 'not':
          this.next();
          if (!this.isKw('in')) {
            this.fail(`expected 'in' after 'not' here; to negate a comparison write not (${name} = …)`);
          }
          this.next();
          return { op: 'nin', value: this.list() };
        case 'between': {
          this.next();
          const lo = this.literal();
          this.expectKw('and', `between the bounds of 'between'`);
          const hi = this.literal();
          return { op: 'between', value: [lo, hi] };
        }
        case 'contains':
        case 'starts_with':
        case 'matches': {
          this.next();
          const v = this.peek();
          if (v.type !== 'string') this.fail(`'${t.word}' needs a string, found ${this.describe(v)}`);
          this.next();
          return { op: t.word, value: v.word! };
        }
        case 'is': {
          this.next();
          const negated = this.isKw('not');
          if (negated) this.next();
          this.expectKw('null', `after 'is${negated ? ' not' : ''}'`);
          return { op: negated ? 'is_not_null' : 'is_null' };
        }
      }
    }
    const label = shown(name);
    if (t.type === 'ident') {
      this.fail(`unknown operator ${shown(t.text)} after ${label}; use =, !=, >, >=, <, <=, in, not in, between, contains, starts_with, matches, is null`, t, 'unknown_operator');
    }
    this.fail(`expected an operator after ${label} (=, !=, >, >=, <, <=, in, not in, between, contains, starts_with, matches, is null), found ${this.describe(t)}`);
  }

  private literal(): Literal {
    const t = this.peek();
    if (t.type === 'string') {
      this.next();
      return t.word!;
    }
    if (t.type === 'number') {
      this.next();
      return t.num!;
    }
    if (t.type === 'kw' && (t.word === 'true' || t.word === 'false')) {
      this.next();
      return t.word === 'true';
    }
    if (t.type === 'kw' && t.word === 'null') this.fail("null is not a value; test for a missing value with 'is null' or 'is not null'");
    if (t.type === 'duration') this.fail(`expected a value, found duration ${shown(t.text)}; durations go after 'within', 'before' or 'in_last'`);
    this.fail(`expected a value (a string, number, true or false), found ${this.describe(t)}`);
  }

  private list(): Literal[] {
    this.expect('(', "'(' to start the list");
    const values = [this.literal()];
    while (this.peek().type === ',') {
      this.next();
      values.push(this.literal());
    }
    this.expect(')', "',' or ')' in the list");
    return values;
  }

  // -- calls --

  private call(name: string): Expr {
    const nameTok = this.next();
    const open = this.expect('(', "'('");
    this.enter(open);
    const start = nameTok.start;
    let expr: Expr;
    switch (name) {
      case 'did': {
        const event = this.eventName();
        const where = this.where();
        const o = this.options(['count', 'within', 'between'], 'did');
        expr = { kind: 'did', event, ...(where && { where }), ...(o.count && { count: o.count }), ...(o.window && { window: o.window }), span: { start, end: 0 } };
        break;
      }
      case 'first_did': {
        const event = this.eventName();
        const where = this.where();
        const o = this.options(['within', 'between'], 'first_did');
        expr = { kind: 'first_did', event, ...(where && { where }), ...(o.window && { window: o.window }), span: { start, end: 0 } };
        break;
      }
      case 'stopped': {
        const event = this.eventName();
        const where = this.where();
        const o = this.options(['within', 'before'], 'stopped');
        if (!o.within || !o.before) {
          this.fail(`stopped needs both 'within' and 'before', as in stopped(purchase, within 14d, before 60d)`, this.peek());
        }
        expr = { kind: 'stopped', event, ...(where && { where }), within: o.within, before: o.before, span: { start, end: 0 } };
        break;
      }
      case 'sequence':
        expr = this.sequence(start);
        break;
      case 'tag':
      case 'in_segment': {
        const t = this.peek();
        if (t.type !== 'string' && t.type !== 'ident') this.fail(`expected a ${name === 'tag' ? 'tag' : 'segment id or name'} in quotes, found ${this.describe(t)}`);
        this.next();
        const value = t.type === 'string' ? t.word! : t.text;
        expr = name === 'tag' ? { kind: 'tag', tag: value, span: { start, end: 0 } } : { kind: 'in_segment', ref: value, span: { start, end: 0 } };
        break;
      }
      default: {
        if (!AGG_FN_SET.has(name)) throw new Error(`parser has no rule for function ${name}`);
        const { event, prop } = this.aggTarget(name);
        const where = this.where();
        const o = this.options(['within', 'between'], name);
        this.expect(')', "',' or ')'");
        this.leave();
        const opTok = this.peek();
        if (opTok.type !== 'op') this.fail(`expected a comparison after ${name}(…), such as > 100, found ${this.describe(opTok)}`);
        this.next();
        const v = this.peek();
        if (v.type !== 'number') this.fail(`${name}(…) compares with a number, found ${this.describe(v)}`);
        this.next();
        return {
          kind: 'agg',
          fn: name as AggFn,
          event,
          prop,
          ...(where && { where }),
          ...(o.window && { window: o.window }),
          op: opTok.op ?? 'eq',
          value: v.num!,
          span: { start, end: this.lastEnd },
        };
      }
    }
    this.expect(')', "',' or ')'");
    this.leave();
    expr.span = { start, end: this.lastEnd };
    return expr;
  }

  private eventName(): string {
    const t = this.peek();
    if (t.type === 'string') {
      this.next();
      return t.word!;
    }
    // A keyword is an event name here too (did(count)): this place takes nothing
    // else, and segments.md's name pattern admits the keywords.
    if (t.type === 'ident' || t.type === 'kw') {
      this.next();
      return t.text;
    }
    this.fail(`expected an event name, found ${this.describe(t)}`);
  }

  private where(): PropExpr | undefined {
    if (!this.isKw('where')) return undefined;
    const t = this.next();
    this.enter(t);
    const p = this.parseOr(() => this.propCondition());
    this.leave();
    return p;
  }

  private propCondition(): PropExpr {
    const t = this.peek();
    if (t.type === 'ident' && this.peek(1).type === '(') {
      this.fail(`${shown(t.text)}(…) cannot be used in 'where', which compares properties of the event`);
    }
    let prop: string;
    if (t.type === 'string') prop = t.word!;
    else if (t.type === 'ident') {
      const after = this.peek(1);
      if (t.text.endsWith('.') && after.type === 'string' && after.start === t.end) {
        this.fail(`quote the whole property name instead, as in "a.b"`, t);
      }
      prop = t.text;
    } else if (t.type === 'kw') {
      this.fail(`expected a property name, found keyword '${t.word}'; quote it: "${t.text}"`);
    } else this.fail(`expected a property condition, found ${this.describe(t)}`);
    this.next();
    const pred = this.predicate(prop);
    return { kind: 'prop', prop, ...pred, span: { start: t.start, end: this.lastEnd } };
  }

  /** `sum(purchase.amount …)`: the property follows the last dot; `"a.b".p` and `e."p q"` quote. */
  private aggTarget(fn: string): { event: string; prop: string } {
    const t = this.peek();
    const example = `, as in ${fn}(purchase.amount)`;
    if (t.type === 'ident') {
      this.next();
      const after = this.peek();
      if (t.text.endsWith('.')) {
        if (after.type === 'string' && after.start === t.end) {
          this.next();
          return { event: t.text.slice(0, -1), prop: after.word! };
        }
        this.fail(`expected a property name right after '.'${example}`, after);
      }
      const dot = t.text.lastIndexOf('.');
      if (dot > 0) return { event: t.text.slice(0, dot), prop: t.text.slice(dot + 1) };
      if (after.type === '.') {
        this.next();
        return { event: t.text, prop: this.propAfterDot(example) };
      }
      this.fail(`expected event.property${example}`, after);
    }
    if (t.type === 'string') {
      this.next();
      this.expect('.', `'.' and a property name after the event name${example}`);
      return { event: t.word!, prop: this.propAfterDot(example) };
    }
    if (t.type === 'kw') this.fail(`expected an event name, found keyword '${t.word}'; quote it: "${t.text}"`);
    this.fail(`expected event.property${example}, found ${this.describe(t)}`);
  }

  private propAfterDot(example: string): string {
    const t = this.peek();
    if (t.type === 'string') {
      this.next();
      return t.word!;
    }
    if (t.type === 'ident' && !t.text.includes('.')) {
      this.next();
      return t.text;
    }
    if (t.type === 'ident') this.fail(`a property name holding '.' must be quoted: ${JSON.stringify(t.text)}`);
    if (t.type === 'kw') this.fail(`keyword '${t.word}' must be quoted as a property name: "${t.text}"`);
    this.fail(`expected a property name${example}, found ${this.describe(t)}`);
  }

  private sequence(start: number): Expr {
    const steps: SequenceStep[] = [];
    let within: Duration | undefined;
    let inLast: Duration | undefined;
    const step = (): void => {
      const event = this.eventName();
      const where = this.where();
      steps.push(where ? { event, where } : { event });
    };
    step();
    while (this.peek().type === ',') {
      this.next();
      const t = this.peek();
      if (this.isKw('within') || this.isKw('in_last')) {
        this.next();
        const d = this.durationValue(t.word!);
        if ((t.word === 'within' ? within : inLast) !== undefined) this.report('duplicate_option', `'${t.word}' is given twice`, t.start);
        if (t.word === 'within') within = d;
        else inLast = d;
        continue;
      }
      if (within || inLast) this.fail(`sequence steps must come before 'within' and 'in_last'`);
      if (this.isKw('where')) this.fail(`'where' must follow the step's event name directly, as in purchase where amount > 0`);
      step();
    }
    return { kind: 'sequence', steps, ...(within && { within }), ...(inLast && { inLast }), span: { start, end: 0 } };
  }

  private durationValue(after: string): Duration {
    const t = this.peek();
    if (t.type !== 'duration') {
      this.fail(`expected a duration such as 30d after '${after}' (units s, m, h, d, w), found ${this.describe(t)}`);
    }
    this.next();
    return t.dur!;
  }

  private options(
    allowed: ('count' | 'within' | 'between' | 'before')[],
    fn: string,
  ): { count?: { op: CompareOp; value: number }; window?: TimeWindow; within?: Duration; before?: Duration } {
    const out: { count?: { op: CompareOp; value: number }; window?: TimeWindow; within?: Duration; before?: Duration } = {};
    const seen = new Set<string>();
    while (this.peek().type === ',') {
      this.next();
      const t = this.peek();
      const word = t.type === 'kw' ? t.word! : '';
      if (!(allowed as string[]).includes(word)) {
        if (word === 'where') this.fail(`'where' must follow the event name directly, as in ${fn}(purchase where amount > 100)`);
        const list = allowed.map((a) => `'${a}'`).join(', ');
        this.fail(`expected ${list} after ',' in ${fn}(…), found ${this.describe(t)}`);
      }
      this.next();
      if (seen.has(word)) this.report('duplicate_option', `'${word}' is given twice`, t.start);
      seen.add(word);
      if ((word === 'within' && seen.has('between')) || (word === 'between' && seen.has('within'))) {
        this.report('window_conflict', `use either 'within' or 'between', not both`, t.start);
      }
      switch (word) {
        case 'count': {
          const opTok = this.peek();
          if (opTok.type !== 'op') this.fail(`expected a comparison after 'count', such as count >= 2, found ${this.describe(opTok)}`);
          this.next();
          const v = this.peek();
          if (v.type !== 'number') this.fail(`count compares with a whole number, found ${this.describe(v)}`);
          this.next();
          const op = opTok.op ?? 'gte';
          const problem = countProblem(op, v.num!);
          if (problem) this.report('bad_count', problem, v.start);
          out.count = { op, value: problem ? 1 : v.num! };
          break;
        }
        case 'within': {
          const d = this.durationValue('within');
          if (allowed.includes('before')) out.within = d;
          else out.window = { kind: 'within', duration: d };
          break;
        }
        case 'before':
          out.before = this.durationValue('before');
          break;
        case 'between': {
          const from = this.expect('string', `a quoted ISO 8601 timestamp after 'between'`);
          this.expectKw('and', 'between the two timestamps');
          const to = this.expect('string', `a quoted ISO 8601 timestamp after 'and'`);
          const problem = windowProblem(from.word!, to.word!);
          if (problem) this.report(problem.code, problem.message, (problem.at === 0 ? from : to).start);
          out.window = { kind: 'between', from: from.word!, to: to.word! };
          break;
        }
      }
    }
    return out;
  }
}

function toErrors(source: string, problems: Problem[]): SegmentError[] {
  const sorted = [...problems].sort((a, b) => a.offset - b.offset);
  const seen = new Set<string>();
  // A syntax error where the lexer already complained (`!x`, `=~`) is an echo.
  const lexical = new Set(problems.filter((p) => p.code !== 'syntax').map((p) => p.offset));
  const out: SegmentError[] = [];
  for (const p of sorted) {
    const key = `${p.offset}\u0000${p.message}`;
    if (seen.has(key) || (p.code === 'syntax' && lexical.has(p.offset))) continue;
    seen.add(key);
    out.push(atOffset({ code: p.code, message: p.message }, source, p.offset));
    if (out.length >= MAX_REPORTED_ERRORS) break;
  }
  return out;
}

function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/**
 * Parses and checks a text expression; never throws. With `ctx.resolveSegment`
 * the check also covers `in_segment` references (existence and cycles).
 */
export function tryParseSegment(text: string, ctx: Omit<CheckContext, 'source'> = {}): SegmentResult<Expr> {
  if (typeof text !== 'string') {
    return { ok: false, errors: [{ code: 'not_text', message: 'a segment expression must be a string' }] };
  }
  const bytes = utf8Length(text);
  if (bytes > LIMITS.maxTextBytes) {
    const e = atOffset(
      { code: 'too_long', message: `expression text is ${bytes} bytes; at most ${LIMITS.maxTextBytes} are allowed` },
      text,
      0,
    );
    return { ok: false, errors: [e] };
  }
  const problems: Problem[] = [];
  const tokens = lex(text, problems);
  const parser = new Parser(tokens, problems);
  let expr: Expr | undefined;
  try {
    expr = parser.parseTop();
  } catch (e) {
    if (e !== ABORT) throw e;
  }
  if (problems.length > 0 || !expr) return { ok: false, errors: toErrors(text, problems) };
  const errors = checkSegment(expr, { ...ctx, source: text });
  if (errors.length > 0) return { ok: false, errors: errors.slice(0, MAX_REPORTED_ERRORS) };
  return { ok: true, value: expr };
}

/** Parses and checks a text expression; throws SegmentSyntaxError listing every problem found. */
export function parseSegment(text: string, ctx: Omit<CheckContext, 'source'> = {}): Expr {
  const r = tryParseSegment(text, ctx);
  if (!r.ok) throw new SegmentSyntaxError(r.errors);
  return r.value;
}

/** A copy without `span`s, for comparing ASTs regardless of where they came from. */
export function stripSpans<T extends Expr | PropExpr>(node: T): T {
  const e = node as Expr | PropExpr;
  switch (e.kind) {
    case 'and':
    case 'or':
      return { kind: e.kind, items: (e.items as (Expr | PropExpr)[]).map((i) => stripSpans(i)) } as T;
    case 'not':
      return { kind: 'not', item: stripSpans(e.item) } as T;
    case 'did':
    case 'first_did':
    case 'stopped':
    case 'agg': {
      const { span: _span, ...rest } = e;
      return (rest.where ? { ...rest, where: stripSpans(rest.where) } : rest) as T;
    }
    case 'sequence': {
      const { span: _span, ...rest } = e;
      return { ...rest, steps: rest.steps.map((s) => (s.where ? { ...s, where: stripSpans(s.where) } : s)) } as T;
    }
    case 'attr':
    case 'prop':
    case 'tag':
    case 'in_segment': {
      const { span: _span, ...rest } = e;
      return rest as T;
    }
    default:
      return unreachable(e);
  }
}
