// Segment snapshots: the members of a saved segment at an instant, kept in
// ClickHouse, and the changes against the segment's previous snapshot
// published to Kafka for campaign tools.
//
// Everything heavy stays inside ClickHouse: the members are materialised by one
// INSERT … SELECT (no user id passes through Node), and the entered/exited
// diff is computed there and streamed out only to be published. The snapshot's
// row in `segment_snapshots` is written last: it marks the snapshot complete,
// so a failure midway leaves no snapshot that later ones would diff against,
// and a retry re-publishes the same changes (at-least-once).
import { randomBytes } from 'node:crypto';
import type { Producer } from 'kafkajs';
import type { ClickHouse } from '../lib/clickhouse.ts';
import { isoSeconds } from '../lib/instant.ts';
import { type Sql, sql } from '../lib/sql.ts';

export type MembershipChange = 'entered' | 'exited';

/** One message on the membership topic. */
export interface MembershipMessage {
  app_id: string;
  segment_id: string;
  snapshot_id: string;
  user_id: string;
  change: MembershipChange;
  as_of: string;
}

export interface Snapshot {
  app_id: string;
  segment_id: string;
  snapshot_id: string;
  as_of: Date;
  created_at: Date;
  count: number;
  entered: number;
  exited: number;
  previous_snapshot_id: string | null;
}

export interface CreateSnapshotInput {
  appId: string;
  segmentId: string;
  asOf: Date;
  /** A query whose rows have a `user_id` column: the members at `asOf`, each once. */
  members: Sql;
  topic: string;
  /** Kafka messages per produce call. */
  batchSize?: number;
  timeoutS?: number;
  onProgress?: (published: number) => void;
}

/** Ids sort in creation order (ms timestamp, base36, fixed width), so "previous" is the greatest smaller id. */
export function newSnapshotId(now = Date.now()): string {
  return 'snap_' + now.toString(36).padStart(10, '0') + randomBytes(5).toString('hex');
}

// Read as epoch seconds: DateTime text would be in the server's zone, which an
// external ClickHouse need not set to UTC.
const epochDate = (s: string | number): Date => new Date(Number(s) * 1000);

interface SnapshotRow {
  app_id: string;
  segment_id: string;
  snapshot_id: string;
  as_of: string | number;
  created_at: string | number;
  count: string | number;
  entered: string | number;
  exited: string | number;
  previous_snapshot_id: string;
}

function toSnapshot(r: SnapshotRow): Snapshot {
  return {
    app_id: r.app_id,
    segment_id: r.segment_id,
    snapshot_id: r.snapshot_id,
    as_of: epochDate(r.as_of),
    created_at: epochDate(r.created_at),
    count: Number(r.count),
    entered: Number(r.entered),
    exited: Number(r.exited),
    previous_snapshot_id: r.previous_snapshot_id || null,
  };
}

const SNAPSHOT_COLUMNS = sql`app_id, segment_id, snapshot_id, toUInt32(as_of) AS as_of, toUInt32(created_at) AS created_at, count, entered, exited, previous_snapshot_id`;

/** The latest complete snapshot of a segment, if any. */
export async function latestSnapshot(ch: ClickHouse, appId: string, segmentId: string): Promise<Snapshot | undefined> {
  const r = await ch.one<SnapshotRow>(sql`
    SELECT ${SNAPSHOT_COLUMNS} FROM segment_snapshots
    WHERE app_id = ${appId} AND segment_id = ${segmentId}
    ORDER BY snapshot_id DESC LIMIT 1`);
  return r && toSnapshot(r);
}

export async function getSnapshot(ch: ClickHouse, appId: string, segmentId: string, snapshotId: string): Promise<Snapshot | undefined> {
  const r = await ch.one<SnapshotRow>(sql`
    SELECT ${SNAPSHOT_COLUMNS} FROM segment_snapshots
    WHERE app_id = ${appId} AND segment_id = ${segmentId} AND snapshot_id = ${snapshotId}
    LIMIT 1`);
  return r && toSnapshot(r);
}

function membersOf(appId: string, segmentId: string, snapshotId: string): Sql {
  return sql`SELECT user_id FROM segment_snapshot_members
    WHERE app_id = ${appId} AND segment_id = ${segmentId} AND snapshot_id = ${snapshotId}`;
}

/** The entered/exited changes between two snapshots, computed in ClickHouse. */
export function diffSql(appId: string, segmentId: string, snapshotId: string, previousId: string | null): Sql {
  const current = membersOf(appId, segmentId, snapshotId);
  if (!previousId) return sql`SELECT user_id, 'entered' AS change FROM (${current})`;
  const previous = membersOf(appId, segmentId, previousId);
  return sql`
    SELECT user_id, 'entered' AS change FROM (${current}) WHERE user_id NOT IN (${previous})
    UNION ALL
    SELECT user_id, 'exited' AS change FROM (${previous}) WHERE user_id NOT IN (${current})`;
}

