// Saved segments: named expressions per app in the `segments` table.
//
// Every change writes a new row version (ReplacingMergeTree(version)); readers
// take the highest version per segment with argMax, so they never need FINAL.
// Deleting writes a version with deleted = 1. Names are unique per app among
// live segments: create/update check it before writing. Two concurrent writers
// could still race past the check; the table has no unique constraint, so the
// check is repeated after the write and the later writer backs out.
//
// A segment is addressed by id or by name (the id wins when both match), and
// other segments may refer to it by either in in_segment. While one refers to
// it, deleting it is refused, and so is renaming it when one refers to it by
// name (a reference by id follows a rename). Both answer SegmentInUseError
// naming the segments that use it. Like the name check, this is a read before
// the write: a segment created concurrently with the delete/rename can slip by.
import { randomBytes } from 'node:crypto';
import type { ClickHouse } from '../lib/clickhouse.ts';
import { sql } from '../lib/sql.ts';
import { isWellFormedText } from '../lib/text.ts';
import type { Expr } from './ast.ts';
import { checkSegment, type SavedSegment } from './check.ts';
import { SegmentSyntaxError, type SegmentError } from './errors.ts';
import { fromJson, toJson } from './json-form.ts';
import { parseSegment } from './parse.ts';

export interface SegmentRecord {
  id: string;
  name: string;
  description: string;
  /** Canonical JSON form. */
  expression: unknown;
  expr: Expr;
  updated_at: string;
  version: number;
}

export interface SegmentInput {
  name: string;
  description?: string;
  /**
   * Text form, JSON form or an AST. An object with a string `kind` is taken as
   * an AST (checked, not validated field by field): callers handing on
   * untrusted input (the HTTP API) convert the JSON form with fromJson first.
   */
  expression: unknown;
}

export class SegmentNotFoundError extends Error {
  constructor(readonly ref: string) {
    super(`segment ${JSON.stringify(ref)} does not exist`);
    this.name = 'SegmentNotFoundError';
  }
}

export class SegmentConflictError extends Error {
  constructor(readonly segmentName: string) {
    super(`a segment named ${JSON.stringify(segmentName)} already exists`);
    this.name = 'SegmentConflictError';
  }
}

/** Deleting or renaming a segment that other live segments use. */
export class SegmentInUseError extends Error {
  constructor(
    readonly segmentName: string,
    /** Names of the segments that use it. */
    readonly usedBy: readonly string[],
    readonly action: 'delete' | 'rename',
  ) {
    super(
      action === 'delete'
        ? `segment ${JSON.stringify(segmentName)} is used by ${usedBy.map((u) => JSON.stringify(u)).join(', ')}; change or delete those first`
        : `segment ${JSON.stringify(segmentName)} is used by name by ${usedBy.map((u) => JSON.stringify(u)).join(', ')}; ` +
            'renaming it would break them: change them first (or refer to it by id, which follows a rename)',
    );
    this.name = 'SegmentInUseError';
  }
}

const NAME_RE = /^[^\u0000-\u001f\u007f]{1,200}$/u;
/** What newSegmentId makes. */
const ID_SHAPE = /^seg_[0-9a-z]+$/;

interface Row {
  segment_id: string;
  cur_name: string;
  cur_description: string;
  cur_expression: string;
  cur_deleted: number;
  cur_updated_at: number;
  cur_version: string;
}

function isAst(v: unknown): v is Expr {
  return typeof v === 'object' && v !== null && typeof (v as { kind?: unknown }).kind === 'string';
}

/** Any accepted expression input → AST (syntax and local rules checked). */
export async function toExpr(input: unknown): Promise<Expr> {
  if (typeof input === 'string') return parseSegment(input);
  if (isAst(input)) {
    const errors = checkSegment(input);
    if (errors.length > 0) throw new SegmentSyntaxError(errors);
    return input;
  }
  return fromJson(input);
}

