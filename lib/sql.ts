// The one audited place where values become ClickHouse SQL text.
//
// ClickHouse 18.16 has no query parameters, so every value is inlined as a
// literal. All of it goes through `literal()`; SQL is assembled only with the
// `sql` tagged template, whose interpolations are escaped values unless they
// are themselves `Sql` fragments. Identifiers never come from input: `ident()`
// accepts only names matching a conservative pattern, and callers pass names
// from their own whitelists.

export class Sql {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

export type SqlValue = string | number | bigint | boolean | Date | null | Sql | readonly SqlValue[];

/** Escapes a string as a single-quoted ClickHouse literal. Control bytes become \xHH. */
export function quoteString(s: string): string {
  let out = "'";
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x5c) out += '\\\\';
    else if (c === 0x27) out += "\\'";
    else if (c < 0x20 || c === 0x7f) out += '\\x' + c.toString(16).padStart(2, '0');
    else out += s[i];
  }
  return out + "'";
}

/** Renders a JS value as a ClickHouse literal expression. Throws on values with no faithful literal. */
export function literal(v: SqlValue): string {
  if (v instanceof Sql) return v.text;
  if (v === null) return 'NULL';
  if (typeof v === 'string') return quoteString(v);
  if (typeof v === 'boolean') return v ? '1' : '0';
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new TypeError(`cannot inline non-finite number ${v}`);
    // Parenthesised so a negative literal cannot fuse with a preceding '-' into a comment.
    if (Number.isInteger(v) && Math.abs(v) <= Number.MAX_SAFE_INTEGER) return v < 0 ? `(${v})` : String(v);
    const text = String(v);
    return v < 0 ? `(${text})` : text;
  }
  if (v instanceof Date) {
    const ms = v.getTime();
    if (!Number.isFinite(ms)) throw new TypeError('cannot inline an invalid Date');
    // toDateTime(integer) — 18.16 refuses to compare a DateTime key column with a bare integer.
    return `toDateTime(${Math.floor(ms / 1000)})`;
  }
  if (Array.isArray(v)) return '[' + v.map((x) => literal(x)).join(', ') + ']';
  throw new TypeError(`unsupported SQL value: ${typeof v}`);
}

/** Tagged template: `sql\`SELECT … WHERE app_id = ${appId}\``. */
export function sql(strings: TemplateStringsArray, ...values: SqlValue[]): Sql {
  let text = strings[0] ?? '';
  for (let i = 0; i < values.length; i++) {
    text += literal(values[i] as SqlValue) + (strings[i + 1] ?? '');
  }
  return new Sql(text);
}

/** Trusted SQL text written by the program itself (never from input). */
export function raw(text: string): Sql {
  return new Sql(text);
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** An identifier (table, column, database). Only program-chosen names pass; quoted with backticks. */
export function ident(name: string): Sql {
  if (!IDENT.test(name)) throw new TypeError(`invalid identifier: ${JSON.stringify(name)}`);
  return new Sql('`' + name + '`');
}

export function join(parts: readonly Sql[], separator = ', '): Sql {
  return new Sql(parts.map((p) => p.text).join(separator));
}

/** A tuple literal `(a, b, c)` for `IN` lists; ClickHouse rejects empty tuples, so callers must guard. */
export function tuple(values: readonly SqlValue[]): Sql {
  if (values.length === 0) throw new TypeError('empty IN list');
  return new Sql('(' + values.map((x) => literal(x)).join(', ') + ')');
}

/** Epoch seconds of an instant, as used in DateTime comparisons. */
export function epochSeconds(d: Date): number {
  return Math.floor(d.getTime() / 1000);
}
