// The Kafka adapter: one place that builds kafkajs clients from the config and
// routes kafkajs's own logs into our structured log.
import { Kafka, logLevel, Partitioners, type Producer } from 'kafkajs';
import type { Config } from './config.ts';
import { log } from './log.ts';

const LEVELS: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

export function createKafka(brokers: string[], clientId = 'warbler'): Kafka {
  if (brokers.length === 0) {
    throw new Error('no Kafka brokers configured: run `warbler up` or set WARBLER_KAFKA_BROKERS=host:port,…');
  }
  return new Kafka({
    clientId,
    brokers,
    // kafkajs logs rebalances and retries at INFO/WARN; keep WARN and above.
    logLevel: logLevel.WARN,
    logCreator:
      () =>
      ({ level, log: entry }) => {
        const { message, ...rest } = entry;
        log[LEVELS[level] ?? 'info'](`kafka: ${message}`, { component: 'kafkajs', ...rest });
      },
    retry: { retries: 8, initialRetryTime: 200 },
  });
}

export function kafkaFromConfig(cfg: Config, clientId?: string): Kafka {
  return createKafka(cfg.kafkaBrokers, clientId);
}

/** A producer that waits for all in-sync replicas and never reorders a partition's messages. */
export function createProducer(kafka: Kafka): Producer {
  return kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    idempotent: false,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: true,
  });
}
