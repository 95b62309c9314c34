// An independent, in-memory implementation of the profile contract
// (events-and-profiles.md §2), written from the spec, not from profiles/sql.ts:
// plain loops over event objects, time zones through Intl. The RFM rules are
// written again here from their documentation (sql/README.md, "RFM"), not
// imported from profiles/rfm.ts, so an error in the project's grid or score
// formula shows up as a difference.

// sql/README.md's segment table, read row by row: r = 5 first, fm = 1..5.
const SEGMENT_TABLE: Record<number, string[]> = {
  5: ['new_customers', 'potential_loyalist', 'potential_loyalist', 'champions', 'champions'],
  4: ['promising', 'potential_loyalist', 'potential_loyalist', 'loyal', 'loyal'],
  3: ['about_to_sleep', 'about_to_sleep', 'need_attention', 'loyal', 'loyal'],
  2: ['hibernating', 'hibernating', 'at_risk', 'at_risk', 'cannot_lose'],
  1: ['lost', 'hibernating', 'at_risk', 'at_risk', 'cannot_lose'],
};

/** score = ceil(5 · (beaten + tied/2) / n), by counting: the least k in 1..5 with 5·(beaten + tied/2) <= k·n. */
function quintileScore(beaten: number, tied: number, n: number): number {
  for (let k = 1; k <= 5; k++) if (5 * (2 * beaten + tied) <= 2 * k * n) return k;
  throw new Error(`no score for beaten ${beaten}, tied ${tied}, n ${n}`);
}

/** fm = round_half_up((f + m) / 2); the segment from the table. */
function rfmSegment(r: number, f: number, m: number): string {
  const fm = (f + m) % 2 === 0 ? (f + m) / 2 : (f + m + 1) / 2;
  return SEGMENT_TABLE[r]![fm - 1]!;
}

/** Revenue compared at micro-units, floor(x·1e6 + 0.5). */
const monetaryKey = (revenue: number) => Math.min(Math.floor(revenue * 1e6 + 0.5), 9.2e18);

export type Scalar = string | number | boolean;

export interface TestEvent {
  event_id: string;
  user_id: string;
  /** epoch seconds, UTC */
  ts: number;
  type: 'track' | 'identify';
  event: string;
  properties: Record<string, unknown>;
  /** identify traits; null removes */
  traits: Record<string, Scalar | null>;
  /** context values that update traits of the same name */
  context: Record<string, string>;
  /** epoch seconds */
  received_at: number;
}

export interface RefProfile {
  user_id: string;
  first_seen: number;
  last_seen: number;
  events_total: number;
  events_7d: number;
  events_30d: number;
  active_days_30d: number;
  views_30d: number;
  clicks_30d: number;
  purchases_30d: number;
  purchases_total: number;
  revenue_total: number;
  revenue_30d: number;
  avg_order_value: number | null;
  last_purchase_at: number | null;
  recency_days: number | null;
  r_score: number | null;
  f_score: number | null;
  m_score: number | null;
  rfm_segment: string | null;
  top_category: string | null;
  best_hour: number | null;
  platform: string | null;
  country: string | null;
  timezone: string | null;
  locale: string | null;
  app_version: string | null;
  traits: Record<string, Scalar>;
}

const DAY = 86400;

/** Trait changes an event makes, in the order the contract gives them. */
export function traitChanges(e: TestEvent): [string, Scalar | null][] {
  const out: [string, Scalar | null][] = [];
  if (e.type === 'identify') for (const [k, v] of Object.entries(e.traits)) out.push([k, v]);
  for (const [k, v] of Object.entries(e.context)) if (['platform', 'app_version', 'country', 'timezone', 'locale'].includes(k)) out.push([k, v]);
  return out;
}

/** Byte order of UTF-8, which is how ClickHouse orders strings. */
export function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

const zoneOk = new Map<string, boolean>();
function validZone(name: string): boolean {
  let ok = zoneOk.get(name);
  if (ok === undefined) {
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: name });
      ok = name.length > 0;
    } catch {
      ok = false;
    }
    zoneOk.set(name, ok);
  }
  return ok;
}

const hourFormats = new Map<string, Intl.DateTimeFormat>();
export function localHour(tsS: number, zone: string): number {
  let f = hourFormats.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: zone, hour: 'numeric', hourCycle: 'h23' });
    hourFormats.set(zone, f);
  }
  return Number(f.formatToParts(new Date(tsS * 1000)).find((p) => p.type === 'hour')!.value);
}

function textOf(v: Scalar): string {
  return typeof v === 'string' ? v : String(v);
}

/** Mode with ties to the smallest key. */
function mode<K>(counts: Map<K, number>, less: (a: K, b: K) => boolean): K | null {
  let best: K | null = null;
  let bestN = 0;
  for (const [k, n] of counts) if (n > bestN || (n === bestN && best !== null && less(k, best))) [best, bestN] = [k, n];
  return best;
}

