import { describe, expect, it } from 'vitest';
import { applyTransform, DEFAULT_FEATURES, fitTransform, invertPoint, resolveFeatures, type FeatureDef } from '../../profiles/cluster-features.ts';
import { hungarian, identifyClusters, matchCentroids, nameCentroid, nameCentroids } from '../../profiles/cluster-labels.ts';
import { fitKMeans, pointsFromRows, rowsOf } from '../../profiles/kmeans.ts';
import { ARCHETYPES, defaultFeatureRow, plantedProfiles } from '../support/archetypes.ts';
import { adjustedRandIndex } from '../support/ari.ts';

const features = (resolveFeatures(undefined) as { features: FeatureDef[] }).features;

function trainPlanted(seed: number, dataSeed = 7, n = 20_000) {
  const { rows, truth } = plantedProfiles(n, dataSeed);
  const raw = pointsFromRows(rows.map(defaultFeatureRow));
  const transform = fitTransform(features, raw.values, raw.n);
  const Z = { n: raw.n, d: raw.d, values: applyTransform(transform, raw.values) };
  const fit = fitKMeans(Z, ARCHETYPES.length, { seed, restarts: 4 });
  const centroids = rowsOf(fit.centroids, Z.d);
  const id = identifyClusters(DEFAULT_FEATURES, centroids, fit.sizes);
  const labelOf = (i: number) => id.labels[id.order.indexOf(fit.labels[i]!)]!;
  return { fit, truth, transform, centroids, id, labelOf };
}

/** For each archetype, the label most of its users got. */
function archetypeLabels(r: ReturnType<typeof trainPlanted>): string[] {
  return ARCHETYPES.map((_, ai) => {
    const counts = new Map<string, number>();
    r.truth.forEach((t, i) => {
      if (t === ai) counts.set(r.labelOf(i), (counts.get(r.labelOf(i)) ?? 0) + 1);
    });
    return [...counts.entries()].sort((a, b) => b[1] - a[1])[0]![0];
  });
}

describe('planted archetypes', () => {
  it('are recovered (ARI >= 0.8) with distinct labels, the same for every seed', () => {
    const runs = [1, 2, 3].map((seed) => trainPlanted(seed));
    const named = runs.map(archetypeLabels);
    for (const [i, r] of runs.entries()) {
      const ari = adjustedRandIndex(r.fit.labels, r.truth);
      console.log(`archetypes seed ${i + 1}: ARI=${ari.toFixed(4)} labels=${JSON.stringify(named[i])}`);
      expect(ari).toBeGreaterThanOrEqual(0.8);
      expect(new Set(named[i]).size).toBe(ARCHETYPES.length);
    }
    expect(named[1]).toEqual(named[0]);
    expect(named[2]).toEqual(named[0]);
  });

  it('skewed counts and money are log-transformed; the transform inverts', () => {
    const { transform, centroids } = trainPlanted(1);
    const byName = Object.fromEntries(transform.map((t) => [t.name, t]));
    expect(byName.monetary!.log1p).toBe(true);
    expect(byName.frequency!.log1p).toBe(true);
    for (const c of centroids) {
      const raw = invertPoint(transform, c);
      const back = applyTransform(transform, Float64Array.from(raw));
      back.forEach((z, j) => expect(z).toBeCloseTo(c[j]!, 9));
    }
  });

  it('a retrain on fresh data keeps cluster numbers and labels of centroids that barely moved', () => {
    const first = trainPlanted(1, 7);
    const second = trainPlanted(9, 8); // other users, other seed: centroids shift a little, order changes
    const numbered = (r: ReturnType<typeof trainPlanted>) => r.id.order.map((i) => r.centroids[i]!);
    const previousRaw = numbered(first).map((c) => invertPoint(first.transform, c));
    const previousInNewUnits = rowsOf(applyTransform(second.transform, Float64Array.from(previousRaw.flat())), DEFAULT_FEATURES.length);
    const again = identifyClusters(DEFAULT_FEATURES, second.centroids, second.fit.sizes, { centroids: previousInNewUnits, labels: first.id.labels });
    expect(again.carried).toEqual([1, 2, 3, 4, 5]);
    expect(again.labels).toEqual(first.id.labels);
    // Cluster number c holds the same archetype's users before and after.
    const majority = (labels: (i: number) => number, truth: Int32Array) =>
      ARCHETYPES.map((_, ai) => {
        const counts = new Map<number, number>();
        truth.forEach((t, i) => t === ai && counts.set(labels(i), (counts.get(labels(i)) ?? 0) + 1));
        return [...counts.entries()].sort((a, b) => b[1] - a[1])[0]![0];
      });
    const before = majority((i) => first.id.order.indexOf(first.fit.labels[i]!) + 1, first.truth);
    const after = majority((i) => again.order.indexOf(second.fit.labels[i]!) + 1, second.truth);
    expect(after).toEqual(before);
  });
});

