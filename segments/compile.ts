// The segment compiler: AST → one ClickHouse query (18.16 and current).
//
// Shape of the generated SQL:
//
//   SELECT user_id FROM
//     driver                      -- the scan below, or the universe when needed
//     ANY LEFT JOIN scan          -- ONE pass over `events` for every behavioral
//                                 -- condition: countIf / sumIf / groupArrayIf …
//     ANY LEFT JOIN traits        -- one pass over `user_traits`, a column pair per key
//                                 -- (context traits only: `user_context_traits`, contextTraitsSide)
//     ANY LEFT JOIN tags          -- one pass over `user_tags`, a column per tag
//     ANY LEFT JOIN profiles      -- the chosen complete run
//     ANY LEFT JOIN clusters      -- the app's latest model version
//     ANY LEFT JOIN firsts        -- `user_event_firsts`, for first_did without `where`
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
import { resolveAttr, TRAIT_BACKED_FIELDS } from './fields.ts';
import { and, compareNumbers, compareOperator, eventProperty, float, not, or, predicateSql, traitValue, type StoredValue } from './values.ts';
import { ident, join, raw, sql, type Sql } from '../lib/sql.ts';
import { runRowsSql, type RunLayer } from '../profiles/sql.ts';
import { onlyContextTraits, TRAIT_ORDER, traitOrderAfter, unpackContextChange } from '../profiles/traits.ts';

export type NodePath = (string | number)[];

export interface CompileContext {
  appId: string;
  /** The evaluation instant; only whole seconds count (ts has second precision). */
  asOf: Date;
  /** The latest complete profile run with as_of <= asOf, or null when there is none. */
  profileRunId: string | null;
  /** That run's layer, when it holds only its recomputed users (profiles/sql.ts, runRowsSql). */
  profileLayer?: RunLayer | undefined;
  /** Saved segments an `in_segment` may name (by id and by name), already resolved and cycle-checked. */
  savedSegments?: ReadonlyMap<string, Expr>;
  /**
   * The users with a change to a context trait after asOf (contextIncompleteSql), or all of
   * them that might be: given, a segment whose traits are all context traits reads them from
   * user_context_traits for every other user (contextTraitsSide).
   */
  contextIncomplete?: readonly string[];
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
  /** The trait keys the segment reads live (traits.<key> and the trait-backed fields). */
  traitKeys: string[];
  /** One row over the universe: `universe` and one sum per node (`n0` is the root). */
  nodeCounts: Sql;
  nodes: CompiledNode[];
  /** True when the members query joins the universe (the expression can hold without events). */
  usesUniverse: boolean;
  /** What the members query starts from: the events scan, a side that implies the universe, or the universe. */
  driver: 'events' | 'traits' | 'profile' | 'firsts' | 'universe';
  /** True when a condition reads a field of the profile run (PROFILE_COLUMNS). */
  usesProfileRun: boolean;
}

/** Profile fields read from the profiles table (the others are live: traits, clusters). */
export const PROFILE_COLUMNS: Readonly<Record<string, 'number' | 'string' | 'instant'>> = {
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
export const LIVE_TRAIT_FIELDS: ReadonlySet<string> = TRAIT_BACKED_FIELDS;

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
   * by such an event), the profile run (computed from such events) or the
   * first events (one at or before as_of).
   */
  source: Source;
  /** The subqueries whose columns the node reads. */
  uses: ReadonlySet<SideKind>;
  /** A subquery in which every user the node holds for has a row (LEFT JOIN defaults make it false). */
  needs: SideKind | null;
  /** For `not x`: x. */
  negates?: Compiled;
  /** For `or`: its items. */
  anyOf?: Compiled[];
  /** A per-event condition such that the node holds ⇔ some scanned event satisfies it. */
  exists?: Sql;
}

type Source = 'scan' | 'traits' | 'profile' | 'firsts' | null;

/** The events scan and the side subqueries. */
type SideKind = 'scan' | 'traits' | 'tags' | 'profile' | 'cluster' | 'firsts';

/** What the scan's WHERE already guarantees for every row, learned by a first compile pass. */
interface ScanBounds {
  lowSec: number;
  events: ReadonlySet<string>;
}

