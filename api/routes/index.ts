// Every route set of the API, in the order they appear in the OpenAPI document.
import type { AppContext } from '../app.ts';
import type { Route } from '../openapi.ts';
import { clusterRoutes } from './clusters.ts';
import { eventRoutes } from './events.ts';
import { jobRoutes } from './jobs.ts';
import { segmentMemberRoutes } from './segment-members.ts';
import { segmentRoutes } from './segments.ts';
import { statsRoutes } from './stats.ts';
import { systemRoutes } from './system.ts';
import { userRoutes } from './users.ts';

export const allRoutes: ((ctx: AppContext) => Route<AppContext>[])[] = [
  eventRoutes,
  userRoutes,
  segmentRoutes,
  segmentMemberRoutes,
  jobRoutes,
  clusterRoutes,
  statsRoutes,
  systemRoutes,
];
