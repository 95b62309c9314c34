// Clustering features: what each one is (a SQL expression over a `profiles`
// row), how it is transformed (log1p where skewed, then z-score), and the
// cluster model that records it all, so that assignment — in process or in
// ClickHouse — applies exactly the transform training used.
import { mean, sampleSkewness, standardDeviation } from 'simple-statistics';
import { raw, type Sql } from '../lib/sql.ts';
import type { KSelection } from './kmeans.ts';

export interface FeatureDef {
  name: string;
  description: string;
  /** Float64 SQL over the columns of a `profiles` row (sql/migrations/005_profiles.sql). Program text only. */
  sql: Sql;
  /** Values are never negative, so log1p is available when the distribution is skewed. */
  nonNegative: boolean;
}

const DAY = 86400;

function def(name: string, description: string, expression: string, nonNegative = true): FeatureDef {
  return { name, description, sql: raw(expression), nonNegative };
}

// Days are fractional: dividing seconds keeps more information than whole days
// and needs no rounding rule shared between SQL and JS.
export const FEATURES: Readonly<Record<string, FeatureDef>> = {
  recency: def('recency', 'days since the last event (track or identify)', `greatest(0., (toFloat64(toUInt32(as_of)) - toFloat64(toUInt32(last_seen))) / ${DAY})`),
  frequency: def('frequency', 'purchases, all time', 'toFloat64(purchases_total)'),
  monetary: def('monetary', 'revenue, all time', 'greatest(0., toFloat64(revenue_total))'),
  events_30d: def('events_30d', 'track events in the last 30 days', 'toFloat64(events_30d)'),
  active_days_30d: def('active_days_30d', 'distinct active days in the last 30 days', 'toFloat64(active_days_30d)'),
  view_to_purchase: def('view_to_purchase', 'views per purchase in the last 30 days: views_30d / (purchases_30d + 1)', 'toFloat64(views_30d) / (toFloat64(purchases_30d) + 1)'),
  events_7d: def('events_7d', 'track events in the last 7 days', 'toFloat64(events_7d)'),
  events_total: def('events_total', 'track events, all time', 'toFloat64(events_total)'),
  views_30d: def('views_30d', 'view events in the last 30 days', 'toFloat64(views_30d)'),
  clicks_30d: def('clicks_30d', 'click events in the last 30 days', 'toFloat64(clicks_30d)'),
  purchases_30d: def('purchases_30d', 'purchases in the last 30 days', 'toFloat64(purchases_30d)'),
  revenue_30d: def('revenue_30d', 'revenue in the last 30 days', 'greatest(0., toFloat64(revenue_30d))'),
  avg_order_value: def('avg_order_value', 'average order value (0 without purchases)', 'greatest(0., ifNull(toFloat64(avg_order_value), 0.))'),
  tenure_days: def('tenure_days', 'days since the first event', `greatest(0., (toFloat64(toUInt32(as_of)) - toFloat64(toUInt32(first_seen))) / ${DAY})`),
};

export const DEFAULT_FEATURES: readonly string[] = ['recency', 'frequency', 'monetary', 'events_30d', 'active_days_30d', 'view_to_purchase'];

export const FEATURE_NAMES = Object.keys(FEATURES) as readonly string[];

/** Validates a requested feature list; errors name the offending index. */
export function resolveFeatures(names: readonly string[] | undefined): { features: FeatureDef[] } | { errors: { path: string; message: string }[] } {
  const list = names ?? DEFAULT_FEATURES;
  const errors: { path: string; message: string }[] = [];
  if (list.length === 0) errors.push({ path: 'features', message: 'at least one feature is required' });
  const seen = new Set<string>();
  list.forEach((n, i) => {
    if (!Object.hasOwn(FEATURES, n)) errors.push({ path: `features.${i}`, message: `unknown feature ${JSON.stringify(n)}; known: ${FEATURE_NAMES.join(', ')}` });
    else if (seen.has(n)) errors.push({ path: `features.${i}`, message: `duplicate feature ${JSON.stringify(n)}` });
    seen.add(n);
  });
  if (errors.length > 0) return { errors };
  return { features: list.map((n) => FEATURES[n]!) };
}

/** How one feature goes from its own units to the standardised space: z = (f(x) - mean) / sd, f = log1p or identity. */
export interface FeatureTransform {
  name: string;
  log1p: boolean;
  mean: number;
  sd: number;
  /** Sample skewness of the raw values, the reason for `log1p`. */
  skewness: number;
}

/** Above this sample skewness a non-negative feature is log-transformed (|skew| > 1 is the usual "highly skewed"). */
export const SKEW_THRESHOLD = 1;

// Math.log(1 + x), not Math.log1p: ClickHouse 18.16 has no log1p, and the SQL
// must compute the very same doubles as the process for assignments to agree.
function forward(t: FeatureTransform, x: number): number {
  return t.log1p ? Math.log(1 + x) : x;
}

/** Fits the transform of every column of a raw matrix (n rows of d features, row-major). */
export function fitTransform(features: readonly FeatureDef[], rawValues: Float64Array, n: number): FeatureTransform[] {
  const d = features.length;
  return features.map((f, j) => {
    const col = new Array<number>(n);
    for (let i = 0; i < n; i++) col[i] = rawValues[i * d + j]!;
    const skewness = n >= 3 && standardDeviation(col) > 0 ? sampleSkewness(col) : 0;
    const log1p = f.nonNegative && skewness > SKEW_THRESHOLD;
    const t = log1p ? col.map((x) => Math.log(1 + x)) : col;
    const m = n > 0 ? mean(t) : 0;
    const sd = n > 0 ? standardDeviation(t) : 0;
    // A constant feature carries no information; sd 1 keeps it at 0 instead of dividing by zero.
    return { name: f.name, log1p, mean: m, sd: sd > 0 ? sd : 1, skewness };
  });
}

/** Raw feature matrix → standardised matrix (same shape). */
export function applyTransform(transform: readonly FeatureTransform[], rawValues: Float64Array): Float64Array {
  const d = transform.length;
  const out = new Float64Array(rawValues.length);
  for (let i = 0; i < rawValues.length; i += d) {
    for (let j = 0; j < d; j++) {
      const t = transform[j]!;
      out[i + j] = (forward(t, rawValues[i + j]!) - t.mean) / t.sd;
    }
  }
  return out;
}

/** Standardised point → the features' own units (log features: expm1, the point's "typical" raw value). */
export function invertPoint(transform: readonly FeatureTransform[], z: readonly number[]): number[] {
  return transform.map((t, j) => {
    const y = z[j]! * t.sd + t.mean;
    return t.log1p ? Math.expm1(y) : y;
  });
}

/** One stored model version: everything needed to assign users and explain the clusters. */
export interface ClusterModel {
  app_id: string;
  version: number;
  created_at: string;
  profile_run_id: string;
  as_of: string;
  k: number;
  /** Feature names, in column order of the centroids. */
  features: string[];
  transform: FeatureTransform[];
  /** Cluster c (1-based) is row c-1. In the features' own units. */
  centroids: number[][];
  /** The same centroids in standardised units: what assignment measures distance to. */
  centroids_standardised: number[][];
  labels: string[];
  /** Users assigned to each cluster (all users of the profile run). */
  sizes: number[];
  sample_size: number;
  sample_sizes: number[];
  /** Within-cluster sum of squares on the standardised sample. */
  inertia: number;
  /** Mean silhouette on a sample of the training sample. */
  silhouette: number;
  /** Silhouette per candidate k when k was chosen automatically. */
  k_selection: KSelection[] | null;
  seed: number;
  restarts: number;
  engine: string;
}
