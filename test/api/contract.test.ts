// Points where the API once differed from the contract (spec/api.md), each
// checked over real ClickHouse and Kafka: explain takes evaluate's body, the
// expression is text or JSON form only, saved segments are addressed by id or
// name and renames/deletes in use answer 409, request instants take every ISO
// 8601 form with an offset, job params and response timestamps are UTC
// seconds, optional bodies and empty query values, /healthz's 503 as
// documented, keys on /metrics and /openapi.json, jobs under `admin`.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../api/app.ts';
import { normalise } from '../../api/export.ts';
import { ClickHouse } from '../../lib/clickhouse.ts';
import { REPO_ROOT } from '../../lib/config.ts';
import { jobFinished } from '../../lib/jobs.ts';
import { ident, sql } from '../../lib/sql.ts';
import { APP_A_VIEWERS, storeFixtureEvents } from './fixtures.ts';
import { expectProblem, harness, type Harness } from './harness.ts';

let h: Harness;

async function ok(res: Response, status = 200): Promise<any> {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  return text ? JSON.parse(text) : undefined;
}

const A_READ = ['app_a', 'read'] as const;
const A_ADMIN = ['app_a', 'admin'] as const;

beforeAll(async () => {
  h = await harness({ prefix: 'apicontract' });
  await storeFixtureEvents(h.ch);
}, 120_000);

describe('explain takes the same body as evaluate', () => {
  it('accepts limit and fields, and validates them as evaluate does', async () => {
    const body = { expression: 'did(view)', limit: 5, fields: ['country', 'tags'] };
    const r = await ok(await h.call('POST', '/v1/segments/explain', { as: [...A_READ], body }));
    expect(r).toMatchObject({ count: APP_A_VIEWERS.length, expression: 'did(view)' });
    for (const path of ['/v1/segments/evaluate', '/v1/segments/explain']) {
      let p = await expectProblem(await h.call('POST', path, { as: [...A_READ], body: { ...body, limit: 10_001 } }), 400);
      expect(p.errors[0].path, path).toBe('body.limit');
      p = await expectProblem(await h.call('POST', path, { as: [...A_READ], body: { ...body, fields: 'country' } }), 400);
      expect(p.errors[0].path, path).toBe('body.fields');
      p = await expectProblem(await h.call('POST', path, { as: [...A_READ], body: { ...body, fields: ['shoe_size'] } }), 400);
      expect(p.errors[0].path, path).toBe('body.fields.0');
      p = await expectProblem(await h.call('POST', path, { as: [...A_READ], body: { ...body, colour: 'red' } }), 400);
      expect(p.errors[0].message, path).toContain('colour');
    }
  });

  it('is documented with the same request schema', async () => {
    const doc = await ok(await h.call('GET', '/openapi.json', { as: [...A_READ] }));
    const schemaOf = (path: string) => doc.paths[path].post.requestBody.content['application/json'].schema;
    const resolve = (s: any) => (s.$ref ? doc.components.schemas[s.$ref.split('/').pop()] : s);
    expect(Object.keys(resolve(schemaOf('/v1/segments/explain')).properties).sort()).toEqual(['as_of', 'expression', 'fields', 'limit']);
    expect(resolve(schemaOf('/v1/segments/explain'))).toEqual(resolve(schemaOf('/v1/segments/evaluate')));
  });
});

