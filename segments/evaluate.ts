// Evaluating a segment: input → checked AST (saved segments resolved) → one
// compiled query → members. The I/O edge around the pure compiler.
import { clickhouseErrorCode, type ClickHouse } from '../lib/clickhouse.ts';
import { isoSeconds, isStorableInstant } from '../lib/instant.ts';
import { ident, join, raw, sql, tuple, type Sql } from '../lib/sql.ts';
import { withLiveRows } from '../profiles/job.ts';
import { latestRun, type ProfileRun } from '../profiles/read.ts';
import { profileRunAt } from '../profiles/run-at.ts';
import { runRowsSql, type RunLayer } from '../profiles/sql.ts';
import { currentTagsSql } from '../profiles/tags.ts';
import { contextIncompleteSql, currentTraitsSql, onlyContextTraits, typedTraitValue } from '../profiles/traits.ts';
import type { Expr } from './ast.ts';
import { checkSegment } from './check.ts';
import { compileSegment, CONTEXT_TRAITS_STALE_CODE, LIVE_TRAIT_FIELDS, PROFILE_COLUMNS, type CompiledSegment } from './compile.ts';
import { SegmentSyntaxError } from './errors.ts';
import { NON_COMPARABLE_FIELDS, profileField, TRAITS_PREFIX } from './fields.ts';
import { listSegments, segmentResolver, toExpr } from './saved.ts';

export const MAX_LIMIT = 10_000;
export const DEFAULT_LIMIT = 100;

export interface EvaluateOptions {
  asOf?: Date;
  /** 0..10,000; default 100. */
  limit?: number;
  /** Profile fields to return with each user (`traits`, `tags`, `traits.<key>` included). */
  fields?: string[];
  /** The client a profile run built for this evaluation runs on (PrepareOptions). */
  jobClient?: ClickHouse;
}

export interface PrepareOptions {
  /** Profile fields to return: they need the profile run too. */
  fields?: readonly string[];
  /**
   * The client a profile run built for the evaluation runs on (default: `ch`).
   * The API passes its app-wide client: the build is a job that other requests
   * may share and that outlives this request's time limit and connection.
   */
  jobClient?: ClickHouse;
  /**
   * Read context traits from user_context_traits when the segment's traits are
   * all context traits (compile.ts contextTraitsSide). Its queries can then
   * fail with CONTEXT_TRAITS_STALE_CODE, for the caller to prepare again
   * (withContextRetry).
   */
  contextTraits?: boolean;
}

/**
 * Most users with a change to a context trait after as_of that a context
 * traits side takes as a list in its SQL (three times); with more, the
 * segment reads every change (a past as_of, where most users have one).
 */
const CONTEXT_INCOMPLETE_MAX = 500;
const CONTEXT_INCOMPLETE_MAX_CHARS = 40_000;

/** Runs `attempt` again, up to twice, when a context traits side found a change stored after its list was read. */
export async function withContextRetry<T>(attempt: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (e) {
      if (tries >= 3 || clickhouseErrorCode(e) !== CONTEXT_TRAITS_STALE_CODE) throw e;
    }
  }
}

export interface PreparedSegment {
  expr: Expr;
  /** Whole seconds. */
  asOf: Date;
  profileRunId: string | null;
  profileLayer?: RunLayer | undefined;
  profilesAsOf: Date | null;
  compiled: CompiledSegment;
}

export interface EvaluateResult {
  count: number;
  as_of: string;
  profiles_as_of: string | null;
  users: Record<string, unknown>[];
}

function badInput(path: string, code: string, message: string): SegmentSyntaxError {
  return new SegmentSyntaxError([{ code, message, path: [path] }]);
}

/** The evaluation instant: given or now, truncated to whole seconds, inside DateTime's range. */
export function evaluationInstant(asOf?: Date): Date {
  const ms = (asOf ?? new Date()).getTime();
  if (!isStorableInstant(ms)) {
    throw badInput('as_of', 'bad_as_of', 'as_of must be an instant between 1970-01-01 and 2106-02-07');
  }
  return new Date(Math.floor(ms / 1000) * 1000);
}

/**
 * Parses/checks the input, resolves in_segment against the app's saved segments, picks the profile run, compiles.
 * Profile fields (in the expression, or `fields` to return) come from the run at
 * exactly `asOfInput`, built when missing; without `asOfInput`, from the latest
 * run (profiles/run-at.ts).
 */
