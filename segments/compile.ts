// The segment compiler: AST → one ClickHouse query (18.16 and current).
//
// Shape of the generated SQL:
//
//   SELECT user_id FROM
//     driver                      -- the scan below, or the universe when needed
//     ANY LEFT JOIN scan          -- ONE pass over `events` for every behavioral
//                                 -- condition: countIf / sumIf / groupArrayIf …
//     ANY LEFT JOIN traits        -- one pass over `user_traits`, a column pair per key
//     ANY LEFT JOIN tags          -- one pass over `user_tags`, a column per tag
//     ANY LEFT JOIN profiles      -- the chosen complete run
//     ANY LEFT JOIN clusters      -- the app's latest model version
//   WHERE <the boolean expression over those columns>
//
// Every column is built so that its LEFT JOIN default (0, '', []) means the
// same as "no matching rows", so a user absent from a side subquery needs no
// special case. The universe subquery is joined only when the expression can
// hold for a user without any scanned event (e.g. `not did(x)`, `country = …`);
// otherwise the scan's own GROUP BY is the driver and the behavioral parts of a
// top-level `and` are pushed into its HAVING.
//
// Every subquery filters `app_id = <literal>` first (the sort-key prefix), every
// value goes through lib/sql.ts, and identifiers are generated aliases
// (`b3`, `t1_v`) or names from the whitelists below.
import type { Duration, Expr, PropExpr, TimeWindow } from './ast.ts';
import { unreachable } from './ast.ts';
import { parseInstant } from './check.ts';
import { resolveAttr } from './fields.ts';
import { and, compareOperator, eventProperty, float, not, or, predicateSql, traitValue, type StoredValue } from './values.ts';
import { join, raw, sql, type Sql } from '../lib/sql.ts';

export type NodePath = (string | number)[];

export interface CompileContext {
  appId: string;
  /** The evaluation instant; only whole seconds count (ts has second precision). */
  asOf: Date;
  /** The latest complete profile run with as_of <= asOf, or null when there is none. */
  profileRunId: string | null;
  /** Saved segments an `in_segment` may name (by id and by name), already resolved and cycle-checked. */
  savedSegments?: ReadonlyMap<string, Expr>;
}

export interface CompiledNode {
  path: NodePath;
  node: Expr;
  /** Column alias of this node's 0/1 value in `nodeColumns`. */
  column: string;
}

export interface CompiledSegment {
  /** `SELECT user_id … ORDER BY user_id`: every member once. */
  members: Sql;
  /** `SELECT count() AS count …`. */
  count: Sql;
  /** One row over the universe: `universe` and one sum per node (`n0` is the root). */
  nodeCounts: Sql;
  nodes: CompiledNode[];
  /** True when the members query joins the universe (the expression can hold without events). */
  usesUniverse: boolean;
  /** What the members query starts from: the events scan, a side that implies the universe, or the universe. */
  driver: 'events' | 'traits' | 'profile' | 'universe';
}

/** Profile fields read from the profiles table (the others are live: traits, clusters). */
const PROFILE_COLUMNS: Readonly<Record<string, 'number' | 'string' | 'instant'>> = {
  first_seen: 'instant',
  last_seen: 'instant',
  events_total: 'number',
  events_7d: 'number',
  events_30d: 'number',
  active_days_30d: 'number',
  views_30d: 'number',
  clicks_30d: 'number',
  purchases_30d: 'number',
  purchases_total: 'number',
  revenue_total: 'number',
  revenue_30d: 'number',
  avg_order_value: 'number',
  last_purchase_at: 'instant',
  recency_days: 'number',
  r_score: 'number',
  f_score: 'number',
  m_score: 'number',
  rfm_segment: 'string',
  top_category: 'string',
  best_hour: 'number',
  random_bucket: 'number',
};

/** Built-in fields that are the current trait of the same name, read live like `traits.<name>`. */
export const LIVE_TRAIT_FIELDS: ReadonlySet<string> = new Set(['platform', 'country', 'timezone', 'locale', 'app_version']);

/** Largest UInt32: the "no such event" sentinel in sequence chains. */
const NEVER = 4294967295;

/** When a user has no scanned events, a node is definitely true, definitely false, or depends on other data. */
type Empty = 'true' | 'false' | 'unknown';

