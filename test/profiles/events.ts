// A seeded random event generator aimed at the profile contract's edges (DST
// days, window boundaries to the second, ties, invalid zone names, identify-only
// users, users seen only after as_of, non-numeric amounts). Events are stored the
// way ingest stores them: validated and normalised by ingest/normalize.ts, then
// inserted by ingest/sink.ts.
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { normalizeEvent, toEventRow } from '../../ingest/normalize.ts';
import type { ValidEvent } from '../../ingest/event-schema.ts';
import { insertEventRows } from '../../ingest/sink.ts';
import { traitChanges, type Scalar, type TestEvent } from './reference.ts';
import { seededRandom } from '../../profiles/kmeans.ts';

/** The project's seeded PRNG (mulberry32), so test data streams are reproducible. */
export const rng: (seed: number) => () => number = seededRandom;

const S = (iso: string) => Date.parse(iso) / 1000;
const DAY = 86400;

// DST changes in 2026, UTC instants.
export const DST_2026 = [
  S('2026-03-08T07:00:00Z'), // America/New_York springs forward
  S('2026-03-29T01:00:00Z'), // Europe/Berlin springs forward
  S('2026-04-04T16:00:00Z'), // Australia/Sydney falls back
  S('2026-10-03T16:00:00Z'), // Australia/Sydney springs forward
  S('2026-10-25T01:00:00Z'), // Europe/Berlin falls back
  S('2026-11-01T06:00:00Z'), // America/New_York falls back
];

/** as_of instants whose 90-day windows hold several DST changes. */
export const AS_OFS = [S('2026-04-20T10:00:00Z'), S('2026-11-15T00:00:00Z'), S('2026-04-05T03:30:00Z'), S('2026-11-01T06:00:00Z')];

export const ZONES: (string | null)[] = [
  'America/New_York', 'Europe/Berlin', 'Australia/Sydney', 'Asia/Kolkata', 'UTC', 'Asia/Kathmandu',
  'Mars/Olympus', 'America/New York', 'not a zone', '', '../etc/passwd', null,
];
const CATEGORIES: Scalar[] = ['books', 'toys', 'Toys', 'garden', 'a', 'b', 'ä', '', 7];
const CUSTOM = ['add_to_cart', 'open_app', 'search'];

export interface GenOptions {
  appUsers: number;
  asOf: number;
  receivedAt: number;
  /** prefix of event ids and of new user ids, so later batches add rather than repeat */
  tag: string;
  /** existing users later batches also write for */
  existingUsers?: string[];
}

export function generate(seed: number, o: GenOptions): TestEvent[] {
  const r = rng(seed);
  const pick = <T,>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T;
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const events: TestEvent[] = [];
  let n = 0;
  const boundaries = [0, 7, 30, 90].flatMap((d) => [o.asOf - d * DAY, o.asOf - d * DAY + 1, o.asOf - d * DAY - 1]);
  const someTs = (): number => {
    const k = r();
    if (k < 0.15) return pick(boundaries);
    if (k < 0.4) return pick(DST_2026) + int(-3 * 3600, 3 * 3600);
    if (k < 0.45) return o.asOf + int(1, 2 * DAY);
    return o.asOf - int(0, 120 * DAY);
  };
  const users = [...(o.existingUsers ?? []).filter(() => r() < 0.4)];
  for (let i = 0; i < o.appUsers; i++) users.push(`${o.tag}u${i}`);
  for (const user of users) {
    const kind = r();
    const base = () => ({ event_id: `${o.tag}e${String(n++).padStart(5, '0')}`, user_id: user, received_at: o.receivedAt, properties: {}, traits: {}, context: {} });
    const identify = (ts: number, traits: Record<string, Scalar | null>): TestEvent => ({ ...base(), ts, type: 'identify', event: '', traits });
    if (kind < 0.7 || r() < 0.5) {
      const z = pick(ZONES);
      events.push(identify(someTs(), { timezone: z, plan: pick(['free', 'pro']), vip: r() < 0.5, age: int(18, 70) }));
    }
    if (r() < 0.3) events.push(identify(someTs(), { timezone: pick(ZONES), app_version: r() < 0.5 ? 3 : '3.1.0', plan: null }));
    if (kind < 0.1) continue; // identify-only
    const future = kind < 0.15;
    const nEvents = int(0, 25);
    for (let j = 0; j < nEvents; j++) {
      const ts = future ? o.asOf + int(1, 3 * DAY) : someTs();
      const name = pick(['view', 'view', 'view', 'click', 'purchase', 'purchase', ...CUSTOM]);
      const properties: Record<string, unknown> = {};
      if ((name === 'view' || name === 'purchase' || r() < 0.1) && r() < 0.85) properties.category = pick(CATEGORIES);
      if (name === 'purchase' || r() < 0.05) {
        const a = r();
        if (a < 0.7) properties.amount = int(0, 800) / 4;
        else if (a < 0.8) properties.amount = String(int(1, 99));
        else if (a < 0.85) properties.amount = true;
        else if (a < 0.9) properties.amount = { value: 5 };
      }
      if (r() < 0.2) properties.nested = { category: 'nested-should-not-count', amount: 1000 };
      const context: Record<string, string> = {};
      if (r() < 0.15) context.timezone = pick(ZONES) || 'UTC';
      if (r() < 0.2) context.platform = pick(['ios', 'android', 'web']);
      if (r() < 0.1) context.country = pick(['DE', 'US', 'AU']);
      events.push({ ...base(), ts, type: 'track', event: name, properties, context });
      // Same-second twins decide trait ties by event_id.
      if (r() < 0.05) events.push({ ...base(), ts, type: 'track', event: name, properties, context: { timezone: pick(ZONES) || 'UTC' } });
    }
  }
  return events;
}

/** The event as a producer sends it. */
export function rawEvent(e: TestEvent): Record<string, unknown> {
  const raw: Record<string, unknown> = { type: e.type, event_id: e.event_id, user_id: e.user_id, ts: e.ts * 1000 };
  if (e.type === 'track') {
    raw.event = e.event;
    if (Object.keys(e.properties).length) raw.properties = e.properties;
  } else raw.traits = e.traits;
  if (Object.keys(e.context).length) raw.context = e.context;
  return raw;
}

export async function insertEvents(ch: ClickHouse, appId: string, events: readonly TestEvent[]): Promise<void> {
  const rows = events.map((e) => {
    const n = normalizeEvent(rawEvent(e), appId, e.received_at);
    // Ingest now rejects a purchase amount that is not a number >= 0; rows stored
    // before that rule can carry one, and profiles must ignore them: written as then.
    if (!n.row && n.errors.every((x) => x.path === 'properties.amount')) return toEventRow(rawEvent(e) as unknown as ValidEvent, appId, e.received_at);
    if (!n.row) throw new Error(`generator produced an invalid event ${JSON.stringify(rawEvent(e))}: ${JSON.stringify(n.errors)}`);
    return n.row;
  });
  for (let i = 0; i < rows.length; i += 5000) await insertEventRows(ch, rows.slice(i, i + 5000));
}
