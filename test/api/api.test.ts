// The HTTP contract over real ClickHouse and Kafka: every endpoint, every
// role, problem+json errors, and tenant isolation between two apps.
import { tableFromIPC } from 'apache-arrow';
import { beforeAll, describe, expect, it } from 'vitest';
import { jobFinished } from '../../lib/jobs.ts';
import { normalizeEvent } from '../../ingest/normalize.ts';
import { insertEventRows } from '../../ingest/sink.ts';
import { sql } from '../../lib/sql.ts';
import { TAG_USERS_MAX_BODY_BYTES } from '../../api/schemas.ts';
import { APP_A_VIEWERS, storeFixtureEvents } from './fixtures.ts';
import { auth, consumeAll, expectProblem, harness, type Harness } from './harness.ts';

let h: Harness;

async function json(res: Response): Promise<any> {
  return res.json();
}

async function runJob(path: string, body: unknown, as: ['app_a' | 'app_b', 'admin'] = ['app_a', 'admin']): Promise<any> {
  const res = await h.call('POST', path, { as, body });
  expect(res.status).toBe(202);
  const { job_id } = await json(res);
  await jobFinished(job_id);
  const job = await json(await h.call('GET', `/v1/jobs/${job_id}`, { as: [as[0], 'admin'] }));
  expect(job).toMatchObject({ job_id, state: 'succeeded', progress: 1 });
  return job;
}

beforeAll(async () => {
  h = await harness();
  await storeFixtureEvents(h.ch);
  await runJob('/v1/jobs/profiles', { mode: 'full' });
  await runJob('/v1/jobs/profiles', {}, ['app_b', 'admin']);
}, 180_000);

describe('keys and roles', () => {
  it('answers 401 without a key or with an unknown one', async () => {
    const p = await expectProblem(await h.call('GET', '/v1/users/alice'), 401);
    expect(p.detail).toContain('Bearer');
    await expectProblem(await h.call('GET', '/v1/users/alice', { headers: { authorization: 'Bearer nope' } }), 401);
    expect((await h.call('GET', '/v1/users/alice', { headers: { authorization: 'Basic abc' } })).headers.get('www-authenticate')).toBe('Bearer');
  });

  it('enforces the role of every route: ingest < read < admin', async () => {
    const routes = h.ctx.routes.filter((r) => r.spec.role !== null);
    expect(routes.length).toBeGreaterThan(12);
    for (const { spec } of routes) {
      const path = spec.path.replace(/\{[a-z_]+\}/g, 'x');
      // Roles are checked before the body: a body every route rejects (400) keeps the probe free of side effects (no jobs, no events).
      const body = spec.method === 'post' || spec.method === 'put' ? { role_probe: true } : undefined;
      // 'any': every valid key, whatever its roles.
      const lacking = spec.role === 'admin' ? (['ingest', 'read'] as const) : spec.role === 'read' ? (['ingest'] as const) : spec.role === 'ingest' ? (['read'] as const) : ([] as const);
      for (const role of lacking) {
        const res = await h.call(spec.method.toUpperCase(), path, { as: ['app_a', role], body });
        expect(res.status, `${spec.method} ${spec.path} as ${role}`).toBe(403);
      }
      const holding = spec.role === 'any' ? (['ingest', 'read', 'admin'] as const) : (['admin', spec.role as 'admin' | 'read' | 'ingest'] as const);
      for (const role of holding) {
        const res = await h.call(spec.method.toUpperCase(), path, { as: ['app_a', role], body });
        expect([401, 403], `${spec.method} ${spec.path} as ${role}`).not.toContain(res.status);
        if (body && spec.body) expect(res.status, `${spec.method} ${spec.path} as ${role}`).toBe(400);
      }
      expect((await h.call(spec.method.toUpperCase(), path, { body })).status).toBe(401);
    }
  });
});