interface Compiled {
  /** The node's 0/1 value as one self-contained expression over the joined columns. */
  inline: Sql;
  /** The same over child node aliases (for per-node counts). */
  aliased: Sql;
  empty: Empty;
  /** Only scan columns are involved, so it can be evaluated in the scan's HAVING. */
  scanOnly: boolean;
  /**
   * A subquery whose rows include every user for whom the node holds, all of
   * them in the universe: the scan (an event at or before as_of), traits (set
   * by such an event) or the profile run (computed from such events).
   */
  source: Source;
}

type Source = 'scan' | 'traits' | 'profile' | null;

/** What the scan's WHERE already guarantees for every row, learned by a first compile pass. */
interface ScanBounds {
  lowSec: number;
  events: ReadonlySet<string>;
}

class Builder {
  readonly scanColumns: Sql[] = [];
  readonly scanNames: string[] = [];
  readonly events = new Set<string>();
  /** Earliest ts (epoch seconds, inclusive) any behavioral condition looks at. */
  lowSec = Number.POSITIVE_INFINITY;
  readonly traits = new Map<string, string>();
  readonly tags = new Map<string, string>();
  readonly profileFields = new Set<string>();
  usesProfile = false;
  usesCluster = false;
  readonly nodes: CompiledNode[] = [];
  readonly nodeColumns: Sql[] = [];
  /** Inline and scan-only forms of the root's direct children (for HAVING pushdown). */
  readonly topLevel: Compiled[] = [];
  private counter = 0;
  private readonly inlining: string[] = [];
  /** > 0 while compiling a saved segment's expression: its nodes are not listed. */
  private unlisted = 0;

  constructor(
    readonly ctx: CompileContext,
    private readonly known?: ScanBounds,
  ) {}

  get asOfSec(): number {
    return Math.floor(this.ctx.asOf.getTime() / 1000);
  }

  private alias(prefix: string): string {
    return `${prefix}${this.counter++}`;
  }

  addScan(expr: Sql, prefix = 'b'): Sql {
    const a = this.alias(prefix);
    this.scanColumns.push(sql`${expr} AS ${raw(a)}`);
    this.scanNames.push(a);
    return raw(a);
  }

  needFrom(sec: number): void {
    this.lowSec = Math.min(this.lowSec, Math.max(0, sec));
  }

  trait(key: string): StoredValue {
    let a = this.traits.get(key);
    if (!a) {
      a = this.alias('t');
      this.traits.set(key, a);
    }
    return traitValue(raw(`${a}_v`), raw(`${a}_t`));
  }

  tag(name: string): Sql {
    let a = this.tags.get(name);
    if (!a) {
      a = this.alias('g');
      this.tags.set(name, a);
    }
    return raw(a);
  }

  // ---- time windows, all in whole epoch seconds ----

  /** `ts >= sec` (sec may be ≤ 0 or beyond DateTime: clamp instead of wrapping). */
  tsAtLeast(sec: number): Sql {
    if (sec <= 0) return raw('1');
    if (sec > NEVER) return raw('0');
    return sql`ts >= ${new Date(sec * 1000)}`;
  }

  tsBelow(sec: number): Sql {
    if (sec <= 0) return raw('0');
    if (sec > NEVER) return raw('1');
    return sql`ts < ${new Date(sec * 1000)}`;
  }

  /** [from, to) in seconds for a window, and records the scan lower bound. */
  windowRange(w: TimeWindow | undefined): { from: number; to: number } {
    const end = this.asOfSec + 1;
    if (!w) {
      this.needFrom(0);
      return { from: 0, to: end };
    }
    switch (w.kind) {
      case 'within': {
        const from = this.asOfSec - w.duration.seconds + 1;
        this.needFrom(from);
        return { from, to: end };
      }
      case 'between': {
        // ts is whole seconds: ts >= x ⇔ ts >= ceil(x), ts < x ⇔ ts < ceil(x).
        const from = ceilSeconds(w.from);
        const to = Math.min(end, ceilSeconds(w.to));
        this.needFrom(from);
        return { from, to };
      }
      default:
        return unreachable(w);
    }
  }

  rangeSql(r: { from: number; to: number }): Sql {
    return and([this.rowAtLeast(r.from), this.rowBelow(r.to)].filter((s) => s.text !== '1'));
  }

  /** `ts >= sec` for a scanned row: nothing when the scan's WHERE already implies it. */
  rowAtLeast(sec: number): Sql {
    return this.known && sec <= this.known.lowSec ? raw('1') : this.tsAtLeast(sec);
  }

