// Readable cluster names from a centroid's standout features, and continuity
// across retrains: clusters whose centroids barely moved keep their number and
// their name, so a segment on `cluster_label = 'lapsed browsers'` survives a retrain.

interface Side {
  adj: string;
  noun?: string;
}

interface Words {
  /**
   * Features of one group below average say the same thing ("low-spending" and
   * "non-buying"); a name uses only one of them.
   */
  group: string;
  /** Somewhat above the average (STANDOUT <= z < STRONG). */
  high: Side;
  /** Far above the average (z >= STRONG); defaults to `high`. */
  veryHigh?: Side;
  low: Side;
  veryLow?: Side;
}

// Two tiers so that a moderately-above-average cluster ("occasional customers")
// and an extreme one ("big-spending repeat buyers") do not get the same words in
// an app where most users never buy.
const VOCABULARY: Record<string, Words> = {
  recency: { group: 'recency', high: { adj: 'lapsed' }, veryHigh: { adj: 'long-lapsed' }, low: { adj: 'recently active' } },
  frequency: { group: 'buying', high: { adj: 'occasional', noun: 'buyers' }, veryHigh: { adj: 'frequent', noun: 'repeat buyers' }, low: { adj: 'non-buying' } },
  monetary: { group: 'buying', high: { adj: 'paying', noun: 'customers' }, veryHigh: { adj: 'big-spending', noun: 'high spenders' }, low: { adj: 'low-spending' } },
  events_30d: { group: 'activity', high: { adj: 'engaged' }, veryHigh: { adj: 'highly engaged', noun: 'power users' }, low: { adj: 'quiet' }, veryLow: { adj: 'dormant' } },
  active_days_30d: { group: 'activity', high: { adj: 'regular' }, veryHigh: { adj: 'daily' }, low: { adj: 'infrequent' } },
  view_to_purchase: { group: 'browsing', high: { adj: 'browsing', noun: 'browsers' }, veryHigh: { adj: 'window-shopping', noun: 'window shoppers' }, low: { adj: 'low-browsing' } },
  events_7d: { group: 'activity', high: { adj: 'active this week' }, low: { adj: 'idle this week' } },
  events_total: { group: 'activity', high: { adj: 'heavy' }, low: { adj: 'light' } },
  views_30d: { group: 'browsing', high: { adj: 'view-heavy' }, low: { adj: 'few-view' } },
  clicks_30d: { group: 'activity', high: { adj: 'clicking', noun: 'clickers' }, low: { adj: 'non-clicking' } },
  purchases_30d: { group: 'buying', high: { adj: 'recently buying', noun: 'active buyers' }, low: { adj: 'not buying lately' } },
  revenue_30d: { group: 'buying', high: { adj: 'recently spending', noun: 'recent spenders' }, low: { adj: 'not spending lately' } },
  avg_order_value: { group: 'buying', high: { adj: 'big-basket' }, low: { adj: 'small-basket' } },
  tenure_days: { group: 'tenure', high: { adj: 'long-standing' }, low: { adj: 'new', noun: 'newcomers' } },
};

/** |z| from which the stronger words apply. */
export const STRONG = 1.5;

function groupOf(feature: string): string {
  return VOCABULARY[feature]?.group ?? feature;
}

function side(feature: string, z: number): Side {
  const v = VOCABULARY[feature];
  if (v) {
    if (z > 0) return z >= STRONG ? (v.veryHigh ?? v.high) : v.high;
    return z <= -STRONG ? (v.veryLow ?? v.low) : v.low;
  }
  return { adj: `${z > 0 ? 'high' : 'low'}-${feature.replace(/_/g, '-')}` };
}

/** |z| (in standard deviations from the app's mean) from which a feature "stands out". */
export const STANDOUT = 0.5;
/** A feature is a noun candidate only among this many most standout features. */
const NOUN_RANK = 3;

/**
 * Names one centroid (standardised units): the most standout feature that has a
 * noun gives the noun ("high spenders", "browsers", else "users"), the next most
 * standout features give adjectives ("frequent", "lapsed").
 */
