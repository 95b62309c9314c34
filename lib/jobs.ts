// Background jobs (profiles, clusters, …) run in this process; their records are
// persisted in the `jobs` table, one row per state change or heartbeat (the
// highest updated_seq wins), so any process can answer GET /v1/jobs/{id}.
//
// Never two jobs of one kind for one app running at once ("one profile job per
// app at a time"), in this process or across processes — but a second job is
// accepted and waits, `queued`, for its turn:
//
// - In this process the jobs of one (app, kind) form a FIFO lane: each waits
//   until the one submitted before it here has finished, whatever its outcome.
// - Across processes jobs are ordered by (created_at, job_id). Job ids are
//   UUIDv7 with a counter, strictly increasing in this process, and created_at
//   is their timestamp's second, so that order agrees with every process's own
//   FIFO: a job only ever waits for jobs before it or for a running one, and no
//   cycle of waits can form. The job at the head of its lane waits while the
//   persisted records show another job of its (app, kind) running, or queued
//   before it, reading them again every `jobTiming.pollMs` (with jitter).
// - Every queued or running job writes a heartbeat (one insert per lane every
//   `jobTiming.heartbeatMs`). A queued/running record without one for STALE_S
//   seconds belongs to a dead process: it blocks nothing and reads as failed,
//   so a crashed process's queued jobs hold nobody back for long.
// - ClickHouse has no transactions, so the head claims its turn by writing
//   `running` and then reading the records again; if it now sees another job
//   running, or queued before it, it writes `queued` again and keeps waiting.
//   Each claimant's read follows its own write, so of two claims at once at
//   least the later reader sees the other: both may back off (and retry after
//   a jittered poll, in FIFO order), never both run.
// - A queued job's progress is 0; its record says `queued` until it runs.
// - At most MAX_QUEUED jobs wait per (app, kind) in one process; beyond that
//   startJob throws JobQueueFullError (a JobConflictError: 409 in the API), so
//   a client submitting in a loop cannot grow memory without end.
// - `ifBusy: 'refuse'` keeps the old behaviour for callers that must not pile
//   up jobs: a JobConflictError when a job of the (app, kind) is queued or
//   running anywhere. jobInProgress() asks the same question without starting.
import { randomBytes } from 'node:crypto';
import type { ClickHouse } from './clickhouse.ts';
import { log } from './log.ts';
import { sql } from './sql.ts';

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed';

export interface JobRecord {
  job_id: string;
  kind: string;
  state: JobState;
  progress: number;
  error?: string;
  result?: unknown;
  params?: unknown;
  created_at: string;
}

export class JobConflictError extends Error {
  constructor(
    readonly appId: string,
    readonly kind: string,
    readonly runningJobId: string | undefined,
  ) {
    super(`a ${kind} job for app ${appId} is already queued or running${runningJobId ? ` (${runningJobId})` : ''}`);
    this.name = 'JobConflictError';
  }
}

/**
 * Thrown by startJob when MAX_QUEUED jobs of the (app, kind) already wait in
 * this process. A JobConflictError, so every caller that handles a conflict
 * (the API's 409, the CLI) handles it; its message says what to do.
 */
export class JobQueueFullError extends JobConflictError {
  constructor(appId: string, kind: string, readonly queued: number, lastQueuedJobId: string | undefined) {
    super(appId, kind, lastQueuedJobId);
    this.name = 'JobQueueFullError';
    this.message =
      `${queued} ${kind} jobs for app ${appId} are already queued on this server, the most it holds; ` +
      `wait for them to finish (GET /v1/jobs/{job_id}${lastQueuedJobId ? `, the last queued is ${lastQueuedJobId}` : ''}) and submit again`;
  }
}