export function referenceProfiles(allEvents: readonly TestEvent[], asOf: number): Map<string, RefProfile> {
  const events = allEvents.filter((e) => e.ts <= asOf);
  const byUser = new Map<string, TestEvent[]>();
  for (const e of events) {
    const list = byUser.get(e.user_id) ?? [];
    list.push(e);
    byUser.set(e.user_id, list);
  }
  const inWindow = (ts: number, days: number) => asOf - days * DAY < ts && ts <= asOf;
  const out = new Map<string, RefProfile>();
  for (const [user, evs] of byUser) {
    // Current traits: the latest change per key by (ts, event_id).
    const latest = new Map<string, { ts: number; id: string; v: Scalar | null }>();
    for (const e of evs)
      for (const [k, v] of traitChanges(e)) {
        const cur = latest.get(k);
        if (!cur || e.ts > cur.ts || (e.ts === cur.ts && byteCompare(e.event_id, cur.id) > 0)) latest.set(k, { ts: e.ts, id: e.event_id, v });
      }
    const traits: Record<string, Scalar> = {};
    for (const [k, { v }] of [...latest].sort((a, b) => byteCompare(a[0], b[0]))) if (v !== null) traits[k] = v;
    const named = (k: string) => (k in traits ? textOf(traits[k] as Scalar) : null);

    const track = evs.filter((e) => e.type === 'track');
    const purchases = track.filter((e) => e.event === 'purchase');
    const amount = (e: TestEvent) => (typeof e.properties.amount === 'number' && Number.isFinite(e.properties.amount) ? e.properties.amount : 0);
    const revenue_total = purchases.reduce((s, e) => s + amount(e), 0);
    const last_purchase_at = purchases.length ? Math.max(...purchases.map((e) => e.ts)) : null;

    const cats = new Map<string, number>();
    for (const e of track)
      if ((e.event === 'view' || e.event === 'purchase') && inWindow(e.ts, 90) && 'category' in e.properties) {
        const c = e.properties.category;
        if (typeof c === 'string' || typeof c === 'number' || typeof c === 'boolean') cats.set(textOf(c), (cats.get(textOf(c)) ?? 0) + 1);
      }
    const tzTrait = named('timezone');
    const zone = tzTrait !== null && validZone(tzTrait) ? tzTrait : 'UTC';
    const hours = new Map<number, number>();
    for (const e of track) if (inWindow(e.ts, 90)) hours.set(localHour(e.ts, zone), (hours.get(localHour(e.ts, zone)) ?? 0) + 1);

    out.set(user, {
      user_id: user,
      first_seen: Math.min(...evs.map((e) => e.ts)),
      last_seen: Math.max(...evs.map((e) => e.ts)),
      events_total: track.length,
      events_7d: track.filter((e) => inWindow(e.ts, 7)).length,
      events_30d: track.filter((e) => inWindow(e.ts, 30)).length,
      active_days_30d: new Set(track.filter((e) => inWindow(e.ts, 30)).map((e) => new Date(e.ts * 1000).toISOString().slice(0, 10))).size,
      views_30d: track.filter((e) => e.event === 'view' && inWindow(e.ts, 30)).length,
      clicks_30d: track.filter((e) => e.event === 'click' && inWindow(e.ts, 30)).length,
      purchases_30d: purchases.filter((e) => inWindow(e.ts, 30)).length,
      purchases_total: purchases.length,
      revenue_total,
      revenue_30d: purchases.filter((e) => inWindow(e.ts, 30)).reduce((s, e) => s + amount(e), 0),
      avg_order_value: purchases.length ? revenue_total / purchases.length : null,
      last_purchase_at,
      recency_days: last_purchase_at === null ? null : Math.floor((asOf - last_purchase_at) / DAY),
      r_score: null,
      f_score: null,
      m_score: null,
      rfm_segment: null,
      top_category: mode(cats, (a, b) => byteCompare(a, b) < 0),
      best_hour: mode(hours, (a, b) => a < b),
      platform: named('platform'),
      country: named('country'),
      timezone: tzTrait,
      locale: named('locale'),
      app_version: named('app_version'),
      traits,
    });
  }

  // RFM among purchasers: beaten = purchasers with a strictly worse value.
  const buyers = [...out.values()].filter((p) => p.purchases_total > 0);
  const n = buyers.length;
  const score = (value: (p: RefProfile) => number) => {
    const values = buyers.map(value);
    return (v: number) => quintileScore(values.filter((x) => x < v).length, values.filter((x) => x === v).length, n);
  };
  const rValue = (p: RefProfile) => -(p.recency_days as number);
  const fValue = (p: RefProfile) => p.purchases_total;
  const mValue = (p: RefProfile) => monetaryKey(p.revenue_total);
  const [rs, fs, ms] = [score(rValue), score(fValue), score(mValue)];
  for (const p of buyers) {
    p.r_score = rs(rValue(p));
    p.f_score = fs(fValue(p));
    p.m_score = ms(mValue(p));
    p.rfm_segment = rfmSegment(p.r_score, p.f_score, p.m_score);
  }
  return out;
}
