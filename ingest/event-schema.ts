// The event contract (spec/events-and-profiles.md §1) as ONE zod schema, used
// by the HTTP accept path and the Kafka consumer alike, so an event is valid
// on one path exactly when it is valid on the other.
//
// Decisions the contract leaves open, applied on both paths:
// - Unknown top-level fields are rejected (the API rejects unknown body fields;
//   Kafka follows the same rule so a typo never silently drops data).
// - `properties` are for track events and `traits` for identify events; sending
//   either on the other type is rejected rather than silently ignored.
// - `context` accepts only the five named keys; a null context value means
//   "not provided" (it does not remove the trait — only identify traits do that).
// - `app_id` is optional in the schema; the Kafka path requires it and the HTTP
//   path takes it from the API key (see normalizeEvent).
// - `properties` nest at most MAX_NESTING_DEPTH (64) levels of objects and
//   arrays (the properties object is level 1), checked without recursion before
//   anything recursive (JSON.stringify, the derived id) touches them: a few KB
//   of "[[[[…" used to overflow the stack.
// - Every number in `properties` and `traits` is finite: JSON.parse reads a
//   number out of the double range (1e400) as Infinity, which JSON cannot
//   write back, so it is rejected on both paths instead of stored as inf/null.
// - A `purchase` whose properties carry `amount` must have a finite number
//   ≥ 0 there (the contract's well-known property); a negative, string,
//   boolean, null or object amount is rejected. Leaving amount out is allowed.
// - user_id, event_id, app_id and trait names must be well-formed Unicode (no
//   lone surrogates such as "\ud800", which UTF-8 cannot carry and ClickHouse
//   would store as U+FFFD, merging distinct ids). The Kafka consumer also
//   dead-letters message bytes that are not valid UTF-8 (reason invalid_utf8).
import { z } from 'zod';
import { parseIsoInstant } from '../lib/instant.ts';
import { isWellFormedText } from '../lib/text.ts';

export const EVENT_NAME_RE = /^[A-Za-z0-9_.:\- ]{1,128}$/;
export const MAX_PROPERTIES_BYTES = 16 * 1024;
/** Deepest nesting of objects and arrays in `properties`; the properties object itself is level 1. */
export const MAX_NESTING_DEPTH = 64;
export const MAX_FUTURE_MS = 24 * 3600 * 1000;
export const CONTEXT_KEYS = ['platform', 'app_version', 'country', 'timezone', 'locale'] as const;

/**
 * An ISO 8601 instant (lib/instant.ts) as epoch milliseconds: `whole`,
 * truncated to the second (what is stored), and `exact`, with the fraction (for
 * the "future" rule; digits beyond the millisecond count as a bit more than its
 * milliseconds). Undefined when malformed.
 */
function parseIso(s: string): { whole: number; exact: number } | undefined {
  const p = parseIsoInstant(s);
  if (!p) return undefined;
  const whole = p.seconds * 1000;
  const f = p.fraction;
  let fraction = +(f + '000').slice(0, 3);
  if (f.length > 3 && /[1-9]/.test(f.slice(3))) fraction += 0.5;
  return { whole, exact: whole + fraction };
}

/** Epoch milliseconds of an ISO 8601 instant with an offset or Z, truncated to the second; undefined when malformed. */
export function parseIsoTimestamp(s: string): number | undefined {
  return parseIso(s)?.whole;
}

/**
 * `ts` (ISO string or epoch milliseconds) → epoch milliseconds truncated to the
 * second, or which rule it breaks. The future rule looks at the exact instant,
 * before truncation: 999 ms past the limit is past it.
 */
function checkTimestamp(v: string | number, nowMs: number): number | 'malformed' | 'past' | 'future' {
  let whole: number;
  let exact: number;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return 'malformed';
    whole = Math.floor(v / 1000) * 1000;
    exact = v;
  } else {
    const p = parseIso(v);
    if (p === undefined) return 'malformed';
    whole = p.whole;
    exact = p.exact;
  }
  if (whole < 0) return 'past';
  if (exact > nowMs + MAX_FUTURE_MS) return 'future';
  return whole;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

interface Frame {
  v: object;
  depth: number;
  parent: Frame | null;
  key: string | number;
}

const pathOf = (f: Frame | null, last?: string | number): (string | number)[] => {
  const out: (string | number)[] = last === undefined ? [] : [last];
  for (; f && f.parent; f = f.parent) out.push(f.key);
  return out.reverse();
};