describe('the expression is text or JSON form, nothing else', () => {
  const ast = { kind: 'attr', attr: 'country', op: 'eq', value: 'CN' };
  const bodies: [string, unknown][] = [
    ['an internal AST', ast],
    ['an AST with an unknown key', { ...ast, foo: 1 }],
    ['a malformed AST', { kind: 'and' }],
    ['a malformed nested AST', { kind: 'not', item: { kind: 'did' } }],
  ];

  it.each(bodies)('rejects %s with a segment problem, in evaluate, explain, create and update', async (_, expression) => {
    const seg = await ok(await h.call('POST', '/v1/segments', { as: [...A_ADMIN], body: { name: `ast target ${_}`, expression: 'did(view)' } }), 201);
    const calls: [string, string, Record<string, unknown>][] = [
      ['POST', '/v1/segments/evaluate', { expression }],
      ['POST', '/v1/segments/explain', { expression }],
      ['POST', '/v1/segments', { name: `ast ${_}`, expression }],
      ['PUT', `/v1/segments/${seg.id}`, { name: seg.name, expression }],
    ];
    for (const [method, path, body] of calls) {
      const p = await expectProblem(await h.call(method, path, { as: [...A_ADMIN], body }), 400);
      expect(p.title, `${method} ${path}`).toBe('Invalid segment expression');
      expect(p.errors[0].path, `${method} ${path}`).toMatch(/^body\.expression/);
      expect(p.detail, `${method} ${path}`).not.toMatch(/iterable|undefined|Cannot read/);
    }
    // Nothing was saved or changed.
    const names = (await ok(await h.call('GET', '/v1/segments', { as: [...A_READ] }))).segments.map((s: any) => s.name);
    expect(names).not.toContain(`ast ${_}`);
    expect((await ok(await h.call('GET', `/v1/segments/${seg.id}`, { as: [...A_READ] }))).text).toBe('did(view)');
    expect((await h.call('DELETE', `/v1/segments/${seg.id}`, { as: [...A_ADMIN] })).status).toBe(204);
  });

  it('still takes the JSON form, and saved segments still evaluate', async () => {
    const json = { attr: 'country', op: 'eq', value: 'CN' };
    expect((await ok(await h.call('POST', '/v1/segments/evaluate', { as: [...A_READ], body: { expression: json } }))).users).toEqual([{ user_id: 'alice' }]);
    const seg = await ok(await h.call('POST', '/v1/segments', { as: [...A_ADMIN], body: { name: 'chinese', expression: json } }), 201);
    expect(seg.expression).toEqual(json);
    const nd = await h.call('GET', '/v1/segments/chinese/users', { as: [...A_READ] });
    expect((await nd.text()).trim()).toBe('{"user_id":"alice"}');
    expect((await ok(await h.call('POST', '/v1/segments/evaluate', { as: [...A_READ], body: { expression: { in_segment: 'chinese' } } }))).count).toBe(1);
    expect((await h.call('DELETE', `/v1/segments/${seg.id}`, { as: [...A_ADMIN] })).status).toBe(204);
  });
});

