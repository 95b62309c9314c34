// The segment language front end: text and JSON forms, printer, checker.
// Typical use (API): `readSegment(body.expression, { resolveSegment })`.

import type { Expr } from './ast.ts';
import type { CheckContext } from './check.ts';
import type { SegmentResult } from './errors.ts';
import { tryFromJson } from './json-form.ts';
import { tryParseSegment } from './parse.ts';

export * from './ast.ts';
export * from './errors.ts';
export * from './fields.ts';
export * from './check.ts';
export * from './parse.ts';
export * from './print.ts';
export * from './json-form.ts';

/**
 * Reads an expression in either form — a string is the text form, anything else
 * the JSON form — and checks it, including `in_segment` references when
 * `ctx.resolveSegment` is given. Never throws.
 */
export function readSegment(input: unknown, ctx: Omit<CheckContext, 'source'> = {}): SegmentResult<Expr> {
  return typeof input === 'string' ? tryParseSegment(input, ctx) : tryFromJson(input, ctx);
}