describe('requests are validated', () => {
  it('rejects unknown body fields, bad JSON, wrong media type and out-of-range limits as problem+json', async () => {
    let p = await expectProblem(await h.call('POST', '/v1/segments/evaluate', { as: ['app_a', 'read'], body: { expression: 'did(view)', colour: 'red' } }), 400);
    expect(p.errors).toEqual([{ path: 'body', message: 'unknown field(s): "colour"' }]);
    p = await expectProblem(await h.call('POST', '/v1/segments/evaluate', { as: ['app_a', 'read'], body: '{"expression": ' }), 400);
    expect(p.detail).toContain('not valid JSON');
    await expectProblem(await h.call('POST', '/v1/segments/evaluate', { as: ['app_a', 'read'], body: 'x', headers: { 'content-type': 'text/plain' } }), 415);
    // Bytes that are not UTF-8 are refused, not decoded to U+FFFD (which could merge distinct user ids).
    const bad = Buffer.concat([Buffer.from('{"user_id":"u'), Buffer.from([0xff, 0xfe]), Buffer.from('","event":"view","ts":"2026-01-01T00:00:00Z"}')]);
    const raw = await h.app.request('/v1/events', { method: 'POST', headers: { ...auth('app_a', 'ingest'), 'content-type': 'application/json' }, body: bad });
    p = await expectProblem(raw, 400);
    expect(p.detail).toBe('the body is not valid UTF-8');
    p = await expectProblem(await h.call('POST', '/v1/segments/evaluate', { as: ['app_a', 'read'], body: { expression: 'did(view)', limit: 10_001 } }), 400);
    expect(p.errors[0].path).toBe('body.limit');
    p = await expectProblem(await h.call('GET', '/v1/segments/x/snapshots/y/users?limit=0', { as: ['app_a', 'read'] }), 400);
    expect(p.errors[0].path).toBe('query.limit');
    await expectProblem(await h.call('GET', '/v1/nothing', { as: ['app_a', 'read'] }), 404);
    // A known path under another method: 405 with the methods it does take.
    let r = await h.call('DELETE', '/v1/events', { as: ['app_a', 'read'] });
    expect(r.headers.get('allow')).toBe('POST');
    p = await expectProblem(r, 405);
    expect(p.detail).toContain('DELETE is not allowed');
    r = await h.call('POST', '/v1/users/someone', { as: ['app_a', 'read'] });
    expect(r.headers.get('allow')).toBe('GET, HEAD');
    await expectProblem(r, 405);
    r = await h.call('PATCH', '/v1/users/someone/tags/vip', { as: ['app_a', 'read'] });
    expect(r.headers.get('allow')?.split(', ').sort()).toEqual(['DELETE', 'PUT']);
    await expectProblem(await h.call('GET', '/v1/users/someone/extra', { as: ['app_a', 'read'] }), 404);
  });

  it('gives line and column for segment text errors', async () => {
    const p = await expectProblem(
      await h.call('POST', '/v1/segments/evaluate', { as: ['app_a', 'read'], body: { expression: 'did(view)\n  and country = ' } }),
      400,
    );
    expect(p.line).toBe(2);
    expect(p.column).toBeGreaterThan(1);
    expect(p.errors[0].path).toMatch(/^body\.expression/);
    const j = await expectProblem(
      await h.call('POST', '/v1/segments/evaluate', { as: ['app_a', 'read'], body: { expression: { did: 'view', within: '0d' } } }),
      400,
    );
    expect(j.line).toBeUndefined();
    expect(j.errors[0].path).toMatch(/^body\.expression/);
  });

  it('limits body size', async () => {
    const big = { user_ids: Array.from({ length: 100_001 }, (_, i) => `u${i}`) };
    const p = await expectProblem(await h.call('POST', '/v1/tags/vip/users', { as: ['app_a', 'admin'], body: big }), 400);
    expect(p.errors[0].path).toBe('body.user_ids');
    // Past what any valid body takes (TAG_USERS_MAX_BODY_BYTES): refused before reading, with errors.
    const tooLarge = { 'content-length': String(TAG_USERS_MAX_BODY_BYTES + 1) };
    const p413 = await expectProblem(await h.call('POST', '/v1/tags/vip/users', { as: ['app_a', 'admin'], body: '{}', headers: tooLarge }), 413);
    expect(p413.errors).toEqual([{ path: 'body', message: expect.stringMatching(/exceeds the limit/) }]);
    // The largest valid body: 100,000 ids of 256 three-byte characters (~77 MB) fits.
    const widest = { user_ids: Array.from({ length: 100_000 }, (_, i) => String(i).padStart(6, '0') + '中'.repeat(250)) };
    const ok = await h.call('POST', '/v1/tags/wide/users', { as: ['app_a', 'admin'], body: widest });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ users: 100_000 });
  });
});