describe('saved segments: id or name, renames and deletes in use', () => {
  it('PUT and DELETE take a name as GET does, within the key\'s app', async () => {
    const seg = await ok(await h.call('POST', '/v1/segments', { as: [...A_ADMIN], body: { name: 'the viewers', expression: 'did(view)' } }), 201);
    const byName = `/v1/segments/${encodeURIComponent('the viewers')}`;
    expect((await ok(await h.call('GET', byName, { as: [...A_READ] }))).id).toBe(seg.id);
    // Another app's key does not reach it by name.
    await expectProblem(await h.call('PUT', byName, { as: ['app_b', 'admin'], body: { name: 'the viewers', expression: 'did(purchase)' } }), 404);
    await expectProblem(await h.call('DELETE', byName, { as: ['app_b', 'admin'] }), 404);
    const u = await ok(await h.call('PUT', byName, { as: [...A_ADMIN], body: { name: 'the viewers', expression: 'did(view, count >= 2)', description: 'twice' } }));
    expect(u).toMatchObject({ id: seg.id, name: 'the viewers', text: 'did(view, count >= 2)', description: 'twice' });
    const renamed = await ok(await h.call('PUT', byName, { as: [...A_ADMIN], body: { name: 'repeat viewers', expression: 'did(view, count >= 2)' } }));
    expect(renamed).toMatchObject({ id: seg.id, name: 'repeat viewers' });
    await expectProblem(await h.call('GET', byName, { as: [...A_READ] }), 404);
    expect((await h.call('DELETE', `/v1/segments/${encodeURIComponent('repeat viewers')}`, { as: [...A_ADMIN] })).status).toBe(204);
    await expectProblem(await h.call('GET', `/v1/segments/${seg.id}`, { as: [...A_READ] }), 404);
  });

  it('reaches by name every segment name it accepts, up to 200 characters', async () => {
    const name = 'n'.repeat(200);
    const seg = await ok(await h.call('POST', '/v1/segments', { as: [...A_ADMIN], body: { name, expression: 'did(view)' } }), 201);
    expect((await ok(await h.call('GET', `/v1/segments/${name}`, { as: [...A_READ] }))).id).toBe(seg.id);
    expect((await h.call('GET', `/v1/segments/${name}/users`, { as: [...A_READ] })).status).toBe(200);
    await expectProblem(await h.call('GET', `/v1/segments/${name}n`, { as: [...A_READ] }), 400);
    expect((await h.call('DELETE', `/v1/segments/${name}`, { as: [...A_ADMIN] })).status).toBe(204);
  });

  it('refuses to rename a segment other segments use by name (409, naming them); references by id keep working', async () => {
    const buyers = await ok(await h.call('POST', '/v1/segments', { as: [...A_ADMIN], body: { name: 'buyers', expression: 'did(purchase)' } }), 201);
    await ok(await h.call('POST', '/v1/segments', { as: [...A_ADMIN], body: { name: 'cn buyers', expression: 'in_segment("buyers") and country = "CN"' } }), 201);
    await ok(await h.call('POST', '/v1/segments', { as: [...A_ADMIN], body: { name: 'big buyers', expression: 'not in_segment("buyers") or did(purchase, count >= 5)' } }), 201);
    const p = await expectProblem(await h.call('PUT', `/v1/segments/${buyers.id}`, { as: [...A_ADMIN], body: { name: 'purchasers', expression: 'did(purchase)' } }), 409);
    expect(p.detail).toContain('"cn buyers"');
    expect(p.detail).toContain('"big buyers"');
    expect(p.errors).toEqual([{ path: 'body.name', message: expect.stringContaining('cn buyers') }]);
    // Nothing changed, and the users still evaluate.
    expect((await ok(await h.call('GET', `/v1/segments/${buyers.id}`, { as: [...A_READ] }))).name).toBe('buyers');
    expect((await ok(await h.call('POST', '/v1/segments/evaluate', { as: [...A_READ], body: { expression: 'in_segment("cn buyers")' } }))).users).toEqual([{ user_id: 'alice' }]);
    // Keeping the name while changing the expression is not a rename.
    expect((await ok(await h.call('PUT', '/v1/segments/buyers', { as: [...A_ADMIN], body: { name: 'buyers', expression: 'did(purchase, within 3650d)' } }))).id).toBe(buyers.id);

    // A segment used only by id may be renamed: the reference follows.
    const solo = await ok(await h.call('POST', '/v1/segments', { as: [...A_ADMIN], body: { name: 'solo', expression: 'country = "SG"' } }), 201);
    await ok(await h.call('POST', '/v1/segments', { as: [...A_ADMIN], body: { name: 'solo by id', expression: `in_segment("${solo.id}")` } }), 201);
    expect((await ok(await h.call('PUT', `/v1/segments/${solo.id}`, { as: [...A_ADMIN], body: { name: 'singapore', expression: 'country = "SG"' } }))).name).toBe('singapore');
    expect((await ok(await h.call('POST', '/v1/segments/evaluate', { as: [...A_READ], body: { expression: 'in_segment("solo by id")' } }))).users).toEqual([{ user_id: 'bob' }]);
  });

  it('refuses to delete a segment in use with 409 conflict on path.id, not a segment syntax error', async () => {
    const p = await expectProblem(await h.call('DELETE', '/v1/segments/buyers', { as: [...A_ADMIN] }), 409);
    expect(p.type).toBe('urn:warbler:problem:conflict');
    expect(p.title).not.toBe('Invalid segment expression');
    expect(p.detail).toContain('"cn buyers"');
    expect(p.errors).toEqual([{ path: 'path.id', message: expect.stringContaining('big buyers') }]);
    expect((await ok(await h.call('GET', '/v1/segments/buyers', { as: [...A_READ] }))).name).toBe('buyers');
    const doc = await ok(await h.call('GET', '/openapi.json', { as: [...A_READ] }));
    expect(doc.paths['/v1/segments/{id}'].delete.responses['409']).toBeDefined();
    expect(doc.paths['/v1/segments/{id}'].put.responses['409']).toBeDefined();
  });
});

describe('problems the OpenAPI document lists', () => {
  it('includes 413 and 415 on every route that reads a body, as the server answers them', async () => {
    const doc = await ok(await h.call('GET', '/openapi.json', { as: [...A_READ] }));
    for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, { responses: Record<string, unknown> }>>)) {
      for (const [method, op] of Object.entries(ops)) {
        if (method === 'get') continue;
        expect(Object.keys(op.responses), `${method} ${path}`).toEqual(expect.arrayContaining(['400', '413', '415']));
      }
    }
    const p = await expectProblem(await h.call('POST', '/v1/segments/evaluate', { as: [...A_READ], body: 'did(view)', headers: { 'content-type': 'text/plain' } }), 415);
    expect(p.type).toBe('urn:warbler:problem:unsupported-media-type');
    // Invalid input, so its errors name the body as a 400's and a 413's do.
    expect(p.errors).toEqual([{ path: 'body', message: expect.stringContaining('application/json') }]);
  });

  it('gives an error of a request field, not of the expression, the invalid-request type', async () => {
    for (const body of [{ name: 'seg_abc', expression: 'did(view)' }, { name: 'x', description: 'a\ud800', expression: 'did(view)' }]) {
      const p = await expectProblem(await h.call('POST', '/v1/segments', { as: [...A_ADMIN], body }), 400);
      expect([p.type, p.title]).toEqual(['urn:warbler:problem:invalid-request', 'Invalid request']);
    }
    const p = await expectProblem(await h.call('POST', '/v1/segments', { as: [...A_ADMIN], body: { name: 'y', expression: 'did(' } }), 400);
    expect([p.type, p.title]).toEqual(['urn:warbler:problem:invalid-segment', 'Invalid segment expression']);
  });
});

