// k-means training: seeded k-means++ initialisation, restarts keeping the best
// inertia, silhouette on a sample, and automatic choice of k.
//
// Two engines:
// - 'native' (default): greedy k-means++ and Hamerly-accelerated Lloyd on a
//   row-major Float64Array. Hamerly's bounds skip most point-centroid distance
//   computations once centroids settle, and yield exactly Lloyd's iterates.
// - 'ml-kmeans': the ml-kmeans package (kmeans++ init + Lloyd on number[][]).
//   Kept as the reference implementation and measured in bench/clusters.ts; its
//   init allocates a row per distance and its loop calls a distance function per
//   pair, which made it the bottleneck on 200k-row samples (see the benchmark).
import { kmeans as mlKmeans } from 'ml-kmeans';

/** n points of dimension d, row-major. */
export interface Points {
  n: number;
  d: number;
  values: Float64Array;
}

export type Engine = 'native' | 'ml-kmeans';

export interface FitOptions {
  seed?: number;
  /** Independent k-means++ starts; the one with the lowest inertia wins. */
  restarts?: number;
  maxIterations?: number;
  engine?: Engine;
}

export interface KMeansFit {
  k: number;
  /** k*d, row-major. */
  centroids: Float64Array;
  /** Cluster index 0..k-1 of every point. */
  labels: Int32Array;
  sizes: number[];
  /** Total within-cluster sum of squared distances. */
  inertia: number;
  iterations: number;
  converged: boolean;
  /** Inertia of every restart, in order (for diagnostics and the benchmark). */
  restartInertias: number[];
}

export interface KSelection {
  k: number;
  silhouette: number;
  inertia: number;
}

export interface AutoKOptions extends FitOptions {
  kMin?: number;
  kMax?: number;
  /** Points the silhouette is computed on (exact silhouette is O(m^2)). */
  silhouetteSample?: number;
  /** Candidate k values are fitted on at most this many points; the chosen k is then refitted on all. */
  selectionSample?: number;
  /** Called after each candidate k (and the final refit) with the fraction of the work done. */
  onProgress?: (fraction: number) => void;
}

export interface AutoKResult {
  fit: KMeansFit;
  silhouette: number;
  scores: KSelection[];
}

export const DEFAULT_RESTARTS = 8;
export const DEFAULT_MAX_ITERATIONS = 300;
export const DEFAULT_SILHOUETTE_SAMPLE = 4000;
export const DEFAULT_SELECTION_SAMPLE = 20_000;

export function pointsFromRows(rows: readonly (readonly number[])[]): Points {
  const n = rows.length;
  if (n === 0) return { n: 0, d: 0, values: new Float64Array(0) };
  const d = rows[0]!.length;
  const values = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    const r = rows[i]!;
    if (r.length !== d) throw new RangeError(`row ${i} has ${r.length} values, expected ${d}`);
    for (let j = 0; j < d; j++) values[i * d + j] = r[j]!;
  }
  return { n, d, values };
}

export function rowsOf(values: Float64Array, d: number): number[][] {
  const rows: number[][] = [];
  for (let i = 0; i < values.length; i += d) rows.push(Array.from(values.subarray(i, i + d)));
  return rows;
}

