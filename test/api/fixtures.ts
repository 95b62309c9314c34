// Events for the API tests, stored through the ingest normaliser and sink (the
// same rows the real pipeline writes). Two apps share the user id `shared`
// with different histories, so isolation failures show up as wrong numbers.
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { normalizeEvent } from '../../ingest/normalize.ts';
import { insertEventRows } from '../../ingest/sink.ts';

const DAY = 86_400_000;

export function fixtureEvents(now = Date.now()): { app: string; event: Record<string, unknown> }[] {
  const at = (daysAgo: number, minutes = 0) => new Date(now - daysAgo * DAY - minutes * 60_000).toISOString();
  const out: { app: string; event: Record<string, unknown> }[] = [];
  const a = (event: Record<string, unknown>) => out.push({ app: 'app_a', event });
  const b = (event: Record<string, unknown>) => out.push({ app: 'app_b', event });
  a({ type: 'identify', user_id: 'alice', ts: at(10), traits: { plan: 'pro', vip: true }, context: { country: 'CN', timezone: 'Asia/Shanghai' } });
  for (let i = 0; i < 3; i++) a({ user_id: 'alice', event: 'view', ts: at(2, i), properties: { item_id: `i${i}`, category: 'shoes' } });
  a({ user_id: 'alice', event: 'purchase', ts: at(1), properties: { amount: 120, currency: 'USD', category: 'shoes' } });
  a({ type: 'identify', user_id: 'bob', ts: at(5), context: { country: 'SG' } });
  a({ user_id: 'bob', event: 'view', ts: at(3), properties: { item_id: 'x' } });
  a({ user_id: 'carol', event: 'purchase', ts: at(4), properties: { amount: 30, category: 'bags, "big"' } });
  a({ user_id: 'shared', event: 'view', ts: at(6) });
  // A crowd with varied behaviour, so profiles and clusters have something to work on.
  for (let n = 0; n < 40; n++) {
    const user = `crowd-${String(n).padStart(2, '0')}`;
    for (let v = 0; v <= n % 7; v++) a({ user_id: user, event: 'view', ts: at(n % 20, v) });
    if (n % 3 === 0) a({ user_id: user, event: 'purchase', ts: at(n % 25), properties: { amount: 10 + n * 5 } });
  }
  for (let i = 0; i < 5; i++) b({ user_id: 'shared', event: 'purchase', ts: at(1, i), properties: { amount: 1000 } });
  b({ user_id: 'bart', event: 'view', ts: at(2) });
  return out;
}

export async function storeFixtureEvents(ch: ClickHouse, now = Date.now()): Promise<void> {
  const rows = fixtureEvents(now).map(({ app, event }) => {
    const r = normalizeEvent(event, app);
    if (!r.row) throw new Error(`fixture event rejected: ${JSON.stringify(r.errors)}`);
    return r.row;
  });
  await insertEventRows(ch, rows);
}

/** The app_a users who viewed something (for checking segment answers by hand). */
export const APP_A_VIEWERS = ['alice', 'bob', 'shared', ...Array.from({ length: 40 }, (_, n) => `crowd-${String(n).padStart(2, '0')}`)].sort();
