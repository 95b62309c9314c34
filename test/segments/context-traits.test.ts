// Segments whose traits are all context traits read them from
// user_context_traits, the users with a change after as_of from every change
// (compile.ts contextTraitsSide); a change stored after that list was read
// makes the query throw, and evaluation prepares again.
import { beforeAll, describe, expect, it } from 'vitest';
import { clickhouseErrorCode, type ClickHouse } from '../../lib/clickhouse.ts';
import { contextIncompleteSql } from '../../profiles/traits.ts';
import { compileSegment, CONTEXT_TRAITS_STALE_CODE } from '../../segments/compile.ts';
import { evaluateSegment, withContextRetry } from '../../segments/evaluate.ts';
import { parseSegment } from '../../segments/parse.ts';
import { insertEvents } from '../profiles/events.ts';
import type { TestEvent } from '../profiles/reference.ts';
import { testDatabase } from '../support/env.ts';

let ch: ClickHouse;
const app = 'ctx_seg';
const H = 3600;
const asOf = Math.floor(Date.now() / 1000 / H) * H - 48 * H;
const at = new Date(asOf * 1000);

beforeAll(async () => {
  ch = await testDatabase('wt_segctx');
  const now = Math.floor(Date.now() / 1000);
  const events: TestEvent[] = [];
  const add = (user: string, id: string, ts: number, e: Partial<TestEvent>) =>
    events.push({ event_id: id, user_id: user, ts, type: 'track', event: 'view', properties: {}, traits: {}, context: {}, received_at: now - 60, ...e });
  add('u1', 'a1', asOf - 3 * H, { context: { platform: 'ios', country: 'DE' } });
  add('u1', 'a2', asOf - H, { context: { platform: 'android', country: 'DE' } });
  // ios at as_of, web after it: from every change.
  add('u2', 'b1', asOf - 2 * H, { context: { platform: 'ios', country: 'FR' } });
  add('u2', 'b2', asOf + 2 * H, { context: { platform: 'web', country: 'FR' } });
  // Removed by an identify after a context value.
  add('u3', 'c1', asOf - 2 * H, { context: { platform: 'ios' } });
  add('u3', 'c2', asOf - H, { type: 'identify', event: '', traits: { platform: null } });
  add('u4', 'd1', asOf - H, { context: { country: 'DE' } });
  // Only after as_of: not a user yet.
  add('u5', 'e1', asOf + H, { context: { platform: 'ios' } });
  await insertEvents(ch, app, events);
});

const members = async (expr: string) => (await evaluateSegment(ch, app, expr, { asOf: at, limit: 100 })).users.map((u) => u.user_id);

describe('segments on context traits', () => {
  it('read each user\'s latest change at or before as_of, from every change for a user with one after', async () => {
    const P = (await ch.rows<{ user_id: string }>(contextIncompleteSql(app, at, 100))).map((r) => r.user_id);
    expect(P.sort()).toEqual(['u2', 'u5']);
    expect(await members('platform = "ios"')).toEqual(['u2']);
    expect(await members('platform = "android" or country = "FR"')).toEqual(['u1', 'u2']);
    expect(await members('platform is null')).toEqual(['u3', 'u4']);
    expect(await members('not (traits.country = "DE")')).toEqual(['u2', 'u3']);
    // The same as reading every change.
    for (const expr of ['platform = "ios"', 'platform is null', 'not (traits.country = "DE") and platform != "web"']) {
      const counts = await Promise.all([undefined, P].map(async (contextIncomplete) => {
        const compiled = compileSegment(parseSegment(expr), { appId: app, asOf: at, profileRunId: null, ...(contextIncomplete ? { contextIncomplete } : {}) });
        expect(compiled.members.text.includes('user_context_traits'), expr).toBe(contextIncomplete !== undefined);
        return (await ch.rows<{ user_id: string }>(compiled.members)).map((r) => r.user_id);
      }));
      expect(counts[1], expr).toEqual(counts[0]);
    }
  });

  it('throws when a user outside the list has a change after as_of, and evaluation retries with a new list', async () => {
    const compile = (contextIncomplete: string[]) => compileSegment(parseSegment('platform = "ios"'), { appId: app, asOf: at, profileRunId: null, contextIncomplete });
    // A list read before u2's later change was stored.
    const stale = await ch.rows(compile(['u5']).count).then(() => undefined, (e: unknown) => e);
    expect(clickhouseErrorCode(stale)).toBe(CONTEXT_TRAITS_STALE_CODE);
    let attempts = 0;
    const count = await withContextRetry(async () => {
      attempts++;
      const list = attempts === 1 ? ['u5'] : (await ch.rows<{ user_id: string }>(contextIncompleteSql(app, at, 100))).map((r) => r.user_id);
      return Number((await ch.rows<{ count: string }>(compile(list).count))[0]!.count);
    });
    expect({ attempts, count }).toEqual({ attempts: 2, count: 1 });
  });
});
