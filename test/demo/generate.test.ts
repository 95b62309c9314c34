import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kmeans } from 'ml-kmeans';
import { afterAll, describe, expect, it } from 'vitest';
import { runGenerate } from '../../cli/generate.ts';
import { ARCHETYPE_NAMES, ARCHETYPES } from '../../demo/archetypes.ts';
import {
  archetypeOf,
  describeUser,
  generateEvents,
  GenerateOptionsError,
  INVALID_RULES,
  userIndexOf,
  type DemoRecord,
  type GenerateOptions,
  type TrackEvent,
} from '../../demo/generate.ts';
import { ClickHouseSink, KafkaSink, NdjsonSink } from '../../demo/sinks.ts';
import { createEventProducer, eventKey } from '../../ingest/producer.ts';
import { createKafka } from '../../lib/kafka.ts';
import { EventSchema } from '../../ingest/event-schema.ts';
import { normalizeEvent } from '../../ingest/normalize.ts';
import { sql } from '../../lib/sql.ts';
import { adjustedRandIndex } from '../support/ari.ts';
import { kafkaBrokers, testDatabase, uniqueName } from '../support/env.ts';

const END = Date.UTC(2026, 9, 31, 18, 0, 0);
const DAY = 86_400_000;
const BASE: GenerateOptions = { seed: 'test', users: 2000, days: 90, end: END };

type ValidRecord = Extract<DemoRecord, { kind: 'valid' }>;
const isValid = (r: DemoRecord): r is ValidRecord => r.kind === 'valid';

function collect(o: GenerateOptions): DemoRecord[] {
  return [...generateEvents(o)];
}

// One shared sample: generation is deterministic, so every test may read it.
const SAMPLE = collect(BASE);

// ---------------------------------------------------------------------------
// An independent reading of spec §1, written from the table, not from the generator.

const EVENT_NAME = /^[A-Za-z0-9_.:\- ]{1,128}$/;
const ISO_TS = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function tsMillis(ts: unknown): number | undefined {
  if (typeof ts === 'number') return Number.isInteger(ts) ? ts : undefined;
  if (typeof ts !== 'string') return undefined;
  const m = ISO_TS.exec(ts);
  if (!m) return undefined;
  const [mo, d, h, mi, s] = [Number(m[2]), Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])];
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 59) return undefined;
  const ms = Date.parse(ts);
  return Number.isFinite(ms) ? ms : undefined;
}

/** Reasons a message breaks the contract; empty when it is acceptable. */
function contractViolations(line: string, now: number): string[] {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return ['not JSON'];
  }
  if (!isObject(v)) return ['not an object'];
  const out: string[] = [];
  const type = v.type ?? 'track';
  if (type !== 'track' && type !== 'identify') out.push('type');
  if (v.event_id !== undefined && (typeof v.event_id !== 'string' || v.event_id.length < 1 || v.event_id.length > 128)) out.push('event_id');
  if (typeof v.app_id !== 'string' || v.app_id.length === 0) out.push('app_id');
  if (typeof v.user_id !== 'string' || v.user_id.length < 1 || v.user_id.length > 256) out.push('user_id');
  if (type === 'track' && (typeof v.event !== 'string' || !EVENT_NAME.test(v.event))) out.push('event');
  const ms = tsMillis(v.ts);
  if (ms === undefined) out.push('ts');
  else if (ms < 0 || ms > now + DAY) out.push('ts range');
  if (v.properties !== undefined) {
    if (!isObject(v.properties)) out.push('properties');
    else if (Buffer.byteLength(JSON.stringify(v.properties)) > 16 * 1024) out.push('properties size');
  }
  if (type === 'identify') {
    if (!isObject(v.traits)) out.push('traits');
    else if (Object.values(v.traits).some((t) => t !== null && !['string', 'number', 'boolean'].includes(typeof t))) out.push('traits');
  }
  if (v.context !== undefined && !isObject(v.context)) out.push('context');
  return out;
}

function isValidTimezone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------

