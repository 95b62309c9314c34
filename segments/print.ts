// The canonical text form of an AST. For every valid canonical AST (and/or
// flattened, as parseSegment and fromJson produce them):
//   stripSpans(parseSegment(printSegment(ast))) deep-equals stripSpans(ast), and
//   printSegment(parseSegment(text)) is a fixpoint of print∘parse.
// Parentheses appear only where precedence needs them (`or` inside `and`, and/or
// under `not`); names are quoted only when they are not bare identifiers or are keywords.

import { unreachable } from './ast.ts';
import type { Duration, Expr, Literal, Predicate, PropExpr, TimeWindow } from './ast.ts';
import { TRAITS_PREFIX } from './fields.ts';
import { IDENTIFIER_RE, isKeyword } from './parse.ts';

/** A double-quoted string literal using only the escapes the parser reads. */
export function quoteString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    const code = s.charCodeAt(i);
    if (c === '"') out += '\\"';
    else if (c === '\\') out += '\\\\';
    else if (c === '\n') out += '\\n';
    else if (c === '\r') out += '\\r';
    else if (c === '\t') out += '\\t';
    else if (code < 0x20 || code === 0x7f) out += `\\u${code.toString(16).padStart(4, '0')}`;
    else if (code >= 0xd800 && code <= 0xdbff && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      out += c + s[i + 1]!;
      i++;
    } else if (code >= 0xd800 && code <= 0xdfff) out += `\\u${code.toString(16)}`; // lone surrogate
    else out += c;
  }
  return out + '"';
}

