// GET /v1/clusters: the app's latest cluster model.
import { latestModel } from '../../profiles/clusters-job.ts';
import type { AppContext } from '../app.ts';
import { route } from './route.ts';
import { notFound } from '../problem.ts';
import { ClusterModelSchema } from '../schemas.ts';

export function clusterRoutes(ctx: AppContext) {
  return [
    route(
      {
        method: 'get',
        path: '/v1/clusters',
        operationId: 'getClusters',
        summary: 'The latest cluster model: version, k, features, centroids in the features\' units, sizes, labels, quality',
        tag: 'clusters',
        role: 'read',
        response: { status: 200, description: 'the model', schema: ClusterModelSchema },
        problems: [404],
      },
      async ({ appId }) => {
        const m = await latestModel(ctx.ch, appId);
        if (!m) throw notFound('cluster model (run POST /v1/jobs/clusters first)');
        return {
          version: m.version,
          created_at: m.created_at,
          profile_run_id: m.profile_run_id,
          as_of: m.as_of,
          k: m.k,
          features: m.features,
          centroids: m.centroids,
          sizes: m.sizes,
          labels: m.labels,
          quality: { inertia: m.inertia, silhouette: m.silhouette, sample_size: m.sample_size, k_selection: m.k_selection },
        };
      },
    ),
  ];
}
