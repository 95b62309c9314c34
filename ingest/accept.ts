// POST /v1/events: validate with the event schema, answer per item, and
// produce the accepted events to Kafka (acks from all in-sync replicas) before
// answering 202. The Hono route is a thin adapter over `acceptEvents`.
//
// Status codes:
// - 202: a batch (`{"batch":[…]}`) whose items were examined, with the index and
//   reasons of every rejected item — also when no item is valid (`accepted: 0`):
//   the contract answers a batch per item, so a client learns which items to fix
//   and which were taken in the same shape whatever the mix. A single event is
//   202 when it is accepted.
// - 400: nothing to examine item by item, or a lone event that is invalid — the
//   body is not JSON, not an event or {"batch":[…]}, the batch is empty or holds
//   more than MAX_BATCH_EVENTS events, or the one event sent is invalid. (A
//   single invalid event keeps the 400 that every all-rejected request answered
//   before: retrying it unchanged is pointless, and a 4xx makes that visible to
//   clients that only look at the status.)
// - 413: only a raw body over MAX_BODY_BYTES (the byte cap), never a valid batch
//   written compactly (as JSON.stringify writes it; indentation or \uXXXX escapes
//   of every character can take a maximal batch past it).
// Nothing is produced when nothing is accepted, so such answers need no Kafka.
// If producing fails the promise rejects (the route answers 503): some events
// may have been produced, which is harmless — a retry carries the same event_ids
// (explicit or derived) and the consumer stores each once.
import { CONTEXT_KEYS, type FieldError, MAX_PROPERTIES_BYTES } from './event-schema.ts';
import { normalizeEvent } from './normalize.ts';
import { eventKey, type EventMessage, type EventProducer } from './producer.ts';
import { ingestMetrics } from './stats.ts';

/** Strict, as on Kafka: bytes that are not UTF-8 are refused, not replaced by U+FFFD. */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export const MAX_BATCH_EVENTS = 10_000;

/**
 * The most bytes one valid event takes as JSON, written as JSON.stringify writes
 * it (no whitespace between tokens; the encoding in which the contract's 16 KiB
 * of properties is measured). Every string field is bounded by the contract or
 * the schema, counted at 6 bytes a UTF-16 unit — the longest a JSON encoder
 * writes one (a control character as \u001f; other characters take at most 3
 * bytes raw, or 6 escaped as \uXXXX) — plus its quotes, name, colon and comma:
 * user_id ≤ 256, event_id and app_id ≤ 128, event ≤ 128, type, the five context
 * keys ≤ 256 each, ts (an epoch number or an ISO instant; 64 bytes take any
 * realistic one) and properties ≤ 16 KiB. `traits` (identify events only, which
 * carry no properties) have no limit of their own; they get the properties'
 * budget. That is about 28 KB an event, most of it the properties.
 */
const jsonString = (units: number) => 2 + 6 * units;
const member = (name: string, valueBytes: number) => name.length + 4 + valueBytes; // "name":value,
export const MAX_EVENT_JSON_BYTES =
  2 +
  member('type', jsonString('identify'.length)) +
  member('event_id', jsonString(128)) +
  member('app_id', jsonString(128)) +
  member('user_id', jsonString(256)) +
  member('event', jsonString(128)) +
  member('ts', 64) +
  member('context', 2 + CONTEXT_KEYS.reduce((n, k) => n + member(k, jsonString(256)), 0)) +
  member('properties', MAX_PROPERTIES_BYTES);

/**
 * Raw body limit: any valid batch written compactly — MAX_BATCH_EVENTS events
 * of MAX_EVENT_JSON_BYTES each, their commas and `{"batch":[]}` — fits (about
 * 270 MiB).
 * The body is still bounded: it is read up to this many bytes and no further
 * (a larger Content-Length is refused before reading), so one request never
 * buffers more text than this (its parsed form costs several times that; the
 * API's large-body budget bounds how many such requests are held at once).
 */
