// The demo data generator's pure core: a seeded stream of events that follow
// the event contract (spec §1), plus labelled duplicates and invalid events.
//
// Users are generated one after another, each from its own PRNG stream seeded
// by (seed, user index): memory stays constant whatever the volume, a user's
// attributes can be recomputed alone (`describeUser`, `archetypeOf`) as ground
// truth for tests, and the output is byte-identical for the same options.
// A user's events come out in time order; users follow each other, so the
// stream as a whole is not globally time-ordered (consumers must not assume it).
import {
  APP_VERSION_WEIGHTS,
  APP_VERSIONS,
  ARCHETYPES,
  CATEGORIES,
  CATEGORY_TASTE,
  CATEGORY_WEIGHTS,
  CLICK_TARGETS,
  DAILY_CURVE,
  PLATFORM_WEIGHTS,
  PLATFORMS,
  PUSH_OPT_IN,
  SEARCH_TERMS,
  SHARE_CHANNELS,
  type Archetype,
  type ArchetypeName,
  type Platform,
} from './archetypes.ts';
import { ZONES, ZoneOffsets, type Zone } from './timezones.ts';

// ---------------------------------------------------------------------------
// Event shapes (what goes on the wire)

export interface EventContext {
  platform: Platform;
  app_version: string;
  country: string;
  timezone: string;
  locale: string;
}

export type TraitValue = string | number | boolean | null;

export interface TrackEvent {
  type: 'track';
  event_id?: string;
  app_id: string;
  user_id: string;
  event: string;
  ts: string | number;
  properties: Record<string, unknown>;
  context: EventContext;
}

export interface IdentifyEvent {
  type: 'identify';
  event_id?: string;
  app_id: string;
  user_id: string;
  ts: string | number;
  traits: Record<string, TraitValue>;
}

export type DemoEvent = TrackEvent | IdentifyEvent;

/** Which contract rule an invalid record breaks. */
export const INVALID_RULES = [
  'missing_user_id',
  'long_user_id',
  'bad_ts',
  'ts_before_1970',
  'future_ts',
  'bad_event_name',
  'missing_event',
  'bad_type',
  'bad_event_id',
  'properties_not_object',
  'properties_too_large',
  'bad_traits',
  'not_json',
] as const;
export type InvalidRule = (typeof INVALID_RULES)[number];

/**
 * One generated record with its ground truth, and its bytes as one NDJSON
 * line / Kafka message value (`line`, no newline; JSON.stringify(event)
 * except for `not_json`, whose line is not JSON at all and whose `event` is
 * what the line was garbled from). `duplicate` records are the very same
 * event as an earlier `valid` one (an exact redelivery).
 */
export type DemoRecord =
  | { kind: 'valid'; user: number; event: DemoEvent; line: string }
  | { kind: 'duplicate'; user: number; event: DemoEvent; line: string }
  | { kind: 'invalid'; user: number; rule: InvalidRule; event: unknown; line: string };

/** The bytes of a record as one NDJSON line / Kafka message value (no trailing newline). */
export function recordLine(rec: DemoRecord): string {
  return rec.line;
}

// ---------------------------------------------------------------------------
// Options

export interface GenerateOptions {
  seed: string | number;
  /** Number of users (default 100 000). */
  users?: number;
  /** Length of the generated span in days, ending at `end` (default 90). */
  days?: number;
  /** The instant the span ends at; no valid event is later. Required: "now" would break determinism. */
  end: Date | number;
  appId?: string;
  /** Share of all records that are exact redeliveries of an earlier event (default 0.01). */
  duplicateShare?: number;
  /** Share of all records that break a contract rule (default 0.005). */
  invalidShare?: number;
  /** Share of events that carry a client `event_id`; the rest exercise the derived id (default 0.9). */
  eventIdShare?: number;
  /** Whether invalid records may be non-JSON text (fine for files and Kafka, not for JSON APIs). Default true. */
  rawLines?: boolean;
}

export interface ResolvedOptions {
  seed: string;
  users: number;
  days: number;
  endMs: number;
  appId: string;
  duplicateShare: number;
  invalidShare: number;
  eventIdShare: number;
  rawLines: boolean;
}

export class GenerateOptionsError extends Error {}

