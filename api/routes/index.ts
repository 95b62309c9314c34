// Every route set of the API, in the order they appear in the OpenAPI document.
import type { AppContext } from '../app.ts';
import type { Route } from '../openapi.ts';
import { clusterRoutes } from './clusters.ts';
import { systemRoutes } from './system.ts';

export const allRoutes: ((ctx: AppContext) => Route<AppContext>[])[] = [clusterRoutes, systemRoutes];