/** mulberry32: small, fast, good enough for sampling; a fixed seed gives a fixed stream. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Derives independent seeds for restarts from one user seed (splitmix-style mixing). */
export function deriveSeed(seed: number, index: number): number {
  let z = (seed + Math.imul(index + 1, 0x9e3779b9)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** Indices of a uniform sample without replacement (partial Fisher-Yates), sorted. */
export function sampleIndices(n: number, m: number, seed: number): Int32Array {
  if (m >= n) return Int32Array.from({ length: n }, (_, i) => i);
  const rand = seededRandom(seed);
  const idx = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < m; i++) {
    const j = i + Math.floor(rand() * (n - i));
    const t = idx[i]!;
    idx[i] = idx[j]!;
    idx[j] = t;
  }
  return idx.slice(0, m).sort();
}

export function subset(X: Points, indices: Int32Array): Points {
  const { d } = X;
  const values = new Float64Array(indices.length * d);
  for (let i = 0; i < indices.length; i++) values.set(X.values.subarray(indices[i]! * d, indices[i]! * d + d), i * d);
  return { n: indices.length, d, values };
}

function sqDist(a: Float64Array, ai: number, b: Float64Array, bi: number, d: number): number {
  let s = 0;
  for (let j = 0; j < d; j++) {
    const t = a[ai + j]! - b[bi + j]!;
    s += t * t;
  }
  return s;
}

/**
 * Greedy k-means++ (Arthur & Vassilvitskii; the variant scikit-learn uses): each
 * new centre is the best of 2+ln(k) candidates drawn with probability
 * proportional to D(x)^2, which makes a bad draw much less likely than plain k-means++.
 */
export function kmeansPlusPlus(X: Points, k: number, rand: () => number): Float64Array {
  const { n, d, values } = X;
  const centers = new Float64Array(k * d);
  const trials = 2 + Math.floor(Math.log(k));
  const first = Math.floor(rand() * n);
  centers.set(values.subarray(first * d, first * d + d), 0);
  const closest = new Float64Array(n);
  let pot = 0;
  for (let i = 0; i < n; i++) {
    closest[i] = sqDist(values, i * d, centers, 0, d);
    pot += closest[i]!;
  }
  const candidateDist = new Float64Array(n);
  const bestDist = new Float64Array(n);
  for (let c = 1; c < k; c++) {
    let bestPot = Infinity;
    let bestIdx = -1;
    for (let t = 0; t < trials; t++) {
      const idx = pot > 0 ? drawWeighted(closest, pot, rand()) : Math.floor(rand() * n);
      let newPot = 0;
      for (let i = 0; i < n; i++) {
        const dd = Math.min(closest[i]!, sqDist(values, i * d, values, idx * d, d));
        candidateDist[i] = dd;
        newPot += dd;
      }
      if (newPot < bestPot) {
        bestPot = newPot;
        bestIdx = idx;
        bestDist.set(candidateDist);
      }
    }
    centers.set(values.subarray(bestIdx * d, bestIdx * d + d), c * d);
    closest.set(bestDist);
    pot = bestPot;
  }
  return centers;
}

function drawWeighted(weights: Float64Array, total: number, u: number): number {
  let target = u * total;
  for (let i = 0; i < weights.length; i++) {
    target -= weights[i]!;
    if (target < 0) return i;
  }
  // Rounding left a sliver: take the last point with weight.
  for (let i = weights.length - 1; i >= 0; i--) if (weights[i]! > 0) return i;
  return weights.length - 1;
}

/** Nearest centroid (first on ties) of every point. */
export function assignNearest(X: Points, centroids: Float64Array, k: number): Int32Array {
  const { n, d, values } = X;
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) labels[i] = nearest(values, i * d, centroids, k, d);
  return labels;
}

export function nearest(values: Float64Array, offset: number, centroids: Float64Array, k: number, d: number): number {
  let best = 0;
  let bestD = Infinity;
  for (let c = 0; c < k; c++) {
    const dd = sqDist(values, offset, centroids, c * d, d);
    if (dd < bestD) {
      bestD = dd;
      best = c;
    }
  }
  return best;
}

export function inertiaOf(X: Points, centroids: Float64Array, labels: Int32Array): number {
  const { n, d, values } = X;
  let s = 0;
  for (let i = 0; i < n; i++) s += sqDist(values, i * d, centroids, labels[i]! * d, d);
  return s;
}

function sizesOf(labels: Int32Array, k: number): number[] {
  const sizes = new Array<number>(k).fill(0);
  for (const l of labels) sizes[l]! += 1;
  return sizes;
}

/**
 * Lloyd's algorithm with Hamerly's bounds: per point an upper bound on the
 * distance to its centre and a lower bound on the distance to any other centre.
 * A point is only rescanned when the bounds cannot prove its assignment. Runs
 * until no assignment changes (a true local minimum) or maxIterations.
 */
