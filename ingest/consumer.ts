// The ingest consumer: Kafka → decode → validate → normalise → batch → dedup →
// ClickHouse, committing an offset only after everything before it is stored
// (events in ClickHouse, dead letters in the DLQ topic).
//
// Batching. Messages from all assigned partitions accumulate in one pending
// batch that closes on size (batchMaxEvents) or age (batchMaxMs); at most one
// batch is being stored at a time, so commits per partition are monotonic and
// memory holds at most two batches (the consumer waits inside eachBatch, and
// so stops fetching, while both are full).
//
// Failures. Storing is retried with capped exponential backoff; after the
// first failure the consumer pauses its partitions, so nothing more is fetched
// until a batch is stored again. A row's received_at is the second of the
// INSERT attempt that stored it (stamped again on every attempt), so it is
// never earlier than the moment the row became visible minus that INSERT's
// own duration, however long the retries took (profiles rely on it). After an
// INSERT fails, retries look the batch up in `events` and repair the views'
// tables (ingest/repair.ts); a mark on the partitions' committed offsets
// (INSERT_FAILED) tells a consumer that takes the messages over to do the same.
//
// Rebalances. kafkajs restarts every assigned partition from its committed
// offset after each rejoin, so on GROUP_JOIN the pending (not yet storing)
// batch is dropped — all of it will be fetched again — and the batch being
// stored keeps only partitions this member still owns before each step. The
// one remaining window (an INSERT already in flight when another member starts
// its dedup lookup on the same partition) is documented in sql/README.md.
import { Partitioners, type Admin, type Consumer, type EachBatchPayload, type Kafka, type KafkaMessage, type Producer } from 'kafkajs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClickHouse } from '../lib/clickhouse.ts';
import { createProducer, leaderWaitsForFollowers, sendChunked } from '../lib/kafka.ts';
import { log as rootLog, type Logger } from '../lib/log.ts';
import { dedupBatch } from './dedup.ts';
import { type DeadLetter, reasonOf, recordDeadLetterCounts, sendDeadLetters } from './dlq.ts';
import { type EventRow, normalizeEvent } from './normalize.ts';
import { eventKey } from './producer.ts';
import { repairDerivedTables } from './repair.ts';
import { insertEventRows } from './sink.ts';
import { ingestMetrics as m } from './stats.ts';

export interface IngestConsumerOptions {
  kafka: Kafka;
  ch: ClickHouse;
  topic: string;
  dlqTopic: string;
  groupId: string;
  batchMaxEvents: number;
  batchMaxMs: number;
  /** kafkajs group timings; tests lower them so joins and rebalances are quick. */
  sessionTimeoutMs?: number;
  rebalanceTimeoutMs?: number;
  heartbeatIntervalMs?: number;
  /** Backoff between attempts to store a batch. */
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** How long stop() tries to store the in-flight batch before abandoning it (uncommitted, so redelivered). */
  shutdownTimeoutMs?: number;
  /** Read a new group's partitions from the start (default true: nothing published before the first start is skipped). */
  fromBeginning?: boolean;
  log?: Logger;
}

interface Batch {
  rows: EventRow[];
  /** The partition each row came from (rows are of one topic). */
  rowPartitions: number[];
  /** partition key → [topic, partition, last offset] of the messages rows and dead letters came from. */
  offsets: Map<string, { topic: string; partition: number; first: bigint; last: bigint }>;
  dead: DeadLetter[];
  /** Valid messages on a partition their key does not lead to (rerouteOf): produced again, keyed, not stored here. */
  reroute: Reroute[];
  messages: number;
  firstAt: number;
  /** An INSERT of this batch failed: it may have written `events` and some views' tables but not the rest (ingest/repair.ts). */
  insertFailed?: boolean;
}

/**
 * The metadata of an offset commit that records a failed INSERT: messages of
 * the partition up to this offset may be in `events` and only some views'
 * tables. Whoever consumes them next repairs them (ingest/repair.ts); the next
 * ordinary commit of the partition clears it.
 */
const INSERT_FAILED = /^warbler:insert-failed:(\d+)$/;

/** How long a group leader waits for followers to ask for their assignment (lib/kafka.ts). */
const FOLLOWER_SYNC_WAIT_MS = 1000;

