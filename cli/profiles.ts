// `warbler profiles build [--app ID] [--as-of ISO] [--full|--incremental]`:
// runs the profile job (recorded in `jobs` like one started through the API),
// with a progress bar on stderr and the run summary as JSON on stdout.
import { parseArgs } from 'node:util';
import { loadConfig } from '../lib/config.ts';
import { isStorableInstant, parseIsoInstant } from '../lib/instant.ts';
import { abandonJobs, getJob, JobConflictError, jobFinished } from '../lib/jobs.ts';
import { startProfileJob, type ProfileMode } from '../profiles/job.ts';
import { clickhouseFromConfig } from './stack.ts';

const USAGE = `usage: warbler profiles build [--app ID] [--as-of ISO-8601] [--full | --incremental]

  --app ID        the app (default: demo)
  --as-of ISO     the instant profiles are computed at (default: now)
  --full          recompute every user
  --incremental   recompute only users whose profile can have changed (default;
                  a full run when there is no previous run)`;

function progressBar(stream: NodeJS.WriteStream): (p: number) => void {
  const width = 30;
  let lastShown = -1;
  return (p: number) => {
    const pct = Math.floor(p * 100);
    if (stream.isTTY) {
      const filled = Math.round(p * width);
      stream.write(`\rprofiles [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(pct).padStart(3)}%`);
      if (p >= 1) stream.write('\n');
    } else if (pct >= lastShown + 10 || (p >= 1 && lastShown < 100)) {
      lastShown = pct;
      stream.write(`profiles ${pct}%\n`);
    }
  };
}

export async function runProfiles(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { app: { type: 'string', default: 'demo' }, 'as-of': { type: 'string' }, full: { type: 'boolean' }, incremental: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (err) {
    process.stderr.write(`warbler profiles: ${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (positionals[0] !== 'build' || positionals.length > 1) {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  if (values.full && values.incremental) {
    process.stderr.write('warbler profiles: --full and --incremental exclude each other\n');
    return 2;
  }
  let asOf: Date | undefined;
  if (values['as-of'] !== undefined) {
    const s = values['as-of'];
    const at = parseIsoInstant(s);
    if (!at || !isStorableInstant(at.seconds * 1000)) {
      process.stderr.write(`warbler profiles: --as-of: ${JSON.stringify(s)} is not an ISO 8601 instant with an offset or Z from 1970 to 2106-02-07T06:28:15Z\n`);
      return 2;
    }
    asOf = new Date(at.seconds * 1000);
  }
  const mode: ProfileMode = values.full ? 'full' : 'incremental';
  const cfg = loadConfig();
  const ch = clickhouseFromConfig({ ...cfg, WARBLER_QUERY_TIMEOUT_S: Math.max(cfg.WARBLER_QUERY_TIMEOUT_S, 3600) });
  const appId = values.app as string;
  const bar = progressBar(process.stderr);
  try {
    let job_id: string;
    try {
      ({ job_id } = await startProfileJob(ch, appId, { ...(asOf ? { asOf } : {}), mode }));
    } catch (err) {
      if (err instanceof JobConflictError) {
        process.stderr.write(`warbler profiles: ${err.message}\n`);
        return 3;
      }
      throw err;
    }
    // Interrupted, the job is recorded as failed before the process goes: its
    // record would otherwise hold the app's other profile jobs back for minutes.
    const interrupted = (signal: NodeJS.Signals) => {
      process.stderr.write(`\nwarbler profiles: ${signal}: job ${job_id} stopped and recorded as failed\n`);
      void abandonJobs(ch, `interrupted (${signal}) before it ended; run it again`)
        .catch((e) => process.stderr.write(`warbler profiles: could not record job ${job_id} as failed (${(e as Error).message}); it holds the app's other profile jobs back until its record goes stale\n`))
        .finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
    };
    process.once('SIGINT', interrupted);
    process.once('SIGTERM', interrupted);
    // Progress comes from the persisted record, as any client of the API sees it.
    let saidQueued = false;
    const poll = setInterval(() => {
      void getJob(ch, appId, job_id)
        .then((j) => {
          if (j?.state === 'running') bar(j.progress);
          else if (j?.state === 'queued' && !saidQueued) {
            saidQueued = true;
            process.stderr.write(`warbler profiles: job ${job_id} is queued behind another profile job of app ${appId}; it starts when that one ends\n`);
          }
        })
        .catch(() => undefined);
    }, 500);
    await jobFinished(job_id);
    clearInterval(poll);
    const job = await getJob(ch, appId, job_id);
    if (job?.state !== 'succeeded') {
      process.stderr.write(`\nwarbler profiles: job ${job_id} failed: ${job?.error ?? 'unknown error'}\n`);
      return 1;
    }
    bar(1);
    process.stdout.write(JSON.stringify({ job_id, ...(job.result as object) }) + '\n');
    return 0;
  } finally {
    await ch.close();
  }
}
