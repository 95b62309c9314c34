// Current traits: the latest change per (user, key) by (ts, event_id) at or
// before an instant; a removal (value_type 0) hides the key. Reused by the
// profile job and by the segment compiler, so both read traits the same way.
import { raw, sql, type Sql } from '../lib/sql.ts';

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

/** The least TRAIT_ORDER of a change after `asOf`: every change at or before it orders below. */
export function traitOrderAfter(asOf: Date): string {
  return String(Math.floor(asOf.getTime() / 1000) + 1 + 10_000_000_000);
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