/** Strict: invalid bytes throw. ignoreBOM keeps a BOM in the text, so such a message stays invalid JSON as before. */
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const emptyBatch = (): Batch => ({ rows: [], rowPartitions: [], offsets: new Map(), dead: [], reroute: [], messages: 0, firstAt: 0 });

/** A message produced again to the events topic with its event's key, so it reaches the partition of its app and user. */
interface Reroute {
  partition: number;
  key: string;
  value: Buffer;
  headers: Record<string, string | Buffer>;
}

/** The header a rerouted message carries: it is stored wherever it lands, never rerouted twice. */
export const REROUTED_HEADER = 'warbler-rerouted';

// The partition the producers of this project (kafkajs's default, Java's murmur2) give a key.
const partitioner = Partitioners.DefaultPartitioner();
const metadataOf = new Map<number, { partitionId: number; leader: number; replicas: number[]; isr: number[]; partitionErrorCode: number }[]>();
export function partitionOfKey(topic: string, key: string, partitions: number): number {
  let partitionMetadata = metadataOf.get(partitions);
  if (!partitionMetadata) {
    partitionMetadata = Array.from({ length: partitions }, (_, partitionId) => ({ partitionId, leader: 0, replicas: [0], isr: [0], partitionErrorCode: 0 }));
    metadataOf.set(partitions, partitionMetadata);
  }
  return partitioner({ topic, partitionMetadata, message: { key, value: null } });
}

/**
 * Dedup is exact when every copy of an event is stored by one consumer, one
 * batch after another: so when the copies land on one partition, which events
 * keyed by app and user do (ingest/producer.ts). A producer writing straight to
 * Kafka may send one without that key, or partition it otherwise (librdkafka's
 * default hashes keys differently), and two copies on two partitions could be
 * looked up at once by two consumers and both stored. Such a message is
 * produced again with its key to the partition the key leads to, and stored there.
 */
function rerouteOf(row: EventRow, msg: KafkaMessage, topic: string, partition: number, partitions: number): Reroute | undefined {
  if (partitions <= 0 || msg.headers?.[REROUTED_HEADER] !== undefined || !msg.value) return undefined;
  const key = eventKey(row.app_id, row.user_id);
  if (partitionOfKey(topic, key, partitions) === partition) return undefined;
  const headers: Record<string, string | Buffer> = {};
  for (const [k, v] of Object.entries(msg.headers ?? {})) if (typeof v === 'string' || Buffer.isBuffer(v)) headers[k] = v;
  headers[REROUTED_HEADER] = `${partition}:${msg.offset}`;
  return { partition, key, value: msg.value, headers };
}
const tp = (topic: string, partition: number) => `${topic}\u0000${partition}`;

/**
 * Decodes one Kafka message into a row, or a dead letter. Total: it never
 * throws. An exception nobody foresaw while decoding or validating one message
 * dead-letters that message (reason `internal_error`) instead of escaping into
 * kafkajs, which would crash the consumer and stop every partition.
 */
export function decodeMessage(topic: string, partition: number, msg: KafkaMessage, receivedAt: number): EventRow | DeadLetter {
  if (!msg.value || msg.value.length === 0) return deadLetter(topic, partition, msg, 'invalid_json', [{ path: '', message: 'empty message' }]);
  let text: string;
  try {
    text = UTF8.decode(msg.value);
  } catch {
    // Decoded leniently, bad bytes become U+FFFD and distinct ids could merge.
    return deadLetter(topic, partition, msg, 'invalid_utf8', [{ path: '', message: 'message is not valid UTF-8' }]);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return deadLetter(topic, partition, msg, 'invalid_json', [{ path: '', message: `not valid JSON: ${(err as Error).message}` }]);
  }
  const app = appIdOf(parsed);
  try {
    const r = normalizeEvent(parsed, undefined, receivedAt);
    if (r.row) return r.row;
    return deadLetter(topic, partition, msg, reasonOf(r.errors), r.errors, app);
  } catch (err) {
    return deadLetter(topic, partition, msg, 'internal_error', [{ path: '', message: `internal error while validating this message: ${errorText(err)}` }], app);
  }
}

/** The message's app_id when it is a plausible one (for dead-letter counts), else ''. */
function appIdOf(parsed: unknown): string {
  if (typeof parsed !== 'object' || parsed === null) return '';
  const app = (parsed as { app_id?: unknown }).app_id;
  return typeof app === 'string' && app.length <= 128 ? app : '';
}

