// Dead letters: a Kafka message that is not valid JSON or breaks the event
// contract goes to the dead-letter topic with its original key, bytes and
// headers, plus headers saying why and where it came from. The stream goes on.
import type { IHeaders, Producer } from 'kafkajs';
import type { ClickHouse } from '../lib/clickhouse.ts';
import { sendChunked } from '../lib/kafka.ts';
import type { FieldError } from './event-schema.ts';
import { ingestMetrics } from './stats.ts';

export const DLQ_HEADERS = {
  reason: 'warbler-dlq-reason',
  errors: 'warbler-dlq-errors',
  topic: 'warbler-source-topic',
  partition: 'warbler-source-partition',
  offset: 'warbler-source-offset',
  failedAt: 'warbler-dlq-at',
} as const;

export interface DeadLetter {
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: IHeaders | undefined;
  /** app_id when the message was JSON carrying a string one, else ''. */
  appId: string;
  reason: string;
  errors: FieldError[];
}

/**
 * A short, bounded reason code for metrics and counts: `invalid_json`,
 * `not_an_object`, `unknown_field`, or `invalid_<top-level field>`. (The
 * consumer adds `internal_error`: validating the message threw, see decodeMessage.)
 */
export function reasonOf(errors: readonly FieldError[]): string {
  const first = errors[0];
  if (!first || first.path === '') return 'not_an_object';
  if (first.message.startsWith('unknown field')) return 'unknown_field';
  const root = first.path.split('.')[0] as string;
  return /^[a-z_]{1,32}$/.test(root) ? `invalid_${root}` : 'invalid_event';
}

export function deadLetterHeaders(d: DeadLetter, now = new Date()): IHeaders {
  return {
    ...(d.headers ?? {}),
    [DLQ_HEADERS.reason]: d.reason,
    [DLQ_HEADERS.errors]: JSON.stringify(d.errors),
    [DLQ_HEADERS.topic]: d.topic,
    [DLQ_HEADERS.partition]: String(d.partition),
    [DLQ_HEADERS.offset]: d.offset,
    [DLQ_HEADERS.failedAt]: now.toISOString(),
  };
}

/** Produces dead letters with acks from all in-sync replicas; resolves once all are acknowledged. */
export async function sendDeadLetters(producer: Producer, dlqTopic: string, letters: readonly DeadLetter[]): Promise<void> {
  if (letters.length === 0) return;
  const now = new Date();
  await sendChunked(producer, dlqTopic, letters.map((d) => ({ key: d.key, value: d.value, headers: deadLetterHeaders(d, now) })));
}

/** Adds a batch's dead letters to the durable per-reason counts and the metrics. */
export async function recordDeadLetterCounts(ch: ClickHouse, letters: readonly DeadLetter[], now = new Date()): Promise<void> {
  if (letters.length === 0) return;
  const counts = new Map<string, { app_id: string; reason: string; count: number }>();
  for (const d of letters) {
    const k = d.appId + '\u0000' + d.reason;
    const c = counts.get(k);
    if (c) c.count++;
    else counts.set(k, { app_id: d.appId, reason: d.reason, count: 1 });
  }
  const day = now.toISOString().slice(0, 10);
  await ch.insert(
    'ingest_dlq_counts',
    [...counts.values()].map((c) => ({ day, ...c })),
  );
  for (const c of counts.values()) ingestMetrics.deadLettered.inc({ reason: c.reason }, c.count);
}
