// Background jobs: profile builds and cluster training. They run in this
// process on the app-wide ClickHouse client (not the request's: a job outlives
// the request that started it), recorded in the `jobs` table by lib/jobs.ts.
import { getJob, startJob } from '../../lib/jobs.ts';
import { resolveFeatures } from '../../profiles/cluster-features.ts';
import { trainClusters } from '../../profiles/clusters-job.ts';
import { buildProfiles, isoSeconds } from '../../profiles/job.ts';
import type { AppContext } from '../app.ts';
import { route } from './route.ts';
import { notFound, ProblemError } from '../problem.ts';
import { ClusterJobBodySchema, JobAcceptedSchema, JobPathSchema, JobSchema, ProfileJobBodySchema } from '../schemas.ts';

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
        response: { status: 202, description: 'the job was queued', schema: JobAcceptedSchema },
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
        response: { status: 202, description: 'the job was queued', schema: JobAcceptedSchema },
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
        return startJob(ctx.ch, appId, 'clusters', params, (report) =>
          trainClusters(ctx.ch, appId, { k: body.k, features: body.features, asOf: body.as_of }, (f) => report(f)),
        );
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
