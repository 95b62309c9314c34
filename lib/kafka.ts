// The Kafka adapter: one place that builds kafkajs clients from the config and
// routes kafkajs's own logs into our structured log.
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel, PartitionAssigners, Partitioners, type Message, type PartitionAssigner, type Producer } from 'kafkajs';
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

/**
 * kafkajs's round-robin assigner, whose leader waits `delayMs` before handing
 * out the assignment when the group has other members. librdkafka's mock
 * cluster (2.0.2, the local default and the tests' broker) marks the group
 * stable as soon as the leader's SyncGroup arrives, and answers a follower's
 * later SyncGroup with INVALID_REQUEST, which kafkajs treats as fatal: a
 * worker that restarted (cold, on a busy machine) lost that race on every
 * rejoin and never consumed its partitions (test/ingest/cli.test.ts, twice in
 * CI). A real broker returns the assignment to a late follower; there the wait
 * only adds `delayMs` to a rebalance.
 */
/** Bytes per produce request: a real broker refuses record batches over message.max.bytes (1 MB by default). */
export const MAX_PRODUCE_BYTES = 512 * 1024;

const bytesOf = (v: Message['key'] | Message['value']) => (v == null ? 0 : typeof v === 'string' ? Buffer.byteLength(v) : v.length);

/** Produces `messages` to `topic` (acks from every in-sync replica) in requests of at most MAX_PRODUCE_BYTES, in order. */
export async function sendChunked(producer: Producer, topic: string, messages: readonly Message[]): Promise<void> {
  let start = 0;
  let bytes = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    let size = bytesOf(m.key) + bytesOf(m.value) + 64;
    for (const [k, v] of Object.entries(m.headers ?? {})) size += Buffer.byteLength(k) + (Array.isArray(v) ? v.reduce((n, x) => n + bytesOf(x), 0) : bytesOf(v as string | Buffer | undefined)) + 8;
    if (bytes + size > MAX_PRODUCE_BYTES && i > start) {
      await producer.send({ topic, acks: -1, messages: messages.slice(start, i) });
      start = i;
      bytes = 0;
    }
    bytes += size;
  }
  if (start < messages.length) await producer.send({ topic, acks: -1, messages: messages.slice(start) });
}

export function leaderWaitsForFollowers(delayMs: number): PartitionAssigner {
  return (config) => {
    const roundRobin = PartitionAssigners.roundRobin(config);
    return {
      ...roundRobin,
      async assign(group) {
        if (group.members.length > 1) await sleep(delayMs);
        return roundRobin.assign(group);
      },
    };
  };
}
