// An independent, in-memory evaluator of the segment contract (segments.md),
// written from the spec's words, not from the SQL compiler: plain loops over
// plain records. The differential tests compare it with ClickHouse.
//
// Decisions the spec leaves to the project are the ones sql/README.md
// ("Segments") documents: kinds must agree for a comparison to match, `!=` is
// "present, same kind, different", built-in platform/country/… are live traits,
// other built-in fields come from the latest complete profile run.
import type { CompareOp, Expr, Literal, Predicate, PropExpr, TimeWindow } from '../../segments/ast.ts';
import { unreachable } from '../../segments/ast.ts';
import { parseInstant } from '../../segments/check.ts';
import { resolveAttr } from '../../segments/fields.ts';

export type Scalar = string | number | boolean;

export interface RefEvent {
  user_id: string;
  /** epoch seconds */
  ts: number;
  event_id: string;
  type: 'track' | 'identify';
  /** '' for identify */
  event: string;
  props: Record<string, Scalar>;
  /** null removes the trait */
  traits: Record<string, Scalar | null>;
}

export interface RefTagChange {
  user_id: string;
  tag: string;
  present: boolean;
  changed_at: number;
  seq: number;
}

/** A profile value: number, string, instant (epoch seconds, marked) or null. */
export type ProfileValue = number | string | { instant: number } | null;

export interface RefProfileRun {
  run_id: string;
  as_of: number;
  complete: boolean;
  rows: Map<string, Record<string, ProfileValue>>;
}

export interface RefData {
  events: RefEvent[];
  tags: RefTagChange[];
  runs: RefProfileRun[];
  /** versions that have a model row */
  clusterModels: number[];
  clusterAssignments: { version: number; user_id: string; cluster: number; label: string }[];
  saved: Map<string, Expr>;
}

type Stored =
  | { kind: 'number'; v: number }
  | { kind: 'string'; v: string }
  | { kind: 'boolean'; v: boolean }
  | { kind: 'instant'; seconds: number }
  | undefined;

const LIVE_TRAITS = new Set(['platform', 'country', 'timezone', 'locale', 'app_version']);

function utf8Compare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function holds(c: number, op: CompareOp): boolean {
  switch (op) {
    case 'eq':
      return c === 0;
    case 'neq':
      return c !== 0;
    case 'gt':
      return c > 0;
    case 'gte':
      return c >= 0;
    case 'lt':
      return c < 0;
    case 'lte':
      return c <= 0;
  }
}

function stored(v: Scalar | undefined | null): Stored {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number') return { kind: 'number', v };
  if (typeof v === 'boolean') return { kind: 'boolean', v };
  return { kind: 'string', v };
}

/** Text of a value for string operators: strings as-is, booleans as "true"/"false"; others have none. */
function textOf(s: Stored): string | undefined {
  if (!s) return undefined;
  if (s.kind === 'string') return s.v;
  if (s.kind === 'boolean') return s.v ? 'true' : 'false';
  return undefined;
}

function asBoolean(s: Stored): boolean | undefined {
  if (!s) return undefined;
  if (s.kind === 'boolean') return s.v;
  if (s.kind === 'string' && (s.v === 'true' || s.v === 'false')) return s.v === 'true';
  return undefined;
}

/** The comparison of a stored value with one literal; undefined when the kinds do not agree. */
function order(s: Stored, lit: Literal): number | undefined {
  if (!s) return undefined;
  if (typeof lit === 'number') return s.kind === 'number' ? (s.v < lit ? -1 : s.v > lit ? 1 : 0) : undefined;
  if (typeof lit === 'boolean') {
    const b = asBoolean(s);
    return b === undefined ? undefined : Number(b) - Number(lit);
  }
  if (s.kind === 'instant') {
    const at = parseInstant(lit);
    if (!at) return undefined;
    const litNs = BigInt(at.seconds) * 1_000_000_000n + BigInt(at.nanos);
    const valNs = BigInt(s.seconds) * 1_000_000_000n;
    return valNs < litNs ? -1 : valNs > litNs ? 1 : 0;
  }
  const t = textOf(s);
  return t === undefined ? undefined : utf8Compare(t, lit);
}

function compare(s: Stored, op: CompareOp, lit: Literal): boolean {
  const c = order(s, lit);
  return c !== undefined && holds(c, op);
}