class Builder {
  readonly scanColumns: Sql[] = [];
  readonly scanNames: string[] = [];
  readonly scanConditions: Sql[] = [];
  readonly events = new Set<string>();
  /** Earliest ts (epoch seconds, inclusive) any behavioral condition looks at. */
  lowSec = Number.POSITIVE_INFINITY;
  readonly traits = new Map<string, string>();
  readonly tags = new Map<string, string>();
  /** Event name → alias of its first-event column (user_event_firsts). */
  readonly firsts = new Map<string, string>();
  readonly profileFields = new Set<string>();
  usesProfile = false;
  usesCluster = false;
  readonly nodes: CompiledNode[] = [];
  readonly nodeColumns: Sql[] = [];
  /** Inline and scan-only forms of the root's direct children (for HAVING pushdown). */
  readonly topLevel: Compiled[] = [];
  private counter = 0;
  /** Sides touched by the node being compiled (a stack: one set per open node). */
  private readonly touching: Set<SideKind>[] = [];
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

  private touch(kind: SideKind): void {
    this.touching[this.touching.length - 1]?.add(kind);
  }

  /** A scan column: an -If aggregate `expr` whose condition is `cond` (a row failing every condition changes no column). */
  addScan(expr: Sql, cond: Sql, prefix = 'b'): Sql {
    this.touch('scan');
    this.scanConditions.push(cond);
    const a = this.alias(prefix);
    this.scanColumns.push(sql`${expr} AS ${raw(a)}`);
    this.scanNames.push(a);
    return raw(a);
  }

  needFrom(sec: number): void {
    this.lowSec = Math.min(this.lowSec, Math.max(0, sec));
  }

  trait(key: string): StoredValue {
    const a = this.sideColumn('traits', this.traits, key, 't');
    return traitValue(raw(`${a}_v`), raw(`${a}_t`));
  }

  tag(name: string): Sql {
    return raw(this.sideColumn('tags', this.tags, name, 'g'));
  }

  /** Epoch seconds + 1 of the user's first `event` at or before as_of; 0 for none. */
  first(event: string): Sql {
    return raw(this.sideColumn('firsts', this.firsts, event, 'f'));
  }

  /** The alias of a side's column for `key`, one per key however often it is referenced. */
  private sideColumn(side: SideKind, columns: Map<string, string>, key: string, prefix: string): string {
    this.touch(side);
    let a = columns.get(key);
    if (!a) {
      a = this.alias(prefix);
      columns.set(key, a);
    }
    return a;
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
    const range = this.windowBounds(w);
    this.needFrom(range.from);
    return range;
  }