  rowBelow(sec: number): Sql {
    return sec > this.asOfSec ? raw('1') : this.tsBelow(sec);
  }

  eventCondition(event: string, where: PropExpr | undefined, range: Sql | undefined): Sql {
    this.events.add(event);
    const parts = this.known && this.known.events.size === 1 ? [] : [sql`event = ${event}`];
    if (where) parts.push(propSql(where));
    if (range && range.text !== '1') parts.push(range);
    return and(parts);
  }

  durationFrom(d: Duration): number {
    return this.asOfSec - d.seconds + 1;
  }

  // ---- user expressions ----

  compile(e: Expr, path: NodePath): Compiled {
    if (this.unlisted > 0) {
      const c = this.rule(e, path);
      return { ...c, aliased: c.inline };
    }
    const column = `n${this.nodes.length}`;
    this.nodes.push({ path, node: e, column });
    const slot = this.nodeColumns.length;
    this.nodeColumns.push(raw('0'));
    const c = this.rule(e, path);
    this.nodeColumns[slot] = sql`${c.aliased} AS ${raw(column)}`;
    return { ...c, aliased: raw(column) };
  }

  private leaf(inline: Sql, empty: Empty, scanOnly: boolean, source: Source = scanOnly && empty === 'false' ? 'scan' : null): Compiled {
    return { inline, aliased: inline, empty, scanOnly, source };
  }

  private attrSource(e: Extract<Expr, { kind: 'attr' }>): Source {
    if (e.op === 'is_null') return null;
    const target = resolveAttr(e.attr);
    if (target.kind === 'trait' || LIVE_TRAIT_FIELDS.has(target.name)) return 'traits';
    if (PROFILE_COLUMNS[target.name] && this.ctx.profileRunId !== null) return 'profile';
    return null;
  }

  private rule(e: Expr, path: NodePath): Compiled {
    switch (e.kind) {
      case 'and':
      case 'or': {
        const kids = e.items.map((x, i) => this.compile(x, [...path, e.kind, i]));
        if (path.length === 0 && e.kind === 'and' && this.unlisted === 0) this.topLevel.push(...kids);
        const combine = e.kind === 'and' ? and : or;
        const empties = kids.map((k) => k.empty);
        const empty: Empty =
          e.kind === 'and'
            ? empties.includes('false') ? 'false' : empties.every((x) => x === 'true') ? 'true' : 'unknown'
            : empties.includes('true') ? 'true' : empties.every((x) => x === 'false') ? 'false' : 'unknown';
        const sources = kids.map((k) => k.source);
        const source: Source =
          e.kind === 'and'
            ? ((['scan', 'profile', 'traits'] as const).find((x) => sources.includes(x)) ?? null)
            : sources.every((x) => x !== null && x === sources[0]) ? sources[0]! : null;
        return {
          inline: combine(kids.map((k) => k.inline)),
          aliased: combine(kids.map((k) => k.aliased)),
          empty,
          scanOnly: kids.every((k) => k.scanOnly),
          source,
        };
      }
      case 'not': {
        const k = this.compile(e.item, [...path, 'not']);
        const empty: Empty = k.empty === 'true' ? 'false' : k.empty === 'false' ? 'true' : 'unknown';
        return { inline: not(k.inline), aliased: not(k.aliased), empty, scanOnly: k.scanOnly, source: null };
      }
      case 'attr':
        return this.leaf(this.attrSql(e), 'unknown', false, this.attrSource(e));
      case 'did': {
        const range = this.windowRange(e.window);
        const c = this.addScan(sql`countIf(${this.eventCondition(e.event, e.where, this.rangeSql(range))})`);
        const op = e.count?.op ?? 'gte';
        const value = e.count?.value ?? 1;
        const holdsAtZero = compareNumbers(0, op, value);
        return this.leaf(sql`(${c} ${compareOperator(op)} ${float(value)})`, holdsAtZero ? 'true' : 'false', true);
      }
      case 'first_did': {
        // The first matching event lies in the window ⇔ one in the window and none before it.
        const range = this.windowRange(e.window);
        this.needFrom(0);
        const inside = this.addScan(sql`countIf(${this.eventCondition(e.event, e.where, this.rangeSql(range))})`);
        if (range.from <= 0) return this.leaf(sql`(${inside} > 0)`, 'false', true);
        const before = this.addScan(sql`countIf(${this.eventCondition(e.event, e.where, this.rowBelow(range.from))})`);
        return this.leaf(sql`(${inside} > 0 AND ${before} = 0)`, 'false', true);
      }
      case 'stopped': {
        const recentFrom = this.durationFrom(e.within);
        const earlierFrom = recentFrom - e.before.seconds;
        this.needFrom(earlierFrom);
        const earlier = this.addScan(
          sql`countIf(${this.eventCondition(e.event, e.where, this.rangeSql({ from: earlierFrom, to: recentFrom }))})`,
        );
        const recent = this.addScan(sql`countIf(${this.eventCondition(e.event, e.where, this.rowAtLeast(recentFrom))})`);
        return this.leaf(sql`(${earlier} > 0 AND ${recent} = 0)`, 'false', true);
      }
      case 'sequence':
        return this.leaf(this.sequenceSql(e), 'false', true);
      case 'agg':
        return this.aggSql(e);
      case 'tag':
        return this.leaf(sql`(${this.tag(e.tag)} = 1)`, 'unknown', false);
      case 'in_segment': {
        const saved = this.ctx.savedSegments?.get(e.ref);
        if (!saved) throw new Error(`in_segment(${JSON.stringify(e.ref)}) was not resolved before compiling`);
        if (this.inlining.includes(e.ref)) throw new Error(`in_segment cycle through ${JSON.stringify(e.ref)}`);
        this.inlining.push(e.ref);
        // The saved expression's nodes are not listed: their paths belong to another document.
        this.unlisted++;
        const inner = this.compile(saved, [...path, 'in_segment']);
        this.unlisted--;
        this.inlining.pop();
        return { ...inner, aliased: inner.inline };
      }
      default:
        return unreachable(e);
    }
  }

