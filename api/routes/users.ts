// Users: one profile, and tags (one user, or one tag for many users).
import { z } from 'zod';
import { isoSeconds } from '../../lib/instant.ts';
import { liveProfile } from '../../profiles/job.ts';
import { getProfile } from '../../profiles/read.ts';
import { profileRunAt } from '../../profiles/run-at.ts';
import { evaluationInstant } from '../../segments/evaluate.ts';
import { setTag, tagUsers } from '../../profiles/tags.ts';
import type { AppContext } from '../app.ts';
import { route } from './route.ts';
import { notFound } from '../problem.ts';
import {
  InstantSchema,
  ProfileSchema,
  TAG_USERS_MAX_BODY_BYTES,
  TagChangeSchema,
  TagPathSchema,
  TagUsersBodySchema,
  TagUsersResultSchema,
  UserPathSchema,
  UserTagPathSchema,
} from '../schemas.ts';

const UserQuerySchema = z
  .object({
    as_of: InstantSchema.optional().meta({
      description: 'the profile at exactly this instant: read from the profile run at it, built first when there is none (as segments do)',
    }),
  })
  .strict();

export function userRoutes(ctx: AppContext) {
  return [
    route(
      {
        method: 'get',
        path: '/v1/users/{user_id}',
        operationId: 'getUser',
        summary: 'The profile of one user (every field of the contract at top level)',
        tag: 'users',
        role: 'read',
        params: UserPathSchema,
        query: UserQuerySchema,
        response: {
          status: 200,
          description:
            'without as_of: the profile from the latest complete profile run, with live tags and cluster; for a user with events but not yet in that run, computed on request (its as_of is then now). With as_of: the profile at exactly that instant',
          schema: ProfileSchema,
        },
        problems: [404],
      },
      async ({ ch, appId, params, query }) => {
        if (query.as_of) {
          const asOf = evaluationInstant(query.as_of);
          // Built on the app-wide client: a job that outlives this request's time limit.
          const run = await profileRunAt(ctx.ch, appId, asOf, true);
          const p = await getProfile(ch, appId, params.user_id, { run });
          if (!p) throw notFound(`user ${JSON.stringify(params.user_id)} at ${isoSeconds(asOf)} (no event of this user is stored with a ts at or before it)`);
          return p;
        }
        // A user whose first events arrived after the latest run still has a profile.
        const p = (await getProfile(ch, appId, params.user_id)) ?? (await liveProfile(ch, appId, params.user_id));
        if (!p) throw notFound(`user ${JSON.stringify(params.user_id)} (no event of this user is stored with a ts at or before now)`);
        return p;
      },
    ),
    route(
      {
        method: 'put',
        path: '/v1/users/{user_id}/tags/{tag}',
        operationId: 'addUserTag',
        summary: 'Add a tag to a user; segments see it at once',
        tag: 'tags',
        role: 'admin',
        params: UserTagPathSchema,
        response: { status: 200, description: 'the tag is present', schema: TagChangeSchema },
      },
      async ({ ch, appId, params }) => {
        await setTag(ch, appId, params.user_id, params.tag, true);
        return { user_id: params.user_id, tag: params.tag, present: true };
      },
    ),
    route(
      {
        method: 'delete',
        path: '/v1/users/{user_id}/tags/{tag}',
        operationId: 'removeUserTag',
        summary: 'Remove a tag from a user; segments see it at once',
        tag: 'tags',
        role: 'admin',
        params: UserTagPathSchema,
        response: { status: 200, description: 'the tag is absent', schema: TagChangeSchema },
      },
      async ({ ch, appId, params }) => {
        await setTag(ch, appId, params.user_id, params.tag, false);
        return { user_id: params.user_id, tag: params.tag, present: false };
      },
    ),
    route(
      {
        method: 'post',
        path: '/v1/tags/{tag}/users',
        operationId: 'tagUsers',
        summary: 'Add a tag to up to 100,000 users at once',
        tag: 'tags',
        role: 'admin',
        params: TagPathSchema,
        body: TagUsersBodySchema,
        bodyLimit: TAG_USERS_MAX_BODY_BYTES,
        response: { status: 200, description: 'how many distinct user ids the request named, each of which now carries the tag (including any that carried it already)', schema: TagUsersResultSchema },
        problems: [413],
      },
      async ({ ch, appId, params, body }) => {
        const r = await tagUsers(ch, appId, params.tag, body.user_ids);
        return { tag: params.tag, users: r.users };
      },
    ),
  ];
}