export function resolveOptions(o: GenerateOptions): ResolvedOptions {
  const r: ResolvedOptions = {
    seed: String(o.seed),
    users: o.users ?? 100_000,
    days: o.days ?? 90,
    endMs: typeof o.end === 'number' ? o.end : o.end.getTime(),
    appId: o.appId ?? 'demo',
    duplicateShare: o.duplicateShare ?? 0.01,
    invalidShare: o.invalidShare ?? 0.005,
    eventIdShare: o.eventIdShare ?? 0.9,
    rawLines: o.rawLines ?? true,
  };
  const problems: string[] = [];
  if (!Number.isInteger(r.users) || r.users < 1 || r.users > 100_000_000) problems.push('users: an integer 1..100000000');
  if (!Number.isFinite(r.days) || r.days <= 0 || r.days > 3650) problems.push('days: a number in (0, 3650]');
  if (!Number.isFinite(r.endMs) || r.endMs - r.days * DAY_MS < 0) problems.push('end: a valid instant, with the whole span after 1970');
  if (r.appId.length === 0 || r.appId.length > 128) problems.push('appId: 1..128 characters');
  for (const k of ['duplicateShare', 'invalidShare', 'eventIdShare'] as const) {
    if (!(r[k] >= 0 && r[k] <= 1)) problems.push(`${k}: a share in [0, 1]`);
  }
  if (r.duplicateShare + r.invalidShare > 0.5) problems.push('duplicateShare + invalidShare: at most 0.5');
  if (problems.length) throw new GenerateOptionsError(`invalid generator options: ${problems.join('; ')}`);
  return r;
}

// ---------------------------------------------------------------------------
// PRNG: sfc32 (fast, 128-bit state, passes PractRand), seeded by a 32-bit hash.

export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return fmix32(h);
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, stream = 0) {
    this.a = fmix32(seed ^ 0x9e3779b9);
    this.b = fmix32(stream + 0x7f4a7c15);
    this.c = fmix32(seed + Math.imul(stream, 0x85ebca6b));
    this.d = 1;
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.u32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  range(r: readonly [number, number]): number {
    return r[0] + (r[1] - r[0]) * this.next();
  }

  normal(): number {
    const u = 1 - this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }

  poisson(mean: number): number {
    const limit = Math.exp(-mean);
    let k = 0;
    let p = this.next();
    while (p > limit) {
      k++;
      p *= this.next();
    }
    return k;
  }

  /** Geometric count >= 1 with the given mean. */
  geometric(mean: number): number {
    if (mean <= 1) return 1;
    return 1 + Math.floor(Math.log(1 - this.next()) / Math.log(1 - 1 / mean));
  }

  /** Index drawn from a cumulative distribution (last element 1). */
  pick(cdf: Float64Array): number {
    const x = this.next();
    let lo = 0;
    let hi = cdf.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cdf[mid]! > x) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}

export function cumulative(weights: readonly number[]): Float64Array {
  const out = new Float64Array(weights.length);
  let sum = 0;
  for (const w of weights) sum += w;
  let acc = 0;
  for (let i = 0; i < weights.length; i++) {
    acc += weights[i]! / sum;
    out[i] = acc;
  }
  out[weights.length - 1] = 1;
  return out;
}

// ---------------------------------------------------------------------------
// Users: attributes that do not depend on the time span, recomputable alone.

const ARCHETYPE_CDF = cumulative(ARCHETYPES.map((a) => a.share));
const ZONE_CDF = cumulative(ZONES.map((z) => z.weight));
const PLATFORM_CDF = cumulative(PLATFORM_WEIGHTS);
const VERSION_CDF = cumulative(APP_VERSION_WEIGHTS);
const DAILY_CDF = cumulative(DAILY_CURVE);
const PEAK_CDF = new Map<ArchetypeName, Float64Array>(ARCHETYPES.map((a) => [a.name, cumulative(a.peakHours)]));
const TASTE_CDF = new Map<ArchetypeName, Float64Array>(
  ARCHETYPES.map((a) => [a.name, cumulative(CATEGORY_TASTE[a.name])]),
);

