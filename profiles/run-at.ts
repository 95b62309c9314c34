// The profile run a segment reads its profile fields from. A run's fields are
// exact at its own as_of only (events-and-profiles.md §2), so an evaluation at
// an explicit as_of reads the run at exactly that instant, and builds it first
// when there is none: an incremental run from the latest run before it (a full
// one when there is none), through the job registry, so one profile job per app
// runs at a time and the build shows in GET /v1/jobs. An evaluation at "now"
// (no as_of given) reads the latest run, which the scheduler keeps fresh; only
// an app without any run gets one built then.
import type { ClickHouse } from '../lib/clickhouse.ts';
import { getJob, JobConflictError, jobFinished, JobsStoppedError, startJob } from '../lib/jobs.ts';
import { log } from '../lib/log.ts';
import { isoSeconds } from '../lib/instant.ts';
import { buildProfiles } from './job.ts';
import { receivedSinceSql, recentlyWrittenMonthsSql, repairedSinceSql } from './sql.ts';
import { latestRun, listRuns, type ProfileRun } from './read.ts';

/** How long a build waits for room in a full queue of the app's profile jobs before giving up. */
export const QUEUE_FULL_WAIT_MS = 10 * 60_000;
const POLL_MS = 250;

// Evaluations at the same instant share one build (in this process; across
// processes the job registry keeps them one at a time, and the second finds the
// first's run when its turn comes).
const building = new Map<string, Promise<ProfileRun>>();

/**
 * Whether `run` is the run at exactly `asOf`. A run built before its instant
 * serves while that instant is still ahead (not a run per request); once it has
 * passed, the events that came meanwhile are due, and one run started after it
 * takes over. Like any stored run, it holds the events stored when it ran: a
 * later backfill up to its instant is for holdsAllAt to find.
 */
export function isRunAt(run: ProfileRun, asOf: Date, now = Date.now()): boolean {
  return run.as_of.getTime() === asOf.getTime() && (run.started_at.getTime() >= asOf.getTime() || asOf.getTime() > now);
}

/**
 * The complete run at `asOf` (whole seconds) when `exact` (isRunAt), built when
 * missing; otherwise the latest complete run at or before `asOf`, built at
 * `asOf` when there is none at all.
 */
export async function profileRunAt(ch: ClickHouse, appId: string, asOf: Date, exact: boolean): Promise<ProfileRun> {
  const found = await latestRun(ch, appId, asOf);
  if (found && !exact) return found;
  if (found && (await holdsAllAt(ch, appId, found, asOf))) return found;
  const key = `${appId}\u0000${asOf.getTime()}`;
  let build = building.get(key);
  if (!build) {
    build = buildRunAt(ch, appId, asOf).finally(() => building.delete(key));
    building.set(key, build);
  }
  return build;
}

async function runAt(ch: ClickHouse, appId: string, asOf: Date): Promise<ProfileRun | undefined> {
  const run = await latestRun(ch, appId, asOf);
  return run && (await holdsAllAt(ch, appId, run, asOf)) ? run : undefined;
}

/**
 * Seconds before a run's start that an event received then may still have been
 * on its way to ClickHouse (the consumer's batch) when the run read: such an
 * event, or any received later with a ts up to the run's instant, is a reason
 * to build that instant's run again. A build within this margin of the last
 * finds the same event once more, so it bounds the rebuilds too.
 */
export const IN_FLIGHT_MARGIN_S = 15;

/**
 * Whether `run` is the run at exactly `asOf` (isRunAt) and, for a past
 * instant, no event up to it was received since the run started and ingest
 * repaired no user's events since (repairedSinceSql): a backfill
 * stored after the run was built reaches event conditions at once, and the
 * profile fields then need a run that holds it (an incremental one, which
 * rescans such late users).
 */
async function holdsAllAt(ch: ClickHouse, appId: string, run: ProfileRun, asOf: Date, now = Date.now()): Promise<boolean> {
  if (!isRunAt(run, asOf, now)) return false;
  if (asOf.getTime() > now) return true;
  const since = new Date(run.started_at.getTime() - IN_FLIGHT_MARGIN_S * 1000);
  // A repair re-derives events whose received_at is the failed insert's
  // (ingest/repair.ts): the tables the run read may have lacked them, whatever
  // their received_at says. Rare, so any repair since counts.
  const [months, repaired] = await Promise.all([
    ch.rows<{ month: number }>(recentlyWrittenMonthsSql(since)),
    ch.rows(repairedSinceSql({ appId, since })),
  ]);
  if (repaired.length > 0) return false;
  if (months.length === 0) return true;
  return (await ch.rows(receivedSinceSql({ appId, asOf, since, months: months.map((r) => Number(r.month)) }))).length === 0;
}

async function buildRunAt(ch: ClickHouse, appId: string, asOf: Date): Promise<ProfileRun> {
  const at = isoSeconds(asOf);
  const giveUpAt = Date.now() + QUEUE_FULL_WAIT_MS;
  for (;;) {
    let jobId: string;
    try {
      // When its turn comes, another process may have built this run meanwhile.
      ({ job_id: jobId } = await startJob(ch, appId, 'profiles', { as_of: at, mode: 'incremental' }, async (report) => {
        const built = await runAt(ch, appId, asOf);
        return built ? { run_id: built.run_id, as_of: at, reused: true } : buildProfiles(ch, appId, { asOf, mode: 'incremental', onProgress: report });
      }));
    } catch (e) {
      // The app's queue of profile jobs is full (lib/jobs.ts): wait for room.
      if (!(e instanceof JobConflictError) || Date.now() > giveUpAt) throw e;
      await new Promise((r) => setTimeout(r, POLL_MS));
      const run = await runAt(ch, appId, asOf);
      if (run) return run;
      continue;
    }
    log.info('building profiles for a segment at an as_of without a profile run', { app_id: appId, as_of: at, job_id: jobId });
    await jobFinished(jobId);
    const job = await getJob(ch, appId, jobId);
    // The run this job built (or found), by id: a later run at this instant would do as well.
    const runId = (job?.result as { run_id?: string } | undefined)?.run_id;
    const run = runId ? (await listRuns(ch, appId)).find((r) => r.run_id === runId && r.state === 'complete') : undefined;
    if (job?.state === 'succeeded' && run) return run;
    if (job?.error === new JobsStoppedError().message) throw new JobsStoppedError();
    throw new Error(
      `could not build the profiles at ${at} that the segment's profile fields need (job ${jobId}: ${job?.error || job?.state || 'no record'}); ` +
        `retry, or build them with POST /v1/jobs/profiles {"as_of":"${at}"} and evaluate again`,
    );
  }
}