  private attrSql(e: Extract<Expr, { kind: 'attr' }>): Sql {
    const target = resolveAttr(e.attr);
    let value: StoredValue;
    if (target.kind === 'trait') value = this.trait(target.key);
    else if (LIVE_TRAIT_FIELDS.has(target.name)) value = this.trait(target.name);
    else if (target.name === 'user_id') value = { kind: 'string', present: raw('1'), text: raw('user_id') };
    else if (target.name === 'cluster' || target.name === 'cluster_label') {
      this.usesCluster = true;
      value =
        target.name === 'cluster'
          ? { kind: 'number', present: raw('c__present'), number: raw('c__cluster') }
          : { kind: 'string', present: raw('c__present'), text: raw('c__label') };
    } else {
      const kind = PROFILE_COLUMNS[target.name];
      if (!kind) throw new Error(`no profile column for field ${JSON.stringify(target.name)}`);
      this.usesProfile = true;
      this.profileFields.add(target.name);
      const present = raw(`p_${target.name}__present`);
      const col = raw(`p_${target.name}`);
      value =
        kind === 'number'
          ? { kind, present, number: col }
          : kind === 'string'
            ? { kind, present, text: col }
            : { kind, present, seconds: col };
    }
    return predicateSql(value, e);
  }

  private aggSql(e: Extract<Expr, { kind: 'agg' }>): Compiled {
    const range = this.windowRange(e.window);
    const prop = eventProperty(e.prop);
    const cond = this.eventCondition(e.event, e.where, this.rangeSql(range));
    const o = compareOperator(e.op);
    const v = float(e.value);
    if (e.fn === 'count_distinct') {
      // Numbers by value, everything else by text; a number and a string never collide.
      const d = this.addScan(
        sql`uniqExactIf(${prop.isNumber}, if(${prop.isNumber}, '', ${prop.text}), if(${prop.isNumber}, ${prop.number} + 0, 0), ${cond} AND ${prop.present})`,
      );
      return this.leaf(sql`(${d} ${o} ${v})`, compareNumbers(0, e.op, e.value) ? 'true' : 'false', true);
    }
    const numeric = sql`${cond} AND ${prop.present} AND ${prop.isNumber}`;
    if (e.fn === 'sum') {
      const s = this.addScan(sql`sumIf(${prop.number}, ${numeric})`);
      return this.leaf(sql`(${s} ${o} ${v})`, compareNumbers(0, e.op, e.value) ? 'true' : 'false', true);
    }
    const n = this.addScan(sql`countIf(${numeric})`);
    let value: Sql;
    if (e.fn === 'avg') value = sql`(${this.addScan(sql`sumIf(${prop.number}, ${numeric})`)} / ${n})`;
    else if (e.fn === 'min') value = this.addScan(sql`minIf(${prop.number}, ${numeric})`);
    else if (e.fn === 'max') value = this.addScan(sql`maxIf(${prop.number}, ${numeric})`);
    else return unreachable(e.fn);
    return this.leaf(sql`(${n} > 0 AND ${value} ${o} ${v})`, 'false', true);
  }