export interface DemoUser {
  index: number;
  userId: string;
  archetype: ArchetypeName;
  zone: Zone;
  platform: Platform;
  /** The local hour most of the user's sessions start in: the expected `best_hour`. */
  peakHour: number;
  /** Two preferred categories (indices into CATEGORIES), most preferred first. */
  categories: readonly [number, number];
  pushOptIn: boolean;
  appVersion: string;
}

export function userIdOf(index: number): string {
  return 'u' + String(index).padStart(6, '0');
}

/** The user index of a generated user id, or -1 when it is not one. */
export function userIndexOf(userId: string): number {
  return /^u\d{6,}$/.test(userId) ? Number(userId.slice(1)) : -1;
}

function userRng(seed: string, index: number): Rng {
  return new Rng(hashString(seed), index);
}

/** Draws the time-independent attributes; must consume the PRNG identically whatever the options. */
function drawUser(index: number, rng: Rng): DemoUser {
  const archetype = ARCHETYPES[rng.pick(ARCHETYPE_CDF)]!;
  const zone = ZONES[rng.pick(ZONE_CDF)]!;
  const platform = PLATFORMS[rng.pick(PLATFORM_CDF)]!;
  const peakHour = rng.pick(PEAK_CDF.get(archetype.name)!);
  const taste = TASTE_CDF.get(archetype.name)!;
  const first = rng.pick(taste);
  let second = rng.pick(taste);
  if (second === first) second = (first + 1 + rng.int(CATEGORIES.length - 1)) % CATEGORIES.length;
  const pushOptIn = rng.next() < PUSH_OPT_IN[platform];
  const appVersion = APP_VERSIONS[rng.pick(VERSION_CDF)]!;
  return { index, userId: userIdOf(index), archetype: archetype.name, zone, platform, peakHour, categories: [first, second], pushOptIn, appVersion };
}

export function describeUser(index: number, seed: string | number): DemoUser {
  return drawUser(index, userRng(String(seed), index));
}

export function archetypeOf(index: number, seed: string | number): ArchetypeName {
  return describeUser(index, seed).archetype;
}

// ---------------------------------------------------------------------------
// Catalogue: Zipf-popular items spread over categories.

export const CATALOG_SIZE = 5000;
export const ZIPF_EXPONENT = 1.05;

export interface Catalog {
  itemIds: string[];
  /** '{"item_id":"…","category":"…"' per item: the common head of item-bearing properties' JSON. */
  itemJson: string[];
  /** Category index of each item, by popularity rank. */
  categoryOf: Uint8Array;
  /** Cumulative popularity over all items. */
  global: Float64Array;
  /** Per category: item ranks (ascending) and their cumulative popularity within the category. */
  byCategory: { items: Uint32Array; cdf: Float64Array }[];
}

export function buildCatalog(seed: string): Catalog {
  const rng = new Rng(hashString(seed), 0xca7a1096);
  const catCdf = cumulative(CATEGORY_WEIGHTS);
  const itemIds: string[] = [];
  const categoryOf = new Uint8Array(CATALOG_SIZE);
  const weights: number[] = [];
  const members: number[][] = CATEGORIES.map(() => []);
  // Ids are a fixed permutation of ranks so an id says nothing about popularity.
  for (let r = 0; r < CATALOG_SIZE; r++) {
    itemIds.push('sku_' + String((r * 7919 + 1237) % 100_000).padStart(5, '0'));
    const c = rng.pick(catCdf);
    categoryOf[r] = c;
    members[c]!.push(r);
    weights.push(1 / Math.pow(r + 1, ZIPF_EXPONENT));
  }
  const byCategory = members.map((ranks) => ({
    items: Uint32Array.from(ranks),
    cdf: cumulative(ranks.map((r) => weights[r]!)),
  }));
  const itemJson = itemIds.map((id, r) => '{"item_id":"' + id + '","category":"' + CATEGORIES[categoryOf[r]!] + '"');
  return { itemIds, itemJson, categoryOf, global: cumulative(weights), byCategory };
}

// ---------------------------------------------------------------------------
// Timestamps, formatted without a Date per event.

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;
const PAD2 = Array.from({ length: 100 }, (_, i) => String(i).padStart(2, '0'));
const PAD3 = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));

const dayPrefixes = new Map<number, string>();

