// The built-in profile fields a segment can compare by name
// (events-and-profiles.md §2). `traits` and `tags` are profile fields too, but
// not comparable ones: a trait is addressed as `traits.<key>`, a tag by `tag("…")`.

export type FieldType = 'string' | 'number' | 'timestamp';

export interface ProfileField {
  name: string;
  type: FieldType;
  /** True when the profile can hold no value (the field then matches only `is null`). */
  nullable: boolean;
}

const field = (name: string, type: FieldType, nullable = false): ProfileField => ({ name, type, nullable });

export const PROFILE_FIELDS: readonly ProfileField[] = [
  field('user_id', 'string'),
  field('first_seen', 'timestamp'),
  field('last_seen', 'timestamp'),
  field('events_total', 'number'),
  field('events_7d', 'number'),
  field('events_30d', 'number'),
  field('active_days_30d', 'number'),
  field('views_30d', 'number'),
  field('clicks_30d', 'number'),
  field('purchases_30d', 'number'),
  field('purchases_total', 'number'),
  field('revenue_total', 'number'),
  field('revenue_30d', 'number'),
  field('avg_order_value', 'number', true),
  field('last_purchase_at', 'timestamp', true),
  field('recency_days', 'number', true),
  field('r_score', 'number', true),
  field('f_score', 'number', true),
  field('m_score', 'number', true),
  field('rfm_segment', 'string', true),
  field('top_category', 'string', true),
  field('best_hour', 'number', true),
  // The current trait of the same name, stored as text in the profile.
  field('platform', 'string', true),
  field('country', 'string', true),
  field('timezone', 'string', true),
  field('locale', 'string', true),
  field('app_version', 'string', true),
  field('cluster', 'number', true),
  field('cluster_label', 'string', true),
  field('random_bucket', 'number'),
];

const BY_NAME = new Map(PROFILE_FIELDS.map((f) => [f.name, f]));

/**
 * Built-in fields that are the user's current trait of the same name (read live,
 * as `traits.<name>`). Identify can store any JSON scalar there, so comparisons
 * follow the value rules of traits, not the declared type.
 */
export const TRAIT_BACKED_FIELDS: ReadonlySet<string> = new Set(['platform', 'country', 'timezone', 'locale', 'app_version']);

/** Profile fields that exist but cannot be compared with a literal. */
export const NON_COMPARABLE_FIELDS: ReadonlySet<string> = new Set(['traits', 'tags']);

export function profileField(name: string): ProfileField | undefined {
  return BY_NAME.get(name);
}

export const TRAITS_PREFIX = 'traits.';

export type AttrTarget =
  | { kind: 'field'; name: string; type: FieldType; nullable: boolean }
  | { kind: 'trait'; key: string };

/**
 * What an `attr` path names: `traits.<key>` is always a trait; a bare name is the
 * built-in field of that name (exact, case-sensitive) if there is one, else a trait.
 */
export function resolveAttr(path: string): AttrTarget {
  if (path.startsWith(TRAITS_PREFIX)) return { kind: 'trait', key: path.slice(TRAITS_PREFIX.length) };
  const f = BY_NAME.get(path);
  if (f) return { kind: 'field', name: f.name, type: f.type, nullable: f.nullable };
  return { kind: 'trait', key: path };
}
