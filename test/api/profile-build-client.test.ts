// A profile run built because a request needs one (a segment or a profile at an
// as_of without a run) is shared with every other request at that instant, so it
// must run on the API's app-wide ClickHouse client: a request's view of it
// (requestClickHouse) kills its running queries when its caller goes away and
// bounds them by the request's query timeout, which would fail everyone's build.
import { beforeAll, describe, expect, it } from 'vitest';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import type { Sql } from '../../lib/sql.ts';
import { insertEvents } from '../profiles/events.ts';
import type { TestEvent } from '../profiles/reference.ts';
import { harness, type Harness } from './harness.ts';

let h: Harness;
/** For each profile row INSERT: whether it ran on the app-wide client itself. */
const profileWrites: { onAppClient: boolean }[] = [];

beforeAll(async () => {
  h = await harness({ prefix: 'api_build_client' });
  const app = h.ctx.ch;
  const exec = app.exec;
  // Request views are Object.create(app), so they reach this method with
  // themselves as `this`; the app-wide client reaches it as itself.
  app.exec = function (this: ClickHouse, q: Sql, opts?: Parameters<ClickHouse['exec']>[1]) {
    if (/^\s*INSERT INTO `?profiles`? /.test(q.text)) profileWrites.push({ onAppClient: this === app });
    return exec.call(this, q, opts);
  };
});

const DAY = 86_400;
const T = Date.parse('2026-08-01T00:00:00Z') / 1000;
const iso = (s: number) => new Date(s * 1000).toISOString().replace('.000Z', 'Z');
const view = (user_id: string, ts: number, n: number): TestEvent => ({
  event_id: `v${n}`,
  user_id,
  ts,
  type: 'track',
  event: 'view',
  properties: {},
  traits: {},
  context: {},
  received_at: T - 100 * DAY,
});

describe('profile runs built for a request', () => {
  it('run on the app-wide client, whichever route asked for them', async () => {
    await insertEvents(h.ch, 'app_a', [view('u1', T - 3 * DAY, 1), view('u2', T - 2 * DAY, 2), view('u2', T + 2 * DAY, 3)]);
    const as: ['app_a', 'read'] = ['app_a', 'read'];
    const expression = 'events_total >= 1';
    const seg = (await (await h.call('POST', '/v1/segments', { as: ['app_a', 'admin'], body: { name: 'active', expression } })).json()) as { id: string };

    // Each at an instant without a run, so each builds one.
    const asked: [string, () => Promise<Response>][] = [
      ['evaluate', () => h.call('POST', '/v1/segments/evaluate', { as, body: { expression, as_of: iso(T) } })],
      ['explain', () => h.call('POST', '/v1/segments/explain', { as, body: { expression, as_of: iso(T + DAY) } })],
      ['segment users', () => h.call('GET', `/v1/segments/${seg.id}/users?as_of=${iso(T + 2 * DAY)}`, { as })],
      ['snapshot', () => h.call('POST', `/v1/segments/${seg.id}/snapshots`, { as: ['app_a', 'admin'], body: { as_of: iso(T + 3 * DAY) } })],
      ['user profile', () => h.call('GET', `/v1/users/u2?as_of=${iso(T + 4 * DAY)}`, { as })],
    ];
    for (const [route, request] of asked) {
      const before = profileWrites.length;
      const res = await request();
      expect(res.status, route).toBeLessThan(300);
      const writes = profileWrites.slice(before);
      expect(writes.length, `${route} built a run`).toBeGreaterThan(0);
      expect(writes.every((w) => w.onAppClient), `${route} built its run on the app-wide client`).toBe(true);
    }
    // The runs are the right ones: u2's third event is counted from T + 2 days on.
    const p = (await (await h.call('GET', `/v1/users/u2?as_of=${iso(T + 4 * DAY)}`, { as })).json()) as Record<string, unknown>;
    expect([p.as_of, p.events_total]).toEqual([iso(T + 4 * DAY), 2]);
  });
});
