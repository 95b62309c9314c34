// segments/snapshots.ts over real ClickHouse and Kafka: materialisation inside
// ClickHouse, exact entered/exited, and one Kafka message per change.
import { beforeAll, describe, expect, it } from 'vitest';
import type { Producer } from 'kafkajs';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { createKafka, createProducer } from '../../lib/kafka.ts';
import { sql } from '../../lib/sql.ts';
import { createSnapshot, getSnapshot, snapshotMembersPage } from '../../segments/snapshots.ts';
import { kafkaBrokers, testDatabase, uniqueName } from '../support/env.ts';
import { consumeAll } from './harness.ts';

let ch: ClickHouse;
let producer: Producer;
const kafka = () => createKafka(kafkaBrokers(), uniqueName('snap-core'));

beforeAll(async () => {
  ch = await testDatabase('snapcore');
  await ch.exec(sql`CREATE TABLE numbers_users (app_id String, user_id String, v UInt32) ENGINE = MergeTree ORDER BY (app_id, user_id)`);
  await ch.exec(sql`INSERT INTO numbers_users SELECT 'a', concat('u', substring(toString(100000 + number), 2)), toUInt32(number) FROM system.numbers LIMIT 1000`);
  producer = createProducer(kafka());
  await producer.connect();
  return async () => producer.disconnect();
});

const members = (lo: number, hi: number) => sql`SELECT user_id FROM numbers_users WHERE app_id = 'a' AND v >= ${lo} AND v < ${hi}`;

describe('segment snapshots', () => {
  it('diffs against the previous snapshot and publishes each change once', async () => {
    const topic = uniqueName('membership');
    const asOf1 = new Date('2026-11-20T12:00:00Z');
    const s1 = await createSnapshot(ch, producer, { appId: 'a', segmentId: 'seg1', asOf: asOf1, members: members(0, 100), topic, batchSize: 37 });
    expect(s1).toMatchObject({ count: 100, entered: 100, exited: 0, previous_snapshot_id: null });
    const s2 = await createSnapshot(ch, producer, { appId: 'a', segmentId: 'seg1', asOf: new Date('2026-11-21T12:00:00Z'), members: members(60, 190), topic });
    expect(s2).toMatchObject({ count: 130, entered: 90, exited: 60, previous_snapshot_id: s1.snapshot_id });
    // Another segment of the same app, and the same id in another app, are separate histories.
    const other = await createSnapshot(ch, producer, { appId: 'b', segmentId: 'seg1', asOf: asOf1, members: sql`SELECT user_id FROM numbers_users WHERE 0`, topic });
    expect(other).toMatchObject({ count: 0, entered: 0, exited: 0, previous_snapshot_id: null });

    const msgs = await consumeAll(kafka(), topic, 250);
    expect(msgs).toHaveLength(250);
    const byKey = (snap: string, change: string) =>
      msgs
        .map((m) => m.value as Record<string, string>)
        .filter((v) => v.snapshot_id === snap && v.change === change)
        .map((v) => v.user_id)
        .sort();
    const ids = (lo: number, hi: number) => Array.from({ length: hi - lo }, (_, i) => `u${String(lo + i).padStart(5, '0')}`);
    expect(byKey(s1.snapshot_id, 'entered')).toEqual(ids(0, 100));
    expect(byKey(s2.snapshot_id, 'entered')).toEqual(ids(100, 190));
    expect(byKey(s2.snapshot_id, 'exited')).toEqual(ids(0, 60));
    for (const m of msgs) {
      const v = m.value as Record<string, string>;
      expect(Object.keys(v).sort()).toEqual(['app_id', 'as_of', 'change', 'segment_id', 'snapshot_id', 'user_id']);
      expect(v.app_id).toBe('a');
      expect(v.as_of).toBe(v.snapshot_id === s1.snapshot_id ? '2026-11-20T12:00:00Z' : '2026-11-21T12:00:00Z');
    }

    expect(await getSnapshot(ch, 'a', 'seg1', s2.snapshot_id)).toMatchObject({ count: 130, entered: 90, exited: 60 });
    expect(await getSnapshot(ch, 'b', 'seg1', s2.snapshot_id)).toBeUndefined();
  });

  it('pages a snapshot by user_id with a stable cursor', async () => {
    const topic = uniqueName('membership');
    const s = await createSnapshot(ch, producer, { appId: 'a', segmentId: 'paged', asOf: new Date(), members: members(0, 250), topic });
    const seen: string[] = [];
    let after: string | null = null;
    let pages = 0;
    do {
      const page = await snapshotMembersPage(ch, 'a', 'paged', s.snapshot_id, after, 100);
      seen.push(...page.user_ids);
      after = page.next;
      pages++;
    } while (after !== null);
    expect(pages).toBe(3);
    expect(seen).toHaveLength(250);
    expect([...seen].sort()).toEqual(seen);
    expect(new Set(seen).size).toBe(250);
  });
});

describe('snapshot times', () => {
  it('are read as instants, whatever the time zone the DateTime columns are shown in', async () => {
    // A column in another zone renders its text as a non-UTC server would.
    const db = await testDatabase('snaptz');
    await db.exec(sql`ALTER TABLE segment_snapshots MODIFY COLUMN as_of DateTime('Asia/Shanghai')`);
    await db.exec(sql`ALTER TABLE segment_snapshots MODIFY COLUMN created_at DateTime('Asia/Shanghai')`);
    const asOf = new Date('2026-11-20T12:00:00Z');
    const s = await createSnapshot(db, producer, { appId: 'a', segmentId: 'tz', asOf, members: sql`SELECT 'u1' AS user_id`, topic: uniqueName('membership') });
    const read = await getSnapshot(db, 'a', 'tz', s.snapshot_id);
    expect(read?.as_of.toISOString()).toBe('2026-11-20T12:00:00.000Z');
    expect(Math.abs(read!.created_at.getTime() - s.created_at.getTime())).toBeLessThan(1000);
  });
});
