// Request rules of the contract that hold on every route: an unknown field in a
// body is rejected (400), not ignored — also on routes that take no body, and
// also when it is "__proto__" — and a segment text error carries line and
// column, whatever check finds it (an empty text, one over 16 KiB).
import { beforeAll, describe, expect, it } from 'vitest';
import { sql } from '../../lib/sql.ts';
import { buildProfiles } from '../../profiles/job.ts';
import { storeFixtureEvents } from './fixtures.ts';
import { expectProblem, harness, type Harness } from './harness.ts';

let h: Harness;

beforeAll(async () => {
  h = await harness({ prefix: 'apirules' });
  await storeFixtureEvents(h.ch);
}, 120_000);

const ADMIN = ['app_a', 'admin'] as const;
const REQUEST_PROBLEM = 'urn:warbler:problem:invalid-request';

describe('a route without a body', () => {
  it('rejects a body with a field, naming it; an absent, empty or {} body is fine', async () => {
    const tags = async () => ((await (await h.call('GET', '/v1/users/alice', { as: ['app_a', 'read'] })).json()) as { tags: string[] }).tags;
    await expectProblem(await h.call('PUT', '/v1/users/alice/tags/vip', { as: [...ADMIN], body: { x: 1 } }), 400);
    // Refused means nothing happened.
    expect(await tags()).toEqual([]);
    for (const [method, path] of [
      ['PUT', '/v1/users/alice/tags/vip'],
      ['DELETE', '/v1/users/alice/tags/vip'],
    ] as const) {
      const p = await expectProblem(await h.call(method, path, { as: [...ADMIN], body: { x: 1 } }), 400);
      expect(p.errors, `${method} ${path}`).toEqual([{ path: 'body', message: 'unknown field(s): "x"' }]);
      await expectProblem(await h.call(method, path, { as: [...ADMIN], body: '[1]' }), 400);
      await expectProblem(await h.call(method, path, { as: [...ADMIN], body: '{"x":' }), 400);
      for (const body of [undefined, '', ' \n', {}]) {
        const res = await h.call(method, path, { as: [...ADMIN], body });
        expect(res.status, `${method} ${path} ${JSON.stringify(body)}`).toBe(200);
      }
    }
    const seg = await h.call('POST', '/v1/segments', { as: [...ADMIN], body: { name: 'viewers', expression: 'did(view)' } });
    expect(seg.status).toBe(201);
    const id = ((await seg.json()) as { id: string }).id;
    const p = await expectProblem(await h.call('DELETE', `/v1/segments/${id}`, { as: [...ADMIN], body: { force: true } }), 400);
    expect(p.errors[0].message).toContain('"force"');
    expect((await h.call('DELETE', `/v1/segments/${id}`, { as: [...ADMIN] })).status).toBe(204);
  });

  it('answers 413 with errors past its small limit, and checks the media type only of a body sent', async () => {
    const p = await expectProblem(await h.call('PUT', '/v1/users/alice/tags/vip', { as: [...ADMIN], body: `{"x":"${'y'.repeat(100 * 1024)}"}` }), 413);
    expect(p.errors).toEqual([{ path: 'body', message: expect.stringMatching(/exceeds the limit/) }]);
    expect((await h.call('PUT', '/v1/users/alice/tags/vip', { as: [...ADMIN], headers: { 'content-type': 'text/plain' } })).status).toBe(200);
    await expectProblem(await h.call('PUT', '/v1/users/alice/tags/vip', { as: [...ADMIN], body: 'x=1', headers: { 'content-type': 'text/plain' } }), 415);
  });
});

describe('"__proto__" in a segment in the JSON form', () => {
  it('is an unknown field, rejected rather than dropped', async () => {
    const body = '{"expression":{"__proto__":{"x":1},"did":"view"},"limit":0}';
    const p = await expectProblem(await h.call('POST', '/v1/segments/evaluate', { as: ['app_a', 'read'], body }), 400);
    expect(JSON.stringify(p.errors)).toContain('__proto__');
    const res = await h.call('POST', '/v1/segments/evaluate', { as: ['app_a', 'read'], body: '{"expression":{"did":"view"},"limit":0}' });
    expect(res.status).toBe(200);
  });
});

