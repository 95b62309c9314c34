// POST /v1/events: validate with the event schema, answer per item, and
// produce the accepted events to Kafka (acks from all in-sync replicas) before
// answering 202. The Hono route is a thin adapter over `acceptEvents`.
//
// Status codes:
// - 202: at least one event accepted (rejected items are listed with reasons).
// - 400: nothing accepted — the body is not JSON, not an event or {"batch":[…]},
//   the batch is empty, or every event is invalid. A batch of which nothing is
//   valid is a client error, not a partial success: retrying it unchanged is
//   pointless, and a 4xx makes that visible to clients that only look at status.
// - 413: more than MAX_BATCH_EVENTS events, or a raw body over MAX_BODY_BYTES.
// If producing fails the promise rejects (the route answers 503): some events
// may have been produced, which is harmless — a retry carries the same event_ids
// (explicit or derived) and the consumer stores each once.
import type { FieldError } from './event-schema.ts';
import { normalizeEvent } from './normalize.ts';
import { eventKey, type EventMessage, type EventProducer } from './producer.ts';
import { ingestMetrics } from './stats.ts';

/** Strict, as on Kafka: bytes that are not UTF-8 are refused, not replaced by U+FFFD. */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export const MAX_BATCH_EVENTS = 10_000;
/** Raw body limit: 10,000 typical events fit many times over; a 16 KiB-properties batch must be split. */
export const MAX_BODY_BYTES = 16 * 1024 * 1024;

export interface AcceptResult {
  status: 202 | 400 | 413;
  accepted: number;
  rejected: { index: number; errors: FieldError[] }[];
  /** Problems with the body as a whole (not JSON, batch too large, …); absent when items were examined. */
  errors?: FieldError[];
}

function bodyError(status: 400 | 413, path: string, message: string): AcceptResult {
  return { status, accepted: 0, rejected: [], errors: [{ path, message }] };
}

/**
 * Accepts one event or {"batch":[…]} for the app of the API key. `body` is the
 * parsed JSON, or the raw body (string or bytes) — then the size limit and JSON
 * parsing are checked here too.
 */
export async function acceptEvents(producer: EventProducer, appId: string, body: unknown): Promise<AcceptResult> {
  if (typeof body === 'string' || body instanceof Uint8Array) {
    const size = typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
    if (size > MAX_BODY_BYTES) return bodyError(413, '', `request body exceeds ${MAX_BODY_BYTES} bytes; split the batch`);
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
  if (typeof body === 'object' && body !== null && !Array.isArray(body) && 'batch' in body) {
    const extra = Object.keys(body).filter((k) => k !== 'batch');
    if (extra.length > 0) return bodyError(400, extra[0] as string, `unknown field "${extra[0]}" next to "batch"`);
    const batch = (body as { batch: unknown }).batch;
    if (!Array.isArray(batch)) return bodyError(400, 'batch', 'batch must be an array of events');
    if (batch.length === 0) return bodyError(400, 'batch', 'batch must hold at least one event');
    if (batch.length > MAX_BATCH_EVENTS) {
      return bodyError(413, 'batch', `batch holds ${batch.length} events; at most ${MAX_BATCH_EVENTS} per request`);
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
  if (messages.length === 0) return { status: 400, accepted: 0, rejected };
  await producer.send(messages);
  ingestMetrics.httpAccepted.inc({}, messages.length);
  return { status: 202, accepted: messages.length, rejected };
}