/** "YYYY-MM-DDT" of the UTC day holding `ms`; a generated span has few days, so they are all cached. */
function dayPrefix(ms: number): string {
  const day = Math.floor(ms / DAY_MS);
  let text = dayPrefixes.get(day);
  if (text === undefined) {
    text = new Date(day * DAY_MS).toISOString().slice(0, 11);
    if (dayPrefixes.size > 100_000) dayPrefixes.clear();
    dayPrefixes.set(day, text);
  }
  return text;
}

function clock(ms: number): string {
  const inDay = ms - Math.floor(ms / DAY_MS) * DAY_MS;
  const s = Math.floor(inDay / 1000);
  const frac = inDay - s * 1000;
  const text = PAD2[Math.floor(s / 3600)]! + ':' + PAD2[Math.floor(s / 60) % 60]! + ':' + PAD2[s % 60]!;
  return frac === 0 ? text : text + '.' + PAD3[frac]!;
}

/** ISO 8601 in UTC with Z, e.g. 2026-11-28T10:11:35Z (milliseconds only when non-zero). */
export function isoUtc(ms: number): string {
  return dayPrefix(ms) + clock(ms) + 'Z';
}

/** ISO 8601 in local time with the offset, e.g. 2026-11-28T15:41:35+05:30. */
export function isoWithOffset(ms: number, offsetMinutes: number): string {
  const local = ms + offsetMinutes * 60_000;
  const sign = offsetMinutes < 0 ? '-' : '+';
  const abs = Math.abs(offsetMinutes);
  return dayPrefix(local) + clock(local) + sign + PAD2[Math.floor(abs / 60)]! + ':' + PAD2[abs % 60]!;
}

const HEX2 = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

function hex8(x: number): string {
  return HEX2[x >>> 24]! + HEX2[(x >>> 16) & 255]! + HEX2[(x >>> 8) & 255]! + HEX2[x & 255]!;
}

/** A random UUID v4-shaped id. */
function uuid(rng: Rng): string {
  const a = rng.u32();
  const b = rng.u32();
  const c = rng.u32();
  const d = rng.u32();
  const bh = hex8(b);
  const ch = hex8(((c & 0x3fffffff) | 0x80000000) >>> 0);
  return hex8(a) + '-' + bh.slice(0, 4) + '-4' + bh.slice(5, 8) + '-' + ch.slice(0, 4) + '-' + ch.slice(4) + hex8(d);
}

// ---------------------------------------------------------------------------
// The generator

const ARCHETYPE_BY_NAME = new Map<ArchetypeName, Archetype>(ARCHETYPES.map((a) => [a.name, a]));
const MIX_CDF = new Map<ArchetypeName, Float64Array>(ARCHETYPES.map((a) => [a.name, cumulative(a.mix)]));
const INVALID_JSON_RULES = INVALID_RULES.filter((r) => r !== 'not_json');
const PAGES = ['product', 'product', 'product', 'product', 'category', 'home', 'search_results'] as const;

/** Every record, user after user. Iterate it; never collect it whole at scale. */
export function* generateEvents(options: GenerateOptions): Generator<DemoRecord, void, undefined> {
  const opts = resolveOptions(options);
  const builder = new UserBuilder(opts);
  const out: DemoRecord[] = [];
  for (let i = 0; i < opts.users; i++) {
    out.length = 0;
    builder.build(i, out);
    for (let k = 0; k < out.length; k++) yield out[k]!;
  }
}

interface Pending {
  countdown: number;
  event: DemoEvent;
  line: string;
}

/** Builds one user's records into an array; all per-user state lives here between calls. */
class UserBuilder {
  private readonly catalog: Catalog;
  private readonly offsets = new ZoneOffsets();
  private readonly zoneIndex = new Map<Zone, number>(ZONES.map((z, i) => [z, i]));
  private readonly validShare: number;
  private readonly dupProb: number;
  private readonly invalidProb: number;
  private readonly startMs: number;

  // Per-user state.
  private rng!: Rng;
  private user!: DemoUser;
  private arch!: Archetype;
  private out!: DemoRecord[];
  private context!: EventContext;
  private contextJson = '';
  private appUserJson = '';
  private pending: Pending[] = [];
  private orders = 0;