describe('cluster names', () => {
  it('come from the standout features: noun from the strongest, adjective from the next', () => {
    const f = ['recency', 'frequency', 'monetary', 'events_30d', 'active_days_30d', 'view_to_purchase'];
    expect(nameCentroid(f, [-0.2, 1.8, 2.2, 0.4, 0.3, 0])).toBe('frequent high spenders');
    expect(nameCentroid(f, [1.2, -0.3, -0.3, -0.2, 0, 0.9])).toBe('lapsed browsers');
    expect(nameCentroid(f, [0.1, 0.1, -0.2, 0.3, 0.2, 0.1])).toBe('typical users');
    expect(nameCentroid(['tenure_days', 'foo_bar'], [0, 0.9])).toBe('high-foo-bar users');
    // Without a noun, two adjectives; two below-average words of one group say the same thing once.
    expect(nameCentroid(f, [0.8, -0.9, -1.0, 0, 0, 0])).toBe('low-spending lapsed users');
  });

  it('are distinct: clashes get more adjectives, then a number', () => {
    const f = ['recency', 'frequency', 'monetary'];
    const names = nameCentroids(f, [
      [0.9, 0.6, 0],
      [0.9, -0.6, 0],
      [0.9, 0.6, 0],
    ]);
    expect(new Set(names).size).toBe(3);
    expect(names[0]).not.toBe(names[1]);
    expect(nameCentroids(f, [[0.9, 0, 0]], new Set(['lapsed users']))).toEqual(['lapsed users 2']);
  });
});

describe('centroid matching', () => {
  it('hungarian finds the minimum-cost assignment', () => {
    const cost = [
      [4, 1, 3],
      [2, 0, 5],
      [3, 2, 2],
    ];
    expect(hungarian(cost)).toEqual([1, 0, 2]);
    // Brute force over all permutations agrees on random matrices.
    for (let t = 0; t < 20; t++) {
      const n = 5;
      const m = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => ((i * 7 + j * 13 + t * 31) % 17) + ((i * j + t) % 5) / 10));
      const got = hungarian(m).reduce((s, j, i) => s + m[i]![j]!, 0);
      let best = Infinity;
      const perm = (p: number[], rest: number[]) => {
        if (rest.length === 0) best = Math.min(best, p.reduce((s, j, i) => s + m[i]![j]!, 0));
        rest.forEach((x, i) => perm([...p, x], rest.filter((_, k) => k !== i)));
      };
      perm([], [0, 1, 2, 3, 4]);
      expect(got).toBeCloseTo(best, 9);
    }
  });

  it('leaves far-moved centroids unmatched and handles a changed k', () => {
    const prev = [
      [0, 0],
      [5, 5],
    ];
    expect(matchCentroids(prev, [[5.1, 5], [0.1, 0], [20, 20]])).toEqual([1, 0, -1]);
    expect(matchCentroids(prev, [[9, 9]])).toEqual([-1]);
    const id = identifyClusters(['recency', 'frequency'], [[5.1, 5], [20, 20], [0.1, 0]], [10, 30, 20], { centroids: prev, labels: ['a', 'b'] });
    expect(id.order).toEqual([2, 0, 1]);
    expect(id.labels.slice(0, 2)).toEqual(['a', 'b']);
    expect(id.carried).toEqual([1, 2]);
  });
});