/**
 * The first problem in a parsed JSON value that the contract's rules on
 * properties forbid: nesting deeper than `maxDepth` containers (the value
 * itself is level 1), or a number that is not finite (JSON.parse turns
 * 1e400 into Infinity). Walks with an explicit stack, never recursion, so no
 * input can overflow the call stack here; it stops at the first problem.
 * The path is relative to the value.
 */
export function jsonValueProblem(root: unknown, maxDepth: number = MAX_NESTING_DEPTH): { kind: 'depth' | 'number'; path: (string | number)[] } | undefined {
  if (typeof root !== 'object' || root === null) {
    return typeof root === 'number' && !Number.isFinite(root) ? { kind: 'number', path: [] } : undefined;
  }
  if (!Array.isArray(root)) {
    // The common case, a flat object of scalars, without allocating anything.
    let nested = false;
    const o = root as Record<string, unknown>;
    for (const k in o) {
      const x = o[k];
      if (typeof x === 'object' && x !== null) {
        nested = true;
        break;
      }
      if (typeof x === 'number' && !Number.isFinite(x)) return { kind: 'number', path: [k] };
    }
    if (!nested) return undefined;
  }
  const todo: Frame[] = [{ v: root, depth: 1, parent: null, key: '' }];
  while (todo.length > 0) {
    const f = todo.pop() as Frame;
    if (f.depth > maxDepth) return { kind: 'depth', path: pathOf(f) };
    if (Array.isArray(f.v)) {
      const a = f.v as unknown[];
      for (let i = 0; i < a.length; i++) {
        const x = a[i];
        if (typeof x === 'object' && x !== null) todo.push({ v: x, depth: f.depth + 1, parent: f, key: i });
        else if (typeof x === 'number' && !Number.isFinite(x)) return { kind: 'number', path: pathOf(f, i) };
      }
    } else {
      const o = f.v as Record<string, unknown>;
      for (const k in o) {
        const x = o[k];
        if (typeof x === 'object' && x !== null) todo.push({ v: x, depth: f.depth + 1, parent: f, key: k });
        else if (typeof x === 'number' && !Number.isFinite(x)) return { kind: 'number', path: pathOf(f, k) };
      }
    }
  }
  return undefined;
}

/** UTF-8 byte length of a string without allocating a Buffer for the common ASCII case. */
function utf8Length(s: string): number {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return Buffer.byteLength(s, 'utf8');
  return s.length;
}

/** `ts` → epoch milliseconds at second precision; range checked against the server clock at validation time. */
const Timestamp = z
  .union([z.string(), z.number()], {
    error: (iss) => (iss.input === undefined ? 'ts is required' : 'ts must be an ISO 8601 string with an offset or Z, or epoch milliseconds'),
  })
  .transform((v, ctx) => {
    const ms = checkTimestamp(v, Date.now());
    if (typeof ms === 'number') return ms;
    const message =
      ms === 'malformed' ? 'ts must be an ISO 8601 date-time with an offset or Z (e.g. 2024-05-01T12:00:00Z), or epoch milliseconds'
      : ms === 'past' ? 'ts is before 1970-01-01T00:00:00Z'
      : 'ts is more than 24 h in the future';
    ctx.addIssue({ code: 'custom', message });
    return z.NEVER;
  });

/**
 * No lone UTF-16 surrogates (JSON can carry "\ud800"): the UTF-8 written to
 * ClickHouse would turn each into U+FFFD, so distinct ids could become one.
 */
const notWellFormed = (what: string) => `${what} must be well-formed Unicode: it holds a lone surrogate (like \\ud800), which cannot be stored as UTF-8`;

/** A purchase's `amount`: absent, or a finite number ≥ 0 (the contract; a negative one lowered revenue). */
const isValidAmount = (v: unknown): boolean => v === undefined || (typeof v === 'number' && Number.isFinite(v) && v >= 0);

const NON_FINITE_MESSAGE = 'a number must be finite (a JSON number out of the double range, like 1e400, is not allowed)';

const Properties = z.custom<Record<string, unknown>>(isPlainObject, { error: 'properties must be a JSON object' });

const TraitValue = z.union([z.string(), z.number(), z.boolean(), z.null()], {
  error: (iss) => (typeof iss.input === 'number' ? NON_FINITE_MESSAGE : 'a trait value must be a string, number, boolean or null'),
});