describe('users and tags', () => {
  it('returns a profile with every field at top level, 404 when unknown', async () => {
    const res = await h.call('GET', '/v1/users/alice', { as: ['app_a', 'read'] });
    expect(res.status).toBe(200);
    const p = await json(res);
    expect(p).toMatchObject({ user_id: 'alice', events_total: 4, views_30d: 3, purchases_total: 1, revenue_total: 120, country: 'CN', tags: [] });
    expect(p.traits).toMatchObject({ plan: 'pro', vip: true, country: 'CN' });
    expect(p.first_seen).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    await expectProblem(await h.call('GET', '/v1/users/nobody', { as: ['app_a', 'read'] }), 404);
  });

  it('tags take effect for segments at once, one user or many', async () => {
    const count = async (app: 'app_a' | 'app_b', expression: string) =>
      (await json(await h.call('POST', '/v1/segments/evaluate', { as: [app, 'read'], body: { expression, limit: 0 } }))).count;
    let res = await h.call('PUT', '/v1/users/bob/tags/vip', { as: ['app_a', 'admin'] });
    expect(await json(res)).toEqual({ user_id: 'bob', tag: 'vip', present: true });
    expect(await count('app_a', 'tag("vip")')).toBe(1);
    res = await h.call('POST', '/v1/tags/vip/users', { as: ['app_a', 'admin'], body: { user_ids: ['alice', 'carol', 'alice'] } });
    expect(await json(res)).toEqual({ tag: 'vip', users: 2 });
    expect(await count('app_a', 'tag("vip")')).toBe(3);
    res = await h.call('DELETE', '/v1/users/bob/tags/vip', { as: ['app_a', 'admin'] });
    expect(await json(res)).toEqual({ user_id: 'bob', tag: 'vip', present: false });
    expect(await count('app_a', 'tag("vip")')).toBe(2);
    expect((await json(await h.call('GET', '/v1/users/alice', { as: ['app_a', 'read'] }))).tags).toEqual(['vip']);
    const p = await expectProblem(await h.call('PUT', `/v1/users/bob/tags/${'t'.repeat(129)}`, { as: ['app_a', 'admin'] }), 400);
    expect(p.errors[0].path).toBe('path.tag');
  });
});