  constructor(private readonly o: ResolvedOptions) {
    this.catalog = buildCatalog(o.seed);
    this.validShare = 1 - o.duplicateShare - o.invalidShare;
    this.dupProb = o.duplicateShare / this.validShare;
    this.invalidProb = o.invalidShare / this.validShare;
    this.startMs = o.endMs - o.days * DAY_MS;
  }

  build(index: number, out: DemoRecord[]): void {
    const rng = userRng(this.o.seed, index);
    const user = drawUser(index, rng);
    const arch = ARCHETYPE_BY_NAME.get(user.archetype)!;
    this.rng = rng;
    this.user = user;
    this.arch = arch;
    this.out = out;
    this.orders = 0;
    this.setContext(user.appVersion);
    this.appUserJson = ',"app_id":' + JSON.stringify(this.o.appId) + ',"user_id":"' + user.userId + '"';

    const { endMs, days } = this.o;
    const firstAgo = Math.min(days, this.daysAgo(arch.firstActive));
    const lastAgo = Math.min(firstAgo, this.daysAgo(arch.lastActive));
    const firstDay = Math.floor((endMs - firstAgo * DAY_MS) / DAY_MS);
    const lastDay = Math.floor((endMs - lastAgo * DAY_MS) / DAY_MS);
    const activeProb = rng.range(arch.activeDayProb);
    const purchaseProb = rng.range(arch.purchaseProb);
    const peakStrength = rng.range(arch.peakStrength);
    const zone = this.zoneIndex.get(user.zone)!;

    // A later identify changes push consent; some users upgrade the app mid-span.
    const reidentifyAt = rng.next() < 0.25 ? (firstDay + rng.next() * (lastDay - firstDay + 1)) * DAY_MS : Infinity;
    const versionIdx = APP_VERSIONS.indexOf(user.appVersion as (typeof APP_VERSIONS)[number]);
    const upgradeAt =
      versionIdx < APP_VERSIONS.length - 1 && rng.next() < 0.4 ? (firstDay + rng.next() * (lastDay - firstDay + 1)) * DAY_MS : Infinity;
    let pushOptIn = user.pushOptIn;
    let identified = false;
    let reidentified = false;
    let prevEnd = -Infinity;
    const starts: number[] = [];

    for (let day = firstDay; day <= lastDay; day++) {
      // The first day is always active: it is when the user shows up.
      if (day !== firstDay && rng.next() >= activeProb) continue;
      const offset = this.offsets.minutesOn(zone, day * DAY_MS);
      const sessions = 1 + rng.poisson(arch.extraSessions);
      starts.length = 0;
      for (let s = 0; s < sessions; s++) {
        const hour = rng.next() < peakStrength ? user.peakHour : rng.pick(DAILY_CDF);
        const local = hour * HOUR_MS + rng.int(45) * 60_000 + rng.int(60) * 1000;
        starts.push(day * DAY_MS + local - offset * 60_000);
      }
      starts.sort((a, b) => a - b);
      for (let start of starts) {
        if (start < this.startMs || start > endMs) continue;
        // Sessions never overlap, so a user's events stay in time order.
        if (start < prevEnd + 60_000) start = prevEnd + 60_000 + rng.int(600) * 1000;
        if (start > endMs) break;
        if (!identified) {
          identified = true;
          this.identify(start - (5 + rng.int(55)) * 1000, this.initialTraits());
        } else if (!reidentified && start >= reidentifyAt) {
          reidentified = true;
          pushOptIn = !pushOptIn;
          this.identify(start - (1 + rng.int(30)) * 1000, { push_opt_in: pushOptIn, push_token: pushOptIn ? this.pushToken() : null });
        }
        if (start >= upgradeAt && this.context.app_version === user.appVersion) {
          this.setContext(APP_VERSIONS[versionIdx + 1 + rng.int(APP_VERSIONS.length - 1 - versionIdx)]!);
        }
        prevEnd = this.session(start, purchaseProb, offset);
      }
    }
    this.flushPending();
  }

  private daysAgo(spec: Archetype['firstActive']): number {
    const x = this.rng.range(spec.range);
    return spec.unit === 'span' ? x * this.o.days : x;
  }

