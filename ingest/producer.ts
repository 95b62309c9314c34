// Producing events to Kafka: keyed by app and user so one user's events —
// including redeliveries of the same event — land in one partition and so are
// deduplicated by one consumer at a time.
import type { Kafka, Producer } from 'kafkajs';
import { createProducer, sendChunked } from '../lib/kafka.ts';

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
      await sendChunked(producer, topic, messages);
    },
    async close() {
      if (connected) await producer.disconnect();
      connected = undefined;
    },
  };
}