describe('segments', () => {
  it('evaluates text and JSON forms, sorted, limited, with fields', async () => {
    const res = await h.call('POST', '/v1/segments/evaluate', {
      as: ['app_a', 'read'],
      body: { expression: 'did(view)', limit: 5, fields: ['country', 'views_30d', 'tags'] },
    });
    expect(res.status).toBe(200);
    const r = await json(res);
    expect(r.count).toBe(APP_A_VIEWERS.length);
    expect(r.users.map((u: any) => u.user_id)).toEqual(APP_A_VIEWERS.slice(0, 5));
    expect(r.users[0]).toEqual({ user_id: 'alice', country: 'CN', views_30d: 3, tags: ['vip'] });
    const j = await json(
      await h.call('POST', '/v1/segments/evaluate', {
        as: ['app_a', 'read'],
        body: { expression: { did: 'purchase', where: { prop: 'amount', op: 'gt', value: 100 } }, as_of: new Date().toISOString() },
      }),
    );
    expect(j.users.map((u: any) => u.user_id)).toContain('alice');
    expect(j.users.map((u: any) => u.user_id)).not.toContain('carol');
  });

  it('explains: the query and the users each node matches', async () => {
    const res = await h.call('POST', '/v1/segments/explain', { as: ['app_a', 'read'], body: { expression: 'did(view) and not did(purchase)' } });
    expect(res.status).toBe(200);
    const r = await json(res);
    expect(r).toMatchObject({ universe: APP_A_VIEWERS.length + 1, count: 28, expression: 'did(view) and not did(purchase)' });
    expect(r.query).toMatch(/^SELECT/);
    expect(r.nodes[0]).toEqual({ path: '$', expression: 'did(view) and not did(purchase)', count: 28 });
    const byText = Object.fromEntries(r.nodes.map((n: any) => [n.expression, n.count]));
    expect(byText).toMatchObject({ 'did(view)': APP_A_VIEWERS.length, 'did(purchase)': 16, 'not did(purchase)': 28 });
    const b = await json(await h.call('POST', '/v1/segments/explain', { as: ['app_b', 'read'], body: { expression: 'did(view)' } }));
    expect(b).toMatchObject({ universe: 2, count: 1 });
  });

  it('saves, lists, reads, updates and deletes segments; names are unique per app', async () => {
    let res = await h.call('POST', '/v1/segments', { as: ['app_a', 'admin'], body: { name: 'buyers', expression: 'did(purchase)', description: 'd' } });
    expect(res.status).toBe(201);
    const seg = await json(res);
    expect(seg).toMatchObject({ name: 'buyers', description: 'd', expression: { did: 'purchase' }, text: 'did(purchase)' });
    await expectProblem(await h.call('POST', '/v1/segments', { as: ['app_a', 'admin'], body: { name: 'buyers', expression: 'did(view)' } }), 409);
    // The same name in another app is fine.
    expect((await h.call('POST', '/v1/segments', { as: ['app_b', 'admin'], body: { name: 'buyers', expression: 'did(view)' } })).status).toBe(201);
    expect((await json(await h.call('GET', '/v1/segments', { as: ['app_a', 'read'] }))).segments.map((s: any) => s.name)).toEqual(['buyers']);
    expect((await json(await h.call('GET', `/v1/segments/${seg.id}`, { as: ['app_a', 'read'] }))).id).toBe(seg.id);
    expect((await json(await h.call('GET', '/v1/segments/buyers', { as: ['app_a', 'read'] }))).id).toBe(seg.id);
    res = await h.call('PUT', `/v1/segments/${seg.id}`, { as: ['app_a', 'admin'], body: { name: 'big buyers', expression: 'sum(purchase.amount) > 50' } });
    expect(await json(res)).toMatchObject({ id: seg.id, name: 'big buyers', text: 'sum(purchase.amount) > 50' });
    const ref = await json(await h.call('POST', '/v1/segments', { as: ['app_a', 'admin'], body: { name: 'vip big buyers', expression: 'in_segment("big buyers") and tag("vip")' } }));
    expect((await json(await h.call('POST', '/v1/segments/evaluate', { as: ['app_a', 'read'], body: { expression: 'in_segment("vip big buyers")' } }))).users).toEqual([{ user_id: 'alice' }]);
    await expectProblem(await h.call('DELETE', `/v1/segments/${seg.id}`, { as: ['app_a', 'admin'] }), 409);
    expect((await h.call('DELETE', `/v1/segments/${ref.id}`, { as: ['app_a', 'admin'] })).status).toBe(204);
    await expectProblem(await h.call('GET', `/v1/segments/${ref.id}`, { as: ['app_a', 'read'] }), 404);
  });

  it('exports members as NDJSON, CSV and Arrow that agree', async () => {
    const seg = await json(await h.call('POST', '/v1/segments', { as: ['app_a', 'admin'], body: { name: 'viewers', expression: 'did(view)' } }));
    const fields = 'country,views_30d,last_seen,traits,tags,traits.plan';
    const nd = await h.call('GET', `/v1/segments/${seg.id}/users?fields=${fields}`, { as: ['app_a', 'read'] });
    expect(nd.status).toBe(200);
    expect(nd.headers.get('content-type')).toBe('application/x-ndjson');
    const rows = (await nd.text()).trim().split('\n').map((l) => JSON.parse(l));
    expect(rows.map((r) => r.user_id)).toEqual(APP_A_VIEWERS);
    expect(rows[0]).toMatchObject({ user_id: 'alice', country: 'CN', views_30d: 3, tags: ['vip'], 'traits.plan': 'pro', traits: { plan: 'pro', vip: true } });
    expect(rows.find((r) => r.user_id === 'bob')).toMatchObject({ 'traits.plan': null, tags: [] });

    const arrow = tableFromIPC(new Uint8Array(await (await h.call('GET', `/v1/segments/viewers/users?format=arrow&fields=country,views_30d,last_seen`, { as: ['app_a', 'read'] })).arrayBuffer()));
    const slim = rows.map((r) => ({ user_id: r.user_id, country: r.country, views_30d: r.views_30d, last_seen: r.last_seen }));
    expect(arrow.toArray().map((r) => r.toJSON())).toEqual(slim);

    const csv = await (await h.call('GET', `/v1/segments/${seg.id}/users?format=csv&fields=country`, { as: ['app_a', 'read'] })).text();
    const lines = csv.trim().split('\r\n');
    expect(lines[0]).toBe('user_id,country');
    expect(lines[1]).toBe('alice,CN');
    expect(lines).toHaveLength(APP_A_VIEWERS.length + 1);

    const bad = await expectProblem(await h.call('GET', `/v1/segments/${seg.id}/users?fields=shoe_size`, { as: ['app_a', 'read'] }), 400);
    expect(bad.errors[0].path).toBe('query.fields.0');
    await expectProblem(await h.call('GET', `/v1/segments/${seg.id}/users?format=xml`, { as: ['app_a', 'read'] }), 400);
  });

  it('snapshots members, diffs them, publishes each change to Kafka and pages them', async () => {
    const seg = await json(await h.call('POST', '/v1/segments', { as: ['app_a', 'admin'], body: { name: 'vips', expression: 'tag("snap")' } }));
    await h.call('POST', '/v1/tags/snap/users', { as: ['app_a', 'admin'], body: { user_ids: ['alice', 'bob', 'carol'] } });
    let res = await h.call('POST', `/v1/segments/${seg.id}/snapshots`, { as: ['app_a', 'admin'] });
    expect(res.status).toBe(201);
    const s1 = await json(res);
    expect(s1).toMatchObject({ segment_id: seg.id, count: 3, entered: 3, exited: 0, previous_snapshot_id: null });
    await h.call('DELETE', '/v1/users/bob/tags/snap', { as: ['app_a', 'admin'] });
    await h.call('PUT', '/v1/users/shared/tags/snap', { as: ['app_a', 'admin'] });
    await h.call('PUT', '/v1/users/crowd-01/tags/snap', { as: ['app_a', 'admin'] });
    res = await h.call('POST', `/v1/segments/${seg.id}/snapshots`, { as: ['app_a', 'admin'], body: {} });
    const s2 = await json(res);
    expect(s2).toMatchObject({ count: 4, entered: 2, exited: 1, previous_snapshot_id: s1.snapshot_id });

    const msgs = (await consumeAll(h.kafka, h.membershipTopic, 6)).map((m) => m.value as any);
    expect(msgs).toHaveLength(6);
    const summary = msgs.map((m) => `${m.snapshot_id === s1.snapshot_id ? 1 : 2}:${m.change}:${m.user_id}`).sort();
    expect(summary).toEqual(['1:entered:alice', '1:entered:bob', '1:entered:carol', '2:entered:crowd-01', '2:entered:shared', '2:exited:bob']);
    for (const m of msgs) expect(m).toMatchObject({ app_id: 'app_a', segment_id: seg.id, as_of: m.snapshot_id === s1.snapshot_id ? s1.as_of : s2.as_of });

    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const q: string = cursor ? `&cursor=${cursor}` : '';
      const page: any = await json(await h.call('GET', `/v1/segments/${seg.id}/snapshots/${s2.snapshot_id}/users?limit=3${q}`, { as: ['app_a', 'read'] }));
      expect(page).toMatchObject({ snapshot_id: s2.snapshot_id, count: 4 });
      seen.push(...page.users.map((u: any) => u.user_id));
      cursor = page.next_cursor;
    } while (cursor);
    expect(seen).toEqual(['alice', 'carol', 'crowd-01', 'shared']);
    // The first snapshot still reads as it was.
    const old = await json(await h.call('GET', `/v1/segments/${seg.id}/snapshots/${s1.snapshot_id}/users`, { as: ['app_a', 'read'] }));
    expect(old.users.map((u: any) => u.user_id)).toEqual(['alice', 'bob', 'carol']);
    await expectProblem(await h.call('GET', `/v1/segments/${seg.id}/snapshots/${s1.snapshot_id}/users?cursor=%%%`, { as: ['app_a', 'read'] }), 400);
  });
});

