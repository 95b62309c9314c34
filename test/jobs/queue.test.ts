// The job queue (lib/jobs.ts): a job submitted while one of its (app, kind) is
// queued or running is accepted and waits `queued`; jobs of one (app, kind) run
// one at a time in submission order, in this process and against the records of
// other processes (simulated by writing rows into the jobs table directly);
// the queue is bounded; the profile schedule skips a busy app instead of
// queueing. Over real ClickHouse (and the API over it).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { getJob, JobConflictError, jobFinished, jobInProgress, JobQueueFullError, jobTiming, MAX_QUEUED, STALE_S, startJob } from '../../lib/jobs.ts';
import { sql } from '../../lib/sql.ts';
import { startProfileScheduler } from '../../profiles/scheduler.ts';
import { storeFixtureEvents } from '../api/fixtures.ts';
import { expectProblem, harness, type Harness } from '../api/harness.ts';

let h: Harness;
let ch: ClickHouse;
const saved = { ...jobTiming };

beforeAll(async () => {
  jobTiming.pollMs = 200;
  jobTiming.heartbeatMs = 300;
  h = await harness({ prefix: 'jobq' });
  ch = h.ch;
});
afterAll(() => Object.assign(jobTiming, saved));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** jobFinished, failing after `ms` rather than at the test's timeout. */
function finished(id: string, ms = 30_000): Promise<void> {
  let t: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (t = setTimeout(() => reject(new Error(`job ${id} did not finish within ${ms} ms`)), ms)));
  return Promise.race([jobFinished(id), late]).finally(() => clearTimeout(t));
}

/** Run functions that record when they start and end, each optionally held at a gate. */
function recorder() {
  const spans: Record<string, { start: number; end?: number }> = {};
  const order: string[] = [];
  return {
    spans,
    order,
    started: (name: string) => name in spans,
    job: (name: string, held?: { wait: Promise<void> }) => async (report: (p: number) => void) => {
      spans[name] = { start: performance.now() };
      order.push(name);
      report(0.5);
      if (held) await held.wait;
      await sleep(30);
      spans[name]!.end = performance.now();
      return { name };
    },
    /** No two spans overlap. */
    disjoint(): boolean {
      const s = Object.values(spans).sort((a, b) => a.start - b.start);
      return s.every((x, i) => i === 0 || (s[i - 1]!.end !== undefined && x.start >= s[i - 1]!.end!));
    },
  };
}

/** A record of another process's job (as it would write it). */
function foreign(app: string, job_id: string, state: string, opts: { kind?: string; created?: number; seq?: number } = {}) {
  return ch.insert('jobs', [
    {
      app_id: app, job_id, kind: opts.kind ?? 'profiles', state, progress: 0, params: '{}', result: '', error: '',
      created_at: opts.created ?? Math.floor(Date.now() / 1000), updated_seq: opts.seq ?? Date.now() * 1000,
    },
  ]);
}

const stateOf = async (app: string, id: string) => (await getJob(ch, app, id))?.state;