describe('determinism', () => {
  const digest = (o: GenerateOptions) => {
    const h = createHash('sha256');
    for (const r of generateEvents(o)) h.update(r.line + '\n');
    return h.digest('hex');
  };

  it('gives byte-identical output for the same options and different output for another seed', () => {
    const o = { ...BASE, users: 300 };
    expect(digest(o)).toBe(digest(o));
    expect(digest({ ...o, seed: 'other' })).not.toBe(digest(o));
  });

  it('computes a user the same alone as inside the stream (ground truth is recomputable)', () => {
    const u = describeUser(1234, 'test');
    expect(u.userId).toBe('u001234');
    expect(userIndexOf(u.userId)).toBe(1234);
    expect(archetypeOf(1234, 'test')).toBe(u.archetype);
    const identify = SAMPLE.find((r) => r.kind === 'valid' && r.user === 1234 && r.event.type === 'identify');
    expect(identify?.event).toMatchObject({ user_id: 'u001234', traits: { timezone: u.zone.timezone, platform: u.platform, country: u.zone.country } });
  });

  it('rejects impossible options with a clear error', () => {
    expect(() => collect({ ...BASE, users: 0 })).toThrow(GenerateOptionsError);
    expect(() => collect({ ...BASE, duplicateShare: 0.4, invalidShare: 0.3 })).toThrow(/at most 0.5/);
    expect(() => collect({ ...BASE, end: Number.NaN })).toThrow(/end/);
  });
});

