// `warbler profiles build` interrupted while its job waits its turn: the job is
// recorded as failed before the process exits, so the app's next profile job
// does not wait for the record to go stale (STALE_S). A real CLI process over
// real ClickHouse; the job it waits behind is another process's record.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { REPO_ROOT } from '../../lib/config.ts';
import { getJob, jobFinished, jobTiming, STALE_S, startJob } from '../../lib/jobs.ts';
import { clickhouseUrl, testDatabase } from '../support/env.ts';

let ch: ClickHouse;
beforeAll(async () => {
  jobTiming.pollMs = 200;
  ch = await testDatabase('jobcli');
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('warbler profiles build, interrupted while queued', () => {
  it('records its job as failed and exits 130; the next job of the app runs at once', async () => {
    // Another process's running profile job, its heartbeat fresh.
    const other = { app_id: 'app', job_id: '00000000-0000-7000-8000-000000000001', kind: 'profiles', params: '{}', result: '', error: '', created_at: 1, progress: 0 };
    await ch.insert('jobs', [{ ...other, state: 'running', updated_seq: Date.now() * 1000 }]);

    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'cli/main.ts'), 'profiles', 'build', '--app', 'app'], {
      env: { ...process.env, WARBLER_HOME: mkdtempSync(join(tmpdir(), 'warbler-cli-')), WARBLER_CLICKHOUSE_URL: clickhouseUrl(), WARBLER_CLICKHOUSE_DATABASE: ch.database },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const until = Date.now() + 60_000;
    while (!/is queued behind/.test(stderr)) {
      if (Date.now() > until) throw new Error(`the CLI never said it was queued: ${stderr}`);
      await sleep(50);
    }
    const jobId = /job (\S+) is queued/.exec(stderr)![1]!;
    expect((await getJob(ch, 'app', jobId))?.state).toBe('queued');

    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(stderr).toMatch(/SIGINT: job \S+ stopped and recorded as failed/);
    expect(await getJob(ch, 'app', jobId)).toMatchObject({ state: 'failed', error: expect.stringMatching(/interrupted \(SIGINT\)/) });

    // The other process's job ends; a new one here runs without waiting for the CLI's record to go stale.
    await ch.insert('jobs', [{ ...other, state: 'succeeded', updated_seq: Date.now() * 1000 }]);
    const t0 = Date.now();
    const next = await startJob(ch, 'app', 'profiles', {}, async () => ({ ran: true }));
    await jobFinished(next.job_id);
    expect(await getJob(ch, 'app', next.job_id)).toMatchObject({ state: 'succeeded', result: { ran: true } });
    expect(Date.now() - t0).toBeLessThan((STALE_S * 1000) / 4);
  });
});
