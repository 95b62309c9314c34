// Users: one profile, and tags (one user, or one tag for many users).
import { liveProfile } from '../../profiles/job.ts';
import { getProfile } from '../../profiles/read.ts';
import { setTag, tagUsers } from '../../profiles/tags.ts';
import type { AppContext } from '../app.ts';
import { route } from './route.ts';
import { notFound } from '../problem.ts';
import {
  ProfileSchema,
  TagChangeSchema,
  TagPathSchema,
  TagUsersBodySchema,
  TagUsersResultSchema,
  UserPathSchema,
  UserTagPathSchema,
} from '../schemas.ts';

export function userRoutes(_ctx: AppContext) {
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
        response: {
          status: 200,
          description:
            'the profile from the latest complete profile run, with live tags and cluster; for a user with events but not yet in that run, computed on request (its as_of is then now)',
          schema: ProfileSchema,
        },
        problems: [404],
      },
      async ({ ch, appId, params }) => {
        // A user whose first events arrived after the latest run still has a profile.
        const p = (await getProfile(ch, appId, params.user_id)) ?? (await liveProfile(ch, appId, params.user_id));
        if (!p) throw notFound(`user ${JSON.stringify(params.user_id)} (no event stored for this user)`);
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
        bodyLimit: 32 * 1024 * 1024,
        response: { status: 200, description: 'how many distinct users now carry the tag', schema: TagUsersResultSchema },
        problems: [413],
      },
      async ({ ch, appId, params, body }) => {
        const r = await tagUsers(ch, appId, params.tag, body.user_ids);
        return { tag: params.tag, users: r.users };
      },
    ),
  ];
}