describe('the event contract', () => {
  const now = Date.now();

  it('every valid and duplicate record passes the rules, with the expected shape', () => {
    let checked = 0;
    for (const r of SAMPLE) {
      if (r.kind === 'invalid') continue;
      const problems = contractViolations(r.line, now);
      if (problems.length) throw new Error(`${problems.join(', ')} in ${r.line}`);
      // The pre-rendered line is exactly the event's JSON.
      if (JSON.stringify(r.event) !== r.line) throw new Error(`line differs from its event: ${r.line}`);
      const e = r.event;
      const ms = tsMillis(e.ts)!;
      if (ms > END || ms < END - 90 * DAY) throw new Error(`ts outside the span: ${r.line}`);
      checked++;
      // Shapes in detail on a prefix (matchers are slow per record).
      if (checked > 10_000) continue;
      if (e.type === 'track') {
        expect(Object.keys(e.context).sort()).toEqual(['app_version', 'country', 'locale', 'platform', 'timezone']);
        if (e.event === 'purchase') {
          expect(e.properties).toEqual({ amount: expect.any(Number), currency: 'USD', item_id: expect.any(String), category: expect.any(String), order_id: expect.any(String) });
          expect(e.properties.amount as number).toBeGreaterThanOrEqual(0);
        }
        if (e.event === 'view') expect(e.properties).toMatchObject({ item_id: expect.any(String), category: expect.any(String), page: expect.any(String) });
        if (e.event === 'click') expect(e.properties).toEqual({ target: expect.any(String), campaign_id: expect.any(String) });
      }
    }
    expect(checked).toBeGreaterThan(50_000);
  });

  it('every invalid record breaks a rule, and every rule is exercised', () => {
    const o = { ...BASE, users: 400, invalidShare: 0.1 };
    const seen = new Set<string>();
    for (const r of generateEvents(o)) {
      if (r.kind !== 'invalid') continue;
      seen.add(r.rule);
      expect(contractViolations(r.line, now), `${r.rule}: ${r.line.slice(0, 200)}`).not.toEqual([]);
    }
    expect([...seen].sort()).toEqual([...INVALID_RULES].sort());
  });

  it("agrees with ingest's schema: valid records pass it, invalid ones fail it", () => {
    let checked = 0;
    for (const r of SAMPLE.slice(0, 30_000)) {
      if (r.kind === 'invalid' && r.rule === 'not_json') continue;
      const parsed = EventSchema.safeParse(JSON.parse(r.line));
      if (parsed.success !== (r.kind !== 'invalid')) throw new Error(`${r.kind} ${r.line.slice(0, 300)}: ${JSON.stringify(parsed.error?.issues)}`);
      checked++;
    }
    for (const r of generateEvents({ ...BASE, users: 300, invalidShare: 0.2, rawLines: false })) {
      if (r.kind === 'invalid') expect(EventSchema.safeParse(JSON.parse(r.line)).success, `${r.rule}: ${r.line.slice(0, 200)}`).toBe(false);
    }
    expect(checked).toBeGreaterThan(29_000);
  });

  it('only JSON lines when raw lines are off', () => {
    let invalid = 0;
    for (const r of generateEvents({ ...BASE, users: 200, invalidShare: 0.2, rawLines: false })) {
      expect(() => JSON.parse(r.line)).not.toThrow();
      if (r.kind === 'invalid') invalid++;
    }
    expect(invalid).toBeGreaterThan(500);
  });

  it('each user starts with an identify carrying the traits, then keeps time order', () => {
    const byUser = new Map<number, ValidRecord[]>();
    for (const r of SAMPLE) if (isValid(r)) byUser.set(r.user, [...(byUser.get(r.user) ?? []), r]);
    expect(byUser.size).toBeGreaterThan(1900);
    let contextsMatch = 0;
    for (const [, rs] of byUser) {
      const first = rs[0]!.event;
      expect(first.type).toBe('identify');
      if (first.type !== 'identify') continue;
      expect(Object.keys(first.traits).sort()).toEqual(['country', 'language', 'platform', 'push_opt_in', 'push_token', 'timezone']);
      expect(isValidTimezone(first.traits.timezone as string)).toBe(true);
      expect(first.traits.push_token === null).toBe(first.traits.push_opt_in === false);
      const times = rs.map((r) => tsMillis(r.event.ts)!);
      for (let i = 1; i < times.length; i++) expect(times[i]!).toBeGreaterThanOrEqual(times[i - 1]!);
      const track = rs.find((r) => r.event.type === 'track')?.event as TrackEvent | undefined;
      if (track && track.context.timezone === first.traits.timezone && track.context.country === first.traits.country) contextsMatch++;
    }
    expect(contextsMatch).toBeGreaterThan(1900);
  });

  it('mixes timestamp forms and leaves some events without event_id', () => {
    const valid = SAMPLE.filter(isValid);
    const share = (f: (r: ValidRecord) => boolean) => valid.filter(f).length / valid.length;
    expect(share((r) => typeof r.event.ts === 'number')).toBeGreaterThan(0.03);
    expect(share((r) => typeof r.event.ts === 'string' && /[+-]\d\d:\d\d$/.test(r.event.ts))).toBeGreaterThan(0.05);
    expect(share((r) => typeof r.event.ts === 'string' && r.event.ts.endsWith('Z'))).toBeGreaterThan(0.7);
    expect(share((r) => r.event.event_id === undefined)).toBeCloseTo(0.1, 1);
    const ids = valid.flatMap((r) => (r.event.event_id ? [r.event.event_id] : []));
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe('duplicates and invalid shares', () => {
  it('matches the configured shares; duplicates are exact copies of earlier events', () => {
    const records = collect({ ...BASE, users: 1500, duplicateShare: 0.04, invalidShare: 0.02 });
    const n = records.length;
    const dup = records.filter((r) => r.kind === 'duplicate').length / n;
    const inv = records.filter((r) => r.kind === 'invalid').length / n;
    expect(dup).toBeGreaterThan(0.036);
    expect(dup).toBeLessThan(0.044);
    expect(inv).toBeGreaterThan(0.017);
    expect(inv).toBeLessThan(0.023);
    const earlier = new Set<string>();
    let withoutId = 0;
    for (const r of records) {
      if (r.kind === 'valid') earlier.add(r.line);
      if (r.kind === 'duplicate') {
        expect(earlier.has(r.line)).toBe(true);
        if (r.event.event_id === undefined) withoutId++;
      }
    }
    expect(withoutId).toBeGreaterThan(0);
  });

  it('defaults to about 1% duplicates and 0.5% invalid', () => {
    const n = SAMPLE.length;
    expect(SAMPLE.filter((r) => r.kind === 'duplicate').length / n).toBeCloseTo(0.01, 2);
    expect(SAMPLE.filter((r) => r.kind === 'invalid').length / n).toBeCloseTo(0.005, 2);
  });

  it('produces none when both shares are zero', () => {
    expect(collect({ ...BASE, users: 200, duplicateShare: 0, invalidShare: 0 }).every((r) => r.kind === 'valid')).toBe(true);
  });
});

describe('behaviour', () => {
  it('draws archetypes in their configured shares', () => {
    const counts = new Map<string, number>();
    const n = 20_000;
    for (let i = 0; i < n; i++) counts.set(archetypeOf(i, 'shares'), (counts.get(archetypeOf(i, 'shares')) ?? 0) + 1);
    for (const a of ARCHETYPES) expect(Math.abs((counts.get(a.name) ?? 0) / n - a.share)).toBeLessThan(0.012);
  });

  it('gives the default scale roughly 2-4M events for 100k users over 90 days', () => {
    const perUser = SAMPLE.filter((r) => r.kind === 'valid').length / 2000;
    expect(perUser * 100_000).toBeGreaterThan(2_000_000);
    expect(perUser * 100_000).toBeLessThan(4_200_000);
  });

  it('concentrates each user in their peak hour in local time, not in UTC', () => {
    const formatters = new Map<string, Intl.DateTimeFormat>();
    const hourIn = (ms: number, tz: string) => {
      let f = formatters.get(tz);
      if (!f) formatters.set(tz, (f = new Intl.DateTimeFormat('en-US', { timeZone: tz, hour: 'numeric', hourCycle: 'h23' })));
      return Number(f.format(ms));
    };
    const local = new Map<number, number[]>();
    const utc = new Map<number, number[]>();
    for (const r of SAMPLE) {
      if (r.kind !== 'valid' || r.event.type !== 'track' || r.user >= 800) continue;
      const ms = tsMillis(r.event.ts)!;
      if (!local.has(r.user)) {
        local.set(r.user, new Array<number>(24).fill(0));
        utc.set(r.user, new Array<number>(24).fill(0));
      }
      const l = local.get(r.user)!;
      const u = utc.get(r.user)!;
      const lh = hourIn(ms, r.event.context.timezone);
      const uh = new Date(ms).getUTCHours();
      l[lh] = l[lh]! + 1;
      u[uh] = u[uh]! + 1;
    }
    // best_hour as the spec defines it: most events, ties to the smallest hour.
    const best = (h: number[]) => h.indexOf(Math.max(...h));
    let users = 0;
    let localHits = 0;
    let utcHits = 0;
    for (const [u, hours] of local) {
      if (hours.reduce((a, b) => a + b, 0) < 30) continue;
      users++;
      const peak = describeUser(u, 'test').peakHour;
      if (best(hours) === peak) localHits++;
      if (best(utc.get(u)!) === peak) utcHits++;
    }
    expect(users).toBeGreaterThan(300);
    expect(localHits / users).toBeGreaterThan(0.85);
    expect(utcHits / users).toBeLessThan(0.3);
  });

  it('spreads item views Zipf-like over the catalogue', () => {
    const views = new Map<string, number>();
    for (const r of SAMPLE) {
      if (r.kind === 'valid' && r.event.type === 'track' && r.event.event === 'view') {
        const id = r.event.properties.item_id as string;
        views.set(id, (views.get(id) ?? 0) + 1);
      }
    }
    const counts = [...views.values()].sort((a, b) => b - a);
    // Least-squares slope of log(count) on log(rank) over the head of the distribution.
    const pts = counts.slice(0, 200).map((c, i) => [Math.log(i + 1), Math.log(c)] as const);
    const mx = pts.reduce((s, p) => s + p[0], 0) / pts.length;
    const my = pts.reduce((s, p) => s + p[1], 0) / pts.length;
    const slope = pts.reduce((s, p) => s + (p[0] - mx) * (p[1] - my), 0) / pts.reduce((s, p) => s + (p[0] - mx) ** 2, 0);
    expect(slope).toBeLessThan(-0.8);
    expect(slope).toBeGreaterThan(-1.3);
    expect(counts.length).toBeGreaterThan(2000);
  });

  it('draws purchase amounts log-normally with the archetype parameters', () => {
    for (const name of ['loyal_buyer', 'bargain_hunter'] as const) {
      const logs = SAMPLE.flatMap((r) =>
        r.kind === 'valid' && r.event.type === 'track' && r.event.event === 'purchase' && archetypeOf(r.user, 'test') === name
          ? [Math.log(r.event.properties.amount as number)]
          : [],
      );
      const a = ARCHETYPES.find((x) => x.name === name)!.amount;
      const mean = logs.reduce((s, x) => s + x, 0) / logs.length;
      const sd = Math.sqrt(logs.reduce((s, x) => s + (x - mean) ** 2, 0) / logs.length);
      expect(logs.length).toBeGreaterThan(500);
      expect(Math.abs(mean - a.mu)).toBeLessThan(0.05);
      expect(Math.abs(sd - a.sigma)).toBeLessThan(0.05);
    }
  });

  it('makes archetypes recoverable by k-means on profile features', () => {
    const n = 2000;
    const f = Array.from({ length: n }, () => ({ e30: 0, days30: new Set<number>(), views: 0, purchases: 0, revenue: 0, lastPurchase: -Infinity }));
    for (const r of SAMPLE) {
      if (r.kind !== 'valid' || r.event.type !== 'track') continue;
      const x = f[r.user]!;
      const ms = tsMillis(r.event.ts)!;
      if (ms > END - 30 * DAY) {
        x.e30++;
        x.days30.add(Math.floor(ms / DAY));
      }
      if (r.event.event === 'view') x.views++;
      if (r.event.event === 'purchase') {
        x.purchases++;
        x.revenue += r.event.properties.amount as number;
        x.lastPurchase = Math.max(x.lastPurchase, ms);
      }
    }
    // recency (no purchase = the whole span), frequency, monetary, events_30d, active_days_30d, views per purchase.
    const rows = f.map((x) => [
      x.purchases ? (END - x.lastPurchase) / DAY : 90,
      Math.log1p(x.purchases),
      Math.log1p(x.revenue),
      Math.log1p(x.e30),
      x.days30.size,
      Math.log1p(x.views / (x.purchases + 1)),
    ]);
    const d = rows[0]!.length;
    const mean = Array.from({ length: d }, (_, j) => rows.reduce((s, r) => s + r[j]!, 0) / n);
    const sd = Array.from({ length: d }, (_, j) => Math.sqrt(rows.reduce((s, r) => s + (r[j]! - mean[j]!) ** 2, 0) / n));
    const z = rows.map((r) => r.map((v, j) => (v - mean[j]!) / (sd[j]! || 1)));
    const truth = Array.from({ length: n }, (_, i) => ARCHETYPE_NAMES.indexOf(archetypeOf(i, 'test')));

    // Separable: most users sit nearest their own archetype's centre.
    const centres = ARCHETYPE_NAMES.map((_, a) => {
      const members = z.filter((_, i) => truth[i] === a);
      return Array.from({ length: d }, (_, j) => members.reduce((s, r) => s + r[j]!, 0) / members.length);
    });
    const nearest = z.map((r) => {
      const dist = centres.map((c) => c.reduce((s, v, j) => s + (v - r[j]!) ** 2, 0));
      return dist.indexOf(Math.min(...dist));
    });
    expect(nearest.filter((c, i) => c === truth[i]).length / n).toBeGreaterThan(0.8);

    // Findable: plain k-means (k = 5, fixed seeds, lowest inertia kept) agrees well beyond chance.
    let bestAri = 0;
    let bestInertia = Infinity;
    for (const seed of [1, 2, 3, 4, 5]) {
      const km = kmeans(z, 5, { seed, initialization: 'kmeans++' });
      const inertia = km.computeInformation(z).reduce((s, c) => s + c.error * c.size, 0);
      if (inertia < bestInertia) {
        bestInertia = inertia;
        bestAri = adjustedRandIndex(km.clusters, truth);
      }
    }
    expect(bestAri).toBeGreaterThan(0.55);
  });
});

describe('sinks', () => {
  const dir = mkdtempSync(join(tmpdir(), 'warbler-gen-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('NDJSON sink writes every record, one per line, across many small chunks', async () => {
    const path = join(dir, 'small-chunks.ndjson');
    const sink = NdjsonSink.toFile(path, { chunkBytes: 4096 });
    const records = SAMPLE.slice(0, 20_000);
    for (const r of records) {
      const wait = sink.write(r);
      if (wait) await wait;
    }
    await sink.close();
    const lines = readFileSync(path, 'utf8').split('\n');
    expect(lines.pop()).toBe('');
    expect(lines).toEqual(records.map((r) => r.line));
  });

  it('warbler generate writes the same stream to a file and refuses bad arguments', async () => {
    const path = join(dir, 'cli.ndjson');
    const args = ['--users', '150', '--seed', 'cli', '--end', '2026-10-31T18:00:00Z', '--days', '30', '--duplicates', '0.02', '--invalid', '0.01'];
    expect(await runGenerate([...args, '--out', path])).toBe(0);
    const expected = collect({ seed: 'cli', users: 150, end: END, days: 30, duplicateShare: 0.02, invalidShare: 0.01 }).map((r) => r.line + '\n').join('');
    expect(readFileSync(path, 'utf8')).toBe(expected);
    expect(await runGenerate([...args])).toBe(2);
    expect(await runGenerate([...args, '--out', path, '--clickhouse'])).toBe(2);
    expect(await runGenerate(['--users', 'many', '--out', path])).toBe(2);
    expect(await runGenerate(['--end', '2026-10-31T18:00:00', '--out', path])).toBe(2);
  });

  it('ClickHouse sink stores each valid event once, with traits, properties and derived ids', async () => {
    const ch = await testDatabase('wt_gen');
    const records = collect({ ...BASE, users: 300, appId: 'gen_test', duplicateShare: 0.05, invalidShare: 0.02 });
    const sink = new ClickHouseSink(ch, { batchRows: 3000 });
    for (const r of records) {
      const wait = sink.write(r);
      if (wait) await wait;
    }
    await sink.close();
    const valid = records.filter((r) => r.kind === 'valid');
    const purchases = valid.filter((r) => r.event.type === 'track' && r.event.event === 'purchase');
    const revenue = purchases.reduce((s, r) => s + ((r.event as TrackEvent).properties.amount as number), 0);
    const stats = await ch.one<{ n: string; ids: string; revenue: number; users: string; min_ts: string; max_ts: string; derived: string }>(sql`
      SELECT count() AS n, uniqExact(event_id) AS ids, uniqExact(user_id) AS users,
             sumIf(prop_numbers[indexOf(prop_keys, 'amount')], event = 'purchase' AND has(prop_keys, 'amount')) AS revenue,
             toUnixTimestamp(min(ts)) AS min_ts, toUnixTimestamp(max(ts)) AS max_ts,
             countIf(startsWith(event_id, 'd:')) AS derived
      FROM events WHERE app_id = ${'gen_test'}`);
    expect(Number(stats?.n)).toBe(valid.length);
    expect(Number(stats?.ids)).toBe(valid.length);
    expect(Number(stats?.users)).toBe(new Set(valid.map((r) => r.user)).size);
    expect(stats?.revenue).toBeCloseTo(revenue, 2);
    expect(Number(stats?.derived)).toBe(valid.filter((r) => r.event.event_id === undefined).length);
    // The derived ids are ingest's: the same event through normalizeEvent gets the same id.
    const noId = valid.find((r) => r.event.event_id === undefined)!.event;
    const viaIngest = normalizeEvent(JSON.parse(JSON.stringify(noId)));
    const storedNoId = await ch.one<{ n: string }>(sql`SELECT count() AS n FROM events WHERE event_id = ${viaIngest.row!.event_id}`);
    expect(Number(storedNoId?.n)).toBe(1);
    expect(Number(stats?.min_ts)).toBeGreaterThanOrEqual((END - 90 * DAY) / 1000);
    expect(Number(stats?.max_ts)).toBeLessThanOrEqual(END / 1000);

    // Identify traits (null = removal) and context values land in user_traits through the view.
    const u = describeUser(0, BASE.seed);
    const traits = await ch.rows<{ key: string; value: string; value_type: number }>(sql`
      SELECT key, argMax(value, (ts, event_id)) AS value, argMax(value_type, (ts, event_id)) AS value_type
      FROM user_traits WHERE app_id = ${'gen_test'} AND user_id = ${u.userId} GROUP BY key ORDER BY key`);
    const byKey = Object.fromEntries(traits.map((t) => [t.key, t]));
    expect(byKey.timezone).toMatchObject({ value: u.zone.timezone, value_type: 1 });
    expect(byKey.platform).toMatchObject({ value: u.platform, value_type: 1 });
    expect(byKey.push_opt_in?.value_type).toBe(3);
    expect(Object.keys(byKey)).toEqual(expect.arrayContaining(['app_version', 'country', 'language', 'locale']));

    // Text that needs escaping in TabSeparated survives the round trip.
    const view = valid.find((r) => r.event.type === 'track' && r.event.event === 'view' && r.event.event_id)!.event as TrackEvent;
    const stored = await ch.one<{ properties: string; context: string }>(sql`SELECT properties, context FROM events WHERE event_id = ${view.event_id!}`);
    expect(JSON.parse(stored!.properties)).toEqual(view.properties);
    expect(JSON.parse(stored!.context)).toEqual(view.context);

    // Text that needs escaping in TabSeparated and in array literals survives the round trip.
    const tricky = "tab\there, new\nline, back\\slash, 'quote', \"dq\", ünïcödé ✓";
    const sink2 = new ClickHouseSink(ch);
    const event: TrackEvent = {
      type: 'track', event_id: 'tricky-1', app_id: 'gen_tricky', user_id: tricky, event: 'view', ts: '2026-10-01T12:00:00+02:00',
      properties: { [tricky]: tricky, n: 1.5, flag: true }, context: { platform: 'web', app_version: tricky, country: 'DE', timezone: 'Europe/Berlin', locale: 'de-DE' },
    };
    sink2.write({ kind: 'valid', user: 0, event, line: JSON.stringify(event) });
    await sink2.close();
    const back = await ch.one<{ user_id: string; ts: string; prop_keys: string[]; prop_strings: string[]; prop_numbers: (number | string)[]; trait_values: string[]; properties: string }>(sql`
      SELECT user_id, toUnixTimestamp(ts) AS ts, prop_keys, prop_strings, prop_numbers, trait_values, properties FROM events WHERE app_id = ${'gen_tricky'}`);
    expect(back?.user_id).toBe(tricky);
    expect(Number(back?.ts)).toBe(Date.UTC(2026, 9, 1, 10) / 1000);
    expect(back?.prop_keys).toEqual([tricky, 'n', 'flag']);
    expect(back?.prop_strings).toEqual([tricky, '1.5', 'true']);
    expect(back?.prop_numbers[1]).toBe(1.5);
    expect(back?.trait_values).toContain(tricky);
    expect(JSON.parse(back!.properties)).toEqual(event.properties);
  });

  it('Kafka sink produces every record, keyed by app and user, through the ingest producer', async () => {
    const topic = uniqueName('gen_topic');
    const kafka = createKafka(kafkaBrokers(), 'gen-test');
    const records = collect({ ...BASE, users: 40, appId: 'gen_kafka', duplicateShare: 0.05, invalidShare: 0.05 });
    let batches = 0;
    const sink = new KafkaSink(createEventProducer(kafka, topic), { appId: 'gen_kafka', batchMessages: 500, afterBatch: async () => void batches++ });
    for (const r of records) {
      const wait = sink.write(r);
      if (wait) await wait;
    }
    await sink.close();
    expect(sink.sent).toBe(records.length);
    expect(batches).toBe(Math.ceil(records.length / 500));

    const consumer = kafka.consumer({ groupId: uniqueName('gen_group') });
    const got: { key: string; value: string }[] = [];
    try {
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      const done = new Promise<void>((resolve) => {
        void consumer.run({
          eachMessage: async ({ message }) => {
            got.push({ key: message.key!.toString(), value: message.value!.toString() });
            if (got.length === records.length) resolve();
          },
        });
      });
      await Promise.race([done, new Promise((_, reject) => setTimeout(() => reject(new Error(`only ${got.length} of ${records.length} messages`)), 60_000))]);
    } finally {
      await consumer.disconnect();
    }
    const expected = records.map((r) => ({ key: eventKey('gen_kafka', `u${String(r.user).padStart(6, '0')}`), value: r.line }));
    const order = (a: { key: string; value: string }, b: { key: string; value: string }) => (a.key + a.value < b.key + b.value ? -1 : 1);
    expect([...got].sort(order)).toEqual([...expected].sort(order));
  });
});