export function matchesPredicate(s: Stored, p: Predicate): boolean {
  switch (p.op) {
    case 'is_null':
      return s === undefined;
    case 'is_not_null':
      return s !== undefined;
    case 'eq':
    case 'neq':
    case 'gt':
    case 'gte':
    case 'lt':
    case 'lte':
      return compare(s, p.op, p.value);
    case 'in':
      return p.value.some((x) => compare(s, 'eq', x));
    case 'nin':
      return p.value.every((x) => compare(s, 'neq', x));
    case 'between':
      return compare(s, 'gte', p.value[0]) && compare(s, 'lte', p.value[1]);
    case 'contains': {
      const t = textOf(s);
      return t !== undefined && t.includes(p.value);
    }
    case 'starts_with': {
      const t = textOf(s);
      return t !== undefined && t.startsWith(p.value);
    }
    case 'matches': {
      const t = textOf(s);
      return t !== undefined && new RegExp(p.value, 'u').test(t);
    }
    default:
      return unreachable(p);
  }
}

function propMatches(e: RefEvent, w: PropExpr): boolean {
  switch (w.kind) {
    case 'and':
      return w.items.every((x) => propMatches(e, x));
    case 'or':
      return w.items.some((x) => propMatches(e, x));
    case 'not':
      return !propMatches(e, w.item);
    case 'prop':
      return matchesPredicate(stored(Object.hasOwn(e.props, w.prop) ? e.props[w.prop] : undefined), w);
    default:
      return unreachable(w);
  }
}

function inWindow(ts: number, w: TimeWindow | undefined, asOf: number): boolean {
  if (ts > asOf) return false;
  if (!w) return true;
  if (w.kind === 'within') return ts > asOf - w.duration.seconds;
  const from = parseInstant(w.from)!;
  const to = parseInstant(w.to)!;
  const ns = BigInt(ts) * 1_000_000_000n;
  return ns >= BigInt(from.seconds) * 1_000_000_000n + BigInt(from.nanos) && ns < BigInt(to.seconds) * 1_000_000_000n + BigInt(to.nanos);
}

export class Reference {
  private readonly byUser = new Map<string, RefEvent[]>();

  constructor(readonly data: RefData) {
    for (const e of data.events) {
      const list = this.byUser.get(e.user_id) ?? [];
      list.push(e);
      this.byUser.set(e.user_id, list);
    }
  }

  universe(asOf: number): string[] {
    const out: string[] = [];
    for (const [u, evs] of this.byUser) if (evs.some((e) => e.ts <= asOf)) out.push(u);
    return out.sort(utf8Compare);
  }

  /** The members, sorted by user_id (byte order, as ClickHouse sorts). */
  evaluate(expr: Expr, asOf: number): string[] {
    const run = this.profileRun(asOf);
    return this.universe(asOf).filter((u) => this.matches(expr, u, asOf, run, []));
  }

  /** Users of the universe for which each node (preorder, as listed) holds. */
  count(expr: Expr, asOf: number): number {
    return this.evaluate(expr, asOf).length;
  }

  profileRun(asOf: number): RefProfileRun | undefined {
    let best: RefProfileRun | undefined;
    for (const r of this.data.runs) if (r.complete && r.as_of <= asOf && (!best || r.as_of > best.as_of)) best = r;
    return best;
  }

  private events(user: string, asOf: number): RefEvent[] {
    return (this.byUser.get(user) ?? []).filter((e) => e.ts <= asOf);
  }

  private trait(user: string, key: string, asOf: number): Stored {
    let best: { ts: number; id: string; value: Scalar | null } | undefined;
    for (const e of this.events(user, asOf)) {
      if (!Object.hasOwn(e.traits, key)) continue;
      if (!best || e.ts > best.ts || (e.ts === best.ts && utf8Compare(e.event_id, best.id) > 0)) {
        best = { ts: e.ts, id: e.event_id, value: e.traits[key]! };
      }
    }
    return stored(best?.value);
  }

  /** Tags are not events: `tag(t)` is the tag the user carries now, whatever the as_of (segments.md: "currently carries"). */
  private tag(user: string, tag: string): boolean {
    let best: RefTagChange | undefined;
    for (const t of this.data.tags) {
      if (t.user_id !== user || t.tag !== tag) continue;
      if (!best || t.seq > best.seq) best = t;
    }
    return best?.present ?? false;
  }

  private attr(user: string, name: string, asOf: number, run: RefProfileRun | undefined): Stored {
    const target = resolveAttr(name);
    if (target.kind === 'trait') return this.trait(user, target.key, asOf);
    if (LIVE_TRAITS.has(target.name)) return this.trait(user, target.name, asOf);
    if (target.name === 'user_id') return { kind: 'string', v: user };
    if (target.name === 'cluster' || target.name === 'cluster_label') {
      if (this.data.clusterModels.length === 0) return undefined;
      const version = Math.max(...this.data.clusterModels);
      const a = this.data.clusterAssignments.find((x) => x.version === version && x.user_id === user);
      if (!a) return undefined;
      return target.name === 'cluster' ? { kind: 'number', v: a.cluster } : { kind: 'string', v: a.label };
    }
    const v = run?.rows.get(user)?.[target.name];
    if (v === undefined || v === null) return undefined;
    if (typeof v === 'number') return { kind: 'number', v };
    if (typeof v === 'string') return { kind: 'string', v };
    return { kind: 'instant', seconds: v.instant };
  }

