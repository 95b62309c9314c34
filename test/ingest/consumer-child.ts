// A consumer in its own process, for tests that SIGKILL or SIGTERM it.
// Configured by env: CH_URL, CH_DB, BROKERS, TOPIC, GROUP, BATCH, BATCH_MS.
import { ClickHouse } from '../../lib/clickhouse.ts';
import { createKafka } from '../../lib/kafka.ts';
import { IngestConsumer } from '../../ingest/consumer.ts';

const env = (k: string): string => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const ch = new ClickHouse({ url: env('CH_URL'), database: env('CH_DB') });
const consumer = new IngestConsumer({
  kafka: createKafka(env('BROKERS').split(','), `child-${process.pid}`),
  ch,
  topic: env('TOPIC'),
  dlqTopic: `${env('TOPIC')}.dlq`,
  groupId: env('GROUP'),
  batchMaxEvents: Number(env('BATCH')),
  batchMaxMs: Number(env('BATCH_MS')),
  sessionTimeoutMs: 6000,
  rebalanceTimeoutMs: 6000,
  heartbeatIntervalMs: 300,
});
process.once('SIGTERM', () => {
  void consumer.stop().then(
    () => ch.close().then(() => process.exit(0)),
    () => process.exit(1),
  );
});
await consumer.start();