describe('jobs and clusters', () => {
  it('runs a cluster job and serves the model', async () => {
    await expectProblem(await h.call('GET', '/v1/clusters', { as: ['app_a', 'read'] }), 404);
    const bad = await expectProblem(await h.call('POST', '/v1/jobs/clusters', { as: ['app_a', 'admin'], body: { features: ['nope'] } }), 400);
    expect(bad.errors[0].path).toBe('body.features.0');
    const job = await runJob('/v1/jobs/clusters', { k: 2 });
    expect(job.kind).toBe('clusters');
    const m = await json(await h.call('GET', '/v1/clusters', { as: ['app_a', 'read'] }));
    expect(m).toMatchObject({ version: 1, k: 2 });
    expect(m.centroids).toHaveLength(2);
    expect(m.sizes.reduce((a: number, b: number) => a + b, 0)).toBe(APP_A_VIEWERS.length + 1); // + carol, who only bought
    expect(m.labels).toHaveLength(2);
    await expectProblem(await h.call('GET', '/v1/jobs/not-a-job', { as: ['app_a', 'admin'] }), 404);
  });
});

describe('system', () => {
  it('reports health, metrics and the OpenAPI document', async () => {
    const health = await h.call('GET', '/healthz');
    expect(health.status).toBe(200);
    expect(await json(health)).toEqual({ status: 'ok', clickhouse: { ok: true }, kafka: { ok: true } });
    const metrics = await (await h.call('GET', '/metrics', { as: ['app_a', 'admin'] })).text();
    expect(metrics).toMatch(/warbler_http_request_duration_seconds_bucket\{le="0.005",method="GET",route="\/v1\/users\/\{user_id\}",status="200"\} \d+/);
    const doc = await json(await h.call('GET', '/openapi.json', { as: ['app_a', 'read'] }));
    expect(doc.openapi).toBe('3.1.0');
    for (const { spec } of h.ctx.routes) expect(doc.paths[spec.path]?.[spec.method], `${spec.method} ${spec.path}`).toBeDefined();
    const refs = [...JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)].map((m) => m[1] as string);
    for (const r of new Set(refs)) expect(doc.components.schemas[r], r).toBeDefined();
    expect(doc.components.schemas.EvaluateRequest.additionalProperties).toBe(false);
  });
});

