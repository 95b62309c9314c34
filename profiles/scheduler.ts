// Keeps profiles fresh in the long-running service: every interval, one
// profile job per app — incremental, and full once per `fullEveryS` — through
// the job registry (so a job already started by the API or another process is
// respected, not doubled).
//
// The registry queues a job submitted while another of its kind runs for the
// app (lib/jobs.ts). The schedule does not: when a profile job of the app is
// already queued or running anywhere, that app's tick is skipped (the next tick
// catches up), so ticks never pile jobs up behind a long one. It starts its job
// with ifBusy 'refuse', which checks and joins the app's line in one step;
// jobInProgress() first spares the log a refusal per busy app. Only when the
// app has had no run at now finish for two intervals does the tick queue its
// job, and then it does not wait for it (nor queue another) before the next app.
import type { ClickHouse } from '../lib/clickhouse.ts';
import { JobConflictError, jobFinished, jobInProgress } from '../lib/jobs.ts';
import { log } from '../lib/log.ts';
import { sql } from '../lib/sql.ts';
import { startProfileJob, type ProfileMode } from './job.ts';
import { listRuns, type ProfileRun } from './read.ts';

export interface ProfileScheduler {
  /**
   * Stops scheduling and waits for a tick in progress to end, at most
   * `waitMs` when given. Resolves true when no tick is left running; a job
   * still running goes on in the background (a process exit abandons it, and
   * its record reads as failed once its heartbeat stops).
   */
  stop(waitMs?: number): Promise<boolean>;
}

/**
 * The mode of a scheduled run: full when the app has no full run completed in
 * the last `fullEveryS` seconds (0: never), else incremental. Incremental runs
 * carry values forward from the previous run; a full run derives every row
 * from the stored events again — after events were deleted, or a duplicate that
 * slipped past ingest collapsed on merge.
 */
export function scheduledMode(runs: readonly ProfileRun[], now: Date, fullEveryS: number): ProfileMode {
  if (!(fullEveryS > 0)) return 'incremental';
  // A superseded or dropped run whose rows merged keeps only its last row: it
  // completed if it had users (failed and abandoned runs record none); its time
  // is then the mark's or the drop's.
  const completedFull = runs.filter((r) => r.mode === 'full' && (r.completed || ((r.state === 'dropped' || r.state === 'superseded') && r.users > 0)));
  const lastFull = Math.max(0, ...completedFull.map((r) => r.finished_at.getTime()));
  return now.getTime() - lastFull >= fullEveryS * 1000 ? 'full' : 'incremental';
}

/** The apps the service keeps fresh: every app with stored events. */
export async function appsWithEvents(ch: ClickHouse): Promise<string[]> {
  return (await ch.rows<{ app_id: string }>(sql`SELECT DISTINCT app_id FROM app_users ORDER BY app_id`)).map((r) => r.app_id);
}

/**
 * Starts a tick now and then every `intervalS` seconds after the previous tick
 * ended (ticks never overlap). `intervalS` 0 disables the schedule.
 * `appIds` is a list or a function returning the current list.
 */
export function startProfileScheduler(
  ch: ClickHouse,
  appIds: readonly string[] | (() => Promise<readonly string[]>),
  intervalS: number,
  fullEveryS = 0,
): ProfileScheduler {
  const slog = log.child({ component: 'profile-scheduler' });
  if (!(intervalS > 0)) {
    slog.info('profile schedule disabled (interval 0)');
    return { stop: async () => true };
  }
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let current: Promise<void> = Promise.resolve();
  // Apps whose scheduled job waits queued behind other jobs: not waited for by
  // the tick (the other apps would wait too), and not queued again until it ends.
  const queuedBehind = new Map<string, string>();

  const tick = async () => {
    const apps = typeof appIds === 'function' ? await appIds() : appIds;
    for (const appId of apps) {
      if (stopped) return;
      if (queuedBehind.has(appId)) continue;
      try {
        const [busy, runs] = await Promise.all([jobInProgress(ch, appId, 'profiles'), listRuns(ch, appId)]);
        // Other profile jobs (a client's, the runs segment evaluations build at
        // past instants) can keep the app busy for long: when no run at or
        // before now has finished within two intervals, the tick's job queues
        // behind them instead of skipping.
        const now = new Date();
        const overdue = !runs.some((r) => r.state === 'complete' && r.as_of <= now && now.getTime() - r.finished_at.getTime() < 2 * intervalS * 1000);
        if (busy && !overdue) {
          slog.info('profile job already queued or running; skipped', { app_id: appId, job_id: busy });
          continue;
        }
        const mode = scheduledMode(runs, now, fullEveryS);
        const { job_id } = await startProfileJob(ch, appId, { mode }, { ifBusy: busy ? 'queue' : 'refuse' });
        slog.info(busy ? 'scheduled profile job queued behind other profile jobs of the app' : 'scheduled profile job started', { app_id: appId, job_id, mode });
        if (busy) {
          queuedBehind.set(appId, job_id);
          void jobFinished(job_id).finally(() => queuedBehind.delete(appId));
          continue;
        }
        await jobFinished(job_id);
      } catch (err) {
        // A job of the app started since jobInProgress() asked (or a full queue).
        if (err instanceof JobConflictError) slog.info('profile job not started; skipped', { app_id: appId, reason: err.message });
        else slog.error('scheduled profile job could not start', { app_id: appId, error: err });
      }
    }
  };
  const loop = () => {
    if (stopped) return;
    current = tick()
      .catch((err) => slog.error('profile schedule tick failed', { error: err }))
      .finally(() => {
        if (!stopped) {
          timer = setTimeout(loop, intervalS * 1000);
          timer.unref();
        }
      });
  };
  loop();
  slog.info('profile schedule started', { interval_s: intervalS });
  return {
    stop: async (waitMs?: number) => {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (waitMs === undefined) {
        await current;
        return true;
      }
      let timeout: NodeJS.Timeout | undefined;
      const finished = await Promise.race([
        current.then(() => true),
        new Promise<boolean>((resolve) => (timeout = setTimeout(() => resolve(false), waitMs))),
      ]);
      clearTimeout(timeout);
      return finished;
    },
  };
}