describe('in one process', () => {
  it('accepts a second job of the same (app, kind): queued with progress 0 while the first runs, then runs and succeeds', async () => {
    const r = recorder();
    const g = gate();
    const a = await startJob(ch, 'two', 'profiles', { n: 1 }, r.job('a', g));
    const b = await startJob(ch, 'two', 'profiles', { n: 2 }, r.job('b'));
    expect(a.job_id).not.toBe(b.job_id);
    await waitFor('a to run', () => r.started('a'));
    expect(await getJob(ch, 'two', a.job_id)).toMatchObject({ state: 'running' });
    await sleep(1_000); // several polls
    expect(r.started('b')).toBe(false);
    expect(await getJob(ch, 'two', b.job_id)).toMatchObject({ state: 'queued', progress: 0, params: { n: 2 } });
    expect(await jobInProgress(ch, 'two', 'profiles')).toBe(a.job_id);
    g.open();
    await finished(b.job_id);
    expect(await getJob(ch, 'two', a.job_id)).toMatchObject({ state: 'succeeded', progress: 1, result: { name: 'a' } });
    expect(await getJob(ch, 'two', b.job_id)).toMatchObject({ state: 'succeeded', progress: 1, result: { name: 'b' } });
    expect(r.spans.b!.start).toBeGreaterThanOrEqual(r.spans.a!.end!);
    expect(await jobInProgress(ch, 'two', 'profiles')).toBeUndefined();
  });

  it('runs three in submission order, never two at once, a failing one not holding back the next', async () => {
    const r = recorder();
    const g = gate();
    const ids = [
      await startJob(ch, 'three', 'clusters', {}, r.job('a', g)),
      await startJob(ch, 'three', 'clusters', {}, async () => {
        r.order.push('b');
        throw new Error('b broke');
      }),
      await startJob(ch, 'three', 'clusters', {}, r.job('c')),
      await startJob(ch, 'three', 'clusters', {}, r.job('d')),
    ].map((j) => j.job_id);
    await waitFor('a to run', () => r.started('a'));
    expect(await Promise.all(ids.slice(1).map((id) => stateOf('three', id)))).toEqual(['queued', 'queued', 'queued']);
    g.open();
    await Promise.all(ids.map((id) => finished(id)));
    expect(r.order).toEqual(['a', 'b', 'c', 'd']);
    expect(r.disjoint()).toBe(true);
    expect(await Promise.all(ids.map((id) => stateOf('three', id)))).toEqual(['succeeded', 'failed', 'succeeded', 'succeeded']);
  });

  it('starts the next job here as soon as the one before it ends, without waiting for a poll', async () => {
    jobTiming.pollMs = 60_000;
    try {
      const r = recorder();
      const g = gate();
      const a = await startJob(ch, 'prompt', 'profiles', {}, r.job('a', g));
      const b = await startJob(ch, 'prompt', 'profiles', {}, r.job('b'));
      await waitFor('a to run', () => r.started('a'));
      g.open();
      await finished(a.job_id);
      await waitFor('b to run right after a', () => r.started('b'), 5_000);
      await finished(b.job_id);
    } finally {
      jobTiming.pollMs = 200;
    }
  });

  it('does not hold back the next job here when a finished job\'s last write was lost', async () => {
    jobTiming.pollMs = 60_000;
    try {
      let lostId = '';
      const lossy = Object.create(ch) as ClickHouse;
      lossy.insert = async (table, values) => {
        if (values.some((v) => v.job_id === lostId && (v.state === 'succeeded' || v.state === 'failed'))) throw new Error('connection reset');
        await ch.insert(table, values);
      };
      const r = recorder();
      const g = gate();
      const a = await startJob(lossy, 'lost', 'profiles', {}, r.job('a', g));
      lostId = a.job_id;
      const b = await startJob(lossy, 'lost', 'profiles', {}, r.job('b'));
      await waitFor('a to run', () => r.started('a'));
      g.open();
      await finished(a.job_id);
      expect(await stateOf('lost', a.job_id)).toBe('running'); // its record, until it goes stale
      await waitFor('b to run although a still looks running', () => r.started('b'), 5_000);
      await finished(b.job_id);
      expect(await stateOf('lost', b.job_id)).toBe('succeeded');
    } finally {
      jobTiming.pollMs = 200;
    }
  });

  it('does not hold back a job of another app or of another kind', async () => {
    const r = recorder();
    const g = gate();
    const held = await startJob(ch, 'busy', 'profiles', {}, r.job('held', g));
    await waitFor('held to run', () => r.started('held'));
    const otherKind = await startJob(ch, 'busy', 'clusters', {}, r.job('kind'));
    const otherApp = await startJob(ch, 'quiet', 'profiles', {}, r.job('app'));
    await finished(otherKind.job_id);
    await finished(otherApp.job_id);
    expect(await stateOf('busy', otherKind.job_id)).toBe('succeeded');
    expect(await stateOf('quiet', otherApp.job_id)).toBe('succeeded');
    expect(await stateOf('busy', held.job_id)).toBe('running');
    g.open();
    await finished(held.job_id);
  });

  it('keeps a queued job\'s record fresh with heartbeats', async () => {
    const g = gate();
    const a = await startJob(ch, 'beat', 'profiles', {}, async () => g.wait);
    const b = await startJob(ch, 'beat', 'profiles', {}, async () => 1);
    const seqs = async () =>
      (await ch.rows<{ n: number; seq: number }>(sql`SELECT count() AS n, max(updated_seq) AS seq FROM jobs WHERE app_id = 'beat' AND job_id = ${b.job_id} AND state = 'queued'`))[0]!;
    const first = await seqs();
    // Beats come every heartbeatMs; waited for, not slept on, so a loaded machine only makes it slower.
    let later = first;
    await waitFor('two more heartbeats', async () => {
      later = await seqs();
      return Number(later.n) >= Number(first.n) + 2;
    });
    expect(Number(later.seq)).toBeGreaterThan(Number(first.seq));
    expect(await stateOf('beat', b.job_id)).toBe('queued');
    g.open();
    await finished(b.job_id);
    expect(await stateOf('beat', b.job_id)).toBe('succeeded');
  });
});

