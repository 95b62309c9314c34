// Background jobs (profiles, clusters, …) run in this process; their records are
// persisted in the `jobs` table, one row per state change (the highest
// updated_seq wins), so any process can answer GET /v1/jobs/{id}.
//
// One job per (app, kind) at a time: checked in process (synchronously, so two
// calls in the same tick cannot both pass) and against the persisted records of
// other processes. A running job writes a heartbeat; a queued/running record
// without one for STALE_S seconds belongs to a dead process and blocks nothing
// (it reads as failed). ClickHouse has no transactions, so two processes
// starting the same job in the same instant can both pass the persisted check.
import { randomUUID } from 'node:crypto';
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

const HEARTBEAT_MS = 10_000;
const PROGRESS_WRITE_MS = 1_000;
export const STALE_S = 120;

let lastSeq = 0;
/** Milliseconds * 1000 + counter: strictly increasing in this process, ordered by time across processes. */
function nextSeq(): number {
  lastSeq = Math.max(lastSeq + 1, Date.now() * 1000);
  return lastSeq;
}

const active = new Map<string, string>(); // `${appId}\u0000${kind}` → job_id ('' while checking)
const completions = new Map<string, Promise<void>>();

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

async function persistedActive(ch: ClickHouse, appId: string, kind: string): Promise<string | undefined> {
  const freshSince = (Date.now() - STALE_S * 1000) * 1000;
  const rows = await ch.rows<{ job_id: string }>(sql`
    SELECT job_id FROM (
      SELECT job_id, argMax(state, updated_seq) AS state, max(updated_seq) AS seq
      FROM jobs WHERE app_id = ${appId} AND kind = ${kind}
      GROUP BY job_id
    ) WHERE state IN ('queued', 'running') AND seq >= ${freshSince}
    LIMIT 1`);
  return rows[0]?.job_id;
}

/**
 * Starts `run` in the background and returns its id at once. `run` reports its
 * progress (0..1); its resolved value becomes the job's result.
 */
export async function startJob(
  ch: ClickHouse,
  appId: string,
  kind: 'profiles' | 'clusters' | string,
  params: unknown,
  run: (report: (progress: number) => void) => Promise<unknown>,
): Promise<{ job_id: string }> {
  const key = `${appId}\u0000${kind}`;
  if (active.has(key)) throw new JobConflictError(appId, kind, active.get(key) || undefined);
  active.set(key, '');
  const job_id = randomUUID();
  const created_at = Math.floor(Date.now() / 1000);
  const base = { app_id: appId, job_id, kind, params: JSON.stringify(params ?? {}), created_at };
  let progress = 0;
  const write = (state: JobState, extra: { result?: unknown; error?: string } = {}) =>
    ch.insert('jobs', [
      {
        ...base,
        state,
        progress,
        result: extra.result === undefined ? '' : JSON.stringify(extra.result),
        error: extra.error ?? '',
        updated_seq: nextSeq(),
      } satisfies Row,
    ] as unknown as Record<string, unknown>[]);
  try {
    const other = await persistedActive(ch, appId, kind);
    if (other) throw new JobConflictError(appId, kind, other);
    await write('queued');
  } catch (err) {
    active.delete(key);
    throw err;
  }
  active.set(key, job_id);
  const jlog = log.child({ job_id, app_id: appId, kind });

  const done = (async () => {
    let lastWrite = 0;
    let pending: Promise<void> = Promise.resolve();
    const heartbeat = setInterval(() => {
      pending = pending.then(() => write('running')).catch((e) => jlog.warn('job heartbeat failed', { error: e }));
    }, HEARTBEAT_MS);
    heartbeat.unref();
    try {
      await write('running');
      const report = (p: number) => {
        progress = Math.min(1, Math.max(progress, p));
        const now = Date.now();
        if (now - lastWrite < PROGRESS_WRITE_MS) return;
        lastWrite = now;
        pending = pending.then(() => write('running')).catch((e) => jlog.warn('job progress write failed', { error: e }));
      };
      const result = await run(report);
      clearInterval(heartbeat);
      await pending;
      progress = 1;
      await write('succeeded', { result: result ?? null });
      jlog.info('job succeeded');
    } catch (err) {
      clearInterval(heartbeat);
      await pending;
      const message = err instanceof Error ? err.message : String(err);
      jlog.error('job failed', { error: message });
      await write('failed', { error: message }).catch((e) => jlog.error('could not record job failure', { error: e }));
    } finally {
      clearInterval(heartbeat);
      active.delete(key);
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
  for (const v of active.values()) if (v === jobId) return true;
  return false;
}