export function nameCentroid(features: readonly string[], z: readonly number[], adjectives = 1): string {
  const ranked = features
    .map((f, j) => ({ f, z: z[j]!, j }))
    .filter((x) => Math.abs(x.z) >= STANDOUT)
    .sort((a, b) => Math.abs(b.z) - Math.abs(a.z) || a.j - b.j);
  if (ranked.length === 0) return 'typical users';
  const nounAt = ranked.slice(0, NOUN_RANK).findIndex((x) => side(x.f, x.z).noun !== undefined);
  const noun = nounAt >= 0 ? side(ranked[nounAt]!.f, ranked[nounAt]!.z).noun! : 'users';
  // Without a noun of its own ("users"), a name needs one more adjective to say something.
  const count = nounAt >= 0 ? adjectives : adjectives + 1;
  const lowGroups = new Set<string>();
  if (nounAt >= 0 && ranked[nounAt]!.z < 0) lowGroups.add(groupOf(ranked[nounAt]!.f));
  const adjs: string[] = [];
  for (const [i, x] of ranked.entries()) {
    if (adjs.length >= count) break;
    if (i === nounAt) continue;
    if (x.z < 0) {
      if (lowGroups.has(groupOf(x.f))) continue;
      lowGroups.add(groupOf(x.f));
    }
    adjs.push(side(x.f, x.z).adj);
  }
  return [...adjs, noun].join(' ');
}

/**
 * Names all clusters, distinct from each other and from `taken`: a clash is
 * resolved by adding adjectives from further standout features, then by a number.
 */
export function nameCentroids(features: readonly string[], centroids: readonly (readonly number[])[], taken: ReadonlySet<string> = new Set()): string[] {
  const names = centroids.map((z) => nameCentroid(features, z));
  for (let extra = 2; extra <= features.length; extra++) {
    const clashing = clashes(names, taken);
    if (clashing.size === 0) return names;
    for (const i of clashing) names[i] = nameCentroid(features, centroids[i]!, extra);
  }
  const used = new Set(taken);
  return names.map((n) => {
    let name = n;
    for (let i = 2; used.has(name); i++) name = `${n} ${i}`;
    used.add(name);
    return name;
  });
}

function clashes(names: readonly string[], taken: ReadonlySet<string>): Set<number> {
  const out = new Set<number>();
  names.forEach((n, i) => {
    if (taken.has(n)) out.add(i);
    names.forEach((m, j) => {
      if (i !== j && n === m) out.add(i);
    });
  });
  return out;
}

/**
 * Minimum-cost assignment (Hungarian algorithm with potentials, O(n²m)) of the
 * rows of an n×m cost matrix, n ≤ m: returns the column of every row.
 */
export function hungarian(cost: readonly (readonly number[])[]): number[] {
  const n = cost.length;
  const m = n > 0 ? cost[0]!.length : 0;
  if (n > m) throw new RangeError('hungarian: more rows than columns');
  const u = new Float64Array(n + 1);
  const v = new Float64Array(m + 1);
  const p = new Int32Array(m + 1); // p[col] = row (1-based), 0 = free
  const way = new Int32Array(m + 1);
  for (let i = 1; i <= n; i++) {
    p[0] = i;
    let j0 = 0;
    const minv = new Float64Array(m + 1).fill(Infinity);
    const used = new Uint8Array(m + 1);
    do {
      used[j0] = 1;
      const i0 = p[j0]!;
      let delta = Infinity;
      let j1 = 0;
      for (let j = 1; j <= m; j++) {
        if (used[j]) continue;
        const cur = cost[i0 - 1]![j - 1]! - u[i0]! - v[j]!;
        if (cur < minv[j]!) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j]! < delta) {
          delta = minv[j]!;
          j1 = j;
        }
      }
      for (let j = 0; j <= m; j++) {
        if (used[j]) {
          u[p[j]!]! += delta;
          v[j]! -= delta;
        } else minv[j]! -= delta;
      }
      j0 = j1;
    } while (p[j0] !== 0);
    do {
      const j1 = way[j0]!;
      p[j0] = p[j1]!;
      j0 = j1;
    } while (j0 !== 0);
  }
  const rowToCol = new Array<number>(n).fill(-1);
  for (let j = 1; j <= m; j++) if (p[j]! > 0) rowToCol[p[j]! - 1] = j - 1;
  return rowToCol;
}