describe('across processes (another process simulated by its records)', () => {
  it('waits while another process\'s job is running, and runs once it has finished', async () => {
    const r = recorder();
    await foreign('xp', 'other-running', 'running');
    const j = await startJob(ch, 'xp', 'profiles', {}, r.job('mine'));
    await sleep(1_000);
    expect(r.started('mine')).toBe(false);
    expect(await getJob(ch, 'xp', j.job_id)).toMatchObject({ state: 'queued', progress: 0 });
    await foreign('xp', 'other-running', 'succeeded');
    const finishedAt = performance.now();
    await finished(j.job_id);
    expect(r.spans.mine!.start).toBeGreaterThanOrEqual(finishedAt);
    expect(await stateOf('xp', j.job_id)).toBe('succeeded');
  });

  it('stops waiting for a running record whose heartbeat went stale', async () => {
    const r = recorder();
    // Fresh for about eight more seconds (room for a slow machine before the check below), then abandoned.
    await foreign('xs', 'other-dying', 'running', { seq: (Date.now() - (STALE_S - 8) * 1000) * 1000 });
    const j = await startJob(ch, 'xs', 'profiles', {}, r.job('mine'));
    await sleep(500);
    expect(r.started('mine')).toBe(false);
    await finished(j.job_id);
    expect(await stateOf('xs', j.job_id)).toBe('succeeded');
    expect(await getJob(ch, 'xs', 'other-dying')).toMatchObject({ state: 'failed', error: expect.stringMatching(/abandoned/) });
  });

  it('waits for another process\'s job queued before it, not for one queued after it', async () => {
    const r = recorder();
    const now = Math.floor(Date.now() / 1000);
    await foreign('xq', 'zz-queued-later', 'queued', { created: now + 3600 });
    await foreign('xq', '00-queued-earlier', 'queued', { created: now - 5 });
    const j = await startJob(ch, 'xq', 'profiles', {}, r.job('mine'));
    await sleep(1_000);
    expect(r.started('mine')).toBe(false);
    expect(await stateOf('xq', j.job_id)).toBe('queued');
    // The earlier one runs and finishes in its process; the later one stays queued.
    await foreign('xq', '00-queued-earlier', 'running');
    await sleep(600);
    expect(r.started('mine')).toBe(false);
    await foreign('xq', '00-queued-earlier', 'succeeded');
    await finished(j.job_id);
    expect(await stateOf('xq', j.job_id)).toBe('succeeded');
  });

  it('backs off when another process claims the turn at the same instant', async () => {
    const r = recorder();
    let rivalDone = false;
    // The other process's claim lands between this job's `running` write and its check.
    const racing = Object.create(ch) as ClickHouse;
    let raced = false;
    racing.insert = async (table, values) => {
      await ch.insert(table, values);
      if (!raced && values.some((v) => v.state === 'running')) {
        raced = true;
        await foreign('xr', 'rival', 'running');
      }
    };
    const j = await startJob(racing, 'xr', 'profiles', {}, async (report) => {
      if (!rivalDone) throw new Error('ran while the rival ran');
      return r.job('mine')(report);
    });
    await waitFor('the race', () => raced);
    await sleep(800);
    expect(r.started('mine')).toBe(false);
    expect(await stateOf('xr', j.job_id)).toBe('queued');
    rivalDone = true;
    await foreign('xr', 'rival', 'succeeded');
    await finished(j.job_id);
    expect(await getJob(ch, 'xr', j.job_id)).toMatchObject({ state: 'succeeded', result: { name: 'mine' } });
  });

  it('refuses instead of queueing when asked to (ifBusy: refuse), here and against another process', async () => {
    const g = gate();
    // Two calls in one tick: the first's record is not written yet when the second asks.
    const first = startJob(ch, 'ref', 'profiles', {}, async () => g.wait);
    await expect(startJob(ch, 'ref', 'profiles', {}, async () => 1, { ifBusy: 'refuse' })).rejects.toBeInstanceOf(JobConflictError);
    const a = await first;
    await expect(startJob(ch, 'ref', 'profiles', {}, async () => 1, { ifBusy: 'refuse' })).rejects.toThrow(new RegExp(a.job_id));
    g.open();
    await finished(a.job_id);
    await foreign('ref', 'other', 'queued');
    await expect(startJob(ch, 'ref', 'profiles', {}, async () => 1, { ifBusy: 'refuse' })).rejects.toThrow(/already queued or running \(other\)/);
    await foreign('ref', 'other', 'failed');
    const b = await startJob(ch, 'ref', 'profiles', {}, async () => 2, { ifBusy: 'refuse' });
    await finished(b.job_id);
    expect(await stateOf('ref', b.job_id)).toBe('succeeded');
  });
});