describe('tenant isolation', () => {
  it('a key of one app reads, changes, exports and snapshots nothing of the other', async () => {
    const B = ['app_b', 'admin'] as const;
    const Br = ['app_b', 'read'] as const;
    // Profiles: the shared id is b's user to b's key.
    expect((await json(await h.call('GET', '/v1/users/shared', { as: [...Br] }))).purchases_total).toBe(5);
    expect((await json(await h.call('GET', '/v1/users/shared', { as: ['app_a', 'read'] }))).purchases_total).toBe(0);
    await expectProblem(await h.call('GET', '/v1/users/alice', { as: [...Br] }), 404);
    // Tags written by b land in b only.
    await h.call('PUT', '/v1/users/alice/tags/iso', { as: [...B] });
    await h.call('POST', '/v1/tags/iso/users', { as: [...B], body: { user_ids: ['bob', 'shared'] } });
    const count = async (app: 'app_a' | 'app_b', expression: unknown) =>
      (await json(await h.call('POST', '/v1/segments/evaluate', { as: [app, 'read'], body: { expression } }))).count;
    expect(await count('app_a', 'tag("iso")')).toBe(0);
    // Tagging ids that have no events in b does not make them b's users: only `shared` is in b's universe.
    expect(await count('app_b', 'tag("iso")')).toBe(1);
    await h.call('DELETE', '/v1/users/alice/tags/vip', { as: [...B] });
    expect((await json(await h.call('GET', '/v1/users/alice', { as: ['app_a', 'read'] }))).tags).toContain('vip');
    // Evaluate sees only the key's app.
    expect(await count('app_b', 'did(view)')).toBe(1);
    expect(await count('app_b', { did: 'purchase' })).toBe(1);
    // Saved segments of a are invisible and untouchable to b, by id and by name.
    const a = await json(await h.call('GET', '/v1/segments/viewers', { as: ['app_a', 'read'] }));
    for (const ref of [a.id, 'viewers']) {
      await expectProblem(await h.call('GET', `/v1/segments/${ref}`, { as: [...Br] }), 404);
      await expectProblem(await h.call('PUT', `/v1/segments/${ref}`, { as: [...B], body: { name: 'stolen', expression: 'did(view)' } }), 404);
      await expectProblem(await h.call('DELETE', `/v1/segments/${ref}`, { as: [...B] }), 404);
      await expectProblem(await h.call('GET', `/v1/segments/${ref}/users`, { as: [...Br] }), 404);
      await expectProblem(await h.call('POST', `/v1/segments/${ref}/snapshots`, { as: [...B] }), 404);
    }
    expect((await json(await h.call('GET', '/v1/segments', { as: [...Br] }))).segments.map((s: any) => s.name)).toEqual(['buyers']);
    const p = await expectProblem(await h.call('POST', '/v1/segments/evaluate', { as: [...Br], body: { expression: 'in_segment("viewers")' } }), 400);
    expect(p.detail).toContain('viewers');
    // Snapshots of a cannot be read through b, even with the right ids.
    const vips = await json(await h.call('GET', '/v1/segments/vips', { as: ['app_a', 'read'] }));
    const snap = await json(await h.call('POST', `/v1/segments/${vips.id}/snapshots`, { as: ['app_a', 'admin'] }));
    await expectProblem(await h.call('GET', `/v1/segments/${vips.id}/snapshots/${snap.snapshot_id}/users`, { as: [...Br] }), 404);
    // Jobs and cluster models are per app.
    const jobRes = await h.call('POST', '/v1/jobs/profiles', { as: ['app_a', 'admin'], body: { mode: 'incremental' } });
    const { job_id } = await json(jobRes);
    await expectProblem(await h.call('GET', `/v1/jobs/${job_id}`, { as: [...B] }), 404);
    await jobFinished(job_id);
    await expectProblem(await h.call('GET', '/v1/clusters', { as: [...Br] }), 404);
  });
});