export function lloydHamerly(
  X: Points,
  init: Float64Array,
  k: number,
  maxIterations = DEFAULT_MAX_ITERATIONS,
): { centroids: Float64Array; labels: Int32Array; iterations: number; converged: boolean } {
  const { n, d, values } = X;
  const centers = Float64Array.from(init);
  const labels = new Int32Array(n);
  const upper = new Float64Array(n);
  const lower = new Float64Array(n);
  const sums = new Float64Array(k * d);
  const counts = new Float64Array(k);
  const half = new Float64Array(k);
  const moved = new Float64Array(k);
  const old = new Float64Array(k * d);

  // Initial full assignment.
  for (let i = 0; i < n; i++) {
    const o = i * d;
    let b1 = Infinity;
    let b2 = Infinity;
    let a = 0;
    for (let c = 0; c < k; c++) {
      const dd = sqDist(values, o, centers, c * d, d);
      if (dd < b1) {
        b2 = b1;
        b1 = dd;
        a = c;
      } else if (dd < b2) b2 = dd;
    }
    labels[i] = a;
    upper[i] = Math.sqrt(b1);
    lower[i] = Math.sqrt(b2);
    counts[a]! += 1;
    for (let j = 0; j < d; j++) sums[a * d + j]! += values[o + j]!;
  }

  let iterations = 0;
  let converged = false;
  while (iterations < maxIterations) {
    iterations++;
    // Move centres to their means; an emptied cluster takes the point farthest from its centre.
    old.set(centers);
    for (let c = 0; c < k; c++) {
      if (counts[c]! > 0) {
        for (let j = 0; j < d; j++) centers[c * d + j] = sums[c * d + j]! / counts[c]!;
      } else {
        relocateEmpty(X, c, centers, labels, upper, lower, sums, counts);
      }
    }
    let maxMove = 0;
    let maxIdx = -1;
    let secondMove = 0;
    for (let c = 0; c < k; c++) {
      const m = Math.sqrt(sqDist(centers, c * d, old, c * d, d));
      moved[c] = m;
      if (m > maxMove) {
        secondMove = maxMove;
        maxMove = m;
        maxIdx = c;
      } else if (m > secondMove) secondMove = m;
    }
    for (let i = 0; i < n; i++) {
      const a = labels[i]!;
      upper[i]! += moved[a]!;
      lower[i]! -= a === maxIdx ? secondMove : maxMove;
    }
    for (let c = 0; c < k; c++) {
      let m = Infinity;
      for (let c2 = 0; c2 < k; c2++) {
        if (c2 === c) continue;
        const dd = sqDist(centers, c * d, centers, c2 * d, d);
        if (dd < m) m = dd;
      }
      half[c] = Math.sqrt(m) / 2;
    }

    let changes = 0;
    for (let i = 0; i < n; i++) {
      const a = labels[i]!;
      const bound = Math.max(half[a]!, lower[i]!);
      if (upper[i]! <= bound) continue;
      const o = i * d;
      upper[i] = Math.sqrt(sqDist(values, o, centers, a * d, d));
      if (upper[i]! <= bound) continue;
      let b1 = Infinity;
      let b2 = Infinity;
      let best = 0;
      for (let c = 0; c < k; c++) {
        const dd = sqDist(values, o, centers, c * d, d);
        if (dd < b1) {
          b2 = b1;
          b1 = dd;
          best = c;
        } else if (dd < b2) b2 = dd;
      }
      // Keep the current centre on exact ties so a point cannot oscillate.
      if (best !== a && sqDist(values, o, centers, a * d, d) <= b1) best = a;
      upper[i] = Math.sqrt(b1);
      lower[i] = Math.sqrt(b2);
      if (best !== a) {
        upper[i] = Math.sqrt(sqDist(values, o, centers, best * d, d));
        changes++;
        labels[i] = best;
        counts[a]! -= 1;
        counts[best]! += 1;
        for (let j = 0; j < d; j++) {
          sums[a * d + j]! -= values[o + j]!;
          sums[best * d + j]! += values[o + j]!;
        }
      }
    }
    if (changes === 0) {
      converged = true;
      break;
    }
  }
  // Final centres are exact means (incremental sums accumulate rounding).
  recomputeMeans(X, labels, centers, k);
  return { centroids: centers, labels, iterations, converged };
}