function errorText(err: unknown): string {
  try {
    if (err instanceof Error) return `${err.name}: ${err.message}`.slice(0, 500);
    return String(err).slice(0, 500);
  } catch {
    return 'unprintable error';
  }
}

function deadLetter(topic: string, partition: number, msg: KafkaMessage, reason: string, errors: DeadLetter['errors'], appId = ''): DeadLetter {
  return { topic, partition, offset: msg.offset, key: msg.key, value: msg.value, headers: msg.headers, appId, reason, errors };
}

export class IngestConsumer {
  private readonly consumer: Consumer;
  /** Dead letters, and messages rerouted to the events topic. */
  private readonly producer: Producer;
  private readonly log: Logger;
  private pending: Batch = emptyBatch();
  private storing: Promise<void> | null = null;
  private ageTimer: NodeJS.Timeout | null = null;
  /** Partitions this member owns in the current generation. */
  private owned = new Set<string>();
  /** Highest offset committed per partition by this member, so a late commit never moves one back. */
  private committed = new Map<string, bigint>();
  /** Per owned partition, the offset up to which a failed INSERT may have half-stored messages (INSERT_FAILED); null until read after a join. */
  private failedUpTo: Map<string, bigint> | null = null;
  private generation = 0;
  /** Partitions of the events topic, read after each join (rerouteOf). */
  private partitions: number | undefined;
  private admin: Admin | null = null;
  private pausedForFailure = false;
  private stopping = false;
  private abandon = false;
  private started = false;
  private wake: (() => void) | null = null;
  private reportCrash!: (err: Error) => void;
  /**
   * Resolves when kafkajs reports a crash it does not restart from
   * (`restart: false`): from then on nothing is consumed, so the process
   * should stop and be restarted (`warbler ingest` exits with status 1).
   */
  readonly crashed: Promise<Error> = new Promise((resolve) => (this.reportCrash = resolve));

  constructor(readonly opts: IngestConsumerOptions) {
    this.log = (opts.log ?? rootLog).child({ component: 'ingest', group: opts.groupId, topic: opts.topic });
    this.consumer = opts.kafka.consumer({
      groupId: opts.groupId,
      sessionTimeout: opts.sessionTimeoutMs ?? 30_000,
      rebalanceTimeout: opts.rebalanceTimeoutMs ?? 60_000,
      heartbeatInterval: opts.heartbeatIntervalMs ?? 3_000,
      allowAutoTopicCreation: true,
      // Fetch memory is bounded by these (per partition, per fetch); the two batches held are the rest.
      maxBytesPerPartition: 1024 * 1024,
      maxBytes: 8 * 1024 * 1024,
      maxWaitTimeInMs: Math.min(500, opts.batchMaxMs),
      partitionAssigners: [leaderWaitsForFollowers(FOLLOWER_SYNC_WAIT_MS)],
    });
    this.producer = createProducer(opts.kafka);
  }