describe('request instants: any ISO 8601 instant with an offset or Z', () => {
  const forms: [string, string][] = [
    ['2026-11-20T12:00:00Z', '2026-11-20T12:00:00Z'],
    ['2026-11-20T12:00:00+0200', '2026-11-20T10:00:00Z'],
    ['2026-11-20T12:00:00+02:00', '2026-11-20T10:00:00Z'],
    ['2026-11-20T12:00:00+02', '2026-11-20T10:00:00Z'],
    ['2026-11-20T12:00:00-0530', '2026-11-20T17:30:00Z'],
    ['2026-11-20T12:00Z', '2026-11-20T12:00:00Z'],
    ['2026-11-20T12:00+01:00', '2026-11-20T11:00:00Z'],
    ['2026-11-20t12:00:00z', '2026-11-20T12:00:00Z'],
    ['2026-11-20T12:00:00.75Z', '2026-11-20T12:00:00Z'],
    ['20261120T120000Z', '2026-11-20T12:00:00Z'],
    ['2026-324T12:00:00Z', '2026-11-20T12:00:00Z'],
    ['2026-W47-5T12:00:00Z', '2026-11-20T12:00:00Z'],
    ['2026-11-20T12Z', '2026-11-20T12:00:00Z'],
    ['2026-11-19T24:00Z', '2026-11-20T00:00:00Z'],
  ];

  it.each(forms)('evaluate and explain take %s', async (given, utc) => {
    for (const path of ['/v1/segments/evaluate', '/v1/segments/explain']) {
      const r = await ok(await h.call('POST', path, { as: [...A_READ], body: { expression: 'did(view)', as_of: given } }));
      expect(r.as_of, path).toBe(utc);
    }
  });

  it('query as_of takes the same forms; non-instants are refused', async () => {
    const seg = await ok(await h.call('POST', '/v1/segments', { as: [...A_ADMIN], body: { name: 'instant viewers', expression: 'did(view)' } }), 201);
    const res = await h.call('GET', `/v1/segments/${seg.id}/users?as_of=${encodeURIComponent('2026-11-20T12:00+0200')}`, { as: [...A_READ] });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-warbler-as-of')).toBe('2026-11-20T10:00:00Z');
    await res.text();
    for (const bad of ['2026-11-20T12:00:00', '2026-11-20', '2026-02-30T00:00:00Z', '2026-11-20T24:00:01Z', '2026-11-20T12:00:00+2', 'now', '']) {
      const p = await expectProblem(await h.call('POST', '/v1/segments/evaluate', { as: [...A_READ], body: { expression: 'did(view)', as_of: bad } }), 400);
      expect(p.errors[0].path, bad).toBe('body.as_of');
    }
    const p = await expectProblem(await h.call('GET', `/v1/segments/${seg.id}/users?as_of=2026-11-20T12:00:00`, { as: [...A_READ] }), 400);
    expect(p.errors[0].path).toBe('query.as_of');
  });

  it('documents the instant as a string with the accepted forms', async () => {
    const doc = await ok(await h.call('GET', '/openapi.json', { as: [...A_READ] }));
    const as_of = doc.components.schemas.EvaluateRequest.properties.as_of;
    expect(as_of.type).toBe('string');
    expect(as_of.description).toMatch(/offset/);
    // RFC 3339 `date-time` would refuse +0200, +02 and minute precision, which the API takes.
    expect(as_of.format).toBeUndefined();
  });
});