async function latestRows(ch: ClickHouse, appId: string): Promise<Row[]> {
  // Aliases differ from column names: 18.16 would otherwise substitute them inside the other aggregates.
  return ch.rows<Row>(sql`
    SELECT segment_id, argMax(name, version) AS cur_name, argMax(description, version) AS cur_description,
      argMax(expression, version) AS cur_expression, argMax(deleted, version) AS cur_deleted,
      toUInt32(argMax(updated_at, version)) AS cur_updated_at, toString(max(version)) AS cur_version
    FROM segments WHERE app_id = ${appId} GROUP BY segment_id`);
}

async function toRecord(r: Row): Promise<SegmentRecord> {
  const expression = JSON.parse(r.cur_expression) as unknown;
  return {
    id: r.segment_id,
    name: r.cur_name,
    description: r.cur_description,
    expression,
    expr: fromJson(expression),
    updated_at: new Date(Number(r.cur_updated_at) * 1000).toISOString().replace(/\.000Z$/, 'Z'),
    version: Number(r.cur_version),
  };
}

/** Live saved segments of the app, by name. */
export async function listSegments(ch: ClickHouse, appId: string): Promise<SegmentRecord[]> {
  const rows = (await latestRows(ch, appId)).filter((r) => Number(r.cur_deleted) === 0);
  const out = await Promise.all(rows.map(toRecord));
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The live segment `ref` names: by id, else by name. */
function resolve(all: readonly SegmentRecord[], ref: string): SegmentRecord | undefined {
  return all.find((s) => s.id === ref) ?? all.find((s) => s.name === ref);
}

/** A live segment by id or by name. */
export async function getSegment(ch: ClickHouse, appId: string, ref: string): Promise<SegmentRecord | undefined> {
  return resolve(await listSegments(ch, appId), ref);
}

/** Resolver for the checker and the compiler: id or name → saved expression. */
export function segmentResolver(all: readonly SegmentRecord[]): (ref: string) => SavedSegment | undefined {
  const byId = new Map(all.map((s) => [s.id, s]));
  const byName = new Map(all.map((s) => [s.name, s]));
  return (ref) => {
    const s = byId.get(ref) ?? byName.get(ref);
    return s ? { id: s.id, expr: s.expr } : undefined;
  };
}

function validationError(path: string, code: string, message: string): SegmentSyntaxError {
  const e: SegmentError = { code, message, path: [path] };
  return new SegmentSyntaxError([e]);
}

async function validated(ch: ClickHouse, appId: string, input: SegmentInput, selfId?: string): Promise<{ expr: Expr; all: SegmentRecord[] }> {
  if (typeof input.name !== 'string' || !NAME_RE.test(input.name) || !isWellFormedText(input.name)) {
    throw validationError('name', 'bad_name', 'name must be 1..200 characters without control characters or lone surrogates');
  }
  // Routes and in_segment take an id or a name, and an id wins: a name shaped
  // like an id could name a segment its own name never reaches.
  if (ID_SHAPE.test(input.name)) {
    throw validationError('name', 'bad_name', 'name must not look like a segment id (seg_ and lower-case letters or digits): ids and names share one lookup');
  }
  if (input.description !== undefined && (typeof input.description !== 'string' || [...input.description].length > 2000 || !isWellFormedText(input.description))) {
    throw validationError('description', 'bad_description', 'description must be a string of at most 2000 characters without lone surrogates');
  }
  const expr = await toExpr(input.expression);
  const all = await listSegments(ch, appId);
  const self = selfId ? all.find((s) => s.id === selfId) : undefined;
  const errors = checkSegment(expr, {
    resolveSegment: segmentResolver(all.filter((s) => s.id !== selfId)),
    self: self ? [self.id, self.name, input.name] : [input.name],
    // Text input: unknown or cyclic in_segment errors carry line and column.
    ...(typeof input.expression === 'string' ? { source: input.expression } : {}),
  });
  if (errors.length > 0) throw new SegmentSyntaxError(errors);
  if (all.some((s) => s.name === input.name && s.id !== selfId)) throw new SegmentConflictError(input.name);
  return { expr, all };
}

function newSegmentId(): string {
  return 'seg_' + Date.now().toString(36) + randomBytes(6).toString('hex');
}

/** Versions grow with time; the random low digits keep two writes in one ms apart. */
function nextVersion(): bigint {
  return BigInt(Date.now()) * 1000n + BigInt(randomBytes(2).readUInt16BE(0) % 1000);
}

async function write(ch: ClickHouse, appId: string, id: string, name: string, description: string, expression: unknown, deleted: boolean): Promise<void> {
  await ch.insert('segments', [
    {
      app_id: appId,
      segment_id: id,
      name,
      description,
      expression: JSON.stringify(expression),
      deleted: deleted ? 1 : 0,
      updated_at: Math.floor(Date.now() / 1000),
      version: nextVersion().toString(),
    },
  ]);
}

/** After a write, the earlier-created of two live segments with one name wins (ids sort by creation); the other backs out. */
async function enforceUniqueName(ch: ClickHouse, appId: string, id: string, name: string, undo: () => Promise<void>): Promise<void> {
  const rows = (await latestRows(ch, appId)).filter((r) => Number(r.cur_deleted) === 0 && r.cur_name === name);
  if (rows.length <= 1) return;
  const winner = rows.reduce((a, b) => (a.segment_id <= b.segment_id ? a : b));
  if (winner.segment_id !== id) {
    await undo();
    throw new SegmentConflictError(name);
  }
}

export async function createSegment(ch: ClickHouse, appId: string, input: SegmentInput): Promise<SegmentRecord> {
  const { expr } = await validated(ch, appId, input);
  const id = newSegmentId();
  const expression = toJson(expr);
  await write(ch, appId, id, input.name, input.description ?? '', expression, false);
  await enforceUniqueName(ch, appId, id, input.name, () => write(ch, appId, id, input.name, input.description ?? '', expression, true));
  const rec = await getSegment(ch, appId, id);
  if (!rec) throw new Error(`segment ${id} vanished after create`);
  return rec;
}

/** Replaces the segment `ref` (id or name). A rename is refused while other segments use the old name. */
export async function updateSegment(ch: ClickHouse, appId: string, ref: string, input: SegmentInput): Promise<SegmentRecord> {
  const all = await listSegments(ch, appId);
  const before = resolve(all, ref);
  if (!before) throw new SegmentNotFoundError(ref);
  const id = before.id;
  if (input.name !== before.name && !all.some((s) => s.id === before.name)) {
    const users = all.filter((s) => s.id !== id && refersTo(s.expr, [before.name]));
    if (users.length > 0) throw new SegmentInUseError(before.name, users.map((u) => u.name), 'rename');
  }
  const { expr } = await validated(ch, appId, input, id);
  await write(ch, appId, id, input.name, input.description ?? '', toJson(expr), false);
  await enforceUniqueName(ch, appId, id, input.name, () =>
    write(ch, appId, id, before.name, before.description, before.expression, false),
  );
  const rec = await getSegment(ch, appId, id);
  if (!rec) throw new Error(`segment ${id} vanished after update`);
  return rec;
}

/**
 * Deletes the segment `ref` (id or name). Refused while another live segment
 * refers to it by id or name: that one would stop evaluating.
 */
export async function deleteSegment(ch: ClickHouse, appId: string, ref: string): Promise<void> {
  const all = await listSegments(ch, appId);
  const target = resolve(all, ref);
  if (!target) throw new SegmentNotFoundError(ref);
  const users = all.filter((s) => s.id !== target.id && refersTo(s.expr, [target.id, target.name]));
  if (users.length > 0) throw new SegmentInUseError(target.name, users.map((u) => u.name), 'delete');
  await write(ch, appId, target.id, target.name, target.description, target.expression, true);
}

/** Does the expression name one of `refs` in an in_segment (directly)? */
export function refersTo(e: Expr, refs: readonly string[]): boolean {
  switch (e.kind) {
    case 'and':
    case 'or':
      return e.items.some((x) => refersTo(x, refs));
    case 'not':
      return refersTo(e.item, refs);
    case 'in_segment':
      return refs.includes(e.ref);
    default:
      return false;
  }
}
