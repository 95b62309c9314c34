// stopJobs(): on shutdown, jobs of this process still queued give up at once
// (recorded failed, never run), the running one is not interrupted, and new
// submissions are refused. Its own file: stopJobs is for good in a process.
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { toProblem } from '../../api/app.ts';
import { getJob, jobFinished, JobsStoppedError, jobTiming, startJob, stopJobs } from '../../lib/jobs.ts';
import { testDatabase } from '../support/env.ts';

let ch: ClickHouse;
beforeAll(async () => {
  jobTiming.pollMs = 60_000; // a queued job would sleep a minute between looks: stopJobs must wake it
  ch = await testDatabase('jobstop');
});

describe('stopJobs', () => {
  it('fails the queued jobs at once, lets the running one finish, refuses new ones', async () => {
    let open!: () => void;
    const held = new Promise<void>((r) => (open = r));
    const ran: string[] = [];
    const a = await startJob(ch, 'app', 'profiles', {}, async () => {
      ran.push('a');
      await held;
      return { done: 'a' };
    });
    // Another process's running clusters job: c waits on the records, polling a minute apart (b waits behind a, here).
    const other = { app_id: 'app', job_id: '00000000-0000-7000-8000-000000000000', kind: 'clusters', params: '{}', result: '', error: '', created_at: 1, progress: 0 };
    await ch.insert('jobs', [{ ...other, state: 'running', updated_seq: Date.now() * 1000 }]);
    const b = await startJob(ch, 'app', 'profiles', {}, async () => void ran.push('b'));
    const c = await startJob(ch, 'app', 'clusters', {}, async () => void ran.push('c'));
    await new Promise((r) => setTimeout(r, 300));
    expect((await getJob(ch, 'app', c.job_id))?.state).toBe('queued');

    const t0 = Date.now();
    stopJobs();
    await jobFinished(c.job_id);
    expect(Date.now() - t0).toBeLessThan(20_000); // not the minute-long poll
    expect(await getJob(ch, 'app', c.job_id)).toMatchObject({ state: 'failed', error: expect.stringMatching(/server stopped before this job ran/) });
    const refused = await startJob(ch, 'app', 'other', {}, async () => undefined).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(JobsStoppedError);
    // The API answers it 503 (retry elsewhere or later), not 500.
    expect(toProblem(refused)).toMatchObject({ status: 503, detail: expect.stringMatching(/server stopped/) });

    // The running job goes on; the one queued behind it here has given up too and never runs.
    expect((await getJob(ch, 'app', a.job_id))?.state).toBe('running');
    open();
    await Promise.all([jobFinished(a.job_id), jobFinished(b.job_id)]);
    expect((await getJob(ch, 'app', a.job_id))?.state).toBe('succeeded');
    expect((await getJob(ch, 'app', b.job_id))?.state).toBe('failed');
    expect(ran).toEqual(['a']);
  });
});
