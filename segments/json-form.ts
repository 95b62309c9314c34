// The JSON form of a segment (segments.md §2, §4): a zod schema for it (strict
// objects, so unknown keys are errors; plain enough for z.toJSONSchema / OpenAPI)
// and the conversions JSON ⇄ AST.
//
// fromJson flattens nested and/or and unwraps single-item and/or, so
// toJson(fromJson(x)) is the canonical JSON form — the same one the text form
// parses to. Errors carry paths into the input as given (before flattening).

import { z } from 'zod';
import { duration, unreachable } from './ast.ts';
import type {
  AggFn,
  CompareOp,
  Duration,
  Expr,
  ListOp,
  Literal,
  NullOp,
  Predicate,
  PropExpr,
  StringOp,
  TimeWindow,
} from './ast.ts';
import { AGG_FNS, checkSegment, COMPARE_OPS, DURATION_PATTERN, LIMITS } from './check.ts';
import type { CheckContext } from './check.ts';
import { formatPath, MAX_REPORTED_ERRORS, SegmentSyntaxError } from './errors.ts';
import type { SegmentError, SegmentResult } from './errors.ts';
import { printDuration } from './print.ts';

// ---- JSON types ----

export type JsonLiteral = string | number | boolean;

export type JsonPredicate =
  | { op: CompareOp; value: JsonLiteral }
  | { op: ListOp; value: JsonLiteral[] }
  | { op: 'between'; value: [JsonLiteral, JsonLiteral] }
  | { op: StringOp; value: string }
  | { op: NullOp };

export type JsonProp =
  | { and: JsonProp[] }
  | { or: JsonProp[] }
  | { not: JsonProp }
  | ({ prop: string } & JsonPredicate);

export interface JsonStep {
  event: string;
  where?: JsonProp;
}

export type JsonExpr =
  | { and: JsonExpr[] }
  | { or: JsonExpr[] }
  | { not: JsonExpr }
  | ({ attr: string } & JsonPredicate)
  | { did: string; where?: JsonProp; count?: { op: CompareOp; value: number }; within?: string; between?: [string, string] }
  | { first_did: string; where?: JsonProp; within?: string; between?: [string, string] }
  | { stopped: string; where?: JsonProp; within: string; before: string }
  | { sequence: JsonStep[]; within?: string; in_last?: string }
  | {
      agg: AggFn;
      event: string;
      prop: string;
      where?: JsonProp;
      within?: string;
      between?: [string, string];
      op: CompareOp;
      value: number;
    }
  | { tag: string }
  | { in_segment: string };

// ---- schema ----

const Name = (what: string) => z.string().min(1, { error: `${what} must not be empty` });
const LiteralSchema = z.union([z.string(), z.number(), z.boolean()]).describe('a string, number or boolean');
const DurationSchema = z
  .string()
  .regex(new RegExp(DURATION_PATTERN), { error: 'expected a duration such as "30d" (a whole number and one of s, m, h, d, w)' });
// Read by checkSegment (bad_timestamp, with what is wrong), like the text form's.
const InstantSchema = z.string().meta({ description: 'an ISO 8601 date and time with an offset or Z, in any of its forms, e.g. 2026-01-01T00:00:00Z' });
const WindowBetween = z.tuple([InstantSchema, InstantSchema]).describe('[from, to): from <= ts < to');
const CompareOpSchema = z.enum(COMPARE_OPS as [CompareOp, ...CompareOp[]]);

function predicates<K extends 'attr' | 'prop'>(key: K) {
  const name = Name(key === 'attr' ? 'attr' : 'prop');
  return z.discriminatedUnion('op', [
    z.strictObject({ [key]: name, op: CompareOpSchema, value: LiteralSchema }),
    z.strictObject({ [key]: name, op: z.enum(['in', 'nin']), value: z.array(LiteralSchema).min(1).max(LIMITS.maxListItems) }),
    z.strictObject({ [key]: name, op: z.literal('between'), value: z.tuple([LiteralSchema, LiteralSchema]) }),
    z.strictObject({ [key]: name, op: z.enum(['contains', 'starts_with', 'matches']), value: z.string() }),
    z.strictObject({ [key]: name, op: z.enum(['is_null', 'is_not_null']) }),
  ] as const);
}

const COUNT_ERROR = 'count must be a whole number >= 0';
const SEQUENCE_ERROR = `sequence needs ${LIMITS.minSequenceSteps}..${LIMITS.maxSequenceSteps} steps`;
const group = <T extends z.ZodType>(item: T) => z.array(item).min(1).max(LIMITS.maxNodes);