  /**
   * Exact sequences: per step, the sorted timestamps of its matching events; the
   * greedy chain from a first-step event t1 takes, for each next step, the
   * earliest event strictly after the previous one (earliest is optimal). With
   * `within`, some t1 must give a chain ending at most `within` after it.
   * (windowFunnel treats equal timestamps as ordered and is not used.)
   */
  private sequenceSql(e: Extract<Expr, { kind: 'sequence' }>): Sql {
    let range: Sql | undefined;
    if (e.inLast) {
      const from = this.durationFrom(e.inLast);
      this.needFrom(from);
      range = this.rowAtLeast(from);
    } else this.needFrom(0);
    const steps = e.steps.map((s) =>
      this.addScan(sql`arraySort(groupArrayIf(toUInt32(ts), ${this.eventCondition(s.event, s.where, range)}))`, 's'),
    );
    const next = (prev: Sql, arr: Sql, depth: number): Sql => {
      const x = raw(`x${depth}`);
      return sql`arrayFirst(${x} -> ${x} > ${prev} OR ${x} = ${NEVER}, arrayPushBack(${arr}, toUInt32(${NEVER})))`;
    };
    const chain = (start: Sql): Sql => {
      let t = start;
      for (let k = 1; k < steps.length; k++) t = next(t, steps[k]!, k);
      return t;
    };
    // Kept out of the scan's SELECT list (18.16 loses an alias built on other
    // aliases when an outer query prunes columns), and every step array is also
    // named outside the lambdas: 18.16's column pruning does not see identifiers
    // captured inside a lambda. Every step needs an event anyway.
    const first = steps[0]!;
    const nonEmpty = and(steps.map((s) => sql`notEmpty(${s})`));
    if (!e.within) {
      const end = chain(sql`${first}[1]`);
      return sql`(${nonEmpty} AND ${end} != ${NEVER})`;
    }
    const t1 = raw('x0');
    const end = chain(t1);
    return sql`(${nonEmpty} AND arrayExists(${t1} -> ${end} != ${NEVER} AND ${end} - ${t1} <= ${e.within.seconds}, ${first}))`;
  }
}

function ceilSeconds(iso: string): number {
  const at = parseInstant(iso);
  if (!at) throw new Error(`not an ISO 8601 instant: ${JSON.stringify(iso)}`);
  return at.seconds + (at.nanos > 0 ? 1 : 0);
}

function compareNumbers(a: number, op: 'eq' | 'neq' | 'gt' | 'gte' | 'lt' | 'lte', b: number): boolean {
  switch (op) {
    case 'eq':
      return a === b;
    case 'neq':
      return a !== b;
    case 'gt':
      return a > b;
    case 'gte':
      return a >= b;
    case 'lt':
      return a < b;
    case 'lte':
      return a <= b;
    default:
      return unreachable(op);
  }
}

/** An event-property condition, evaluated per event row. */
export function propSql(p: PropExpr): Sql {
  switch (p.kind) {
    case 'and':
      return and(p.items.map(propSql));
    case 'or':
      return or(p.items.map(propSql));
    case 'not':
      return not(propSql(p.item));
    case 'prop':
      return predicateSql(eventProperty(p.prop), p);
    default:
      return unreachable(p);
  }
}

/** Users of the app with at least one event at or before as_of. */
function universeSql(appId: string, asOf: Date): Sql {
  return sql`SELECT user_id FROM events WHERE app_id = ${appId} AND ts <= ${asOf} GROUP BY user_id`;
}

interface Side {
  kind: 'traits' | 'tags' | 'profile' | 'cluster';
  query: Sql;
  columns: string[];
}