describe('jobs', () => {
  it('take no body as {}, record params in UTC seconds, and are read with the admin role', async () => {
    let res = await h.call('POST', '/v1/jobs/profiles', { as: [...A_ADMIN] });
    const { job_id } = await ok(res, 202);
    await jobFinished(job_id);
    // Jobs belong to `admin`: a read key is refused.
    await expectProblem(await h.call('GET', `/v1/jobs/${job_id}`, { as: [...A_READ] }), 403);
    expect(await ok(await h.call('GET', `/v1/jobs/${job_id}`, { as: [...A_ADMIN] }))).toMatchObject({ state: 'succeeded', params: { mode: 'incremental' } });

    res = await h.call('POST', '/v1/jobs/profiles', { as: [...A_ADMIN], body: { as_of: '2026-11-20T14:00:00.999+02:00', mode: 'full' } });
    const full = await ok(res, 202);
    await jobFinished(full.job_id);
    const job = await ok(await h.call('GET', `/v1/jobs/${full.job_id}`, { as: [...A_ADMIN] }));
    expect(job.params).toEqual({ as_of: '2026-11-20T12:00:00Z', mode: 'full' });
    expect(job.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    // An empty body on the cluster job too.
    res = await h.call('POST', '/v1/jobs/clusters', { as: [...A_ADMIN] });
    const clusters = await ok(res, 202);
    await jobFinished(clusters.job_id);
    expect((await ok(await h.call('GET', `/v1/jobs/${clusters.job_id}`, { as: [...A_ADMIN] }))).params).toMatchObject({ k: 'auto' });
    res = await h.call('POST', '/v1/jobs/clusters', { as: [...A_ADMIN], body: { k: 2, as_of: '2026-11-20T12:00Z' } });
    const k2 = await ok(res, 202);
    await jobFinished(k2.job_id);
    expect((await ok(await h.call('GET', `/v1/jobs/${k2.job_id}`, { as: [...A_ADMIN] }))).params).toEqual({ k: 2, as_of: '2026-11-20T12:00:00Z' });

    // A body that is there must still be an object of known fields.
    await expectProblem(await h.call('POST', '/v1/jobs/profiles', { as: [...A_ADMIN], body: { mode: 'sometimes' } }), 400);
    await expectProblem(await h.call('POST', '/v1/jobs/clusters', { as: [...A_ADMIN], body: '[]' }), 400);
  });
});

describe('empty query values read as absent', () => {
  it('snapshot pages, exports and stats take `name=` as the default', async () => {
    const seg = await ok(await h.call('POST', '/v1/segments', { as: [...A_ADMIN], body: { name: 'empty query', expression: 'did(view)' } }), 201);
    const snap = await ok(await h.call('POST', `/v1/segments/${seg.id}/snapshots`, { as: [...A_ADMIN] }), 201);
    const page = await ok(await h.call('GET', `/v1/segments/${seg.id}/snapshots/${snap.snapshot_id}/users?cursor=&limit=`, { as: [...A_READ] }));
    expect(page.users).toHaveLength(APP_A_VIEWERS.length);
    expect(page.next_cursor).toBeNull();
    const res = await h.call('GET', `/v1/segments/${seg.id}/users?format=&as_of=&fields=`, { as: [...A_READ] });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-ndjson');
    expect((await res.text()).trim().split('\n')).toHaveLength(APP_A_VIEWERS.length);
    expect((await ok(await h.call('GET', '/v1/stats?days=', { as: [...A_READ] }))).events.total).toBeGreaterThan(0);
    // A value that is there is still validated.
    await expectProblem(await h.call('GET', `/v1/segments/${seg.id}/snapshots/${snap.snapshot_id}/users?limit=0`, { as: [...A_READ] }), 400);
  });
});

describe('system routes', () => {
  it('/metrics needs an admin key, /openapi.json any key, /healthz none', async () => {
    expect((await h.call('GET', '/healthz')).status).toBe(200);
    for (const path of ['/metrics', '/openapi.json']) {
      await expectProblem(await h.call('GET', path), 401);
      await expectProblem(await h.call('GET', path, { headers: { authorization: 'Bearer nope' } }), 401);
    }
    for (const role of ['ingest', 'read'] as const) {
      await expectProblem(await h.call('GET', '/metrics', { as: ['app_a', role] }), 403);
      expect((await ok(await h.call('GET', '/openapi.json', { as: ['app_a', role] }))).openapi).toBe('3.1.0');
    }
    const m = await h.call('GET', '/metrics', { as: [...A_ADMIN] });
    expect(m.status).toBe(200);
    expect(await m.text()).toContain('warbler_http_requests_total');
    const doc = await ok(await h.call('GET', '/openapi.json', { as: ['app_b', 'ingest'] }));
    expect(doc.paths['/metrics'].get).toMatchObject({ security: [{ bearer: [] }], 'x-warbler-role': 'admin' });
    expect(doc.paths['/openapi.json'].get.security).toEqual([{ bearer: [] }]);
    expect(doc.paths['/healthz'].get.security).toEqual([]);
  });

  it('/healthz answers 503 with the health object, as the document says', async () => {
    // ClickHouse on a port nobody listens on, no Kafka: degraded.
    const dead = new ClickHouse({ url: 'http://127.0.0.1:9', database: 'nothing' });
    const { app } = createApp({ ch: dead, producer: h.producer, config: h.config, keys: h.ctx.keys });
    try {
      const res = await app.request('/healthz');
      expect(res.status).toBe(503);
      const body = (await res.json()) as Record<string, unknown>;
      expect(body).toMatchObject({ status: 'degraded', clickhouse: { ok: false }, kafka: { ok: false } });
      const doc = await ok(await h.call('GET', '/openapi.json', { as: [...A_READ] }));
      const documented = doc.paths['/healthz'].get.responses['503'];
      const served = (res.headers.get('content-type') ?? '').split(';')[0] as string;
      expect(Object.keys(documented.content)).toEqual([served]);
      expect(documented.content[served].schema).toEqual({ $ref: '#/components/schemas/Health' });
      expect(Object.keys(doc.components.schemas.Health.properties).sort()).toEqual(Object.keys(body).sort());
    } finally {
      await dead.close();
    }
  });
});

describe('the README documents the API configuration', () => {
  it('names every environment variable the API and serve read', () => {
    const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
    const config = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('\n## ', readme.indexOf('## Configuration') + 5));
    const sources = ['api/auth.ts', 'api/app.ts', 'cli/serve.ts'].map((f) => readFileSync(join(REPO_ROOT, f), 'utf8')).join('\n');
    const used = new Set([...sources.matchAll(/env\.(WARBLER_[A-Z0-9_]+)/g)].map((m) => m[1] as string));
    expect(used).toContain('WARBLER_API_KEYS');
    for (const v of used) expect(config, v).toContain(`\`${v}\``);
    expect(readme).toMatch(/\/metrics[^\n]*admin/);
  });
});