/** A where-clause: conditions on the properties of one event. */
export const PropJsonSchema: z.ZodType<JsonProp> = z.lazy(() =>
  z.union([
    predicates('prop'),
    z.strictObject({ and: group(PropJsonSchema) }),
    z.strictObject({ or: group(PropJsonSchema) }),
    z.strictObject({ not: PropJsonSchema }),
  ]),
).meta({ id: 'SegmentWhere', description: 'conditions on the properties of one event' }) as z.ZodType<JsonProp>;

const EventName = Name('event name').describe('1..128 characters of [A-Za-z0-9_.:- ]');

/** The JSON form of a segment expression. */
export const SegmentJsonSchema: z.ZodType<JsonExpr> = z.lazy(() =>
  z.union([
    // Comparisons first: they are most of the nodes, and a union tries options in order.
    predicates('attr'),
    z.strictObject({
      did: EventName,
      where: PropJsonSchema.optional(),
      count: z
        .strictObject({
          op: CompareOpSchema,
          value: z.number().int({ error: COUNT_ERROR }).min(0, { error: COUNT_ERROR }),
        })
        .optional()
        .describe('compares the number of matching events; absent means count >= 1'),
      within: DurationSchema.optional(),
      between: WindowBetween.optional(),
    }),
    z.strictObject({ and: group(SegmentJsonSchema) }),
    z.strictObject({ or: group(SegmentJsonSchema) }),
    z.strictObject({ not: SegmentJsonSchema }),
    z.strictObject({
      first_did: EventName,
      where: PropJsonSchema.optional(),
      within: DurationSchema.optional(),
      between: WindowBetween.optional(),
    }),
    z.strictObject({ stopped: EventName, where: PropJsonSchema.optional(), within: DurationSchema, before: DurationSchema }),
    z.strictObject({
      sequence: z
        .array(z.strictObject({ event: EventName, where: PropJsonSchema.optional() }))
        .min(LIMITS.minSequenceSteps, { error: SEQUENCE_ERROR })
        .max(LIMITS.maxSequenceSteps, { error: SEQUENCE_ERROR }),
      within: DurationSchema.optional(),
      in_last: DurationSchema.optional(),
    }),
    z.strictObject({
      agg: z.enum(AGG_FNS),
      event: EventName,
      prop: Name('prop'),
      where: PropJsonSchema.optional(),
      within: DurationSchema.optional(),
      between: WindowBetween.optional(),
      op: CompareOpSchema,
      value: z.number(),
    }),
    z.strictObject({ tag: Name('tag') }),
    z.strictObject({ in_segment: Name('segment reference').describe('a saved segment id or name') }),
  ]),
).meta({ id: 'SegmentExpression', description: 'the JSON form of a segment expression (segments.md)' }) as z.ZodType<JsonExpr>;

/** Union options in schema order, named by the key that tells them apart. */
const EXPR_KINDS = ['attr', 'did', 'and', 'or', 'not', 'first_did', 'stopped', 'sequence', 'agg', 'tag', 'in_segment'];
const PROP_KINDS = ['prop', 'and', 'or', 'not'];
const KEY_LIST = (kinds: string[]): string => ['and', 'or', 'not', ...kinds.filter((k) => !['and', 'or', 'not'].includes(k))].join(', ');

// ---- zod issues → SegmentErrors ----