// Two snapshots of one segment racing would both diff against the same
// predecessor; within a process they are serialised per segment.
const chains = new Map<string, Promise<unknown>>();

function serialised<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = chains.get(key) ?? Promise.resolve();
  const next = prev.catch(() => undefined).then(fn);
  chains.set(key, next);
  void next.finally(() => {
    if (chains.get(key) === next) chains.delete(key);
  }).catch(() => undefined);
  return next;
}

export function createSnapshot(ch: ClickHouse, producer: Producer, input: CreateSnapshotInput): Promise<Snapshot> {
  return serialised(`${input.appId}\u0000${input.segmentId}`, () => createSnapshotNow(ch, producer, input));
}

async function createSnapshotNow(ch: ClickHouse, producer: Producer, input: CreateSnapshotInput): Promise<Snapshot> {
  const { appId, segmentId, asOf, topic } = input;
  const batchSize = input.batchSize ?? 5000;
  const timeoutS = input.timeoutS;
  const previous = await latestSnapshot(ch, appId, segmentId);
  const createdAt = new Date();
  const snapshotId = newSnapshotId(createdAt.getTime());

  await ch.exec(
    sql`INSERT INTO segment_snapshot_members (app_id, segment_id, snapshot_id, user_id)
        SELECT ${appId}, ${segmentId}, ${snapshotId}, user_id FROM (${input.members})`,
    { timeoutS },
  );
  const countRow = await ch.one<{ n: string }>(sql`SELECT count() AS n FROM (${membersOf(appId, segmentId, snapshotId)})`);
  const count = Number(countRow?.n ?? 0);

  const asOfIso = isoSeconds(asOf);
  let entered = 0;
  let exited = 0;
  let batch: { key: string; value: string }[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    await producer.send({ topic, acks: -1, messages: batch });
    batch = [];
    input.onProgress?.(entered + exited);
  };
  const stream = await ch.stream(diffSql(appId, segmentId, snapshotId, previous?.snapshot_id ?? null), 'JSONEachRow', { timeoutS });
  try {
    for await (const rows of stream as AsyncIterable<{ json<T>(): T }[]>) {
      for (const row of rows) {
        const { user_id, change } = row.json<{ user_id: string; change: MembershipChange }>();
        if (change === 'entered') entered++;
        else exited++;
        const msg: MembershipMessage = { app_id: appId, segment_id: segmentId, snapshot_id: snapshotId, user_id, change, as_of: asOfIso };
        // Keyed by user within the segment: one user's changes stay in order on one partition.
        batch.push({ key: `${appId}/${segmentId}/${user_id}`, value: JSON.stringify(msg) });
        if (batch.length >= batchSize) await flush();
      }
    }
    await flush();
  } finally {
    stream.destroy();
  }

  const snapshot: Snapshot = {
    app_id: appId,
    segment_id: segmentId,
    snapshot_id: snapshotId,
    as_of: asOf,
    created_at: createdAt,
    count,
    entered,
    exited,
    previous_snapshot_id: previous?.snapshot_id ?? null,
  };
  await ch.insert('segment_snapshots', [
    {
      ...snapshot,
      as_of: Math.floor(asOf.getTime() / 1000),
      created_at: Math.floor(createdAt.getTime() / 1000),
      previous_snapshot_id: previous?.snapshot_id ?? '',
    },
  ]);
  return snapshot;
}

export interface SnapshotPage {
  user_ids: string[];
  /** The last id of this page when more follow; pass it back as the cursor. */
  next: string | null;
}

/** A page of a snapshot's members in user_id order, strictly after `after`. Stable: snapshots never change. */
export async function snapshotMembersPage(
  ch: ClickHouse,
  appId: string,
  segmentId: string,
  snapshotId: string,
  after: string | null,
  limit: number,
): Promise<SnapshotPage> {
  const rows = await ch.rows<{ user_id: string }>(sql`
    SELECT user_id FROM segment_snapshot_members
    WHERE app_id = ${appId} AND segment_id = ${segmentId} AND snapshot_id = ${snapshotId}
      ${after === null ? sql`` : sql`AND user_id > ${after}`}
    ORDER BY user_id
    LIMIT ${limit + 1}`);
  const more = rows.length > limit;
  const page = more ? rows.slice(0, limit) : rows;
  return { user_ids: page.map((r) => r.user_id), next: more ? (page[page.length - 1]?.user_id ?? null) : null };
}