describe('response timestamps are UTC whatever the ClickHouse server zone', () => {
  it('normalises ClickHouse timestamps given as epoch seconds', () => {
    expect(normalise('timestamp', 1_790_007_200)).toBe('2026-09-21T16:13:20Z');
    expect(normalise('timestamp', '1790007200')).toBe('2026-09-21T16:13:20Z');
  });

  it('GET /v1/stats: last event time and days in UTC when DateTime values render in another zone', async () => {
    // A DateTime column with a zone renders like a plain DateTime on a server
    // in that zone: an external ClickHouse that is not on UTC.
    const t = await harness({ prefix: 'apitz' });
    // The views fed by `events` go too: this database serves only the stats read.
    const views = await t.ch.rows<{ name: string }>(sql`SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'MaterializedView'`);
    for (const v of views) await t.ch.exec(sql`DROP TABLE ${ident(v.name)}`);
    await t.ch.exec(sql`RENAME TABLE events TO events_utc`);
    await t.ch.exec(sql`CREATE TABLE events (app_id String, user_id String, ts DateTime('Asia/Shanghai'), event_id String,
      type Enum8('track' = 1, 'identify' = 2), event String, received_at DateTime('Asia/Shanghai'))
      ENGINE = MergeTree ORDER BY (app_id, user_id, ts)`);
    // 22:30 UTC is 06:30 of the next day in Shanghai.
    const day = Math.floor(Date.now() / 86_400_000) - 2;
    const ts = day * 86_400 + 22.5 * 3600;
    await t.ch.exec(sql`INSERT INTO events (app_id, user_id, ts, event_id, type, event, received_at)
      SELECT 'app_a', 'zoe', toDateTime(${ts}), 'e1', 'track', 'view', toDateTime(${ts + 5})`);
    const res = await t.call('GET', '/v1/stats?days=10', { as: [...A_READ] });
    const s = await ok(res);
    const iso = (sec: number) => new Date(sec * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    expect(s.last_event_at).toBe(iso(ts));
    expect(s.last_received_at).toBe(iso(ts + 5));
    expect(s.events.by_day).toEqual([{ day: iso(ts).slice(0, 10), track: 1, identify: 0 }]);
  });
});