export async function prepareSegment(ch: ClickHouse, appId: string, input: unknown, asOfInput?: Date, opts: PrepareOptions = {}): Promise<PreparedSegment> {
  const asOf = evaluationInstant(asOfInput);
  const expr = await toExpr(input);
  let savedSegments: Map<string, Expr> | undefined;
  if (usesInSegment(expr)) {
    const all = await listSegments(ch, appId);
    // The text, when given as text: errors then carry line and column (segments.md §3).
    const source = typeof input === 'string' ? input : undefined;
    const errors = checkSegment(expr, { resolveSegment: segmentResolver(all), source });
    if (errors.length > 0) throw new SegmentSyntaxError(errors);
    savedSegments = new Map();
    for (const s of all) {
      savedSegments.set(s.id, s.expr);
      if (!savedSegments.has(s.name)) savedSegments.set(s.name, s.expr);
    }
  }
  const compile = (run: ProfileRun | undefined, contextIncomplete?: readonly string[]) =>
    compileSegment(expr, { appId, asOf, profileRunId: run?.run_id ?? null, profileLayer: run?.layer, savedSegments, ...(contextIncomplete ? { contextIncomplete } : {}) });
  // Compiled once without a run to learn whether it reads profile fields (the compiler is pure), then with its run.
  const needsRun = compile(undefined).usesProfileRun || opts.fields?.some((f) => f in PROFILE_COLUMNS);
  const run = needsRun ? await profileRunAt(opts.jobClient ?? ch, appId, asOf, asOfInput !== undefined) : await latestRun(ch, appId, asOf);
  let compiled = compile(run);
  if (opts.contextTraits && onlyContextTraits(compiled.traitKeys)) {
    const users = (await ch.rows<{ user_id: string }>(contextIncompleteSql(appId, asOf, CONTEXT_INCOMPLETE_MAX))).map((r) => r.user_id);
    if (users.length <= CONTEXT_INCOMPLETE_MAX && users.reduce((n, u) => n + u.length, 0) <= CONTEXT_INCOMPLETE_MAX_CHARS) compiled = compile(run, users);
  }
  return { expr, asOf, profileRunId: run?.run_id ?? null, profileLayer: run?.layer, profilesAsOf: run?.as_of ?? null, compiled };
}

function usesInSegment(e: Expr): boolean {
  switch (e.kind) {
    case 'and':
    case 'or':
      return e.items.some(usesInSegment);
    case 'not':
      return usesInSegment(e.item);
    case 'in_segment':
      return true;
    default:
      return false;
  }
}

/** Every member's user_id, in user_id order: a query the caller streams (exports, snapshots). */
export async function membersSql(ch: ClickHouse, appId: string, expr: unknown, asOf?: Date): Promise<Sql> {
  return (await prepareSegment(ch, appId, expr, asOf)).compiled.members;
}

export async function evaluateSegment(ch: ClickHouse, appId: string, input: unknown, opts: EvaluateOptions = {}): Promise<EvaluateResult> {
  const limit = opts.limit ?? DEFAULT_LIMIT;
  if (!Number.isInteger(limit) || limit < 0 || limit > MAX_LIMIT) {
    throw badInput('limit', 'bad_limit', `limit must be an integer 0..${MAX_LIMIT}`);
  }
  const fields = opts.fields ?? [];
  fields.forEach((f, i) => {
    if (!isReturnableField(f)) throw badInput(`fields`, 'unknown_field', `fields[${i}]: unknown profile field ${JSON.stringify(f)}`);
  });
  const { p, countRows, idRows } = await withContextRetry(async () => {
    const p = await prepareSegment(ch, appId, input, opts.asOf, { fields, contextTraits: true, ...(opts.jobClient ? { jobClient: opts.jobClient } : {}) });
    const [countRows, idRows] = await Promise.all([
      ch.rows<{ count: string }>(p.compiled.count),
      limit > 0 ? ch.rows<{ user_id: string }>(sql`${p.compiled.members} LIMIT ${limit}`) : Promise.resolve([]),
    ]);
    return { p, countRows, idRows };
  });
  const ids = idRows.map((r) => r.user_id);
  const users = fields.length > 0 ? await withFields(ch, appId, p, ids, fields) : ids.map((user_id) => ({ user_id }));
  return {
    count: Number(countRows[0]?.count ?? 0),
    as_of: isoSeconds(p.asOf),
    profiles_as_of: p.profilesAsOf ? isoSeconds(p.profilesAsOf) : null,
    users,
  };
}

export function isReturnableField(f: string): boolean {
  if (f.startsWith(TRAITS_PREFIX)) return f.length > TRAITS_PREFIX.length;
  return profileField(f) !== undefined || NON_COMPARABLE_FIELDS.has(f);
}

const INSTANT_FIELDS = new Set(['first_seen', 'last_seen', 'last_purchase_at']);