const ContextValue = z.string().min(1).max(256).nullable().optional();

export const Context = z.strictObject(
  Object.fromEntries(CONTEXT_KEYS.map((k) => [k, ContextValue])) as Record<(typeof CONTEXT_KEYS)[number], typeof ContextValue>,
  { error: (iss) => (iss.code === 'unrecognized_keys' ? undefined : 'context must be a JSON object') },
);

export const EventSchema = z
  .strictObject(
    {
      type: z.enum(['track', 'identify'], { error: 'type must be "track" or "identify"' }).default('track'),
      event_id: z.string().min(1, 'event_id must not be empty').max(128, 'event_id is longer than 128 characters').refine(isWellFormedText, notWellFormed('event_id')).optional(),
      app_id: z.string().min(1, 'app_id must not be empty').max(128, 'app_id is longer than 128 characters').refine(isWellFormedText, notWellFormed('app_id')).optional(),
      user_id: z
        .string({ error: 'user_id is required (a string)' })
        .min(1, 'user_id must not be empty')
        .max(256, 'user_id is longer than 256 characters')
        .refine(isWellFormedText, notWellFormed('user_id')),
      event: z
        .string({ error: 'event must be a string' })
        .regex(EVENT_NAME_RE, 'event must be 1..128 characters of A-Z a-z 0-9 _ . : - and space')
        .optional(),
      ts: Timestamp,
      properties: Properties.optional(),
      traits: z
        .record(z.string().refine(isWellFormedText), TraitValue, {
          error: (iss) => (iss.code === 'invalid_key' ? notWellFormed('a trait name') : 'traits must be a JSON object'),
        })
        .optional(),
      context: Context.optional(),
    },
    { error: (iss) => (iss.code === 'unrecognized_keys' ? undefined : 'an event must be a JSON object') },
  )
  .superRefine((e, ctx) => {
    if (e.type === 'track') {
      if (e.event === undefined) ctx.addIssue({ code: 'custom', path: ['event'], message: 'event is required for track events' });
      if (e.traits !== undefined) ctx.addIssue({ code: 'custom', path: ['traits'], message: 'traits are only allowed on identify events' });
    } else {
      if (e.event !== undefined) ctx.addIssue({ code: 'custom', path: ['event'], message: 'event is only allowed on track events' });
      if (e.properties !== undefined) ctx.addIssue({ code: 'custom', path: ['properties'], message: 'properties are only allowed on track events (use traits)' });
    }
    if (e.properties !== undefined) {
      // Shape first: JSON.stringify recurses, and a few thousand levels overflow the stack.
      const problem = jsonValueProblem(e.properties);
      if (problem?.kind === 'depth') {
        ctx.addIssue({ code: 'custom', path: ['properties'], message: `properties are nested deeper than ${MAX_NESTING_DEPTH} levels of objects and arrays` });
      } else if (problem) {
        ctx.addIssue({ code: 'custom', path: ['properties', ...problem.path], message: NON_FINITE_MESSAGE });
      } else if (utf8Length(JSON.stringify(e.properties)) > MAX_PROPERTIES_BYTES) {
        ctx.addIssue({ code: 'custom', path: ['properties'], message: `properties exceed ${MAX_PROPERTIES_BYTES} bytes as JSON` });
      }
      if (e.event === 'purchase' && !isValidAmount(e.properties.amount)) {
        ctx.addIssue({ code: 'custom', path: ['properties', 'amount'], message: 'properties.amount of a purchase must be a finite number ≥ 0 (or be left out)' });
      }
    }
  });

/** What a client sends. */
export type EventInput = z.input<typeof EventSchema>;
/** A validated event; `ts` is epoch milliseconds truncated to the second. */
export type ValidEvent = z.output<typeof EventSchema>;

export interface FieldError {
  path: string;
  message: string;
}

export function issuesToErrors(issues: readonly z.core.$ZodIssue[]): FieldError[] {
  const out: FieldError[] = [];
  for (const i of issues) {
    if (i.code === 'unrecognized_keys') {
      for (const k of i.keys) out.push({ path: [...i.path, k].join('.'), message: `unknown field "${k}"` });
    } else {
      out.push({ path: i.path.map(String).join('.'), message: i.message });
    }
  }
  return out;
}