function recomputeMeans(X: Points, labels: Int32Array, centers: Float64Array, k: number): void {
  const { n, d, values } = X;
  const sums = new Float64Array(k * d);
  const counts = new Float64Array(k);
  for (let i = 0; i < n; i++) {
    const a = labels[i]!;
    counts[a]! += 1;
    for (let j = 0; j < d; j++) sums[a * d + j]! += values[i * d + j]!;
  }
  for (let c = 0; c < k; c++) {
    if (counts[c]! === 0) continue;
    for (let j = 0; j < d; j++) centers[c * d + j] = sums[c * d + j]! / counts[c]!;
  }
}

function relocateEmpty(
  X: Points,
  c: number,
  centers: Float64Array,
  labels: Int32Array,
  upper: Float64Array,
  lower: Float64Array,
  sums: Float64Array,
  counts: Float64Array,
): void {
  const { n, d, values } = X;
  let far = -1;
  let farD = -1;
  for (let i = 0; i < n; i++) {
    if (counts[labels[i]!]! <= 1) continue;
    const dd = sqDist(values, i * d, centers, labels[i]! * d, d);
    if (dd > farD) {
      farD = dd;
      far = i;
    }
  }
  if (far < 0) return;
  const from = labels[far]!;
  const o = far * d;
  counts[from]! -= 1;
  for (let j = 0; j < d; j++) sums[from * d + j]! -= values[o + j]!;
  labels[far] = c;
  counts[c] = 1;
  for (let j = 0; j < d; j++) {
    sums[c * d + j] = values[o + j]!;
    centers[c * d + j] = values[o + j]!;
  }
  upper[far] = 0;
  // Bounds were proven against the old centres; force every point to be rechecked.
  lower.fill(0);
}

/**
 * The work as a generator that pauses after every restart and candidate k:
 * the sync entry points run it straight through, the async ones give the event
 * loop a turn at each pause, so a job inside the API server does not freeze it.
 */
type Steps<T> = Generator<void, T, void>;

function runSync<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

async function runAsync<T>(steps: Steps<T>): Promise<T> {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/** k-means with `restarts` seeded k-means++ starts; the lowest inertia wins (first on ties). */
export function fitKMeans(X: Points, k: number, opts: FitOptions = {}): KMeansFit {
  return runSync(fitSteps(X, k, opts));
}

export function fitKMeansAsync(X: Points, k: number, opts: FitOptions = {}): Promise<KMeansFit> {
  return runAsync(fitSteps(X, k, opts));
}

function* fitSteps(X: Points, k: number, opts: FitOptions): Steps<KMeansFit> {
  const seed = opts.seed ?? 1;
  const restarts = Math.max(1, opts.restarts ?? DEFAULT_RESTARTS);
  const maxIterations = opts.maxIterations ?? DEFAULT_MAX_ITERATIONS;
  const engine = opts.engine ?? 'native';
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`k must be a positive integer, got ${k}`);
  if (k > X.n) throw new RangeError(`k=${k} exceeds the number of points (${X.n})`);
  let best: KMeansFit | undefined;
  const restartInertias: number[] = [];
  for (let r = 0; r < restarts; r++) {
    const runSeed = deriveSeed(seed, r);
    let run: { centroids: Float64Array; labels: Int32Array; iterations: number; converged: boolean };
    if (engine === 'native') {
      run = lloydHamerly(X, kmeansPlusPlus(X, k, seededRandom(runSeed)), k, maxIterations);
    } else {
      const res = mlKmeans(rowsOf(X.values, X.d), k, { seed: runSeed, initialization: 'kmeans++', maxIterations });
      run = {
        centroids: pointsFromRows(res.centroids).values,
        labels: Int32Array.from(res.clusters),
        iterations: res.iterations,
        converged: res.converged,
      };
    }
    const inertia = inertiaOf(X, run.centroids, run.labels);
    restartInertias.push(inertia);
    if (!best || inertia < best.inertia) {
      best = { k, ...run, sizes: sizesOf(run.labels, k), inertia, restartInertias };
    }
    yield;
  }
  return best!;
}