  private setContext(appVersion: string): void {
    const { user } = this;
    this.context = { platform: user.platform, app_version: appVersion, country: user.zone.country, timezone: user.zone.timezone, locale: user.zone.locale };
    this.contextJson = JSON.stringify(this.context);
  }

  private pushToken(): string {
    const prefix = this.user.platform === 'ios' ? 'apns_' : this.user.platform === 'android' ? 'fcm_' : 'wp_';
    return prefix + hex8(this.rng.u32()) + hex8(this.rng.u32()) + hex8(this.rng.u32()) + hex8(this.rng.u32());
  }

  private initialTraits(): Record<string, TraitValue> {
    const { user } = this;
    return {
      country: user.zone.country,
      language: user.zone.language,
      platform: user.platform,
      timezone: user.zone.timezone,
      push_opt_in: user.pushOptIn,
      push_token: user.pushOptIn ? this.pushToken() : null,
    };
  }

  /**
   * A session of browsing events, maybe ending in a purchase; returns the time
   * of its last event. Each event's properties are built twice, as an object
   * and as JSON text from known-safe parts: writing the line here is several
   * times cheaper than serialising the object afterwards.
   */
  private session(start: number, purchaseProb: number, offset: number): number {
    const { rng, arch, catalog } = this;
    let t = start;
    const end = this.o.endMs;
    if (this.user.platform !== 'web' && rng.next() < 0.8) {
      const source = rng.next() < arch.pushOpenProb ? 'push' : 'organic';
      this.track('app_open', t, offset, { source }, '{"source":"' + source + '"}');
      t += (2 + rng.int(10)) * 1000;
    }
    const mix = MIX_CDF.get(arch.name)!;
    let item = -1;
    const n = rng.geometric(arch.eventsPerSession);
    for (let k = 0; k < n && t <= end; k++) {
      switch (rng.pick(mix)) {
        case 0: {
          item = this.pickItem();
          const page = PAGES[rng.int(PAGES.length)]!;
          const props: Record<string, unknown> = { item_id: catalog.itemIds[item], category: CATEGORIES[catalog.categoryOf[item]!], page };
          let json = catalog.itemJson[item]! + ',"page":"' + page + '"';
          // A few nested values: stored in `properties`, not addressable in segments.
          if (rng.next() < 0.02) {
            const experiment = { id: 'exp_' + (1 + rng.int(5)), variant: rng.next() < 0.5 ? 'A' : 'B' };
            props.experiment = experiment;
            json += ',"experiment":{"id":"' + experiment.id + '","variant":"' + experiment.variant + '"}';
          }
          this.track('view', t, offset, props, json + '}');
          break;
        }
        case 1: {
          const target = CLICK_TARGETS[rng.int(CLICK_TARGETS.length)]!;
          const campaign = 'cmp_' + (100 + rng.int(40));
          this.track('click', t, offset, { target, campaign_id: campaign }, '{"target":"' + target + '","campaign_id":"' + campaign + '"}');
          break;
        }
        case 2: {
          const query = SEARCH_TERMS[rng.int(SEARCH_TERMS.length)]!;
          const results = rng.int(200);
          this.track('search', t, offset, { query, results }, '{"query":"' + query + '","results":' + results + '}');
          break;
        }
        case 3: {
          const shared = item >= 0 ? item : this.pickItem();
          const channel = SHARE_CHANNELS[rng.int(SHARE_CHANNELS.length)]!;
          const id = catalog.itemIds[shared]!;
          this.track('share', t, offset, { item_id: id, channel }, '{"item_id":"' + id + '","channel":"' + channel + '"}');
          break;
        }
        default: {
          const added = item >= 0 ? item : this.pickItem();
          const quantity = 1 + (rng.next() < 0.2 ? 1 : 0);
          this.track(
            'add_to_cart',
            t,
            offset,
            { item_id: catalog.itemIds[added], category: CATEGORIES[catalog.categoryOf[added]!], quantity },
            catalog.itemJson[added]! + ',"quantity":' + quantity + '}',
          );
        }
      }
      t += (5 + Math.floor(-Math.log(1 - rng.next()) * 35)) * 1000;
    }
    if (t <= end && rng.next() < purchaseProb) {
      if (item < 0) {
        item = this.pickItem();
        this.track(
          'view',
          t,
          offset,
          { item_id: catalog.itemIds[item], category: CATEGORIES[catalog.categoryOf[item]!], page: 'product' },
          catalog.itemJson[item]! + ',"page":"product"}',
        );
        t += (10 + rng.int(60)) * 1000;
      }
      const amount = Math.round(Math.exp(arch.amount.mu + arch.amount.sigma * rng.normal()) * 100) / 100;
      const itemId = catalog.itemIds[item]!;
      const category = CATEGORIES[catalog.categoryOf[item]!];
      if (t <= end) {
        this.track('add_to_cart', t, offset, { item_id: itemId, category, quantity: 1, price: amount }, catalog.itemJson[item]! + ',"quantity":1,"price":' + amount + '}');
        t += (10 + rng.int(120)) * 1000;
      }
      if (t <= end) {
        this.orders++;
        const orderId = 'ord_' + this.user.userId + '_' + this.orders;
        this.track(
          'purchase',
          t,
          offset,
          { amount, currency: 'USD', item_id: itemId, category, order_id: orderId },
          '{"amount":' + amount + ',"currency":"USD","item_id":"' + itemId + '","category":"' + category + '","order_id":"' + orderId + '"}',
        );
      }
    }
    return Math.min(t, end);
  }