  async start(): Promise<void> {
    const { GROUP_JOIN, CRASH } = this.consumer.events;
    this.consumer.on(GROUP_JOIN, (e) => this.onGroupJoin(e.payload.memberAssignment));
    this.consumer.on(CRASH, (e) => {
      const { error, restart } = e.payload;
      if (restart) {
        this.log.error('consumer crashed; kafkajs restarts it', { error, restart });
      } else if (!this.stopping) {
        this.log.error('consumer crashed and kafkajs will not restart it: no partition is consumed any more', { error, restart });
        this.reportCrash(error);
      }
    });
    await this.producer.connect();
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.opts.topic, fromBeginning: this.opts.fromBeginning ?? true });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (p) => this.onBatch(p),
    });
    this.started = true;
    this.log.info('ingest consumer started', { batchMaxEvents: this.opts.batchMaxEvents, batchMaxMs: this.opts.batchMaxMs });
  }

  /**
   * Stops cleanly: fetches nothing more, stores and commits the pending batch
   * (abandoning it, uncommitted, if that takes longer than shutdownTimeoutMs),
   * then leaves the group.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.started) {
      try {
        this.consumer.pause([{ topic: this.opts.topic }]);
      } catch (err) {
        // SIGTERM can arrive before kafkajs has joined the group (run() not yet
        // initialised): there is nothing fetched to pause, so go on stopping.
        this.log.debug('pause before group join', { error: err });
      }
    }
    let timedOut!: () => void;
    const abandoned = new Promise<void>((resolve) => (timedOut = resolve));
    const deadline = setTimeout(() => {
      this.abandon = true;
      this.wake?.();
      timedOut();
      this.log.warn('shutdown timeout: abandoning the batch being stored; it stays uncommitted and will be redelivered');
    }, this.opts.shutdownTimeoutMs ?? 15_000);
    try {
      this.kick();
      // An INSERT hanging on a dead server does not hold shutdown past the deadline.
      while (this.storing && !this.abandon) {
        await Promise.race([this.storing, abandoned]);
        this.kick();
      }
    } finally {
      clearTimeout(deadline);
      if (this.ageTimer) clearTimeout(this.ageTimer);
    }
    await this.consumer.disconnect();
    await this.producer.disconnect();
    await this.admin?.disconnect();
    this.log.info('ingest consumer stopped');
  }

  private onGroupJoin(assignment: Record<string, number[]>): void {
    const owned = new Set<string>();
    for (const [topic, partitions] of Object.entries(assignment)) for (const p of partitions) owned.add(tp(topic, p));
    for (const k of this.committed.keys()) if (!owned.has(k)) this.committed.delete(k);
    const dropped = this.pending.messages;
    this.owned = owned;
    this.failedUpTo = null;
    this.partitions = undefined;
    this.generation++;
    this.pending = emptyBatch();
    if (this.ageTimer) {
      clearTimeout(this.ageTimer);
      this.ageTimer = null;
    }
    this.log.info('partitions assigned', { partitions: [...owned].map((k) => k.split('\u0000')[1]).join(','), droppedPending: dropped });
  }

  private async onBatch(p: EachBatchPayload): Promise<void> {
    const { batch } = p;
    const key = tp(batch.topic, batch.partition);
    // Provisional: store() stamps received_at again at each INSERT attempt.
    const receivedAt = Math.floor(Date.now() / 1000);
    const partitions = (this.partitions ??= await this.topicPartitions());
    for (const msg of batch.messages) {
      if (!p.isRunning() || p.isStale() || this.stopping) return;
      const decoded = decodeMessage(batch.topic, batch.partition, msg, receivedAt);
      const b = this.pending;
      if (b.messages === 0) b.firstAt = Date.now();
      const reroute = 'reason' in decoded ? undefined : rerouteOf(decoded, msg, batch.topic, batch.partition, partitions);
      if ('reason' in decoded) b.dead.push(decoded);
      else if (reroute) b.reroute.push(reroute);
      else {
        b.rows.push(decoded);
        b.rowPartitions.push(batch.partition);
      }
      b.messages++;
      const o = b.offsets.get(key);
      if (o) o.last = BigInt(msg.offset);
      else b.offsets.set(key, { topic: batch.topic, partition: batch.partition, first: BigInt(msg.offset), last: BigInt(msg.offset) });
      p.resolveOffset(msg.offset);
      if (b.messages >= this.opts.batchMaxEvents) {
        this.kick();
        // Both batches full: wait here (heartbeating) instead of fetching more.
        while (this.pending.messages >= this.opts.batchMaxEvents && !this.stopping) {
          await Promise.race([this.storing ?? Promise.resolve(), sleep(this.opts.heartbeatIntervalMs ?? 3000)]);
          this.kick();
          await p.heartbeat();
        }
      }
    }
    m.consumed.inc({}, batch.messages.length);
    const lag = Number(BigInt(batch.highWatermark) - BigInt(batch.lastOffset()) - 1n);
    m.lag.set(Math.max(0, lag), { topic: batch.topic, partition: String(batch.partition) });
    this.kick();
  }

  /** Starts storing the pending batch when it is full, old enough, or we are draining. */
  private kick(): void {
    if (this.storing || this.pending.messages === 0) return;
    const age = Date.now() - this.pending.firstAt;
    if (this.pending.messages < this.opts.batchMaxEvents && age < this.opts.batchMaxMs && !this.stopping) {
      this.ageTimer ??= setTimeout(() => {
        this.ageTimer = null;
        this.kick();
      }, this.opts.batchMaxMs - age);
      return;
    }
    if (this.ageTimer) {
      clearTimeout(this.ageTimer);
      this.ageTimer = null;
    }
    const batch = this.pending;
    this.pending = emptyBatch();
    this.storing = this.store(batch)
      .catch((err: unknown) => this.log.error('batch store failed unexpectedly; it stays uncommitted', { error: err }))
      .finally(() => {
        this.storing = null;
        this.kick();
      });
  }

  /** Keeps only what came from partitions this member still owns; true when something was dropped. */
  private keepOwned(b: Batch): boolean {
    const lost = [...b.offsets.keys()].filter((k) => !this.owned.has(k));
    if (lost.length === 0) return false;
    this.log.info('dropping revoked partitions from the batch being stored', { partitions: lost.length });
    for (const k of lost) b.offsets.delete(k);
    const rows: EventRow[] = [];
    const parts: number[] = [];
    for (let i = 0; i < b.rows.length; i++) {
      const part = b.rowPartitions[i] as number;
      if (!this.owned.has(tp(this.opts.topic, part))) continue;
      rows.push(b.rows[i] as EventRow);
      parts.push(part);
    }
    b.rows = rows;
    b.rowPartitions = parts;
    b.dead = b.dead.filter((d) => this.owned.has(tp(d.topic, d.partition)));
    b.reroute = b.reroute.filter((r) => this.owned.has(tp(this.opts.topic, r.partition)));
    return true;
  }

  private async store(b: Batch): Promise<void> {
    const t0 = performance.now();
    let attempt = 0;
    for (;;) {
      if (this.abandon) return;
      try {
        this.keepOwned(b);
        if (b.offsets.size === 0) return;
        // A member that failed an INSERT of these messages, then died or lost
        // the partition, left a mark on the partition's committed offset.
        if (!b.insertFailed) {
          const marks = await this.insertFailures();
          b.insertFailed = [...b.offsets].some(([k, o]) => o.first <= (marks.get(k) ?? -1n));
        }
        const d = await dedupBatch(this.opts.ch, b.rows, b.insertFailed ? 'by_user' : undefined);
        // A rebalance during the lookup hands partitions to another member; store none of theirs.
        let fresh = d.fresh;
        let stored = d.storedRows;
        if (this.keepOwned(b)) {
          const kept = new Set(b.rows);
          fresh = fresh.filter((r) => kept.has(r));
          stored = stored.filter((r) => kept.has(r));
        }
        if (b.insertFailed && stored.length > 0) {
          await repairDerivedTables(this.opts.ch, stored);
          m.repaired.inc({}, stored.length);
          this.log.warn('re-derived the events a failed insert left in events into every view\'s table', { events: stored.length });
        }
        // received_at is the second of this INSERT attempt, not of decoding: a
        // batch held back by retries is stamped when it can first become
        // visible (minus the INSERT's own duration), so incremental profile
        // runs, which look for late arrivals by received_at, still see it.
        const attemptAt = Math.floor(Date.now() / 1000);
        for (const r of fresh) r.received_at = attemptAt;
        await insertEventRows(this.opts.ch, fresh).catch(async (err: unknown) => {
          b.insertFailed = true;
          await this.markInsertFailed(b);
          throw err;
        });
        // Before the commit, as dead letters: a crash before it reads the messages again and reroutes them again (stored once all the same).
        if (b.reroute.length > 0) {
          await sendChunked(this.producer, this.opts.topic, b.reroute.map((r) => ({ key: r.key, value: r.value, headers: r.headers })));
          m.rerouted.inc({}, b.reroute.length);
        }
        await sendDeadLetters(this.producer, this.opts.dlqTopic, b.dead);
        await recordDeadLetterCounts(this.opts.ch, b.dead);
        m.stored.inc({}, fresh.length);
        m.deduplicated.inc({ source: 'batch' }, d.inBatch);
        m.deduplicated.inc({ source: 'stored' }, d.stored);
        await this.commit(b);
        const seconds = (performance.now() - t0) / 1000;
        m.batchEvents.observe(b.messages);
        m.batchSeconds.observe(seconds);
        m.batchAgeSeconds.observe((Date.now() - b.firstAt) / 1000);
        this.log.info('batch stored', {
          messages: b.messages, stored: fresh.length, duplicates: d.inBatch + d.stored, deadLettered: b.dead.length, rerouted: b.reroute.length,
          ms: Math.round(seconds * 1000), attempts: attempt + 1,
        });
        if (this.pausedForFailure) this.resumeAfterFailure();
        return;
      } catch (err) {
        attempt++;
        m.storeErrors.inc();
        const delay = Math.min(this.opts.retryMaxMs ?? 30_000, (this.opts.retryInitialMs ?? 200) * 2 ** Math.min(attempt - 1, 20));
        const jittered = Math.round(delay * (0.5 + Math.random() / 2));
        this.log.warn('storing a batch failed; retrying', { error: err, attempt, retryInMs: jittered, messages: b.messages });
        if (!this.pausedForFailure) this.pauseForFailure();
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, jittered);
          this.wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.wake = null;
      }
    }
  }

  private async commit(b: Batch): Promise<void> {
    const offsets: { topic: string; partition: number; offset: string }[] = [];
    for (const [k, o] of b.offsets) {
      if (!this.owned.has(k)) continue;
      const next = o.last + 1n;
      if ((this.committed.get(k) ?? -1n) >= next) continue;
      offsets.push({ topic: o.topic, partition: o.partition, offset: next.toString() });
    }
    if (offsets.length === 0) return;
    try {
      await this.consumer.commitOffsets(offsets);
      for (const o of offsets) {
        const k = tp(o.topic, o.partition);
        this.committed.set(k, BigInt(o.offset));
        // This commit carries no metadata: it replaced the partition's mark.
        this.failedUpTo?.delete(k);
      }
    } catch (err) {
      // The events are stored; an uncommitted offset only means they are read
      // again, and the dedup lookup drops them.
      this.log.warn('offset commit failed; the stored batch will be redelivered and deduplicated', { error: err });
    }
  }

  /** How many partitions the events topic has; 0 (reroute nothing) when it cannot be read. */
  private async topicPartitions(): Promise<number> {
    try {
      if (!this.admin) {
        this.admin = this.opts.kafka.admin();
        await this.admin.connect();
      }
      const md = await this.admin.fetchTopicMetadata({ topics: [this.opts.topic] });
      return md.topics.find((t) => t.name === this.opts.topic)?.partitions.length ?? 0;
    } catch (err) {
      this.log.warn('could not read the events topic\'s partitions; storing messages wherever they are until the next rebalance', { error: err });
      return 0;
    }
  }

  /** The marks of failed INSERTs on this member's partitions (INSERT_FAILED), read once per generation. */
  private async insertFailures(): Promise<Map<string, bigint>> {
    if (this.failedUpTo) return this.failedUpTo;
    const generation = this.generation;
    if (!this.admin) {
      this.admin = this.opts.kafka.admin();
      await this.admin.connect();
    }
    const marks = new Map<string, bigint>();
    for (const t of await this.admin.fetchOffsets({ groupId: this.opts.groupId, topics: [this.opts.topic] })) {
      for (const p of t.partitions) {
        const m = INSERT_FAILED.exec(p.metadata ?? '');
        if (m) marks.set(tp(t.topic, p.partition), BigInt(m[1]!));
      }
    }
    if (generation === this.generation) this.failedUpTo = marks;
    return marks;
  }

  /**
   * Records, in the partitions' committed offsets (which stay where they are),
   * that an INSERT of `b` failed: if this member dies or loses a partition
   * before a retry succeeds, the next consumer of those messages repairs them.
   */
  private async markInsertFailed(b: Batch): Promise<void> {
    const offsets: { topic: string; partition: number; offset: string; metadata: string }[] = [];
    for (const [k, o] of b.offsets) {
      if (!this.owned.has(k)) continue;
      // Nothing of this partition before `first` is uncommitted but this batch: committing `first` moves nothing.
      const at = this.committed.get(k) ?? o.first;
      offsets.push({ topic: o.topic, partition: o.partition, offset: at.toString(), metadata: `warbler:insert-failed:${o.last}` });
    }
    if (offsets.length === 0) return;
    try {
      await this.consumer.commitOffsets(offsets);
      for (const [k, o] of b.offsets) if (this.owned.has(k)) this.failedUpTo?.set(k, o.last);
    } catch (err) {
      this.log.warn('could not record the failed insert on the partitions; a consumer that takes them over before a retry succeeds will not repair them', { error: err });
    }
  }

  private pauseForFailure(): void {
    this.pausedForFailure = true;
    m.paused.set(1);
    if (!this.stopping) this.consumer.pause([{ topic: this.opts.topic }]);
    this.log.warn('paused consumption until storing succeeds again');
  }

  private resumeAfterFailure(): void {
    this.pausedForFailure = false;
    m.paused.set(0);
    if (!this.stopping) this.consumer.resume([{ topic: this.opts.topic }]);
    this.log.info('resumed consumption');
  }
}
