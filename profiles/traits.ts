// Current traits: the latest change per (user, key) by (ts, event_id) at or
// before an instant; a removal (value_type 0) hides the key. Reused by the
// profile job and by the segment compiler, so both read traits the same way.
import { ident, join, raw, sql, type Sql } from '../lib/sql.ts';

export const TRAIT_TYPES = { removed: 0, string: 1, number: 2, boolean: 3 } as const;

/**
 * (ts, event_id) of a trait change folded into one string that orders the same
 * way: ts as 11 decimal digits (ts + 10^10; a DateTime is < 2^32 < 9 * 10^10)
 * followed by the event_id, so equal ts compare by the event_id's bytes.
 * 180_user_trait_values.sql stores it (as `last`) with this same expression.
 */
export const TRAIT_ORDER = raw(`concat(toString(toUInt64(ts) + 10000000000), event_id)`);

/**
 * The context traits (what SDKs send with every event), in key order:
 * 190_user_context_traits.sql keeps the latest change of each per user, and a
 * full run reads them from there (profiles/sql.ts contextTableSql).
 */
export const CONTEXT_TRAITS = ['app_version', 'country', 'locale', 'platform', 'timezone'] as const;

/** Whether a segment reading these trait keys reads context traits only (some, and no other). */
export function onlyContextTraits(keys: readonly string[]): boolean {
  return keys.length > 0 && keys.every((k) => (CONTEXT_TRAITS as readonly string[]).includes(k));
}

/**
 * The value and value_type of a change as 190_user_context_traits.sql packs
 * it (…, the value, its type as 1 digit, 10^9 + the value's length as 10
 * digits: read from the end); '' (no change) gives type 0. `name` prefixes
 * the aliases of the two lengths, computed once: select both expressions.
 */
export function unpackContextChange(packed: Sql, name: string): { value: Sql; type: Sql } {
  const [n, l] = [ident(`${name}_n`), ident(`${name}_l`)];
  return {
    value: sql`substring(${packed}, (length(${packed}) AS ${n}) - 10 - ((toUInt64OrZero(substring(${packed}, ${n} - 9, 10)) - 1000000000) AS ${l}), ${l})`,
    type: sql`toUInt8OrZero(substring(${packed}, ${n} - 10, 1))`,
  };
}

/** The least TRAIT_ORDER of a change after `asOf`: every change at or before it orders below. */
export function traitOrderAfter(asOf: Date): string {
  return String(Math.floor(asOf.getTime() / 1000) + 1 + 10_000_000_000);
}

/**
 * Users of the app with a change to a context trait after `asOf`, at most
 * `limit` + 1 (so a caller sees that there are more). Rows of
 * user_context_traits not merged yet are read as they are: any row with a
 * later change marks its user.
 */
export function contextIncompleteSql(appId: string, asOf: Date, limit: number): Sql {
  const bound = traitOrderAfter(asOf);
  return sql`SELECT DISTINCT user_id FROM user_context_traits
WHERE app_id = ${appId} AND (${join(CONTEXT_TRAITS.map((k) => sql`finalizeAggregation(${ident(k)}) >= ${bound}`), ' OR ')})
LIMIT ${limit + 1}`;
}

/** Subquery with columns (user_id, key, value, value_type) for the traits current at `asOf`. */
export function currentTraitsSql(appId: string, asOf: Date, opts: { usersIn?: Sql } = {}): Sql {
  const users = opts.usersIn ? sql` AND user_id IN ${opts.usersIn}` : sql``;
  return sql`SELECT user_id, key, value, value_type FROM (
    SELECT user_id, key, argMax(value, (ts, event_id)) AS value, argMax(value_type, (ts, event_id)) AS value_type
    FROM user_traits
    WHERE app_id = ${appId} AND ts <= ${asOf}${users}
    GROUP BY user_id, key
  ) WHERE value_type != 0`;
}

export type TraitValue = string | number | boolean;

/** A stored trait as its JSON value. */
export function typedTraitValue(value: string, type: number): TraitValue {
  if (type === TRAIT_TYPES.number) {
    const n = Number(value);
    return Number.isFinite(n) ? n : value;
  }
  if (type === TRAIT_TYPES.boolean) return value === 'true' || value === '1';
  return value;
}