describe('the profile schedule', () => {
  const runAt = (app: string, ageS: number) => {
    const at = Math.floor(Date.now() / 1000) - ageS;
    return ch.insert('profile_runs', [{ app_id: app, run_id: `r_${app}`, as_of: at, mode: 'full', state: 'complete', users: 1, started_at: at, finished_at: at + 1, previous_run_id: '' }]);
  };

  it('skips an app whose profile job is already queued or running, instead of queueing behind it', async () => {
    const g = gate();
    await runAt('sched-busy', 60);
    const held = await startJob(ch, 'sched-busy', 'profiles', {}, async () => g.wait);
    const scheduler = startProfileScheduler(ch, ['sched-busy'], 3600);
    // The tick ends at once: nothing of its own to wait for.
    expect(await scheduler.stop(3_000)).toBe(true);
    const jobs = await ch.rows<{ job_id: string }>(sql`SELECT DISTINCT job_id FROM jobs WHERE app_id = 'sched-busy'`);
    expect(jobs.map((j) => j.job_id)).toEqual([held.job_id]);
    g.open();
    await finished(held.job_id);
  });

  it('queues behind it when the app has had no run at now for two intervals', async () => {
    const g = gate();
    await runAt('sched-late', 3 * 3600);
    const held = await startJob(ch, 'sched-late', 'profiles', {}, async () => g.wait);
    const scheduler = startProfileScheduler(ch, ['sched-late'], 3600);
    let queued: { job_id: string; state: string }[] = [];
    await waitFor('the scheduled job, queued', async () => {
      queued = await ch.rows<{ job_id: string; state: string }>(sql`
        SELECT job_id, argMax(state, updated_seq) AS state FROM jobs WHERE app_id = 'sched-late' AND job_id != ${held.job_id} GROUP BY job_id`);
      return queued.length > 0;
    });
    expect(queued).toEqual([{ job_id: expect.any(String), state: 'queued' }]);
    // The tick did not wait for it: the other apps' turns are not held up.
    expect(await scheduler.stop(3_000)).toBe(true);
    g.open();
    await finished(held.job_id);
    await finished(queued[0]!.job_id);
    expect(await stateOf('sched-late', queued[0]!.job_id)).toBe('succeeded');
  });
});

