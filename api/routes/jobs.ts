// Background jobs: profile builds and cluster training. They run in this
// process on the app-wide ClickHouse client (not the request's: a job outlives
// the request that started it), recorded in the `jobs` table by lib/jobs.ts.
// A job submitted while one of its kind for the app is queued or running is
// accepted too and waits, `queued`, for its turn (lib/jobs.ts); past
// MAX_QUEUED waiting the answer is 409.
import { getJob, MAX_QUEUED, startJob } from '../../lib/jobs.ts';
import { resolveFeatures } from '../../profiles/cluster-features.ts';
import { trainClusters } from '../../profiles/clusters-job.ts';
import { isoSeconds } from '../../lib/instant.ts';
import { buildProfiles } from '../../profiles/job.ts';
import { profileRunAt } from '../../profiles/run-at.ts';
import type { AppContext } from '../app.ts';
import { route } from './route.ts';
import { notFound, PROBLEM_CONTENT_TYPE, ProblemError } from '../problem.ts';
import { ClusterJobBodySchema, JobAcceptedSchema, JobPathSchema, JobSchema, ProfileJobBodySchema } from '../schemas.ts';

const ACCEPTED = (kind: string) => ({
  status: 202,
  description:
    `the job was accepted. Jobs of one kind for one app run one at a time, in the order submitted: ` +
    `while an earlier ${kind} job of the app is queued or running (in this server or another), this one is \`queued\` ` +
    `(progress 0) and runs when they have finished; follow it with GET /v1/jobs/{job_id}`,
  schema: JobAcceptedSchema,
});

/** The 409 of the job routes, documented with the queue bound. */
const QUEUE_FULL = {
  status: 409,
  description:
    `${MAX_QUEUED} jobs of this kind for the app are already queued on this server, the most it holds: ` +
    `wait for them to finish (GET /v1/jobs/{job_id}) and submit again`,
  media: { [PROBLEM_CONTENT_TYPE]: { description: 'the problem, naming the last queued job', schema: { $ref: '#/components/schemas/Problem' } } },
};

export function jobRoutes(ctx: AppContext) {
  return [
    route(
      {
        method: 'post',
        path: '/v1/jobs/profiles',
        operationId: 'startProfileJob',
        summary: 'Build profiles at as_of (default now), incrementally (default) or in full',
        tag: 'jobs',
        role: 'admin',
        body: ProfileJobBodySchema,
        optionalBody: true,
        response: ACCEPTED('profile'),
        otherResponses: [QUEUE_FULL],
        problems: [409],
      },
      async ({ appId, body }) => {
        const params = { as_of: body.as_of ? isoSeconds(body.as_of) : undefined, mode: body.mode ?? 'incremental' };
        return startJob(ctx.ch, appId, 'profiles', params, (report) =>
          buildProfiles(ctx.ch, appId, { asOf: body.as_of, mode: body.mode, onProgress: report }),
        );
      },
    ),
    route(
      {
        method: 'post',
        path: '/v1/jobs/clusters',
        operationId: 'startClusterJob',
        summary: 'Train a cluster model on the latest profile run and assign every user',
        tag: 'jobs',
        role: 'admin',
        body: ClusterJobBodySchema,
        optionalBody: true,
        response: ACCEPTED('cluster'),
        otherResponses: [QUEUE_FULL],
        problems: [409],
      },
      async ({ appId, body }) => {
        const resolved = resolveFeatures(body.features);
        if ('errors' in resolved) {
          throw new ProblemError(400, resolved.errors[0]?.message ?? 'invalid features', {
            errors: resolved.errors.map((e) => ({ path: `body.${e.path}`, message: e.message })),
          });
        }
        const params = { k: body.k ?? 'auto', features: body.features, as_of: body.as_of ? isoSeconds(body.as_of) : undefined };
        return startJob(ctx.ch, appId, 'clusters', params, async (report) => {
          // Trained on the profiles at exactly that instant, as segments read them
          // there (built through the profile job queue when there is no run at it).
          if (body.as_of) await profileRunAt(ctx.ch, appId, body.as_of, true);
          return trainClusters(ctx.ch, appId, { k: body.k, features: body.features, asOf: body.as_of }, (f) => report(f));
        });
      },
    ),
    route(
      {
        method: 'get',
        path: '/v1/jobs/{job_id}',
        operationId: 'getJob',
        summary: 'A job\'s state, progress, and its result or error',
        tag: 'jobs',
        role: 'admin',
        params: JobPathSchema,
        response: { status: 200, description: 'the job', schema: JobSchema },
        problems: [404],
      },
      async ({ ch, appId, params }) => {
        const job = await getJob(ch, appId, params.job_id);
        if (!job) throw notFound(`job ${JSON.stringify(params.job_id)}`);
        return job;
      },
    ),
  ];
}