describe('segment text errors carry line and column', () => {
  const cases: [string, string][] = [
    ['empty', ''],
    ['blank', '  \n\t '],
    ['over 16 KiB in characters', `did(view) and ${' '.repeat(16 * 1024)}did(click)`],
    // 6,000 characters but 18,000 UTF-8 bytes: the limit is in bytes (segments.md: 16 KiB).
    ['over 16 KiB in bytes only', `traits.name = "${'中'.repeat(6000)}"`],
  ];
  for (const [name, expression] of cases) {
    it(`${name} text, on evaluate, explain and saved segments`, async () => {
      for (const [path, body] of [
        ['/v1/segments/evaluate', { expression }],
        ['/v1/segments/explain', { expression }],
        ['/v1/segments', { name: `s-${name}`, expression }],
      ] as const) {
        const p = await expectProblem(await h.call('POST', path, { as: [...ADMIN], body }), 400);
        expect([p.line, p.column], `${path}: ${p.detail}`).toEqual([expect.any(Number), expect.any(Number)]);
        expect(p.errors[0].path, path).toMatch(/^body\.expression/);
      }
    });
  }

  it('a text of exactly 16 KiB of UTF-8 is read', async () => {
    const head = 'traits.name = "';
    const text = `${head}${'é'.repeat((16 * 1024 - head.length - 1) / 2)}"`;
    expect(Buffer.byteLength(text)).toBe(16 * 1024);
    const res = await h.call('POST', '/v1/segments/evaluate', { as: ['app_a', 'read'], body: { expression: text, limit: 0 } });
    expect(res.status, await res.clone().text()).toBe(200);
  });
});

describe('an instant outside what ClickHouse stores (1970-01-01T00:00:00Z..2106-02-07T06:28:15Z)', () => {
  it('is refused with 400 where it is given, on every route that takes as_of, and by the profile job itself', async () => {
    const runsBefore = await h.ch.rows(sql`SELECT run_id FROM profile_runs WHERE app_id = 'app_a'`);
    const seg = (await (await h.call('POST', '/v1/segments', { as: [...ADMIN], body: { name: 'range', expression: 'did(view)' } })).json()) as { id: string };
    for (const at of ['1969-12-31T23:59:59Z', '2106-02-07T06:28:16Z', '2300-01-01T00:00:00Z']) {
      const bodies: [string, string, unknown][] = [
        ['POST', '/v1/jobs/profiles', { as_of: at }],
        ['POST', '/v1/jobs/clusters', { as_of: at }],
        ['POST', '/v1/segments/evaluate', { expression: 'did(view)', as_of: at }],
        ['POST', '/v1/segments/explain', { expression: 'did(view)', as_of: at }],
        ['POST', `/v1/segments/${seg.id}/snapshots`, { as_of: at }],
      ];
      for (const [method, path, body] of bodies) {
        const p = await expectProblem(await h.call(method, path, { as: [...ADMIN], body }), 400);
        expect(p.errors, `${path} ${at}`).toEqual([{ path: 'body.as_of', message: expect.stringMatching(/from 1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z/) }]);
      }
      for (const path of [`/v1/users/alice?as_of=${at}`, `/v1/segments/${seg.id}/users?as_of=${at}`, `/v1/segments/${seg.id}/users?format=csv&as_of=${at}`]) {
        const p = await expectProblem(await h.call('GET', path, { as: [...ADMIN] }), 400);
        expect(p.type, path).toBe(REQUEST_PROBLEM);
        expect(p.errors, `${path}`).toEqual([{ path: 'query.as_of', message: expect.stringMatching(/from 1970-01-01T00:00:00Z/) }]);
      }
    }
    // The edges themselves are instants like any other.
    expect((await h.call('POST', '/v1/segments/evaluate', { as: [...ADMIN], body: { expression: 'did(view)', as_of: '1970-01-01T00:00:00Z' } })).status).toBe(200);
    expect((await h.call('POST', '/v1/segments/evaluate', { as: [...ADMIN], body: { expression: 'did(view)', as_of: '2106-02-07T06:28:15Z' } })).status).toBe(200);
    // No run was built for a wrapped instant.
    await expect(buildProfiles(h.ch, 'app_a', { asOf: new Date('1969-06-01T00:00:00Z') })).rejects.toThrow(/outside 1970-01-01T00:00:00Z\.\.2106/);
    expect(await h.ch.rows(sql`SELECT run_id FROM profile_runs WHERE app_id = 'app_a'`)).toEqual(runsBefore);
  });
});

