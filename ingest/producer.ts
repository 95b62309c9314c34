// Producing events to Kafka: keyed by app and user so one user's events —
// including redeliveries of the same event — land in one partition and so are
// deduplicated by one consumer at a time.
import type { Kafka, Producer } from 'kafkajs';
import { createProducer } from '../lib/kafka.ts';

export interface EventMessage {
  key: string;
  value: string;
}

export interface EventProducer {
  readonly topic: string;
  /** Resolves once every message is acknowledged by all in-sync replicas (acks -1). */
  send(messages: readonly EventMessage[]): Promise<void>;
  close(): Promise<void>;
}

/** The partitioning key of an event. */
export function eventKey(appId: string, userId: string): string {
  return appId + '\u0000' + userId;
}

/** Bytes per produce request; a real broker refuses record batches over message.max.bytes (1 MB by default). */
const MAX_REQUEST_BYTES = 512 * 1024;

export function createEventProducer(kafka: Kafka, topic: string): EventProducer {
  const producer: Producer = createProducer(kafka);
  let connected: Promise<void> | undefined;
  const connect = () => {
    connected ??= producer.connect().catch((err: unknown) => {
      connected = undefined;
      throw err;
    });
    return connected;
  };
  return {
    topic,
    async send(messages) {
      if (messages.length === 0) return;
      await connect();
      let start = 0;
      let bytes = 0;
      for (let i = 0; i < messages.length; i++) {
        const m = messages[i] as EventMessage;
        const size = Buffer.byteLength(m.key) + Buffer.byteLength(m.value) + 64;
        if (bytes + size > MAX_REQUEST_BYTES && i > start) {
          await producer.send({ topic, acks: -1, messages: messages.slice(start, i) as EventMessage[] });
          start = i;
          bytes = 0;
        }
        bytes += size;
      }
      await producer.send({ topic, acks: -1, messages: messages.slice(start) as EventMessage[] });
    },
    async close() {
      if (connected) await producer.disconnect();
      connected = undefined;
    },
  };
}