/** Decimal without exponent: 1e21 prints as 1000000000000000000000, 1e-7 as 0.0000001. */
export function formatNumber(n: number): string {
  if (!Number.isFinite(n)) throw new Error(`cannot print non-finite number ${n}`);
  if (n === 0) return '0';
  const s = String(n);
  const m = /^(-?)(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(s);
  if (!m) return s;
  const [, sign, lead, frac = '', expText] = m;
  const digits = lead! + frac;
  const exp = Number(expText);
  // Value is 0.digits × 10^(exp+1): place the point after exp+1 digits.
  const point = exp + 1;
  if (point <= 0) return `${sign}0.${'0'.repeat(-point)}${digits}`;
  if (point >= digits.length) return `${sign}${digits}${'0'.repeat(point - digits.length)}`;
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}

const bare = (name: string): boolean => IDENTIFIER_RE.test(name) && !isKeyword(name);

/** An event name, tag-like name or where-clause property: bare when possible. */
export function printName(name: string): string {
  return bare(name) ? name : quoteString(name);
}

function printAttrPath(path: string): string {
  if (bare(path)) return path;
  if (path.startsWith(TRAITS_PREFIX) && path.length > TRAITS_PREFIX.length) {
    return TRAITS_PREFIX + quoteString(path.slice(TRAITS_PREFIX.length));
  }
  return quoteString(path);
}

function printAggTarget(event: string, prop: string): string {
  // One token `event.prop` splits back at its last dot; an event holding dots is
  // quoted anyway, as segments.md recommends: sum("checkout.done".amount).
  if (bare(event) && !event.includes('.') && /^[A-Za-z0-9_:-]+$/.test(prop)) return `${event}.${prop}`;
  if (bare(event) && !event.includes('.')) return `${event}.${quoteString(prop)}`; // `event.` + adjacent string
  const p = /^[A-Za-z_][A-Za-z0-9_:-]*$/.test(prop) && !isKeyword(prop) ? prop : quoteString(prop);
  return `${quoteString(event)}.${p}`;
}

function printLiteral(v: Literal): string {
  if (typeof v === 'string') return quoteString(v);
  if (typeof v === 'number') return formatNumber(v);
  return v ? 'true' : 'false';
}

const COMPARE_TEXT = { eq: '=', neq: '!=', gt: '>', gte: '>=', lt: '<', lte: '<=' } as const;

function printPredicate(p: Predicate): string {
  switch (p.op) {
    case 'eq':
    case 'neq':
    case 'gt':
    case 'gte':
    case 'lt':
    case 'lte':
      return `${COMPARE_TEXT[p.op]} ${printLiteral(p.value)}`;
    case 'in':
      return `in (${p.value.map(printLiteral).join(', ')})`;
    case 'nin':
      return `not in (${p.value.map(printLiteral).join(', ')})`;
    case 'between':
      return `between ${printLiteral(p.value[0])} and ${printLiteral(p.value[1])}`;
    case 'contains':
    case 'starts_with':
    case 'matches':
      return `${p.op} ${quoteString(p.value)}`;
    case 'is_null':
      return 'is null';
    case 'is_not_null':
      return 'is not null';
    default:
      return unreachable(p);
  }
}

export function printDuration(d: Duration): string {
  return `${d.amount}${d.unit}`;
}

function printWindow(w: TimeWindow): string {
  return w.kind === 'within' ? `within ${printDuration(w.duration)}` : `between ${quoteString(w.from)} and ${quoteString(w.to)}`;
}

type Node = Expr | PropExpr;

/** Shared and/or/not layout; `leaf` prints everything else. */
function printBool<T extends Node>(node: T, leaf: (n: T) => string): string {
  const recur = (n: T): string => printBool(n, leaf);
  switch (node.kind) {
    case 'and':
      return (node.items as T[]).map((i) => (i.kind === 'or' || i.kind === 'and' ? `(${recur(i)})` : recur(i))).join(' and ');
    case 'or':
      return (node.items as T[]).map((i) => (i.kind === 'or' ? `(${recur(i)})` : recur(i))).join(' or ');
    case 'not': {
      const item = node.item as T;
      return item.kind === 'and' || item.kind === 'or' ? `not (${recur(item)})` : `not ${recur(item)}`;
    }
    default:
      return leaf(node);
  }
}

export function printWhere(p: PropExpr): string {
  return printBool<PropExpr>(p, (n) => {
    if (n.kind !== 'prop') throw new Error(`unexpected ${n.kind}`);
    return `${printName(n.prop)} ${printPredicate(n)}`;
  });
}

const where = (p: PropExpr | undefined): string => (p ? ` where ${printWhere(p)}` : '');

function printLeaf(e: Expr): string {
  switch (e.kind) {
    case 'attr':
      return `${printAttrPath(e.attr)} ${printPredicate(e)}`;
    case 'did': {
      const parts = [printName(e.event) + where(e.where)];
      if (e.count) parts.push(`count ${COMPARE_TEXT[e.count.op]} ${formatNumber(e.count.value)}`);
      if (e.window) parts.push(printWindow(e.window));
      return `did(${parts.join(', ')})`;
    }
    case 'first_did': {
      const parts = [printName(e.event) + where(e.where)];
      if (e.window) parts.push(printWindow(e.window));
      return `first_did(${parts.join(', ')})`;
    }
    case 'stopped':
      return `stopped(${printName(e.event)}${where(e.where)}, within ${printDuration(e.within)}, before ${printDuration(e.before)})`;
    case 'sequence': {
      const parts = e.steps.map((s) => printName(s.event) + where(s.where));
      if (e.within) parts.push(`within ${printDuration(e.within)}`);
      if (e.inLast) parts.push(`in_last ${printDuration(e.inLast)}`);
      return `sequence(${parts.join(', ')})`;
    }
    case 'agg': {
      const parts = [printAggTarget(e.event, e.prop) + where(e.where)];
      if (e.window) parts.push(printWindow(e.window));
      return `${e.fn}(${parts.join(', ')}) ${COMPARE_TEXT[e.op]} ${formatNumber(e.value)}`;
    }
    case 'tag':
      return `tag(${quoteString(e.tag)})`;
    case 'in_segment':
      return `in_segment(${quoteString(e.ref)})`;
    case 'and':
    case 'or':
    case 'not':
      throw new Error('printBool handles and/or/not');
    default:
      return unreachable(e);
  }
}

/** The canonical text form of a segment expression. */
export function printSegment(expr: Expr): string {
  return printBool<Expr>(expr, printLeaf);
}