// Last: it adds a user to app_a, which would change the counts above.
describe('a user newer than the latest profile run', () => {
  it('computes the profile of a user who is newer than the latest profile run', async () => {
    const now = Date.now();
    const rows = [
      { type: 'identify', user_id: 'newbie', ts: new Date(now - 3_600_000).toISOString(), context: { country: 'FR' } },
      { user_id: 'newbie', event: 'purchase', ts: new Date(now - 60_000).toISOString(), properties: { amount: 400, category: 'hats' } },
    ].map((e) => normalizeEvent(e, 'app_a').row!);
    await insertEventRows(h.ch, rows);
    const res = await h.call('GET', '/v1/users/newbie', { as: ['app_a', 'read'] });
    expect(res.status).toBe(200);
    const p = await json(res);
    // Ranked among app_a's purchasers now: the largest revenue and the latest purchase.
    expect(p).toMatchObject({ user_id: 'newbie', events_total: 1, purchases_total: 1, revenue_total: 400, country: 'FR', top_category: 'hats', recency_days: 0, m_score: 5, r_score: 5, tags: [] });
    expect(Date.parse(p.as_of)).toBeGreaterThanOrEqual(Math.floor(now / 1000) * 1000);
    // app_a has a cluster model by now (the clusters tests above): the nearest cluster under it, with its label.
    const model = await json(await h.call('GET', '/v1/clusters', { as: ['app_a', 'read'] }));
    expect(p.cluster).toBeGreaterThanOrEqual(1);
    expect(p.cluster).toBeLessThanOrEqual(model.k);
    expect(p.cluster_label).toBe(model.labels[p.cluster - 1]);
    // No leftover tables, and the other app does not see the user.
    const left = await h.ch.rows(sql`SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'profile_live%'`);
    expect(left).toEqual([]);
    await expectProblem(await h.call('GET', '/v1/users/newbie', { as: ['app_b', 'read'] }), 404);
  });
});