export const MAX_BODY_BYTES = MAX_BATCH_EVENTS * (MAX_EVENT_JSON_BYTES + 1) + '{"batch":[]}'.length;

export interface AcceptResult {
  status: 202 | 400 | 413;
  /** A {"batch":[…]} body (answered per item), rather than one event. */
  batch: boolean;
  accepted: number;
  rejected: { index: number; errors: FieldError[] }[];
  /** Problems with the body as a whole (not JSON, batch too large, …); absent when items were examined. */
  errors?: FieldError[];
}

function bodyError(status: 400 | 413, path: string, message: string): AcceptResult {
  return { status, batch: false, accepted: 0, rejected: [], errors: [{ path, message }] };
}

/**
 * Accepts one event or {"batch":[…]} for the app of the API key. `body` is the
 * parsed JSON, or the raw body (string or bytes) — then the size limit and JSON
 * parsing are checked here too.
 */
export async function acceptEvents(producer: EventProducer, appId: string, body: unknown): Promise<AcceptResult> {
  if (typeof body === 'string' || body instanceof Uint8Array) {
    const size = typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
    if (size > MAX_BODY_BYTES) return bodyError(413, '', `request body exceeds ${MAX_BODY_BYTES} bytes, more than any valid batch of ${MAX_BATCH_EVENTS} events takes`);
    let text: string;
    try {
      text = typeof body === 'string' ? body : UTF8.decode(body);
    } catch {
      return bodyError(400, '', 'request body is not valid UTF-8');
    }
    try {
      body = JSON.parse(text);
    } catch {
      return bodyError(400, '', 'request body is not valid JSON');
    }
  }

  let items: unknown[];
  // Own keys only: JSON.parse makes "__proto__" an own key, never a prototype to look through.
  const batched = typeof body === 'object' && body !== null && !Array.isArray(body) && Object.hasOwn(body, 'batch');
  if (batched) {
    const extra = Object.keys(body as object).filter((k) => k !== 'batch');
    if (extra.length > 0) return bodyError(400, extra[0] as string, `unknown field "${extra[0]}" next to "batch"`);
    const batch = (body as { batch: unknown }).batch;
    if (!Array.isArray(batch)) return bodyError(400, 'batch', 'batch must be an array of events');
    if (batch.length === 0) return bodyError(400, 'batch', 'batch must hold at least one event');
    // Invalid input like any other (400); 413 is only for a body over the byte cap.
    if (batch.length > MAX_BATCH_EVENTS) {
      return bodyError(400, 'batch', `batch holds ${batch.length} events; at most ${MAX_BATCH_EVENTS} per request`);
    }
    items = batch;
  } else {
    items = [body];
  }

  const receivedAt = Math.floor(Date.now() / 1000);
  const messages: EventMessage[] = [];
  const rejected: AcceptResult['rejected'] = [];
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    // One item's unforeseen exception is that item's rejection, never the batch's 500.
    let message: EventMessage;
    try {
      const r = normalizeEvent(item, appId, receivedAt);
      if (r.errors) {
        rejected.push({ index: i, errors: r.errors });
        continue;
      }
      // The original event travels, with the key's app stamped in: the consumer
      // validates and normalises it exactly as it does any Kafka message, and
      // derives the same event_id.
      message = {
        key: eventKey(appId, r.row.user_id),
        value: JSON.stringify({ ...(item as Record<string, unknown>), app_id: appId }),
      };
    } catch (err) {
      const text = err instanceof Error ? `${err.name}: ${err.message}` : 'unknown error';
      rejected.push({ index: i, errors: [{ path: '', message: `internal error while validating this event: ${text.slice(0, 500)}` }] });
      continue;
    }
    messages.push(message);
  }
  ingestMetrics.httpRejected.inc({}, rejected.length);
  if (messages.length === 0) return { status: batched ? 202 : 400, batch: batched, accepted: 0, rejected };
  await producer.send(messages);
  ingestMetrics.httpAccepted.inc({}, messages.length);
  return { status: 202, batch: batched, accepted: messages.length, rejected };
}