  private pickItem(): number {
    const { rng, catalog, user } = this;
    if (rng.next() < this.arch.categoryLoyalty) {
      const c = catalog.byCategory[rng.next() < 0.7 ? user.categories[0] : user.categories[1]]!;
      if (c.items.length > 0) return c.items[rng.pick(c.cdf)]!;
    }
    return rng.pick(catalog.global);
  }

  /** Event time as clients send it: mostly UTC ISO, some local with offset, some epoch ms. */
  private ts(ms: number, offset: number): string | number {
    const r = this.rng.next();
    if (r < 0.15) ms += this.rng.int(1000);
    if (r < 0.8) return isoUtc(ms);
    if (r < 0.92) return isoWithOffset(ms, offset);
    return ms;
  }

  /** `propertiesJson` must be exactly JSON.stringify(properties); the tests hold every line to that. */
  private track(event: string, ms: number, offset: number, properties: Record<string, unknown>, propertiesJson: string): void {
    const { o, user, rng } = this;
    const ts = this.ts(ms, offset);
    const tail =
      this.appUserJson + ',"event":"' + event + '","ts":' + (typeof ts === 'number' ? ts : '"' + ts + '"') +
      ',"properties":' + propertiesJson + ',"context":' + this.contextJson + '}';
    if (rng.next() < o.eventIdShare) {
      const id = uuid(rng);
      this.emit(
        { type: 'track', event_id: id, app_id: o.appId, user_id: user.userId, event, ts, properties, context: this.context },
        '{"type":"track","event_id":"' + id + '"' + tail,
      );
    } else {
      this.emit({ type: 'track', app_id: o.appId, user_id: user.userId, event, ts, properties, context: this.context }, '{"type":"track"' + tail);
    }
  }

  private identify(ms: number, traits: Record<string, TraitValue>): void {
    const { o, user, rng } = this;
    const ts = isoUtc(Math.max(ms, this.startMs));
    // Traits are few per user: the generic serialiser is fine here.
    const tail = this.appUserJson + ',"ts":"' + ts + '","traits":' + JSON.stringify(traits) + '}';
    if (rng.next() < o.eventIdShare) {
      const id = uuid(rng);
      this.emit({ type: 'identify', event_id: id, app_id: o.appId, user_id: user.userId, ts, traits }, '{"type":"identify","event_id":"' + id + '"' + tail);
    } else {
      this.emit({ type: 'identify', app_id: o.appId, user_id: user.userId, ts, traits }, '{"type":"identify"' + tail);
    }
  }

