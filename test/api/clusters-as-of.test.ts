// POST /v1/jobs/clusters with as_of trains on the profiles at exactly that
// instant (built when there is no run at it, as segments read them), and a new
// model leaves no user of a later run without a cluster: "the user's cluster in
// the app's latest cluster model; null before one exists".
import { beforeAll, describe, expect, it } from 'vitest';
import { getJob, jobFinished } from '../../lib/jobs.ts';
import { buildProfiles } from '../../profiles/job.ts';
import { insertEvents } from '../profiles/events.ts';
import type { TestEvent } from '../profiles/reference.ts';
import { harness, type Harness } from './harness.ts';

let h: Harness;
beforeAll(async () => {
  h = await harness({ prefix: 'api_clusters_asof' });
});

const HOUR = 3600;
const T = Date.parse('2026-10-01T00:00:00Z') / 1000;
const iso = (s: number) => new Date(s * 1000).toISOString().replace('.000Z', 'Z');
let n = 0;
const ev = (user_id: string, ts: number, event: string, amount?: number): TestEvent => ({
  event_id: `e${n++}`, user_id, ts, type: 'track', event, properties: amount === undefined ? {} : { amount }, traits: {}, context: {}, received_at: T - 100 * 24 * HOUR,
});

describe('cluster jobs and as_of', () => {
  it('train on the run at exactly as_of, and give the users of a later run a cluster', async () => {
    // 40 users: half browse, half buy a lot.
    const events = Array.from({ length: 40 }, (_, u) =>
      Array.from({ length: 3 + (u % 2) * 10 }, (_, k) => ev(`u${u}`, T - (k + 1) * 5 * HOUR, u % 2 ? 'purchase' : 'view', u % 2 ? 50 + k : undefined)),
    ).flat();
    await insertEvents(h.ch, 'app_a', events);
    await buildProfiles(h.ch, 'app_a', { asOf: new Date(T * 1000), mode: 'full' });
    // New users after T, and a run two hours later that holds them.
    await insertEvents(h.ch, 'app_a', [ev('late1', T + HOUR, 'purchase', 500), ev('late2', T + HOUR, 'view')]);
    await buildProfiles(h.ch, 'app_a', { asOf: new Date((T + 2 * HOUR) * 1000), mode: 'full' });

    const at = T + 30 * 60; // no run at this instant
    const res = await h.call('POST', '/v1/jobs/clusters', { as: ['app_a', 'admin'], body: { k: 2, as_of: iso(at) } });
    expect(res.status).toBe(202);
    const { job_id } = (await res.json()) as { job_id: string };
    await jobFinished(job_id);
    const job = await getJob(h.ch, 'app_a', job_id);
    expect(job?.state, job?.error).toBe('succeeded');
    expect((job?.result as { as_of: string }).as_of).toBe(iso(at));
    const model = (await (await h.call('GET', '/v1/clusters', { as: ['app_a', 'read'] })).json()) as { as_of?: string; version: number };
    expect(model.version).toBe(1);

    // The latest run's users have a cluster under the new model, the new ones too.
    for (const user of ['u1', 'late1', 'late2']) {
      const p = (await (await h.call('GET', `/v1/users/${user}`, { as: ['app_a', 'read'] })).json()) as { as_of: string; cluster: number | null };
      expect(p.as_of, user).toBe(iso(T + 2 * HOUR));
      expect(p.cluster, user).not.toBeNull();
    }
    const none = (await (await h.call('POST', '/v1/segments/evaluate', { as: ['app_a', 'read'], body: { expression: 'cluster is null' } })).json()) as { count: number };
    expect(none.count).toBe(0);
  });
});
