// A group member whose SyncGroup reaches the broker after the leader's. A real
// broker gives it its assignment; librdkafka's mock cluster (the tests' and the
// local default's broker) answers INVALID_REQUEST, fatal to kafkajs, so a
// worker restarting on a busy machine never consumed (lib/kafka.ts,
// leaderWaitsForFollowers). Here the second consumer's SyncGroup requests are
// held back at its socket, deterministically.
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { kafkaBrokers, testDatabase, uniqueName } from '../support/env.ts';
import { countEvents, newConsumer, produceRaw, testKafka, trackEvent, waitFor } from './support.ts';

const SYNC_GROUP = 14; // Kafka API key

/** A client whose SyncGroup requests leave its sockets `delayMs` late. */
function lateSyncKafka(delayMs: number): Kafka {
  return new Kafka({
    clientId: uniqueName('late-follower'),
    brokers: kafkaBrokers(),
    logLevel: logLevel.NOTHING,
    socketFactory: ({ host, port, onConnect }) => {
      const socket: Socket = connect({ host, port }, onConnect);
      const write = socket.write.bind(socket) as (data: Buffer) => boolean;
      // A request frame: int32 size, then int16 api key.
      socket.write = ((data: Buffer) => {
        if (Buffer.isBuffer(data) && data.length >= 6 && data.readInt16BE(4) === SYNC_GROUP) {
          setTimeout(() => write(data), delayMs);
          return true;
        }
        return write(data);
      }) as typeof socket.write;
      return socket;
    },
  });
}

let ch: ClickHouse;
beforeAll(async () => {
  ch = await testDatabase('late_follower');
});

describe('ingest consumer group', () => {
  it('gives a member that asks for its assignment after the leader its partitions', async () => {
    const topic = uniqueName('late_follower');
    const app = 'late_follower';
    const kafka = testKafka();
    const leader = newConsumer(kafka, ch, topic);
    const follower = newConsumer(lateSyncKafka(300), ch, topic);
    try {
      await leader.start();
      await produceRaw(kafka, topic, Array.from({ length: 400 }, (_, i) => ({ value: JSON.stringify({ ...trackEvent(i), app_id: app }) })));
      expect(await waitFor(async () => (await countEvents(ch, app)).rows === 400, 30_000)).toBe(true);
      await follower.start();
      // The rebalance: the follower's SyncGroup arrives 300 ms after its JoinGroup answer.
      const crash = await Promise.race([follower.crashed, sleep(12_000).then(() => undefined)]);
      expect(crash?.message).toBeUndefined();
      await produceRaw(kafka, topic, Array.from({ length: 400 }, (_, i) => ({ value: JSON.stringify({ ...trackEvent(400 + i), app_id: app }) })));
      expect(await waitFor(async () => (await countEvents(ch, app)).rows === 800, 30_000)).toBe(true);
      expect(await countEvents(ch, app)).toEqual({ rows: 800, ids: 800 });
    } finally {
      await follower.stop();
      await leader.stop();
    }
  });
});