/** Jobs waiting (not running) per (app, kind) in one process; more are refused with JobQueueFullError. */
export const MAX_QUEUED = 100;
const PROGRESS_WRITE_MS = 1_000;
export const STALE_S = 120;
/** Mutable for tests. heartbeatMs must stay well under STALE_S. */
export const jobTiming = {
  /** How often the record of a queued or running job is written again (its heartbeat). */
  heartbeatMs: 10_000,
  /** How often the job at the head of its lane reads the records while another process's job holds it back (±25 % jitter). */
  pollMs: 2_000,
};

let lastSeq = 0;
/** Milliseconds * 1000 + counter: strictly increasing in this process, ordered by time across processes. */
function nextSeq(): number {
  lastSeq = Math.max(lastSeq + 1, Date.now() * 1000);
  return lastSeq;
}

let lastIdMs = 0;
let idCounter = 0;
/**
 * A UUIDv7 (RFC 9562, method 1: a 12-bit counter in rand_a) whose string order
 * is its creation order in this process; `ms` is its timestamp. Across
 * processes, ids order by millisecond, then arbitrarily but the same for all.
 */
function newJobId(): { id: string; ms: number } {
  const now = Date.now();
  if (now > lastIdMs) {
    lastIdMs = now;
    idCounter = 0;
  } else if (++idCounter > 0xfff) {
    lastIdMs += 1; // 4096 ids in one millisecond: borrow the next one
    idCounter = 0;
  }
  const rand = randomBytes(8);
  rand[0] = (rand[0]! & 0x3f) | 0x80; // variant 10
  const hex = lastIdMs.toString(16).padStart(12, '0') + '7' + idCounter.toString(16).padStart(3, '0') + rand.toString('hex');
  return { id: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`, ms: lastIdMs };
}

interface Row {
  app_id: string;
  job_id: string;
  kind: string;
  state: JobState;
  progress: number;
  params: string;
  result: string;
  error: string;
  created_at: number;
  updated_seq: number;
}

/** A job of this process: 'submitting' until its first record is written, 'finishing' once its run has ended. */
interface Member {
  job_id: string;
  state: 'submitting' | 'queued' | 'running' | 'finishing';
  /** Its record in its current state, with a new updated_seq (built now, so a later row always wins). */
  row(): Row;
  /** Its record as failed with `error`, with a new updated_seq. */
  failedRow(error: string): Row;
  /** Recorded as failed by abandonJobs: nothing more is written for it. */
  abandoned?: boolean;
}

/** The jobs of one (app, kind) in this process, in submission order. */
interface Lane {
  members: Member[];
  /** Resolves when the last member has left the lane (and every member before it). */
  tail: Promise<void>;
  heartbeat: NodeJS.Timeout;
  beating: boolean;
}

const lanes = new Map<string, Lane>(); // `${appId}\u0000${kind}` → lane
const completions = new Map<string, Promise<void>>();
/**
 * Jobs of this process that have ended, for a while: their final write may have
 * failed, leaving a `running` record that still looks fresh — it must not hold
 * back their successors here until it goes stale.
 */
const endedHere = new Set<string>();

function laneFor(ch: ClickHouse, appId: string, kind: string, key: string): Lane {
  let lane = lanes.get(key);
  if (lane) return lane;
  const hlog = log.child({ app_id: appId, kind });
  const created: Lane = {
    members: [],
    tail: Promise.resolve(),
    beating: false,
    // One insert per lane per beat, however many jobs wait in it.
    heartbeat: setInterval(() => {
      if (created.beating) return;
      const rows = created.members.filter((m) => (m.state === 'queued' || m.state === 'running') && !m.abandoned).map((m) => m.row());
      if (rows.length === 0) return;
      created.beating = true;
      ch.insert('jobs', rows as unknown as Record<string, unknown>[])
        .catch((e) => hlog.warn('job heartbeat failed', { error: e }))
        .finally(() => (created.beating = false));
    }, jobTiming.heartbeatMs),
  };
  created.heartbeat.unref();
  lanes.set(key, created);
  return created;
}

function leaveLane(key: string, lane: Lane, member: Member): void {
  const i = lane.members.indexOf(member);
  if (i >= 0) lane.members.splice(i, 1);
  if (lane.members.length === 0 && lanes.get(key) === lane) {
    clearInterval(lane.heartbeat);
    lanes.delete(key);
  }
}

/** The fresh queued/running records of an (app, kind), oldest first. */
async function persistedActive(ch: ClickHouse, appId: string, kind: string): Promise<{ job_id: string; state: JobState; created: number }[]> {
  const freshSince = (Date.now() - STALE_S * 1000) * 1000;
  const rows = await ch.rows<{ job_id: string; state: JobState; created: number }>(sql`
    SELECT job_id, state, created FROM (
      SELECT job_id, argMax(state, updated_seq) AS state, max(updated_seq) AS seq, toUInt32(min(created_at)) AS created
      FROM jobs WHERE app_id = ${appId} AND kind = ${kind}
      GROUP BY job_id
    ) WHERE state IN ('queued', 'running') AND seq >= ${freshSince}
    ORDER BY created, job_id`);
  return rows.map((r) => ({ ...r, created: Number(r.created) })).filter((r) => !endedHere.has(r.job_id));
}

/** A job, other than `me`, that `me` must wait for: one running, or queued before it (by created_at, then job_id). */
async function blockerOf(ch: ClickHouse, appId: string, kind: string, me: { job_id: string; created: number }): Promise<string | undefined> {
  const rows = (await persistedActive(ch, appId, kind)).filter((r) => r.job_id !== me.job_id);
  const blocker =
    rows.find((r) => r.state === 'running') ??
    rows.find((r) => r.created < me.created || (r.created === me.created && r.job_id < me.job_id));
  return blocker?.job_id;
}

/**
 * The id of a job of this (app, kind) queued or running in this process, or in
 * another one by the persisted records; undefined when there is none.
 */
export async function jobInProgress(ch: ClickHouse, appId: string, kind: string): Promise<string | undefined> {
  const here = lanes.get(`${appId}\u0000${kind}`)?.members[0];
  if (here) return here.job_id;
  return (await persistedActive(ch, appId, kind))[0]?.job_id;
}

export interface StartJobOptions {
  /**
   * 'queue' (default): wait, `queued`, behind the jobs of this (app, kind)
   * submitted before it. 'refuse': throw JobConflictError instead when one is
   * queued or running, here or in another process — for callers that must not
   * pile jobs up behind a long one.
   */
  ifBusy?: 'queue' | 'refuse';
}

// stopJobs(): queued jobs of this process give up instead of waiting on (their
// poll timers would keep a stopping server alive, and they would run after it
// said it stopped). Running jobs are not interrupted.
let stopRequested = false;
let wakeSleepers!: () => void;
const stopSignal = new Promise<void>((r) => (wakeSleepers = r));
const sleepers = new Set<() => void>();

/** Makes every job of this process that has not started running fail now ("the server stopped"), and refuses new ones. */
export function stopJobs(): void {
  stopRequested = true;
  wakeSleepers();
  for (const wake of sleepers) wake();
}

/**
 * For a process about to exit before its jobs end (the CLI on Ctrl-C): records
 * each of its queued or running jobs as failed with `reason`, so their records
 * hold the app's next jobs back no longer (a queued or running record would
 * until it went stale, STALE_S), and stops the queued ones. A running job's
 * queries are not stopped by this: ClickHouse may finish them, into a run that
 * is never published.
 */
export async function abandonJobs(ch: ClickHouse, reason: string): Promise<string[]> {
  stopJobs();
  const members = [...lanes.values()].flatMap((l) => l.members).filter((m) => (m.state === 'queued' || m.state === 'running') && !m.abandoned);
  for (const m of members) m.abandoned = true;
  if (members.length > 0) await ch.insert('jobs', members.map((m) => m.failedRow(reason)) as unknown as Record<string, unknown>[]);
  return members.map((m) => m.job_id);
}

/** Thrown for a job refused or given up because the server is stopping (the API answers 503). */
export class JobsStoppedError extends Error {
  constructor() {
    super('the server stopped before this job ran; submit it again');
    this.name = 'JobsStoppedError';
  }
}

// A set of wake-ups, each removed when its sleep ends: not a handler per sleep on stopSignal, which would pile up.
const sleep = (ms: number) =>
  new Promise<void>((r) => {
    if (stopRequested) return r();
    const wake = () => {
      clearTimeout(t);
      sleepers.delete(wake);
      r();
    };
    const t = setTimeout(wake, ms);
    sleepers.add(wake);
  });

/**
 * Records the job as queued and returns its id; it runs in the background when
 * its turn comes (see the top of this file). `run` reports its progress
 * (0..1); its resolved value becomes the job's result.
 */
export async function startJob(
  ch: ClickHouse,
  appId: string,
  kind: 'profiles' | 'clusters' | string,
  params: unknown,
  run: (report: (progress: number) => void) => Promise<unknown>,
  opts: StartJobOptions = {},
): Promise<{ job_id: string }> {
  if (stopRequested) throw new JobsStoppedError();
  const key = `${appId}\u0000${kind}`;
  // Checked and joined synchronously, so two calls in one tick see each other.
  const existing = lanes.get(key);
  if (opts.ifBusy === 'refuse' && existing?.members.length) throw new JobConflictError(appId, kind, existing.members[0]!.job_id);
  const waiting = existing?.members.filter((m) => m.state === 'submitting' || m.state === 'queued') ?? [];
  if (waiting.length >= MAX_QUEUED) throw new JobQueueFullError(appId, kind, waiting.length, waiting.at(-1)?.job_id);
  const lane = laneFor(ch, appId, kind, key);

  const { id: job_id, ms } = newJobId();
  const created_at = Math.floor(ms / 1000);
  const base = { app_id: appId, job_id, kind, params: JSON.stringify(params ?? {}), created_at };
  let progress = 0;
  const rowOf = (state: JobState, extra: { result?: unknown; error?: string } = {}): Row => ({
    ...base,
    state,
    progress,
    result: extra.result === undefined ? '' : JSON.stringify(extra.result),
    error: extra.error ?? '',
    updated_seq: nextSeq(),
  });
  const member: Member = {
    job_id,
    state: 'submitting',
    row: () => rowOf(member.state === 'running' ? 'running' : 'queued'),
    failedRow: (error) => rowOf('failed', { error }),
  };
  const write = async (state: JobState, extra: { result?: unknown; error?: string } = {}) => {
    if (!member.abandoned) await ch.insert('jobs', [rowOf(state, extra)] as unknown as Record<string, unknown>[]);
  };
  lane.members.push(member);
  const previous = lane.tail;
  let leave!: () => void;
  const left = new Promise<void>((r) => (leave = r));
  // The next job here waits for this one and, should this one leave early (a
  // refused submission), still for every one before it.
  lane.tail = previous.then(() => left);
  const exit = () => {
    leaveLane(key, lane, member);
    leave();
  };

  try {
    if (opts.ifBusy === 'refuse') {
      const other = (await persistedActive(ch, appId, kind))[0];
      if (other) throw new JobConflictError(appId, kind, other.job_id);
    }
    await write('queued');
  } catch (err) {
    exit();
    throw err;
  }
  if (member.state === 'submitting') member.state = 'queued';
  const jlog = log.child({ job_id, app_id: appId, kind });

  /** Waits until no other process's job of this (app, kind) is running or queued before this one, then claims the turn. */
  const takeTurn = async () => {
    const me = { job_id, created: created_at };
    for (;;) {
      if (stopRequested) throw new JobsStoppedError();
      try {
        const blocker = await blockerOf(ch, appId, kind, me);
        if (!blocker) {
          member.state = 'running';
          await write('running');
          const rival = await blockerOf(ch, appId, kind, me);
          if (!rival) return;
          member.state = 'queued';
          await write('queued');
          jlog.info('job backed off: another job of its kind for the app started at the same time', { other_job_id: rival });
        }
      } catch (e) {
        // ClickHouse unreachable for a moment: keep waiting (the heartbeat stops
        // landing too, so others stop waiting for this job after STALE_S).
        jlog.warn('could not read the job records while queued; retrying', { error: e });
        if (member.state === 'running') member.state = 'queued';
      }
      await sleep(jobTiming.pollMs * (0.75 + Math.random() / 2));
    }
  };

  const done = (async () => {
    let lastWrite = 0;
    let pending: Promise<void> = Promise.resolve();
    try {
      // This process's earlier jobs of the (app, kind) have finished (or the server is stopping).
      await Promise.race([previous, stopSignal]);
      await takeTurn();
      jlog.info('job running');
      const report = (p: number) => {
        progress = Math.min(1, Math.max(progress, p));
        const now = Date.now();
        if (now - lastWrite < PROGRESS_WRITE_MS) return;
        lastWrite = now;
        pending = pending.then(() => (member.state === 'running' ? write('running') : undefined)).catch((e) => jlog.warn('job progress write failed', { error: e }));
      };
      const result = await run(report);
      member.state = 'finishing';
      await pending;
      progress = 1;
      await write('succeeded', { result: result ?? null });
      jlog.info('job succeeded');
    } catch (err) {
      member.state = 'finishing';
      await pending;
      const message = err instanceof Error ? err.message : String(err);
      jlog.error('job failed', { error: message });
      await write('failed', { error: message }).catch((e) => jlog.error('could not record job failure', { error: e }));
    } finally {
      endedHere.add(job_id);
      setTimeout(() => endedHere.delete(job_id), 2 * STALE_S * 1000).unref();
      exit();
    }
  })();
  completions.set(job_id, done);
  void done.finally(() => setTimeout(() => completions.delete(job_id), 60_000).unref());
  return { job_id };
}

/** Resolves when a job started by this process has finished (whatever its outcome). */
export function jobFinished(jobId: string): Promise<void> {
  return completions.get(jobId) ?? Promise.resolve();
}

export async function getJob(ch: ClickHouse, appId: string, jobId: string): Promise<JobRecord | undefined> {
  const row = await ch.one<{ kind: string; state: JobState; progress: number; params: string; result: string; error: string; created_at: number; seq: number }>(sql`
    SELECT argMax(kind, updated_seq) AS kind, argMax(state, updated_seq) AS state, argMax(progress, updated_seq) AS progress,
      argMax(params, updated_seq) AS params, argMax(result, updated_seq) AS result, argMax(error, updated_seq) AS error,
      toUInt32(min(created_at)) AS created_at, max(updated_seq) AS seq
    FROM jobs WHERE app_id = ${appId} AND job_id = ${jobId}
    GROUP BY job_id`);
  if (!row) return undefined;
  const rec: JobRecord = {
    job_id: jobId,
    kind: row.kind,
    state: row.state,
    progress: Number(row.progress),
    created_at: new Date(Number(row.created_at) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
  };
  if (row.params) rec.params = JSON.parse(row.params);
  if (row.result) rec.result = JSON.parse(row.result);
  if (row.error) rec.error = row.error;
  const stale = Number(row.seq) < (Date.now() - STALE_S * 1000) * 1000;
  if ((rec.state === 'queued' || rec.state === 'running') && stale && !isActiveHere(jobId)) {
    rec.state = 'failed';
    rec.error = `abandoned: no heartbeat for ${STALE_S} s (the process running it stopped)`;
  }
  return rec;
}

function isActiveHere(jobId: string): boolean {
  for (const lane of lanes.values()) if (lane.members.some((m) => m.job_id === jobId)) return true;
  return false;
}