function sides(b: Builder): Side[] {
  const { appId } = b.ctx;
  const asOf = secondsDate(b.asOfSec);
  const out: Side[] = [];
  if (b.traits.size > 0) {
    const cols: Sql[] = [];
    const names: string[] = [];
    const unpack: Sql[] = [];
    for (const [key, a] of b.traits) {
      // One argMax of (value, type) per key: the (ts, event_id) comparison is the expensive part.
      cols.push(sql`argMaxIf((value, value_type), (ts, event_id), key = ${key}) AS ${raw(`${a}_vt`)}`);
      unpack.push(sql`${raw(`${a}_vt`)}.1 AS ${raw(`${a}_v`)}`, sql`${raw(`${a}_vt`)}.2 AS ${raw(`${a}_t`)}`);
      names.push(`${a}_v`, `${a}_t`);
    }
    out.push({
      kind: 'traits',
      query: sql`SELECT user_id, ${join(unpack)} FROM (SELECT user_id, ${join(cols)} FROM user_traits
        WHERE app_id = ${appId} AND ts <= ${asOf} AND key IN (${join([...b.traits.keys()].map((k) => sql`${k}`))})
        GROUP BY user_id)`,
      columns: names,
    });
  }
  if (b.tags.size > 0) {
    const cols = [...b.tags].map(([tag, a]) => sql`argMaxIf(present, seq, tag = ${tag}) AS ${raw(a)}`);
    out.push({
      kind: 'tags',
      query: sql`SELECT user_id, ${join(cols)} FROM user_tags
        WHERE app_id = ${appId} AND changed_at <= ${asOf} AND tag IN (${join([...b.tags.keys()].map((k) => sql`${k}`))})
        GROUP BY user_id`,
      columns: [...b.tags.values()],
    });
  }
  if (b.usesProfile && b.ctx.profileRunId !== null) {
    const cols: Sql[] = [];
    const names: string[] = [];
    for (const f of b.profileFields) {
      const col = raw(f); // a key of PROFILE_COLUMNS: a whitelisted column name
      const kind = PROFILE_COLUMNS[f];
      const value = kind === 'instant' ? sql`toUInt32(${col})` : kind === 'number' ? sql`toFloat64(${col})` : col;
      const empty = kind === 'string' ? raw("''") : raw('0');
      cols.push(sql`ifNull(${value}, ${empty}) AS ${raw(`p_${f}`)}`, sql`isNotNull(${col}) AS ${raw(`p_${f}__present`)}`);
      names.push(`p_${f}`, `p_${f}__present`);
    }
    out.push({
      kind: 'profile',
      query: sql`SELECT user_id, ${join(cols)} FROM profiles WHERE app_id = ${appId} AND run_id = ${b.ctx.profileRunId}`,
      columns: names,
    });
  }
  if (b.usesCluster) {
    out.push({
      kind: 'cluster',
      query: sql`SELECT user_id, 1 AS c__present, toFloat64(cluster) AS c__cluster, cluster_label AS c__label
        FROM cluster_assignments
        WHERE app_id = ${appId} AND version = (SELECT max(version) FROM cluster_models WHERE app_id = ${appId})`,
      columns: ['c__present', 'c__cluster', 'c__label'],
    });
  }
  return out;
}

function secondsDate(sec: number): Date {
  return new Date(sec * 1000);
}

/** Profile columns referenced without a run: every user lacks them. */
function missingProfileColumns(b: Builder): Sql[] {
  if (!b.usesProfile || b.ctx.profileRunId !== null) return [];
  return [...b.profileFields].flatMap((f) => [
    sql`${PROFILE_COLUMNS[f] === 'string' ? raw("''") : raw('0')} AS ${raw(`p_${f}`)}`,
    sql`0 AS ${raw(`p_${f}__present`)}`,
  ]);
}

