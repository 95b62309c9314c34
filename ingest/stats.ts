// Ingest observability: the metrics every ingest path records (rendered by
// GET /metrics from lib/metrics.ts's registry) and the durable counters behind
// GET /v1/stats.
import type { ClickHouse } from '../lib/clickhouse.ts';
import { metrics } from '../lib/metrics.ts';
import { sql } from '../lib/sql.ts';

export const ingestMetrics = {
  consumed: metrics.counter('warbler_ingest_consumed_total', 'Kafka messages the ingest consumer decoded'),
  stored: metrics.counter('warbler_ingest_stored_total', 'events inserted into ClickHouse'),
  deduplicated: metrics.counter('warbler_ingest_deduplicated_total', 'events dropped as already stored (source="stored") or repeated in one batch (source="batch")'),
  rerouted: metrics.counter('warbler_ingest_rerouted_total', 'valid messages on a partition their app and user do not lead to, produced again with their key'),
  deadLettered: metrics.counter('warbler_ingest_dead_lettered_total', 'invalid messages sent to the dead-letter topic, by reason'),
  batchEvents: metrics.histogram('warbler_ingest_batch_events', 'messages per flushed batch', [100, 1000, 5000, 10_000, 20_000, 50_000, 100_000]),
  batchSeconds: metrics.histogram('warbler_ingest_batch_seconds', 'time to store a batch: dedup lookup, insert, dead letters, commit'),
  batchAgeSeconds: metrics.histogram('warbler_ingest_batch_age_seconds', 'time from the first message of a batch to its commit'),
  lag: metrics.gauge('warbler_ingest_consumer_lag', 'messages between the last consumed offset and the high watermark, per partition'),
  repaired: metrics.counter('warbler_ingest_repaired_total', 'stored events re-derived into the views\' tables after an insert that failed part-way (ingest/repair.ts)'),
  storeErrors: metrics.counter('warbler_ingest_store_errors_total', 'failed attempts to store a batch (retried with backoff)'),
  paused: metrics.gauge('warbler_ingest_paused', '1 while the consumer has paused its partitions because storing fails'),
  httpAccepted: metrics.counter('warbler_ingest_http_accepted_total', 'events accepted by POST /v1/events'),
  httpRejected: metrics.counter('warbler_ingest_http_rejected_total', 'events rejected by POST /v1/events'),
};

export interface IngestStats {
  /** Dead-lettered messages, durable (all consumer processes, all time). */
  dead_lettered: number;
  dead_lettered_by_reason: Record<string, number>;
  /** This process's counters since start. */
  process: { consumed: number; stored: number; deduplicated: number; http_accepted: number; http_rejected: number };
}

/** Ingest counters for GET /v1/stats. With appId, the durable dead-letter counts are those of that app. */
export async function ingestStats(ch: ClickHouse, appId?: string): Promise<IngestStats> {
  const where = appId === undefined ? sql`1` : sql`app_id = ${appId}`;
  const rows = await ch.rows<{ reason: string; n: string | number }>(
    sql`SELECT reason, sum(count) AS n FROM ingest_dlq_counts WHERE ${where} GROUP BY reason ORDER BY reason`,
  );
  const byReason: Record<string, number> = {};
  let total = 0;
  for (const r of rows) {
    byReason[r.reason] = Number(r.n);
    total += Number(r.n);
  }
  return {
    dead_lettered: total,
    dead_lettered_by_reason: byReason,
    process: {
      consumed: ingestMetrics.consumed.get(),
      stored: ingestMetrics.stored.get(),
      deduplicated: ingestMetrics.deduplicated.get({ source: 'stored' }) + ingestMetrics.deduplicated.get({ source: 'batch' }),
      http_accepted: ingestMetrics.httpAccepted.get(),
      http_rejected: ingestMetrics.httpRejected.get(),
    },
  };
}