  private emit(event: DemoEvent, line: string): void {
    const { out, rng, user } = this;
    out.push({ kind: 'valid', user: user.index, event, line });
    if (this.pending.length > 0) this.tickPending();
    if (this.dupProb > 0 && rng.next() < this.dupProb) {
      // Redelivered right away (retry) or a few events later (replayed batch).
      this.pending.push({ countdown: rng.int(6), event, line });
      if (this.pending[this.pending.length - 1]!.countdown === 0) this.tickPending();
    }
    if (this.invalidProb > 0 && rng.next() < this.invalidProb) out.push(this.invalid(event));
  }

  private tickPending(): void {
    const keep: Pending[] = [];
    for (const p of this.pending) {
      if (p.countdown <= 0) this.out.push({ kind: 'duplicate', user: this.user.index, event: p.event, line: p.line });
      else {
        p.countdown--;
        keep.push(p);
      }
    }
    this.pending = keep;
  }

  private flushPending(): void {
    for (const p of this.pending) this.out.push({ kind: 'duplicate', user: this.user.index, event: p.event, line: p.line });
    this.pending = [];
  }

  /** An event derived from `base` that breaks one rule of the contract. */
  private invalid(base: DemoEvent): DemoRecord {
    const { rng, user } = this;
    const rules = this.o.rawLines ? INVALID_RULES : INVALID_JSON_RULES;
    const rule = rules[rng.int(rules.length)]!;
    const e: Record<string, unknown> = { ...base, event_id: uuid(rng) };
    const at = user.index;
    switch (rule) {
      case 'missing_user_id':
        delete e.user_id;
        break;
      case 'long_user_id':
        e.user_id = user.userId + '_' + 'x'.repeat(256);
        break;
      case 'bad_ts':
        e.ts = pickOne(rng, [
          'yesterday',
          isoUtc(this.o.endMs).slice(0, 19), // no offset: local time of nowhere
          isoUtc(this.o.endMs).replace(/-\d\d-/, '-13-'),
          isoUtc(this.o.endMs).replace('T', ' ').replace('Z', ''),
          '',
          null,
        ]);
        if (e.ts === null && rng.next() < 0.5) delete e.ts;
        break;
      case 'ts_before_1970':
        e.ts = rng.next() < 0.5 ? '1969-07-20T20:17:40Z' : -86_400_000 * (1 + rng.int(1000));
        break;
      case 'future_ts':
        // A broken device clock; a century ahead stays in the future of any replay.
        e.ts = isoUtc(this.o.endMs + (36_500 + rng.int(365)) * DAY_MS);
        break;
      case 'bad_event_name':
        e.type = 'track';
        delete e.traits;
        e.event = pickOne(rng, ['add to cart!', 'view/product', 'purchase<script>', 'événement', '', 'x'.repeat(129), 'tab\tname']);
        break;
      case 'missing_event':
        e.type = 'track';
        delete e.traits;
        delete e.event;
        break;
      case 'bad_type':
        e.type = pickOne(rng, ['page', 'screen', 'TRACK', 42]);
        break;
      case 'bad_event_id':
        e.event_id = pickOne(rng, ['', 'e'.repeat(129), 12345]);
        break;
      case 'properties_not_object':
        e.type = 'track';
        delete e.traits;
        if (!e.event) e.event = 'view';
        e.properties = pickOne(rng, [[1, 2, 3], 'item=sku_00001', 7]);
        break;
      case 'properties_too_large':
        e.type = 'track';
        delete e.traits;
        if (!e.event) e.event = 'view';
        e.properties = { item_id: 'sku_00001', blob: 'x'.repeat(17 * 1024) };
        break;
      case 'bad_traits':
        delete e.event;
        delete e.properties;
        delete e.context;
        e.type = 'identify';
        e.traits = rng.next() < 0.5 ? { country: user.zone.country, address: { city: 'Springfield' } } : ['country', user.zone.country];
        break;
      case 'not_json': {
        const text = JSON.stringify(e);
        const line = pickOne(rng, [text.slice(0, Math.floor(text.length / 2)), text.replace(/"/g, "'"), 'GET /favicon.ico HTTP/1.1', text + '}']);
        return { kind: 'invalid', user: at, rule: 'not_json', event: e, line };
      }
    }
    return { kind: 'invalid', user: at, rule, event: e, line: JSON.stringify(e) };
  }
}

function pickOne<T>(rng: Rng, values: readonly T[]): T {
  return values[rng.int(values.length)]!;
}