  /** [from, to) in seconds for a window (from ≤ 0: since ever; to ≤ as_of + 1). */
  windowBounds(w: TimeWindow | undefined): { from: number; to: number } {
    const end = this.asOfSec + 1;
    if (!w) return { from: 0, to: end };
    switch (w.kind) {
      case 'within':
        return { from: this.asOfSec - w.duration.seconds + 1, to: end };
      case 'between':
        // ts is whole seconds: ts >= x ⇔ ts >= ceil(x), ts < x ⇔ ts < ceil(x).
        return { from: ceilSeconds(w.from), to: Math.min(end, ceilSeconds(w.to)) };
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
    const uses = new Set<SideKind>();
    this.touching.push(uses);
    let c: Compiled;
    try {
      c = this.compileNode(e, path);
    } finally {
      this.touching.pop();
    }
    for (const k of uses) this.touch(k);
    return { ...c, uses };
  }

  private compileNode(e: Expr, path: NodePath): Compiled {
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

  private leaf(
    inline: Sql,
    empty: Empty,
    scanOnly: boolean,
    source: Source = scanOnly && empty === 'false' ? 'scan' : null,
    needs: SideKind | null = source,
  ): Compiled {
    return { inline, aliased: inline, empty, scanOnly, source, needs, uses: new Set() };
  }

  private attrSource(e: Extract<Expr, { kind: 'attr' }>): Source {
    if (e.op === 'is_null') return null;
    const target = resolveAttr(e.attr);
    if (target.kind === 'trait' || LIVE_TRAIT_FIELDS.has(target.name)) return 'traits';
    if (PROFILE_COLUMNS[target.name] && this.ctx.profileRunId !== null) return 'profile';
    return null;
  }

  /** The side whose row a present-value comparison needs (a missing value matches only `is null`). */
  private attrNeeds(e: Extract<Expr, { kind: 'attr' }>): SideKind | null {
    if (e.op === 'is_null') return null;
    const target = resolveAttr(e.attr);
    if (target.kind === 'trait' || LIVE_TRAIT_FIELDS.has(target.name)) return 'traits';
    if (target.name === 'cluster' || target.name === 'cluster_label') return 'cluster';
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
            ? ((['scan', 'profile', 'traits', 'firsts'] as const).find((x) => sources.includes(x)) ?? null)
            : sources.every((x) => x !== null && x === sources[0]) ? sources[0]! : null;
        const needed = kids.map((k) => k.needs);
        const needs: SideKind | null =
          e.kind === 'and'
            ? (needed.find((x) => x !== null) ?? null)
            : needed.every((x) => x !== null && x === needed[0]) ? needed[0]! : null;
        const exists = e.kind === 'or' && kids.every((k) => k.exists) ? or(kids.map((k) => k.exists!)) : undefined;
        return {
          inline: combine(kids.map((k) => k.inline)),
          aliased: combine(kids.map((k) => k.aliased)),
          empty,
          scanOnly: kids.every((k) => k.scanOnly),
          source,
          needs,
          uses: new Set(),
          ...(e.kind === 'or' ? { anyOf: kids } : {}),
          ...(exists ? { exists } : {}),
        };
      }
      case 'not': {
        const k = this.compile(e.item, [...path, 'not']);
        const empty: Empty = k.empty === 'true' ? 'false' : k.empty === 'false' ? 'true' : 'unknown';
        return { inline: not(k.inline), aliased: not(k.aliased), empty, scanOnly: k.scanOnly, source: null, needs: null, uses: new Set(), negates: k };
      }
      case 'attr':
        return this.leaf(this.attrSql(e), 'unknown', false, this.attrSource(e), this.attrNeeds(e));
      case 'did': {
        const range = this.windowRange(e.window);
        const cond = this.eventCondition(e.event, e.where, this.rangeSql(range));
        const c = this.addScan(sql`countIf(${cond})`, cond);
        const op = e.count?.op ?? 'gte';
        const value = e.count?.value ?? 1;
        const holdsAtZero = compareNumbers(0, op, value);
        const leaf = this.leaf(sql`(${c} ${compareOperator(op)} ${float(value)})`, holdsAtZero ? 'true' : 'false', true);
        // count >= 1: "some event matches", answerable without counting.
        const atLeastOne = (op === 'gte' || op === 'gt' || op === 'neq') && !holdsAtZero && compareNumbers(1, op, value);
        return atLeastOne ? { ...leaf, exists: cond } : leaf;
      }
      case 'first_did': {
        if (!e.where) {
          // From each user's first event of that name (060_user_event_firsts.sql), not
          // from a scan of all history; f = ts + 1, 0 for none.
          const { from, to } = this.windowBounds(e.window);
          const f = this.first(e.event);
          return this.leaf(sql`(${f} >= ${Math.max(from, 0) + 1} AND ${f} < ${to + 1})`, 'unknown', false, 'firsts');
        }
        // The first matching event lies in the window ⇔ one in the window and none before it.
        const range = this.windowRange(e.window);
        this.needFrom(0);
        const insideCond = this.eventCondition(e.event, e.where, this.rangeSql(range));
        const inside = this.addScan(sql`countIf(${insideCond})`, insideCond);
        if (range.from <= 0) return this.leaf(sql`(${inside} > 0)`, 'false', true);
        const beforeCond = this.eventCondition(e.event, e.where, this.rowBelow(range.from));
        const before = this.addScan(sql`countIf(${beforeCond})`, beforeCond);
        return this.leaf(sql`(${inside} > 0 AND ${before} = 0)`, 'false', true);
      }
      case 'stopped': {
        const recentFrom = this.durationFrom(e.within);
        const earlierFrom = recentFrom - e.before.seconds;
        this.needFrom(earlierFrom);
        const earlierCond = this.eventCondition(e.event, e.where, this.rangeSql({ from: earlierFrom, to: recentFrom }));
        const earlier = this.addScan(sql`countIf(${earlierCond})`, earlierCond);
        const recentCond = this.eventCondition(e.event, e.where, this.rowAtLeast(recentFrom));
        const recent = this.addScan(sql`countIf(${recentCond})`, recentCond);
        return this.leaf(sql`(${earlier} > 0 AND ${recent} = 0)`, 'false', true);
      }
      case 'sequence':
        return this.leaf(this.sequenceSql(e), 'false', true);
      case 'agg':
        return this.aggSql(e);
      case 'tag':
        return this.leaf(sql`(${this.tag(e.tag)} = 1)`, 'unknown', false, null, 'tags');
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
      this.touch('cluster');
      this.usesCluster = true;
      value =
        target.name === 'cluster'
          ? { kind: 'number', present: raw('c__present'), number: raw('c__cluster') }
          : { kind: 'string', present: raw('c__present'), text: raw('c__label') };
    } else {
      const kind = PROFILE_COLUMNS[target.name];
      if (!kind) throw new Error(`no profile column for field ${JSON.stringify(target.name)}`);
      this.touch('profile');
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
      const counted = sql`${cond} AND ${prop.present}`;
      const d = this.addScan(
        sql`uniqExactIf(${prop.isNumber}, if(${prop.isNumber}, '', ${prop.text}), if(${prop.isNumber}, ${prop.number} + 0, 0), ${counted})`,
        counted,
      );
      return this.leaf(sql`(${d} ${o} ${v})`, compareNumbers(0, e.op, e.value) ? 'true' : 'false', true);
    }
    const numeric = sql`${cond} AND ${prop.present} AND ${prop.isNumber}`;
    if (e.fn === 'sum') {
      const s = this.addScan(sql`sumIf(${prop.number}, ${numeric})`, numeric);
      return this.leaf(sql`(${s} ${o} ${v})`, compareNumbers(0, e.op, e.value) ? 'true' : 'false', true);
    }
    const n = this.addScan(sql`countIf(${numeric})`, numeric);
    let value: Sql;
    if (e.fn === 'avg') value = sql`(${this.addScan(sql`sumIf(${prop.number}, ${numeric})`, numeric)} / ${n})`;
    else if (e.fn === 'min') value = this.addScan(sql`minIf(${prop.number}, ${numeric})`, numeric);
    else if (e.fn === 'max') value = this.addScan(sql`maxIf(${prop.number}, ${numeric})`, numeric);
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
    const steps = e.steps.map((s) => {
      const cond = this.eventCondition(s.event, s.where, range);
      return this.addScan(sql`arraySort(groupArrayIf(toUInt32(ts), ${cond}))`, cond, 's');
    });
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

/**
 * A subquery with one row per user (the events scan or a side), optionally
 * filtered by a condition over its columns.
 */
interface Side {
  kind: SideKind;
  columns: string[];
  /** `among`: a set of user ids to aggregate only (traits and tags; ignored by the others). */
  query: (having?: Sql, among?: Sql) => Sql;
  /** The scan only: user ids (repeated) of the scanned events that satisfy a per-event condition. */
  rows?: (cond: Sql) => Sql;
}

/** `q` filtered by a condition over its columns (a subquery layer: 18.16 has no predicate pushdown, so this is cheap). */
function filtered(q: Sql, columns: string[], having?: Sql): Sql {
  return having ? sql`SELECT user_id${raw(columns.map((c) => `, ${c}`).join(''))} FROM (${q}) WHERE ${having}` : q;
}

/**
 * The rows of `q` (a SELECT of a table's columns) as a FROM target, only those
 * of users in `among` when given. The set applies in a subquery layer: as a
 * condition on the table itself, 18.16 would build an `IN` set once more for
 * every layer of query analysis (user_id is in every sort key).
 */
function restricted(q: Sql, among?: Sql): Sql {
  return among ? sql`(${q}) WHERE user_id IN (${among})` : sql`(${q})`;
}

/**
 * Users of the app with at least one event at or before as_of, read from
 * `app_users` (migration 050): a user has a row there with first_ts <= as_of
 * exactly when they have such an event, however many rows they have. `where`
 * (conditions on user_id) applies before the GROUP BY, in a subquery layer: as
 * a condition on the table itself, 18.16 would build an `IN` set once more for
 * every layer of query analysis (user_id is in the sort key).
 */
function universeSql(appId: string, asOf: Date, where: Sql[] = []): Sql {
  const rows = sql`SELECT user_id FROM app_users WHERE app_id = ${appId} AND first_ts <= ${asOf}`;
  return where.length > 0 ? sql`SELECT user_id FROM (${rows}) WHERE ${and(where)} GROUP BY user_id` : sql`${rows} GROUP BY user_id`;
}

/**
 * A trait's current value is the one with the greatest (ts, event_id). 18.16's
 * argMax is ~2x slower with a tuple than with one string, so both sides are
 * folded into strings that order the same way: the key is TRAIT_ORDER, and the
 * value is the type digit (0-3) followed by the value text.
 */
const TRAIT_TYPED_VALUE = raw(`concat(toString(value_type), value)`);

/** Literals for an IN list. */
function valueList(values: Iterable<string>): Sql {
  return join([...values].map((v) => sql`${v}`));
}

/**
 * A side with one aggregate column per key (`columns`: key → alias) over
 * `rows`, grouped by user; `among` restricts the users aggregated.
 */
function groupedSide(kind: SideKind, columns: ReadonlyMap<string, string>, aggregate: (key: string) => Sql, rows: Sql): Side {
  const cols = [...columns].map(([key, a]) => sql`${aggregate(key)} AS ${raw(a)}`);
  const names = [...columns.values()];
  return {
    kind,
    columns: names,
    query: (having, among) => filtered(sql`SELECT user_id, ${join(cols)} FROM ${restricted(rows, among)}
        GROUP BY user_id`, names, having),
  };
}

/**
 * The code of the error a context traits side raises when its
 * `contextIncomplete` is out of date: ClickHouse's for a throwIf
 * (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO; 18.16's throwIf takes no message).
 */
export const CONTEXT_TRAITS_STALE_CODE = '395';

/**
 * The traits side of a segment whose traits are all context traits
 * (CONTEXT_TRAITS), given `incomplete` (P: users with a change to one after
 * as_of, found before the query): every other user's values from
 * user_context_traits (190: each key's latest change, one row per user with
 * FINAL), the users of P's from every change in `user_traits`, as `history`
 * reads them. On data with context on every event that is one row per user
 * instead of one per event and key.
 *
 * A latest change after as_of of a user outside P (stored after P was read)
 * makes the query throw (CONTEXT_TRAITS_STALE_CODE) rather than answer with it:
 * the caller finds P again and retries (evaluate.ts). A user with a context
 * trait but none of the keys read gets type 0 for each: what a user without a
 * row in `history` gets from the joins' defaults, and every predicate reads
 * type 0 as no value.
 */
function contextTraitsSide(b: Builder, incomplete: readonly string[], history: (among?: Sql) => Sql): (among?: Sql) => Sql {
  const { appId } = b.ctx;
  const bound = traitOrderAfter(secondsDate(b.asOfSec));
  const inP = incomplete.length > 0 ? sql`has(${[...incomplete]}, user_id)` : raw('0');
  const keys = [...b.traits];
  const packed = join(keys.map(([key, a]) => sql`finalizeAggregation(${ident(key)}) AS ${raw(`${a}_p`)}`));
  const unpack = join(keys.map(([, a]) => {
    const change = unpackContextChange(raw(`${a}_p`), a);
    return sql`${change.value} AS ${raw(`${a}_v`)}, ${change.type} AS ${raw(`${a}_t`)}`;
  }));
  const later = or(keys.map(([, a]) => sql`${raw(`${a}_p`)} >= ${bound}`));
  return (among) => sql`SELECT user_id, ${join(keys.flatMap(([, a]) => [raw(`${a}_v`), raw(`${a}_t`)]))} FROM (
      SELECT user_id, ${unpack} FROM (SELECT user_id, ${packed} FROM user_context_traits FINAL WHERE app_id = ${appId})
      WHERE ${among ? sql`user_id IN (${among}) AND ` : sql``}throwIf(${later} AND NOT ${inP}) = 0 AND NOT ${inP}${incomplete.length > 0
          ? sql`
      UNION ALL
      SELECT * FROM (${history(among ? sql`SELECT user_id FROM (${among}) WHERE ${inP}` : sql`SELECT arrayJoin(${[...incomplete]}) AS user_id`)})`
          : sql``})`;
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
      const vt = raw(`${a}_vt`);
      // No row for the key gives '': type 0 (missing), as a removed trait.
      cols.push(sql`argMaxIf(${TRAIT_TYPED_VALUE}, ${TRAIT_ORDER}, key = ${key}) AS ${vt}`);
      unpack.push(sql`substring(${vt}, 2) AS ${raw(`${a}_v`)}`, sql`toUInt8OrZero(substring(${vt}, 1, 1)) AS ${raw(`${a}_t`)}`);
      names.push(`${a}_v`, `${a}_t`);
    }
    const keys = valueList(b.traits.keys());
    const history = (among?: Sql) => sql`SELECT user_id, ${join(unpack)} FROM (SELECT user_id, ${join(cols)} FROM ${restricted(
      sql`SELECT user_id, key, value, value_type, ts, event_id FROM user_traits
        WHERE app_id = ${appId} AND ts <= ${asOf} AND key IN (${keys})`,
      among,
    )}
        GROUP BY user_id)`;
    const incomplete = b.ctx.contextIncomplete;
    const rows = incomplete && onlyContextTraits([...b.traits.keys()])
      ? contextTraitsSide(b, incomplete, history)
      : history;
    out.push({ kind: 'traits', columns: names, query: (having, among) => filtered(rows(among), names, having) });
  }
  if (b.tags.size > 0) {
    out.push(
      groupedSide('tags', b.tags, (tag) => sql`argMaxIf(present, seq, tag = ${tag})`, sql`SELECT user_id, tag, present, seq FROM user_tags
        WHERE app_id = ${appId} AND tag IN (${valueList(b.tags.keys())})`),
    );
  }
  if (b.usesProfile && b.ctx.profileRunId !== null) {
    const runId = b.ctx.profileRunId;
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
      columns: names,
      query: (having) => filtered(sql`SELECT user_id, ${join(cols)} FROM (${runRowsSql(appId, { run_id: runId, layer: b.ctx.profileLayer })})`, names, having),
    });
  }
  if (b.firsts.size > 0) {
    // min over a user's rows is their first event however merged (see the migration);
    // rows after as_of are left out, so a user whose first event is later has no row.
    out.push(
      groupedSide('firsts', b.firsts, (event) => sql`minIf(toUInt64(first_ts) + 1, event = ${event})`, sql`SELECT user_id, event, first_ts FROM user_event_firsts
        WHERE app_id = ${appId} AND first_ts <= ${asOf} AND event IN (${valueList(b.firsts.keys())})`),
    );
  }
  if (b.usesCluster) {
    const names = ['c__present', 'c__cluster', 'c__label'];
    out.push({
      kind: 'cluster',
      columns: names,
      query: (having) =>
        filtered(
          sql`SELECT user_id, 1 AS c__present, toFloat64(cluster) AS c__cluster, cluster_label AS c__label
        FROM cluster_assignments
        WHERE app_id = ${appId} AND version = (SELECT max(version) FROM cluster_models WHERE app_id = ${appId})`,
          names,
          having,
        ),
    });
  }
  return out;
}