/** Field values of the listed users, read the same way the compiler reads them. */
async function withFields(ch: ClickHouse, appId: string, p: PreparedSegment, ids: string[], fields: string[]): Promise<Record<string, unknown>[]> {
  const out = ids.map((user_id) => ({ user_id }) as Record<string, unknown>);
  if (ids.length === 0) return out;
  const index = new Map(ids.map((u, i) => [u, i]));
  const users = tuple(ids);
  const profileCols = fields.filter(
    (f) => profileField(f) && f !== 'user_id' && !LIVE_TRAIT_FIELDS.has(f) && f !== 'cluster' && f !== 'cluster_label',
  );
  const traitKeys = new Set<string>();
  let allTraits = false;
  for (const f of fields) {
    if (f === 'traits') allTraits = true;
    else if (f.startsWith(TRAITS_PREFIX)) traitKeys.add(f.slice(TRAITS_PREFIX.length));
    else if (LIVE_TRAIT_FIELDS.has(f)) traitKeys.add(f);
  }
  for (const o of out) for (const f of fields) if (f !== 'user_id') o[f] = f === 'tags' ? [] : f === 'traits' ? {} : null;

  const jobs: Promise<void>[] = [];
  if (profileCols.length > 0 && p.profileRunId) {
    const cols = profileCols.map((f) => (INSTANT_FIELDS.has(f) ? sql`toUInt32(${raw(f)}) AS ${raw(f)}` : raw(f)));
    const rowsOf = (source: Sql) => ch.rows<Record<string, unknown>>(sql`SELECT user_id, ${join(cols)} FROM (${source})`);
    jobs.push(
      rowsOf(runRowsSql(appId, { run_id: p.profileRunId, layer: p.profileLayer }, sql` AND user_id IN ${users}`))
        .then(async (rows) => {
          // Members the run does not hold (their first events came after it, or
          // were stored after it was built): computed as GET /v1/users computes them.
          const held = new Set(rows.map((r) => String(r.user_id)));
          const missing = ids.filter((u) => !held.has(u));
          if (missing.length > 0) rows.push(...(await withLiveRows(ch, appId, missing, p.asOf, (table) => rowsOf(sql`SELECT * FROM ${ident(table)}`))));
          return rows;
        })
        .then((rows) => {
          for (const r of rows) {
            const o = out[index.get(String(r.user_id))!]!;
            for (const f of profileCols) {
              const v = r[f];
              if (v === null || v === undefined) o[f] = null;
              else if (INSTANT_FIELDS.has(f)) o[f] = isoSeconds(new Date(Number(v) * 1000));
              else if (profileField(f)!.type === 'number') o[f] = Number(v);
              else o[f] = v;
            }
          }
        }),
    );
  }
  if (allTraits || traitKeys.size > 0) {
    jobs.push(
      ch
        .rows<{ user_id: string; key: string; value: string; value_type: number }>(
          sql`SELECT user_id, key, value, value_type FROM (${currentTraitsSql(appId, p.asOf, { usersIn: users })})`,
        )
        .then((rows) => {
          for (const r of rows) {
            const o = out[index.get(r.user_id)!]!;
            const v = typedTraitValue(r.value, Number(r.value_type));
            if (allTraits) (o.traits as Record<string, unknown>)[r.key] = v;
            if (fields.includes(TRAITS_PREFIX + r.key)) o[TRAITS_PREFIX + r.key] = v;
            if (LIVE_TRAIT_FIELDS.has(r.key) && fields.includes(r.key)) o[r.key] = v;
          }
        }),
    );
  }
  if (fields.includes('tags')) {
    jobs.push(
      ch
        .rows<{ user_id: string; tag: string }>(sql`SELECT user_id, tag FROM (${currentTagsSql(appId, { usersIn: users })}) ORDER BY tag`)
        .then((rows) => {
          for (const r of rows) (out[index.get(r.user_id)!]!.tags as string[]).push(r.tag);
        }),
    );
  }
  if (fields.includes('cluster') || fields.includes('cluster_label')) {
    jobs.push(
      ch
        .rows<{ user_id: string; cluster: number; cluster_label: string }>(sql`
          SELECT user_id, cluster, cluster_label FROM cluster_assignments
          WHERE app_id = ${appId} AND user_id IN ${users}
            AND version = (SELECT max(version) FROM cluster_models WHERE app_id = ${appId})`)
        .then((rows) => {
          for (const r of rows) {
            const o = out[index.get(r.user_id)!]!;
            if (fields.includes('cluster')) o.cluster = Number(r.cluster);
            if (fields.includes('cluster_label')) o.cluster_label = r.cluster_label;
          }
        }),
    );
  }
  await Promise.all(jobs);
  return out;
}