  private matching(user: string, asOf: number, event: string, where: PropExpr | undefined): RefEvent[] {
    return this.events(user, asOf).filter((e) => e.event === event && (!where || propMatches(e, where)));
  }

  matches(e: Expr, user: string, asOf: number, run: RefProfileRun | undefined, visiting: string[]): boolean {
    switch (e.kind) {
      case 'and':
        return e.items.every((x) => this.matches(x, user, asOf, run, visiting));
      case 'or':
        return e.items.some((x) => this.matches(x, user, asOf, run, visiting));
      case 'not':
        return !this.matches(e.item, user, asOf, run, visiting);
      case 'attr':
        return matchesPredicate(this.attr(user, e.attr, asOf, run), e);
      case 'did': {
        const n = this.matching(user, asOf, e.event, e.where).filter((x) => inWindow(x.ts, e.window, asOf)).length;
        const c = e.count ?? { op: 'gte', value: 1 };
        return holds(n < c.value ? -1 : n > c.value ? 1 : 0, c.op);
      }
      case 'first_did': {
        const all = this.matching(user, asOf, e.event, e.where);
        if (all.length === 0) return false;
        const first = Math.min(...all.map((x) => x.ts));
        return inWindow(first, e.window, asOf);
      }
      case 'stopped': {
        const all = this.matching(user, asOf, e.event, e.where);
        const cut = asOf - e.within.seconds;
        const earlier = all.some((x) => x.ts > cut - e.before.seconds && x.ts <= cut);
        const recent = all.some((x) => x.ts > cut);
        return earlier && !recent;
      }
      case 'sequence': {
        // Dynamic programming over steps: for each event that can end a chain of
        // steps 1..k, the latest possible start time of such a chain.
        const inRange = (x: RefEvent) => !e.inLast || x.ts > asOf - e.inLast.seconds;
        let ends: { ts: number; start: number }[] = this.matching(user, asOf, e.steps[0]!.event, e.steps[0]!.where)
          .filter(inRange)
          .map((x) => ({ ts: x.ts, start: x.ts }));
        for (const step of e.steps.slice(1)) {
          const next: { ts: number; start: number }[] = [];
          for (const x of this.matching(user, asOf, step.event, step.where).filter(inRange)) {
            const starts = ends.filter((p) => p.ts < x.ts).map((p) => p.start);
            if (starts.length > 0) next.push({ ts: x.ts, start: Math.max(...starts) });
          }
          ends = next;
        }
        return ends.some((p) => !e.within || p.ts - p.start <= e.within.seconds);
      }
      case 'agg': {
        const evs = this.matching(user, asOf, e.event, e.where).filter((x) => inWindow(x.ts, e.window, asOf));
        const values = evs.map((x) => stored(Object.hasOwn(x.props, e.prop) ? x.props[e.prop] : undefined));
        const cmp = (v: number) => holds(v < e.value ? -1 : v > e.value ? 1 : 0, e.op);
        if (e.fn === 'count_distinct') {
          const keys = new Set(values.filter((v) => v !== undefined).map((v) => (v!.kind === 'number' ? `n${v!.v}` : `s${textOf(v)}`)));
          return cmp(keys.size);
        }
        const nums = values.flatMap((v) => (v?.kind === 'number' ? [v.v] : []));
        if (e.fn === 'sum') return cmp(nums.reduce((a, b) => a + b, 0));
        if (nums.length === 0) return false;
        if (e.fn === 'avg') return cmp(nums.reduce((a, b) => a + b, 0) / nums.length);
        if (e.fn === 'min') return cmp(Math.min(...nums));
        if (e.fn === 'max') return cmp(Math.max(...nums));
        return unreachable(e.fn);
      }
      case 'tag':
        return this.tag(user, e.tag);
      case 'in_segment': {
        const saved = this.data.saved.get(e.ref);
        if (!saved) throw new Error(`unknown segment ${e.ref}`);
        if (visiting.includes(e.ref)) throw new Error(`cycle through ${e.ref}`);
        return this.matches(saved, user, asOf, run, [...visiting, e.ref]);
      }
      default:
        return unreachable(e);
    }
  }
}