const TOP_LEVEL_KEYS: ReadonlySet<string> = new Set(['type', 'event_id', 'app_id', 'user_id', 'event', 'ts', 'properties', 'traits', 'context']);
const CONTEXT_KEY_SET: ReadonlySet<string> = new Set(CONTEXT_KEYS);

const isBoundedString = (v: unknown, max: number): v is string => typeof v === 'string' && v.length >= 1 && v.length <= max;
const isBoundedId = (v: unknown, max: number): v is string => isBoundedString(v, max) && isWellFormedText(v);

/**
 * The common case of EventSchema without zod: a well-formed event is checked
 * in ~1 µs instead of ~10 (bench/results/ingest.md). It answers only "valid,
 * and here is exactly what EventSchema would output" or `undefined` — "not
 * sure" — for anything unusual or invalid, which then goes to EventSchema, so
 * the zod schema stays the one definition and the only source of error
 * messages. test/ingest/fast-path.test.ts checks on random and adversarial
 * inputs that every value this accepts is accepted by EventSchema with an
 * equal output.
 */
export function fastParseEvent(raw: unknown, nowMs: number = Date.now()): ValidEvent | undefined {
  if (!isPlainObject(raw)) return undefined;
  for (const k in raw) if (!TOP_LEVEL_KEYS.has(k)) return undefined;
  const { type = 'track', event_id, app_id, user_id, event, ts, properties, traits, context } = raw;
  if (type !== 'track' && type !== 'identify') return undefined;
  if (event_id !== undefined && !isBoundedId(event_id, 128)) return undefined;
  if (app_id !== undefined && !isBoundedId(app_id, 128)) return undefined;
  if (!isBoundedId(user_id, 256)) return undefined;
  if (typeof ts !== 'string' && typeof ts !== 'number') return undefined;
  const ms = checkTimestamp(ts, nowMs);
  if (typeof ms !== 'number') return undefined;
  const out: ValidEvent = { type, user_id, ts: ms };
  if (event_id !== undefined) out.event_id = event_id;
  if (app_id !== undefined) out.app_id = app_id;
  if (type === 'track') {
    if (typeof event !== 'string' || !EVENT_NAME_RE.test(event) || traits !== undefined) return undefined;
    out.event = event;
    if (properties !== undefined) {
      if (!isPlainObject(properties) || jsonValueProblem(properties) !== undefined) return undefined;
      if (event === 'purchase' && !isValidAmount(properties.amount)) return undefined;
      // Long texts may be over the byte limit; EventSchema measures them.
      if (JSON.stringify(properties).length > MAX_PROPERTIES_BYTES / 3) return undefined;
      out.properties = properties;
    }
  } else {
    if (event !== undefined || properties !== undefined) return undefined;
    if (traits !== undefined) {
      if (!isPlainObject(traits)) return undefined;
      for (const k in traits) {
        const v = traits[k];
        if (k === '__proto__' || !isWellFormedText(k)) return undefined;
        if (v !== null && typeof v !== 'string' && typeof v !== 'boolean' && !(typeof v === 'number' && Number.isFinite(v))) return undefined;
      }
      // Already exactly what EventSchema would copy out of it.
      out.traits = traits as Record<string, string | number | boolean | null>;
    }
  }
  if (context !== undefined) {
    if (!isPlainObject(context)) return undefined;
    for (const k in context) {
      if (!CONTEXT_KEY_SET.has(k)) return undefined;
      const v = context[k];
      if (v !== null && !isBoundedString(v, 256)) return undefined;
    }
    out.context = context as NonNullable<ValidEvent['context']>;
  }
  return out;
}

export type ParseEventResult = { success: true; data: ValidEvent } | { success: false; errors: FieldError[] };

/** Validates one event against the contract: the fast path when it is sure, EventSchema otherwise. */
export function parseEvent(raw: unknown): ParseEventResult {
  const fast = fastParseEvent(raw);
  if (fast !== undefined) return { success: true, data: fast };
  // The plain object z.record builds would take a trait named __proto__ as its prototype: lost, not stored.
  if (isPlainObject(raw) && isPlainObject(raw.traits) && Object.hasOwn(raw.traits, '__proto__')) {
    return { success: false, errors: [{ path: 'traits.__proto__', message: 'a trait cannot be named __proto__ (JavaScript objects take that name as their prototype)' }] };
  }
  const parsed = EventSchema.safeParse(raw);
  return parsed.success ? { success: true, data: parsed.data } : { success: false, errors: issuesToErrors(parsed.error.issues) };
}