/** The subqueries of a compiled builder: the shared scan, the side joins, the universe-driven join. */
function assemble(b: Builder) {
  const asOf = secondsDate(b.asOfSec);
  const { appId } = b.ctx;

  const hasScan = b.scanColumns.length > 0;
  const scanWhere = (): Sql => {
    const parts = [sql`app_id = ${appId}`, sql`ts <= ${asOf}`];
    if (Number.isFinite(b.lowSec) && b.lowSec > 0) parts.push(b.tsAtLeast(b.lowSec));
    parts.push(sql`event IN (${join([...b.events].map((x) => sql`${x}`))})`);
    return join(parts, ' AND ');
  };
  const scan = (having?: Sql): Sql =>
    sql`SELECT user_id, ${join(b.scanColumns)} FROM events WHERE ${scanWhere()} GROUP BY user_id${having ? sql` HAVING ${having}` : raw('')}`;
  const scanNames = b.scanNames;

  const joined = (driver: Sql, driverColumns: string[], others: Omit<Side, 'kind'>[]): { from: Sql; columns: string[] } => {
    let from = driver;
    let columns = driverColumns;
    for (const s of others) {
      const all = [...columns, ...s.columns];
      from = sql`SELECT user_id, ${raw(all.join(', ') || '1 AS _')} FROM (${from}) ANY LEFT JOIN (${s.query}) USING user_id`;
      columns = all;
    }
    const extra = missingProfileColumns(b);
    if (extra.length > 0) {
      from = sql`SELECT user_id, ${join([...columns.map((c) => raw(c)), ...extra])} FROM (${from})`;
    }
    return { from, columns };
  };

  const sideQueries = sides(b);
  const scanSide: Omit<Side, 'kind'>[] = hasScan ? [{ query: scan(), columns: scanNames }] : [];
  // Universe-driven form: every user of the app, each node a column (explain, and
  // members whenever the expression may hold without events).
  const universe = joined(universeSql(appId, asOf), [], [...scanSide, ...sideQueries]);
  return { hasScan, scan, scanNames, sideQueries, joined, universe };
}

export function compileSegment(expr: Expr, ctx: CompileContext): CompiledSegment {
  // Pass 1 learns what the scan's WHERE will guarantee (earliest ts, event
  // names); pass 2 leaves those conditions out of every per-row -If.
  const first = new Builder(ctx);
  first.compile(expr, []);
  const b = new Builder(ctx, { lowSec: first.lowSec, events: first.events });
  const root = b.compile(expr, []);
  const { hasScan, scan, scanNames, sideQueries, joined, universe } = assemble(b);
  const nodeCounts = sql`SELECT count() AS universe, ${join(b.nodes.map((n) => sql`sum(${raw(n.column)}) AS ${raw(n.column)}`))}
    FROM (SELECT user_id, ${join(b.nodeColumns)} FROM (${universe.from}))`;

  const scanDriven = hasScan && root.empty === 'false';
  const sideDriver = scanDriven ? undefined : sideQueries.find((s) => s.kind === root.source);
  const usesUniverse = !scanDriven && !sideDriver;
  let membersFrom: Sql;
  if (usesUniverse) {
    membersFrom = sql`SELECT user_id FROM (${universe.from}) WHERE ${root.inline}`;
  } else if (sideDriver) {
    // Every user for whom the root holds has a row in this side (a trait or a
    // profile row, only ever made from events at or before as_of): it is a
    // smaller driver than the universe, which is then not scanned at all.
    const j = joined(sideDriver.query, sideDriver.columns, [...scanSide(scan, scanNames, hasScan), ...sideQueries.filter((s) => s !== sideDriver)]);
    membersFrom = sql`SELECT user_id FROM (${j.from}) WHERE ${root.inline}`;
  } else {
    // The root needs a scanned event: drive from the scan, push its behavioral
    // conjuncts into HAVING so the joins see only candidates.
    const pushable = root.scanOnly ? [root] : b.topLevel.filter((k) => k.scanOnly);
    const pushed = pushable.length > 0 ? and(pushable.map((k) => k.inline)) : undefined;
    const driver = scan(pushed);
    if (sideQueries.length === 0 && root.scanOnly) {
      membersFrom = sql`SELECT user_id FROM (${driver})`;
    } else {
      const j = joined(driver, scanNames, sideQueries);
      membersFrom = sql`SELECT user_id FROM (${j.from}) WHERE ${root.inline}`;
    }
  }
  return {
    members: sql`${membersFrom} ORDER BY user_id`,
    count: sql`SELECT count() AS count FROM (${membersFrom})`,
    nodeCounts,
    nodes: b.nodes,
    usesUniverse,
    driver: usesUniverse ? 'universe' : sideDriver ? (sideDriver.kind as 'traits' | 'profile') : 'events',
  };
}

function scanSide(scan: (having?: Sql) => Sql, columns: string[], hasScan: boolean): Omit<Side, 'kind'>[] {
  return hasScan ? [{ query: scan(), columns }] : [];
}

export type { Duration };