type Path = (string | number)[];

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const k of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)?.slice(0, 40)}`;
}

function jsonError(code: string, message: string, path: readonly PropertyKey[]): SegmentError {
  const p = path.map((k) => (typeof k === 'symbol' ? String(k) : k)) as Path;
  return { code, message: p.length > 0 ? `${message} (at ${formatPath(p)})` : message, path: p };
}

/** Zod reports a union's branch issues relative to the union, hence `prefix`. */
function issuesToErrors(issues: readonly z.core.$ZodIssue[], input: unknown, out: SegmentError[], prefix: PropertyKey[] = []): void {
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    const here = valueAt(input, path);
    switch (issue.code) {
      case 'invalid_union': {
        if ('note' in issue && issue.note === 'No matching discriminator') {
          const opts = (issue as unknown as { options?: unknown[] }).options ?? [];
          const found = valueAt(input, path);
          out.push(
            found === undefined
              ? jsonError('missing_key', `missing 'op'`, path.slice(0, -1))
              : jsonError('unknown_operator', `unknown operator ${JSON.stringify(found)}; expected one of ${opts.join(', ')}`, path),
          );
          break;
        }
        if (here === undefined) {
          out.push(jsonError('missing_key', `missing '${String(path[path.length - 1])}'`, path));
          break;
        }
        const branches = issue.errors;
        const kinds = branches.length === EXPR_KINDS.length ? EXPR_KINDS : branches.length === PROP_KINDS.length ? PROP_KINDS : undefined;
        if (!kinds) {
          out.push(jsonError('invalid_type', `expected a string, number or boolean, got ${describeValue(here)}`, path));
          break;
        }
        const what = kinds === PROP_KINDS ? 'a property condition' : 'a condition';
        if (here === null || typeof here !== 'object' || Array.isArray(here)) {
          out.push(jsonError('invalid_type', `expected ${what} object, got ${describeValue(here)}`, path));
          break;
        }
        // The first kind key present names the branch whose complaints matter.
        const index = kinds.findIndex((k) => Object.hasOwn(here, k));
        if (index < 0) {
          const keys = Object.keys(here).slice(0, 5).map((k) => `'${k}'`).join(', ');
          out.push(
            jsonError(
              'invalid_condition',
              `expected ${what} with one of the keys ${KEY_LIST(kinds)}${keys ? `; found ${keys}` : ''}`,
              path,
            ),
          );
          break;
        }
        issuesToErrors(branches[index]!, input, out, path);
        break;
      }
      case 'unrecognized_keys':
        for (const key of issue.keys) out.push(jsonError('unknown_key', `unknown key '${key}'`, [...path, key]));
        break;
      case 'invalid_type':
        if (here === undefined) out.push(jsonError('missing_key', `missing '${String(path[path.length - 1])}'`, path));
        else if (!issue.message.startsWith('Invalid input')) out.push(jsonError('invalid_type', issue.message, path)); // our own wording
        else out.push(jsonError('invalid_type', `expected ${issue.expected}, got ${describeValue(here)}`, path));
        break;
      case 'too_small':
      case 'too_big': {
        const limit = issue.code === 'too_small' ? issue.minimum : issue.maximum;
        if (issue.origin === 'array' && /^Too (small|big)/.test(issue.message)) {
          const word = issue.code === 'too_small' ? 'at least' : 'at most';
          out.push(jsonError('list_size', `needs ${word} ${String(limit)} items, got ${Array.isArray(here) ? here.length : 0}`, path));
        } else out.push(jsonError(issue.code, issue.message, path));
        break;
      }
      case 'invalid_value':
        out.push(
          jsonError('invalid_value', `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${describeValue(here)}`, path),
        );
        break;
      default:
        out.push(jsonError(issue.code, issue.message, path));
    }
  }
}

// The input is walked once without recursion before zod sees it: zod recurses,
// and a 100,000-deep object must yield an error, not a RangeError.
// A condition level is 2 JSON levels (object + array). Nested and/or flatten
// before the depth limit applies, as in the text form, so the cap is not
// LIMITS.maxDepth but the deepest an expression of LIMITS.maxNodes conditions
// can nest (zod's recursion overflows the stack near twice that).
const MAX_JSON_DEPTH = 2 * LIMITS.maxNodes + 8;
const MAX_JSON_VALUES = 1_000_000;

const FLATTENED_LIMITS = new Set(['too_deep', 'too_many_nodes']);

function shapeProblem(input: unknown): SegmentError | undefined {
  const stack: [unknown, number][] = [[input, 1]];
  let seen = 0;
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (++seen > MAX_JSON_VALUES) return jsonError('too_large', `expression is too large`, []);
    if (depth > MAX_JSON_DEPTH) return jsonError('too_deep', `expression nests deeper than ${LIMITS.maxNodes} levels, more than ${LIMITS.maxNodes} conditions can`, []);
    if (Array.isArray(v)) for (const x of v) stack.push([x, depth + 1]);
    else if (v !== null && typeof v === 'object') for (const x of Object.values(v)) stack.push([x, depth + 1]);
  }
  return undefined;
}

// ---- JSON → AST ----

function readDuration(text: string): Duration {
  const m = /^([0-9]+)([smhdw])$/.exec(text)!;
  return duration(Number(m[1]), m[2] as Duration['unit']);
}

const num = (v: number): number => (v === 0 ? 0 : v); // -0 reads as 0
const lit = (v: JsonLiteral): Literal => (typeof v === 'number' ? num(v) : v);

function readPredicate(j: JsonPredicate): Predicate {
  switch (j.op) {
    case 'in':
    case 'nin':
      return { op: j.op, value: j.value.map(lit) };
    case 'between':
      return { op: 'between', value: [lit(j.value[0]), lit(j.value[1])] };
    case 'is_null':
    case 'is_not_null':
      return { op: j.op };
    case 'contains':
    case 'starts_with':
    case 'matches':
      return { op: j.op, value: j.value };
    default:
      return { op: j.op, value: lit(j.value) };
  }
}

function readWindow(j: { within?: string; between?: [string, string] }, path: Path, errors: SegmentError[]): TimeWindow | undefined {
  if (j.within !== undefined && j.between !== undefined) {
    errors.push(jsonError('window_conflict', `use either 'within' or 'between', not both`, [...path, 'between']));
  }
  if (j.within !== undefined) return { kind: 'within', duration: readDuration(j.within) };
  if (j.between !== undefined) return { kind: 'between', from: j.between[0], to: j.between[1] };
  return undefined;
}

function readProp(j: JsonProp): PropExpr {
  if ('and' in j) return { kind: 'and', items: j.and.map(readProp) };
  if ('or' in j) return { kind: 'or', items: j.or.map(readProp) };
  if ('not' in j) return { kind: 'not', item: readProp(j.not) };
  const { prop, ...pred } = j;
  return { kind: 'prop', prop, ...readPredicate(pred as JsonPredicate) };
}

function readExpr(j: JsonExpr, path: Path, errors: SegmentError[]): Expr {
  if ('and' in j) return { kind: 'and', items: j.and.map((x, i) => readExpr(x, [...path, 'and', i], errors)) };
  if ('or' in j) return { kind: 'or', items: j.or.map((x, i) => readExpr(x, [...path, 'or', i], errors)) };
  if ('not' in j) return { kind: 'not', item: readExpr(j.not, [...path, 'not'], errors) };
  if ('attr' in j) {
    const { attr, ...pred } = j;
    return { kind: 'attr', attr, ...readPredicate(pred as JsonPredicate) };
  }
  const where = 'where' in j && j.where ? { where: readProp(j.where) } : {};
  if ('did' in j) {
    const window = readWindow(j, path, errors);
    return {
      kind: 'did',
      event: j.did,
      ...where,
      ...(j.count && { count: { op: j.count.op, value: num(j.count.value) } }),
      ...(window && { window }),
    };
  }
  if ('first_did' in j) {
    const window = readWindow(j, path, errors);
    return { kind: 'first_did', event: j.first_did, ...where, ...(window && { window }) };
  }
  if ('stopped' in j) {
    return { kind: 'stopped', event: j.stopped, ...where, within: readDuration(j.within), before: readDuration(j.before) };
  }
  if ('sequence' in j) {
    return {
      kind: 'sequence',
      steps: j.sequence.map((s) => (s.where ? { event: s.event, where: readProp(s.where) } : { event: s.event })),
      ...(j.within !== undefined && { within: readDuration(j.within) }),
      ...(j.in_last !== undefined && { inLast: readDuration(j.in_last) }),
    };
  }
  if ('agg' in j) {
    const window = readWindow(j, path, errors);
    return {
      kind: 'agg',
      fn: j.agg,
      event: j.event,
      prop: j.prop,
      ...where,
      ...(window && { window }),
      op: j.op,
      value: num(j.value),
    };
  }
  if ('tag' in j) return { kind: 'tag', tag: j.tag };
  return { kind: 'in_segment', ref: j.in_segment };
}

/** Flattens nested and/or of the same kind and unwraps single-item and/or. */
export function canonical<T extends Expr | PropExpr>(node: T): T {
  const e = node as Expr | PropExpr;
  switch (e.kind) {
    case 'and':
    case 'or': {
      const items = (e.items as T[]).map((i) => canonical(i));
      if (items.length === 1) return items[0]!;
      const flat = items.flatMap((i) => (i.kind === e.kind ? (i as unknown as { items: T[] }).items : [i]));
      return { ...e, items: flat } as unknown as T;
    }
    case 'not':
      return { ...e, item: canonical(e.item) } as T;
    case 'did':
    case 'first_did':
    case 'stopped':
    case 'agg':
      return (e.where ? { ...e, where: canonical(e.where) } : e) as T;
    case 'sequence':
      return { ...e, steps: e.steps.map((s) => (s.where ? { ...s, where: canonical(s.where) } : s)) } as T;
    default:
      return e as T;
  }
}

/**
 * Reads and checks the JSON form; never throws. With `ctx.resolveSegment` the
 * check also covers `in_segment` references.
 */
export function tryFromJson(input: unknown, ctx: Omit<CheckContext, 'source'> = {}): SegmentResult<Expr> {
  const shape = shapeProblem(input);
  if (shape) return { ok: false, errors: [shape] };
  const parsed = SegmentJsonSchema.safeParse(input);
  if (!parsed.success) {
    const errors: SegmentError[] = [];
    issuesToErrors(parsed.error.issues, input, errors);
    return { ok: false, errors: errors.slice(0, MAX_REPORTED_ERRORS) };
  }
  const errors: SegmentError[] = [];
  const expr = readExpr(parsed.data, [], errors);
  // Checked before flattening so that paths point into the input as given; but
  // the size and depth limits hold for the flattened form, as for the text form
  // (segments.md: nested and/or are one node), so past them the flattened form
  // is checked instead, and its paths are into that form.
  const flat = canonical(expr);
  const asGiven = checkSegment(expr, ctx);
  const found = asGiven.some((e) => FLATTENED_LIMITS.has(e.code)) ? checkSegment(flat, ctx) : asGiven;
  errors.push(...found.map((e) => (e.path?.length ? { ...e, message: `${e.message} (at ${formatPath(e.path)})` } : e)));
  if (errors.length > 0) return { ok: false, errors: errors.slice(0, MAX_REPORTED_ERRORS) };
  return { ok: true, value: flat };
}

/** Reads and checks the JSON form; throws SegmentSyntaxError listing every problem found. */
export function fromJson(input: unknown, ctx: Omit<CheckContext, 'source'> = {}): Expr {
  const r = tryFromJson(input, ctx);
  if (!r.ok) throw new SegmentSyntaxError(r.errors);
  return r.value;
}

// ---- AST → JSON ----

function writePredicate(p: Predicate): JsonPredicate {
  return 'value' in p ? ({ op: p.op, value: p.value } as JsonPredicate) : { op: p.op };
}

function writeWindow(w: TimeWindow | undefined): { within?: string; between?: [string, string] } {
  if (!w) return {};
  return w.kind === 'within' ? { within: printDuration(w.duration) } : { between: [w.from, w.to] };
}

export function propToJson(p: PropExpr): JsonProp {
  switch (p.kind) {
    case 'and':
      return { and: p.items.map(propToJson) };
    case 'or':
      return { or: p.items.map(propToJson) };
    case 'not':
      return { not: propToJson(p.item) };
    case 'prop':
      return { prop: p.prop, ...writePredicate(p) };
    default:
      return unreachable(p);
  }
}

const writeWhere = (w: PropExpr | undefined): { where?: JsonProp } => (w ? { where: propToJson(w) } : {});

/** The JSON form of an AST, keys in the order segments.md shows them. Spans are dropped. */
export function toJson(e: Expr): JsonExpr {
  switch (e.kind) {
    case 'and':
      return { and: e.items.map(toJson) };
    case 'or':
      return { or: e.items.map(toJson) };
    case 'not':
      return { not: toJson(e.item) };
    case 'attr':
      return { attr: e.attr, ...writePredicate(e) };
    case 'did':
      return {
        did: e.event,
        ...writeWhere(e.where),
        ...(e.count && { count: { op: e.count.op, value: e.count.value } }),
        ...writeWindow(e.window),
      };
    case 'first_did':
      return { first_did: e.event, ...writeWhere(e.where), ...writeWindow(e.window) };
    case 'stopped':
      return { stopped: e.event, ...writeWhere(e.where), within: printDuration(e.within), before: printDuration(e.before) };
    case 'sequence':
      return {
        sequence: e.steps.map((s) => ({ event: s.event, ...writeWhere(s.where) })),
        ...(e.within && { within: printDuration(e.within) }),
        ...(e.inLast && { in_last: printDuration(e.inLast) }),
      };
    case 'agg':
      return {
        agg: e.fn,
        event: e.event,
        prop: e.prop,
        ...writeWhere(e.where),
        ...writeWindow(e.window),
        op: e.op,
        value: e.value,
      };
    case 'tag':
      return { tag: e.tag };
    case 'in_segment':
      return { in_segment: e.ref };
    default:
      return unreachable(e);
  }
}