describe('names and ids ClickHouse cannot store, and characters', () => {
  it('answers 400, not 500, for a lone surrogate in a segment name or description or a tagged user id, and stores nothing', async () => {
    const lone = 'a\ud800';
    for (const body of [{ name: lone, expression: 'did(view)' }, { name: 'lone', description: lone, expression: 'did(view)' }]) {
      const p = await expectProblem(await h.call('POST', '/v1/segments', { as: [...ADMIN], body }), 400);
      expect(p.detail).toMatch(/lone surrogates/);
    }
    expect(((await (await h.call('GET', '/v1/segments', { as: [...ADMIN] })).json()) as { segments: { name: string }[] }).segments.map((s) => s.name)).not.toContain('lone');
    const p = await expectProblem(await h.call('POST', '/v1/tags/t/users', { as: [...ADMIN], body: { user_ids: ['ok', lone] } }), 400);
    expect(p.errors).toEqual([{ path: 'body.user_ids.1', message: expect.stringMatching(/lone surrogates/) }]);
    expect(await h.ch.rows(sql`SELECT user_id FROM user_tags WHERE app_id = 'app_a' AND tag = 't'`)).toEqual([]);
  });

  it('counts a user_id in characters (code points), as events do: 256 emoji can be tagged, 257 cannot', async () => {
    const id = '😀'.repeat(256);
    expect((await h.call('PUT', `/v1/users/${encodeURIComponent(id)}/tags/emo`, { as: [...ADMIN] })).status).toBe(200);
    expect(await (await h.call('POST', '/v1/tags/emo2/users', { as: [...ADMIN], body: { user_ids: [id] } })).json()).toEqual({ tag: 'emo2', users: 1 });
    await expectProblem(await h.call('POST', '/v1/tags/emo2/users', { as: [...ADMIN], body: { user_ids: [id + '😀'] } }), 400);
    const tagged = await h.ch.rows<{ tag: string }>(sql`SELECT tag FROM user_tags WHERE app_id = 'app_a' AND user_id = ${id} ORDER BY tag`);
    expect(tagged.map((r) => r.tag)).toEqual(['emo', 'emo2']);
  });

  it('takes an empty list of users to tag: nobody is tagged', async () => {
    expect(await (await h.call('POST', '/v1/tags/none/users', { as: [...ADMIN], body: { user_ids: [] } })).json()).toEqual({ tag: 'none', users: 0 });
  });
});

describe('ids in the path and cursors', () => {
  it('refuses a percent-escape that is not UTF-8 rather than taking it as literal text', async () => {
    for (const [method, path] of [
      ['GET', '/v1/users/%FF'],
      ['PUT', '/v1/users/u1/tags/%ED%A0%80'],
      ['GET', '/v1/segments/%C3'],
    ] as const) {
      const p = await expectProblem(await h.call(method, path, { as: [...ADMIN] }), 400);
      expect(p.errors, `${method} ${path}`).toEqual([{ path: 'path', message: 'percent-escapes must encode UTF-8' }]);
    }
    expect(await h.ch.rows(sql`SELECT tag FROM user_tags WHERE app_id = 'app_a' AND user_id = 'u1'`)).toEqual([]);
    // Escapes of UTF-8 still reach their id.
    expect((await h.call('PUT', `/v1/users/${encodeURIComponent('ü/ß')}/tags/${encodeURIComponent('t ü')}`, { as: [...ADMIN] })).status).toBe(200);
  });

  it('refuses a snapshot cursor it did not hand out, instead of reading it as the end', async () => {
    const seg = (await (await h.call('POST', '/v1/segments', { as: [...ADMIN], body: { name: 'paged', expression: 'events_total >= 0 or did(view)' } })).json()) as { id: string };
    const snap = (await (await h.call('POST', `/v1/segments/${seg.id}/snapshots`, { as: [...ADMIN], body: {} })).json()) as { snapshot_id: string; count: number };
    expect(snap.count).toBeGreaterThan(1);
    const page = async (cursor: string) => h.call('GET', `/v1/segments/${seg.id}/snapshots/${snap.snapshot_id}/users?limit=1&cursor=${cursor}`, { as: [...ADMIN] });
    const first = (await (await h.call('GET', `/v1/segments/${seg.id}/snapshots/${snap.snapshot_id}/users?limit=1`, { as: [...ADMIN] })).json()) as { next_cursor: string };
    expect((await page(first.next_cursor)).status).toBe(200);
    for (const cursor of ['zzz', '_w', 'dTE=']) {
      const p = await expectProblem(await page(cursor), 400);
      expect(p.errors, cursor).toEqual([{ path: 'query.cursor', message: 'invalid cursor' }]);
    }
  });
});