function negation(c: Compiled): Compiled {
  return { inline: not(c.inline), aliased: not(c.aliased), empty: 'unknown', scanOnly: c.scanOnly, source: null, uses: c.uses, needs: null, negates: c };
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

/** The events scan as a side: one row per user with an event at or before as_of in its window. */
function scanSide(b: Builder): Side | undefined {
  if (b.scanColumns.length === 0) return undefined;
  const asOf = secondsDate(b.asOfSec);
  const parts = [sql`app_id = ${b.ctx.appId}`, sql`ts <= ${asOf}`];
  if (Number.isFinite(b.lowSec) && b.lowSec > 0) parts.push(b.tsAtLeast(b.lowSec));
  parts.push(sql`event IN (${join([...b.events].map((x) => sql`${x}`))})`);
  // A row that fails every column's condition changes no column; a user whose
  // rows all fail gets exactly the LEFT JOIN defaults, so leaving such rows out
  // before the GROUP BY changes no answer and groups fewer rows.
  const conditions = b.scanConditions.filter((c) => c.text !== '1');
  if (conditions.length === b.scanConditions.length) parts.push(sql`(${or(conditions)})`);
  return {
    kind: 'scan',
    columns: b.scanNames,
    query: (having) =>
      sql`SELECT user_id, ${join(b.scanColumns)} FROM events WHERE ${join(parts, ' AND ')} GROUP BY user_id${having ? sql` HAVING ${having}` : raw('')}`,
    rows: (cond) => sql`SELECT user_id FROM events WHERE ${join([...parts, sql`(${cond})`], ' AND ')}`,
  };
}

/** `driver` ANY LEFT JOIN each of `others` on user_id, with the profile columns of a missing run added. */
function joined(b: Builder, driver: Sql, driverColumns: string[], others: { query: Sql; columns: string[] }[]): Sql {
  let from = driver;
  let columns = driverColumns;
  for (const s of others) {
    const all = [...columns, ...s.columns];
    from = sql`SELECT user_id, ${raw(all.join(', ') || '1 AS _')} FROM (${from}) ANY LEFT JOIN (${s.query}) USING user_id`;
    columns = all;
  }
  const extra = missingProfileColumns(b);
  if (extra.length > 0) from = sql`SELECT user_id, ${join([...columns.map((c) => raw(c)), ...extra])} FROM (${from})`;
  return from;
}

export function compileSegment(expr: Expr, ctx: CompileContext): CompiledSegment {
  // Pass 1 learns what the scan's WHERE will guarantee (earliest ts, event
  // names); pass 2 leaves those conditions out of every per-row -If.
  const first = new Builder(ctx);
  first.compile(expr, []);
  const b = new Builder(ctx, { lowSec: first.lowSec, events: first.events });
  const root = b.compile(expr, []);
  const scan = scanSide(b);
  const others = sides(b);
  const all = scan ? [scan, ...others] : others;
  const asOf = secondsDate(b.asOfSec);

  // Universe-driven form: every user of the app, each node a column (explain).
  const nodeCounts = sql`SELECT count() AS universe, ${join(b.nodes.map((n) => sql`sum(${raw(n.column)}) AS ${raw(n.column)}`))}
    FROM (SELECT user_id, ${join(b.nodeColumns)} FROM (${joined(b, universeSql(ctx.appId, asOf), [], all.map((s) => ({ query: s.query(), columns: s.columns })))}))`;

  // The driver holds every member, each once, and only users of the universe:
  // the scan when the root needs a scanned event; else a side whose rows imply
  // the universe (traits are set by events at or before as_of, a profile run
  // only has users with such events) when the root needs a row there; else the
  // universe.
  const driver: Side | undefined =
    scan && root.empty === 'false' ? scan : others.find((s) => (s.kind === 'traits' || s.kind === 'profile' || s.kind === 'firsts') && s.kind === root.source);

  // Each conjunct of a top-level `and` that reads one subquery is evaluated
  // there instead of over joined columns: in the driver's own filter when it
  // reads only the driver; else, when it holds only for users with a row in
  // that subquery (LEFT JOIN defaults make it false), as `user_id IN (that
  // subquery filtered by it)`; a `not` of such a conjunct as `NOT IN`. A side
  // that no remaining conjunct reads is not joined at all.
  // `not (a or b)` counts as `not a and not b`.
  const conjuncts = (b.topLevel.length > 0 ? b.topLevel : [root]).flatMap((c) => c.negates?.anyOf?.map(negation) ?? [c]);
  const own: Sql[] = [];
  const semi = new Map<Side, Compiled[]>();
  const anti = new Map<Side, Compiled[]>();
  const rest: Compiled[] = [];
  const single = (c: Compiled): Side | undefined => (c.uses.size === 1 ? all.find((s) => c.uses.has(s.kind)) : undefined);
  for (const c of conjuncts) {
    const side = single(c);
    const negated = c.negates ? single(c.negates) : undefined;
    if ([...c.uses].every((k) => k === driver?.kind)) own.push(c.inline);
    else if (side && c.needs === side.kind) semi.set(side, [...(semi.get(side) ?? []), c]);
    else if (c.negates && negated && c.negates.needs === negated.kind) anti.set(negated, [...(anti.get(negated) ?? []), c.negates]);
    else rest.push(c);
  }
  // The users of a side for whom all (semi) or any (anti) of the conjuncts
  // hold. "Some scanned event matches" needs no GROUP BY: the event rows' user
  // ids are the set.
  const usersOf = (s: Side, cs: Compiled[], all: boolean): Sql =>
    s.rows && cs.every((c) => c.exists) && (!all || cs.length === 1)
      ? s.rows(or(cs.map((c) => c.exists!)))
      : sql`SELECT user_id FROM (${s.query((all ? and : or)(cs.map((c) => c.inline)), among)})`;
  // A profile driver with its own filter is cheap to read twice: the
  // aggregating sides then aggregate only its users.
  const among = driver?.kind === 'profile' && own.length > 0 ? sql`SELECT user_id FROM (${driver.query(and(own))})` : undefined;
  const where: Sql[] = [
    ...[...semi].map(([s, cs]) => sql`user_id IN (${usersOf(s, cs, true)})`),
    ...[...anti].map(([s, cs]) => sql`user_id NOT IN (${usersOf(s, cs, false)})`),
  ];
  const driverQuery = driver
    ? filtered(driver.query(own.length > 0 ? and(own) : undefined), driver.columns, where.length > 0 ? and(where) : undefined)
    : universeSql(ctx.appId, asOf, [...own, ...where]);
  // Profile conditions plus ONE trait (or tag) condition: the trait side,
  // restricted to the profile's users and filtered by its condition, already is
  // the answer (one row per user) — no second read of the profile run.
  const [onlySemi] = semi.size === 1 && anti.size === 0 && rest.length === 0 && among ? [...semi] : [];
  const lastSide = onlySemi && (onlySemi[0].kind === 'traits' || onlySemi[0].kind === 'tags') ? onlySemi : undefined;
  let membersFrom: Sql;
  if (lastSide) {
    membersFrom = sql`SELECT user_id FROM (${lastSide[0].query(and(lastSide[1].map((c) => c.inline)), among)})`;
  } else if (scan && driver === scan && root.exists) {
    // "Some event matches": filter the events, group only those.
    membersFrom = sql`${scan.rows!(root.exists)} GROUP BY user_id`;
  } else if (rest.length === 0) {
    membersFrom = sql`SELECT user_id FROM (${driverQuery})`;
  } else {
    const joins = all.filter((s) => s !== driver && rest.some((c) => c.uses.has(s.kind)));
    const from = joined(b, driverQuery, driver?.columns ?? [], joins.map((s) => ({ query: s.query(), columns: s.columns })));
    membersFrom = sql`SELECT user_id FROM (${from}) WHERE ${and(rest.map((c) => c.inline))}`;
  }
  return {
    members: sql`${membersFrom} ORDER BY user_id`,
    count: sql`SELECT count() AS count FROM (${membersFrom})`,
    nodeCounts,
    nodes: b.nodes,
    usesUniverse: !driver,
    driver: !driver ? 'universe' : driver.kind === 'scan' ? 'events' : (driver.kind as 'traits' | 'profile' | 'firsts'),
    usesProfileRun: b.usesProfile,
    traitKeys: [...b.traits.keys()],
  };
}

export type { Duration };