describe('the queue bound', () => {
  it(`refuses the job after ${MAX_QUEUED} queued with a problem saying what to do, through the API too`, async () => {
    const g = gate();
    const head = await startJob(ch, 'app_b', 'clusters', {}, async () => g.wait);
    const queued: string[] = [];
    for (let i = 0; i < MAX_QUEUED; i++) queued.push((await startJob(ch, 'app_b', 'clusters', { i }, async () => i)).job_id);
    const err = await startJob(ch, 'app_b', 'clusters', {}, async () => 0).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JobQueueFullError);
    expect(err).toBeInstanceOf(JobConflictError);
    expect((err as Error).message).toContain(`${MAX_QUEUED} clusters jobs for app app_b are already queued`);
    expect((err as Error).message).toContain(queued.at(-1));
    const p = await expectProblem(await h.call('POST', '/v1/jobs/clusters', { as: ['app_b', 'admin'], body: {} }), 409);
    expect(p.detail).toMatch(/already queued on this server, the most it holds; wait for them to finish .* and submit again/);
    // Another kind is not affected by this lane's bound.
    const profiles = await h.call('POST', '/v1/jobs/profiles', { as: ['app_b', 'admin'], body: {} });
    expect(profiles.status).toBe(202);
    g.open();
    await Promise.all([head.job_id, ...queued, ((await profiles.json()) as { job_id: string }).job_id].map((id) => finished(id)));
    expect(await stateOf('app_b', queued.at(-1)!)).toBe('succeeded');
    // Room again.
    const after = await startJob(ch, 'app_b', 'clusters', {}, async () => 'after');
    await finished(after.job_id);
    expect(await stateOf('app_b', after.job_id)).toBe('succeeded');
  }, 180_000);
});

describe('the API', () => {
  it('answers 202 with distinct ids to two profile jobs back to back; the second shows queued, then both succeed', async () => {
    await storeFixtureEvents(ch);
    const g = gate();
    const held = await startJob(ch, 'app_a', 'profiles', {}, async () => g.wait); // the job "before" them
    const post = () => h.call('POST', '/v1/jobs/profiles', { as: ['app_a', 'admin'], body: { mode: 'full' } });
    const [r1, r2] = await Promise.all([post(), post()]);
    expect([r1.status, r2.status]).toEqual([202, 202]);
    const ids = await Promise.all([r1, r2].map(async (r) => ((await r.json()) as { job_id: string }).job_id));
    expect(new Set(ids).size).toBe(2);
    for (const id of ids) {
      const res = await h.call('GET', `/v1/jobs/${id}`, { as: ['app_a', 'admin'] });
      expect(await res.json()).toMatchObject({ job_id: id, state: 'queued', progress: 0, params: { mode: 'full' } });
    }
    g.open();
    await Promise.all(ids.map((id) => finished(id)));
    for (const id of ids) {
      const res = await h.call('GET', `/v1/jobs/${id}`, { as: ['app_a', 'admin'] });
      expect(await res.json()).toMatchObject({ job_id: id, state: 'succeeded', progress: 1 });
    }
  });

  it('documents the queueing and the bound in the OpenAPI document', async () => {
    const doc: any = await (await h.call('GET', '/openapi.json', { as: ['app_a', 'read'] })).json();
    for (const path of ['/v1/jobs/profiles', '/v1/jobs/clusters']) {
      const op = doc.paths[path].post;
      expect(op.responses['202'].description).toMatch(/queued/);
      expect(op.responses['409'].description).toContain(`${MAX_QUEUED} jobs of this kind for the app are already queued`);
      expect(op.responses['409'].content['application/problem+json'].schema).toEqual({ $ref: '#/components/schemas/Problem' });
    }
  });
});