function distance(a: readonly number[], b: readonly number[]): number {
  let s = 0;
  for (let j = 0; j < a.length; j++) s += (a[j]! - b[j]!) ** 2;
  return Math.sqrt(s);
}

/** Centroids closer than this (Euclidean, standardised units) are "the same cluster" across retrains. */
export const MATCH_DISTANCE = 0.75;

/**
 * Pairs new centroids with the previous model's (both in the new model's
 * standardised units) by minimum total distance. Returns, for each new centroid,
 * the index of its previous counterpart, or -1 when none lies within `maxDistance`.
 */
export function matchCentroids(previous: readonly (readonly number[])[], current: readonly (readonly number[])[], maxDistance = MATCH_DISTANCE): number[] {
  const out = new Array<number>(current.length).fill(-1);
  if (previous.length === 0 || current.length === 0) return out;
  const transpose = current.length > previous.length;
  const rows = transpose ? previous : current;
  const cols = transpose ? current : previous;
  const cost = rows.map((r) => cols.map((c) => distance(r, c)));
  const assignment = hungarian(cost);
  assignment.forEach((col, row) => {
    if (col < 0 || cost[row]![col]! > maxDistance) return;
    if (transpose) out[col] = row;
    else out[row] = col;
  });
  return out;
}

export interface PreviousClusters {
  /** The previous model's centroids, mapped into the new model's standardised units. */
  centroids: readonly (readonly number[])[];
  labels: readonly string[];
}

export interface ClusterIdentity {
  /** order[i] = index (0-based) of the fitted cluster that becomes cluster number i+1. */
  order: number[];
  /** Label of cluster number i+1. */
  labels: string[];
  /** Clusters (by new number, 1-based) that inherited their label from the previous model. */
  carried: number[];
}

/**
 * Numbers and names fitted clusters. Without a previous model: by size, largest
 * first. With one: a cluster matched to a previous centroid takes its label and,
 * when that number still exists, its number; the others are numbered by size and named fresh.
 */
export function identifyClusters(features: readonly string[], centroids: readonly (readonly number[])[], sizes: readonly number[], previous?: PreviousClusters): ClusterIdentity {
  const k = centroids.length;
  const match = previous ? matchCentroids(previous.centroids, centroids) : new Array<number>(k).fill(-1);
  const order = new Array<number>(k).fill(-1);
  const inherited = new Map<number, string>();
  match.forEach((prev, i) => {
    if (prev < 0) return;
    inherited.set(i, previous!.labels[prev]!);
    if (prev < k) order[prev] = i;
  });
  const placed = new Set(order.filter((i) => i >= 0));
  const rest = Array.from({ length: k }, (_, i) => i)
    .filter((i) => !placed.has(i))
    .sort((a, b) => sizes[b]! - sizes[a]! || a - b);
  for (let slot = 0; slot < k && rest.length > 0; slot++) if (order[slot] === -1) order[slot] = rest.shift()!;

  const taken = new Set(inherited.values());
  const freshIdx = order.filter((i) => !inherited.has(i));
  const freshNames = nameCentroids(
    features,
    freshIdx.map((i) => centroids[i]!),
    taken,
  );
  const fresh = new Map(freshIdx.map((i, n) => [i, freshNames[n]!]));
  const labels = order.map((i) => inherited.get(i) ?? fresh.get(i)!);
  const carried = order.flatMap((i, slot) => (inherited.has(i) ? [slot + 1] : []));
  return { order, labels, carried };
}
