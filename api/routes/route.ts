// The route declarer of this app's handlers (their `deps` are the AppContext).
// Kept apart from app.ts so route modules import app.ts for types only.
import type { AppContext } from '../app.ts';
import { routeFor } from '../openapi.ts';

export const route = routeFor<AppContext>();