/**
 * Mean silhouette (Rousseeuw 1987) over a seeded sample of at most `sampleSize`
 * points, distances measured within the sample. Points in singleton clusters score 0.
 */
export function silhouette(X: Points, labels: Int32Array, k: number, sampleSize = DEFAULT_SILHOUETTE_SAMPLE, seed = 1): number {
  const idx = sampleIndices(X.n, sampleSize, seed);
  const S = subset(X, idx);
  const lab = Int32Array.from(idx, (i) => labels[i]!);
  const m = S.n;
  const d = S.d;
  const counts = new Float64Array(k);
  for (const l of lab) counts[l]! += 1;
  const sums = new Float64Array(m * k);
  for (let i = 0; i < m; i++) {
    const li = lab[i]!;
    for (let j = i + 1; j < m; j++) {
      const dist = Math.sqrt(sqDist(S.values, i * d, S.values, j * d, d));
      sums[i * k + lab[j]!]! += dist;
      sums[j * k + li]! += dist;
    }
  }
  let total = 0;
  for (let i = 0; i < m; i++) {
    const li = lab[i]!;
    if (counts[li]! <= 1) continue;
    const a = sums[i * k + li]! / (counts[li]! - 1);
    let b = Infinity;
    for (let c = 0; c < k; c++) {
      if (c === li || counts[c]! === 0) continue;
      const mean = sums[i * k + c]! / counts[c]!;
      if (mean < b) b = mean;
    }
    if (!Number.isFinite(b)) continue;
    const denom = Math.max(a, b);
    total += denom > 0 ? (b - a) / denom : 0;
  }
  return m > 0 ? total / m : 0;
}

/**
 * Chooses k in [kMin, kMax] by the highest mean silhouette. Candidates are fitted
 * on a seeded subsample (the silhouette's ranking needs the shape, not every
 * point); the winner is refitted on all points.
 */
export function autoK(X: Points, opts: AutoKOptions = {}): AutoKResult {
  return runSync(autoKSteps(X, opts));
}

export function autoKAsync(X: Points, opts: AutoKOptions = {}): Promise<AutoKResult> {
  return runAsync(autoKSteps(X, opts));
}

function* autoKSteps(X: Points, opts: AutoKOptions): Steps<AutoKResult> {
  const seed = opts.seed ?? 1;
  const kMin = Math.max(2, opts.kMin ?? 2);
  const kMax = Math.min(opts.kMax ?? 10, X.n - 1);
  if (kMax < kMin) throw new RangeError(`no k to try: range ${kMin}..${kMax} with ${X.n} points`);
  const selectionSize = opts.selectionSample ?? DEFAULT_SELECTION_SAMPLE;
  const sel = X.n > selectionSize ? subset(X, sampleIndices(X.n, selectionSize, deriveSeed(seed, 1000))) : X;
  const silSample = opts.silhouetteSample ?? DEFAULT_SILHOUETTE_SAMPLE;
  const scores: KSelection[] = [];
  let bestK = kMin;
  let bestS = -Infinity;
  let bestFit: KMeansFit | undefined;
  for (let k = kMin; k <= kMax; k++) {
    const fit = yield* fitSteps(sel, k, opts);
    const s = silhouette(sel, fit.labels, k, silSample, deriveSeed(seed, 2000));
    scores.push({ k, silhouette: s, inertia: fit.inertia });
    opts.onProgress?.((k - kMin + 1) / (kMax - kMin + 2));
    yield;
    if (s > bestS) {
      bestS = s;
      bestK = k;
      bestFit = fit;
    }
  }
  const fit = sel === X ? bestFit! : yield* fitSteps(X, bestK, opts);
  const finalSil = sel === X ? bestS : silhouette(X, fit.labels, bestK, silSample, deriveSeed(seed, 2000));
  opts.onProgress?.(1);
  return { fit, silhouette: finalSil, scores };
}
