// Tags: every add and remove is a row of user_tags; the current state of a
// (user, tag) is the row with the highest seq. An insert is visible to the next
// query, so a tag takes effect for segments at once.
import type { ClickHouse } from '../lib/clickhouse.ts';
import { sql, type Sql } from '../lib/sql.ts';
import { isWellFormedText } from '../lib/text.ts';

export const MAX_BULK_USERS = 100_000;
// Characters are code points, as for user_id in events (ingest/event-schema.ts),
// and ids must be well-formed: ClickHouse refuses a lone surrogate.
const TAG = /^[^\x00-\x1f\x7f]{1,128}$/u;

export class TagInputError extends Error {
  constructor(readonly errors: { path: string; message: string }[]) {
    super(errors.map((e) => `${e.path}: ${e.message}`).join('; '));
    this.name = 'TagInputError';
  }
}

// seq = milliseconds * 1000 (below 2^53, so a plain JSON number) + a per-process counter, never below the last one
// handed out: strictly increasing within a process; across processes it follows
// the clock, and the pid-derived start of the counter keeps two processes that
// write in the same millisecond from producing equal seqs.
let lastSeq = 0n;
const processSalt = BigInt(process.pid % 500);
/** Reserves `count` consecutive seqs and returns the first. */
export function nextSeqs(count = 1): bigint {
  const fromClock = BigInt(Date.now()) * 1000n + processSalt;
  const first = fromClock > lastSeq ? fromClock : lastSeq + 1n;
  lastSeq = first + BigInt(count) - 1n;
  return first;
}

function checkTag(tag: unknown, path = 'tag'): { path: string; message: string }[] {
  return typeof tag === 'string' && isWellFormedText(tag) && TAG.test(tag) ? [] : [{ path, message: 'a tag is 1..128 characters without control characters or lone surrogates' }];
}
function checkUser(u: unknown, path: string): { path: string; message: string }[] {
  if (typeof u === 'string' && isWellFormedText(u)) {
    const chars = [...u].length;
    if (chars >= 1 && chars <= 256) return [];
  }
  return [{ path, message: 'a user_id is a string of 1..256 characters without lone surrogates' }];
}

interface TagRow {
  app_id: string;
  user_id: string;
  tag: string;
  present: number;
  changed_at: number;
  seq: number;
}

async function write(ch: ClickHouse, appId: string, tag: string, userIds: readonly string[], present: boolean): Promise<void> {
  const first = nextSeqs(userIds.length);
  const changedAt = Math.floor(Date.now() / 1000);
  const rows: TagRow[] = userIds.map((user_id, i) => ({ app_id: appId, user_id, tag, present: present ? 1 : 0, changed_at: changedAt, seq: Number(first + BigInt(i)) }));
  await ch.insert('user_tags', rows as unknown as Record<string, unknown>[]);
}

/** Adds (present = true) or removes a tag of one user. */
export async function setTag(ch: ClickHouse, appId: string, userId: string, tag: string, present: boolean): Promise<void> {
  const errors = [...checkUser(userId, 'user_id'), ...checkTag(tag)];
  if (errors.length) throw new TagInputError(errors);
  await write(ch, appId, tag, [userId], present);
}

/** Adds a tag to up to 100,000 users in one insert. Returns how many distinct ids the request named (tagged now, whether or not they carried it before). */
export async function tagUsers(ch: ClickHouse, appId: string, tag: string, userIds: readonly string[], present = true): Promise<{ users: number }> {
  const errors = checkTag(tag);
  if (!Array.isArray(userIds)) errors.push({ path: 'user_ids', message: 'an array of user ids' });
  else {
    if (userIds.length > MAX_BULK_USERS) errors.push({ path: 'user_ids', message: `at most ${MAX_BULK_USERS} user ids` });
    for (let i = 0; i < userIds.length && errors.length < 20; i++) errors.push(...checkUser(userIds[i], `user_ids.${i}`));
  }
  if (errors.length) throw new TagInputError(errors);
  const unique = [...new Set(userIds)];
  if (unique.length > 0) await write(ch, appId, tag, unique, present);
  return { users: unique.length };
}

/**
 * Subquery with columns (user_id, tag) for the tags present now. Tags are not
 * events: a segment at any as_of reads the tags users carry now ("currently
 * carries", segments.md), so a change takes effect at once whatever the as_of.
 */
export function currentTagsSql(appId: string, opts: { usersIn?: Sql } = {}): Sql {
  const users = opts.usersIn ? sql` AND user_id IN ${opts.usersIn}` : sql``;
  return sql`SELECT user_id, tag FROM (
    SELECT user_id, tag, argMax(present, seq) AS present
    FROM user_tags
    WHERE app_id = ${appId}${users}
    GROUP BY user_id, tag
  ) WHERE present = 1`;
}

/** The current tags of one user, sorted. */
export async function userTags(ch: ClickHouse, appId: string, userId: string): Promise<string[]> {
  const rows = await ch.rows<{ tag: string }>(sql`SELECT tag FROM (${currentTagsSql(appId, { usersIn: sql`(${userId})` })}) ORDER BY tag`);
  return rows.map((r) => r.tag);
}
