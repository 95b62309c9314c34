// Raw event → a row of the `events` table. Pure: no I/O, the clock is read only
// for the "24 h in the future" rule and received_at. The demo generator's
// ClickHouse sink calls `toEventRow` on already-valid events, so it stays cheap.
import { hash } from 'node:crypto';
import { type FieldError, parseEvent, type ValidEvent, CONTEXT_KEYS } from './event-schema.ts';

/** One row of the `events` table (sql/migrations/001_events.sql); DateTimes as epoch seconds. */
export interface EventRow {
  app_id: string;
  user_id: string;
  ts: number;
  event_id: string;
  type: 'track' | 'identify';
  event: string;
  prop_keys: string[];
  prop_strings: string[];
  prop_numbers: number[];
  properties: string;
  trait_keys: string[];
  trait_values: string[];
  trait_types: number[];
  context: string;
  received_at: number;
}

export const TRAIT_NULL = 0;
export const TRAIT_STRING = 1;
export const TRAIT_NUMBER = 2;
export const TRAIT_BOOLEAN = 3;

export type NormalizeResult = { row: EventRow; errors?: undefined } | { row?: undefined; errors: FieldError[] };

/**
 * Validates and normalises one event. `appId` is the app of the HTTP API key:
 * when given, a body app_id must match it; when absent (Kafka), the event must carry app_id.
 */
export function normalizeEvent(raw: unknown, appId?: string, receivedAt: number = Math.floor(Date.now() / 1000)): NormalizeResult {
  const parsed = parseEvent(raw);
  if (!parsed.success) return { errors: parsed.errors };
  const e = parsed.data;
  let app: string;
  if (appId !== undefined) {
    if (e.app_id !== undefined && e.app_id !== appId) {
      return { errors: [{ path: 'app_id', message: "app_id does not match the API key's app" }] };
    }
    app = appId;
  } else {
    if (e.app_id === undefined) return { errors: [{ path: 'app_id', message: 'app_id is required in Kafka messages' }] };
    app = e.app_id;
  }
  return { row: toEventRow(e, app, receivedAt) };
}

/** A validated event → its row. */
export function toEventRow(e: ValidEvent, appId: string, receivedAt: number = Math.floor(Date.now() / 1000)): EventRow {
  const ts = Math.floor(e.ts / 1000);
  const prop_keys: string[] = [];
  const prop_strings: string[] = [];
  const prop_numbers: number[] = [];
  let properties = '{}';
  if (e.properties !== undefined) {
    properties = JSON.stringify(e.properties);
    for (const k in e.properties) {
      const v = e.properties[k];
      if (typeof v === 'string') {
        prop_keys.push(k);
        prop_strings.push(v);
        prop_numbers.push(NaN);
      } else if (typeof v === 'number') {
        prop_keys.push(k);
        prop_strings.push(String(v));
        prop_numbers.push(v);
      } else if (typeof v === 'boolean') {
        prop_keys.push(k);
        prop_strings.push(v ? 'true' : 'false');
        prop_numbers.push(NaN);
      }
    }
  }

  // Context first, identify traits override: one value per key per event, so
  // argMax by (ts, event_id) never has to break a tie inside one event.
  const trait_keys: string[] = [];
  const trait_values: string[] = [];
  const trait_types: number[] = [];
  let context = '{}';
  if (e.context !== undefined) {
    // Written in CONTEXT_KEYS order, so the stored text does not depend on the sender's key order.
    context = '{';
    for (const k of CONTEXT_KEYS) {
      const v = e.context[k];
      if (v === undefined) continue;
      context += (context.length > 1 ? ',"' : '"') + k + '":' + JSON.stringify(v);
      if (typeof v === 'string') setTrait(trait_keys, trait_values, trait_types, k, v, false);
    }
    context += '}';
  }
  if (e.traits !== undefined) {
    const contextSet = trait_keys.length > 0;
    for (const k in e.traits) setTrait(trait_keys, trait_values, trait_types, k, e.traits[k] as string | number | boolean | null, contextSet && CONTEXT_KEY_SET.has(k));
  }

  return {
    app_id: appId,
    user_id: e.user_id,
    ts,
    event_id: e.event_id ?? deriveEventId(appId, e.user_id, e.type, e.event ?? '', ts, e.properties, e.traits),
    type: e.type,
    event: e.event ?? '',
    prop_keys,
    prop_strings,
    prop_numbers,
    properties,
    trait_keys,
    trait_values,
    trait_types,
    context,
    received_at: receivedAt,
  };
}

const CONTEXT_KEY_SET: ReadonlySet<string> = new Set(CONTEXT_KEYS);

/** Sets trait `k` of one event's trait arrays; `mayExist` when a context value of that name may already be there. */
function setTrait(keys: string[], values: string[], types: number[], k: string, v: string | number | boolean | null, mayExist: boolean): void {
  let i = mayExist ? keys.indexOf(k) : -1;
  if (i < 0) {
    i = keys.length;
    keys.push(k);
  }
  if (v === null) {
    values[i] = '';
    types[i] = TRAIT_NULL;
  } else if (typeof v === 'string') {
    values[i] = v;
    types[i] = TRAIT_STRING;
  } else if (typeof v === 'number') {
    values[i] = String(v);
    types[i] = TRAIT_NUMBER;
  } else {
    values[i] = v ? 'true' : 'false';
    types[i] = TRAIT_BOOLEAN;
  }
}

/** JSON with object keys sorted at every depth, so equal values give equal text. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return '[' + v.map(canonicalJson).join(',') + ']';
  const obj = v as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  let out = '{';
  let first = true;
  for (const k of keys) {
    const x = obj[k];
    if (x === undefined) continue;
    out += (first ? '' : ',') + JSON.stringify(k) + ':' + canonicalJson(x);
    first = false;
  }
  return out + '}';
}

/**
 * The id of an event sent without one: a hash of everything that identifies
 * it, so an exact redelivery maps to the same id ("d:" + 128 bits of sha256 in
 * hex; the prefix only tells a reader the id was derived).
 */
export function deriveEventId(
  appId: string,
  userId: string,
  type: string,
  event: string,
  tsSeconds: number,
  properties: Record<string, unknown> | undefined,
  traits: Record<string, unknown> | undefined,
): string {
  const text = canonicalJson([appId, userId, type, event, tsSeconds, properties ?? {}, traits ?? {}]);
  // crypto.hash (one-shot) costs a third of createHash() per call; this runs per event.
  return 'd:' + hash('sha256', text, 'hex').slice(0, 32);
}
