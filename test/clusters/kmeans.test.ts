import { PassThrough, Readable } from 'node:stream';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { readNumericRows, runKmeansCli, type CentroidsReport } from '../../cli/kmeans.ts';
import { kmeans as mlKmeans } from 'ml-kmeans';
import { autoK, fitKMeans, fitKMeansAsync, inertiaOf, assignNearest, kmeansPlusPlus, lloydHamerly, pointsFromRows, rowsOf, sampleIndices, seededRandom, silhouette } from '../../profiles/kmeans.ts';
import { adjustedRandIndex } from '../support/ari.ts';

const FIXTURES = new URL('../fixtures/kmeans/', import.meta.url).pathname;

async function runCli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  const chunks: Buffer[] = [];
  const errChunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  err.on('data', (c: Buffer) => errChunks.push(c));
  const code = await runKmeansCli(argv, { stdout: out, stderr: err, stdin: Readable.from([]) });
  return { code, stdout: Buffer.concat(chunks).toString(), stderr: Buffer.concat(errChunks).toString() };
}

describe('warbler kmeans on the S1 benchmark (15 Gaussian clusters)', () => {
  it('--k auto finds 15 clusters and matches the true partition (ARI >= 0.95)', async () => {
    const truth = await readNumericRows(join(FIXTURES, 's1.labels0.gz'));
    const res = await runCli(['--input', join(FIXTURES, 's1.data.gz'), '--k', 'auto', '--seed', '7']);
    expect(res.code).toBe(0);
    const labels = res.stdout.trim().split('\n').map(Number);
    expect(labels).toHaveLength(5000);
    expect(Math.min(...labels)).toBe(1);
    expect(Math.max(...labels)).toBe(15);
    const report = JSON.parse(res.stderr) as CentroidsReport;
    expect(report.k).toBe(15);
    expect(report.centroids).toHaveLength(15);
    // The silhouette profile peaks at 15 and nowhere else.
    const best = report.k_selection!.reduce((a, b) => (b.silhouette > a.silhouette ? b : a));
    expect(best.k).toBe(15);
    const ari = adjustedRandIndex(labels, truth.values);
    console.log(`S1: k=${report.k} silhouette=${report.silhouette?.toFixed(4)} ARI=${ari.toFixed(4)}`);
    expect(ari).toBeGreaterThanOrEqual(0.95);
  });

  it('is reproducible: the same seed gives the same labels and centroids', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kmeans-'));
    const a = await runCli(['--input', join(FIXTURES, 's1.data.gz'), '--k', '15', '--seed', '3', '--centroids', join(dir, 'a.json')]);
    const b = await runCli(['--input', join(FIXTURES, 's1.data.gz'), '--k', '15', '--seed', '3', '--centroids', join(dir, 'b.json')]);
    expect(a.code).toBe(0);
    expect(a.stdout).toBe(b.stdout);
    expect(a.stderr).toBe('');
    expect(readFileSync(join(dir, 'a.json'), 'utf8')).toBe(readFileSync(join(dir, 'b.json'), 'utf8'));
  });
});

describe('k-means on S2 (15 Gaussian clusters, more overlap)', () => {
  it('k = 15 still matches the true partition closely (ARI >= 0.9)', async () => {
    const X = await readNumericRows(join(FIXTURES, 's2.data.gz'));
    const truth = await readNumericRows(join(FIXTURES, 's2.labels0.gz'));
    const fit = fitKMeans(X, 15, { seed: 1, restarts: 10 });
    const ari = adjustedRandIndex(fit.labels, truth.values);
    console.log(`S2: ARI=${ari.toFixed(4)}`);
    expect(ari).toBeGreaterThanOrEqual(0.9);
  });
});

describe('k-means on iris, k = 3', () => {
  it('reaches the published total within-cluster SS of 78.85 (within 1%) with sizes 50/62/38', async () => {
    const X = await readNumericRows(join(FIXTURES, 'iris.data.gz'));
    for (const engine of ['native', 'ml-kmeans'] as const) {
      const fit = fitKMeans(X, 3, { seed: 1, restarts: 10, engine });
      console.log(`iris ${engine}: WCSS=${fit.inertia.toFixed(4)} sizes=${fit.sizes.join('/')}`);
      expect(Math.abs(fit.inertia - 78.85) / 78.85).toBeLessThan(0.01);
      expect([...fit.sizes].sort((a, b) => a - b)).toEqual([38, 50, 62]);
      // The reported inertia is the real one of the returned centroids and labels.
      expect(inertiaOf(X, fit.centroids, fit.labels)).toBeCloseTo(fit.inertia, 9);
      expect(Array.from(assignNearest(X, fit.centroids, 3))).toEqual(Array.from(fit.labels));
    }
  });

  it('the async variant gives the event loop turns and the same result', async () => {
    const X = await readNumericRows(join(FIXTURES, 'iris.data.gz'));
    let ticked = false;
    setImmediate(() => (ticked = true));
    const pending = fitKMeansAsync(X, 3, { seed: 4, restarts: 3 });
    expect(ticked).toBe(false);
    const fit = await pending;
    expect(ticked).toBe(true);
    const sync = fitKMeans(X, 3, { seed: 4, restarts: 3 });
    expect(fit.inertia).toBe(sync.inertia);
    expect(Array.from(fit.labels)).toEqual(Array.from(sync.labels));
  });

  it('keeps the best of several restarts', async () => {
    const X = await readNumericRows(join(FIXTURES, 'iris.data.gz'));
    const fit = fitKMeans(X, 3, { seed: 5, restarts: 6 });
    expect(fit.restartInertias).toHaveLength(6);
    expect(fit.inertia).toBe(Math.min(...fit.restartInertias));
  });
});

describe('k-means internals', () => {
  it('Hamerly-accelerated Lloyd reaches the same partition as ml-kmeans (plain Lloyd) from the same start', async () => {
    const X = await readNumericRows(join(FIXTURES, 'a1.data.gz'));
    for (const seed of [1, 2, 3]) {
      const init = kmeansPlusPlus(X, 20, seededRandom(seed));
      const ours = lloydHamerly(X, init, 20, 1000);
      const theirs = mlKmeans(rowsOf(X.values, X.d), 20, { initialization: rowsOf(init, X.d), maxIterations: 1000, tolerance: 0 });
      expect(ours.converged).toBe(true);
      expect(adjustedRandIndex(ours.labels, theirs.clusters)).toBe(1);
      expect(inertiaOf(X, ours.centroids, ours.labels)).toBeCloseTo(inertiaOf(X, pointsFromRows(theirs.centroids).values, Int32Array.from(theirs.clusters)), 6);
    }
  });

  it('stops at a local minimum: every point at its nearest centroid', async () => {
    const X = await readNumericRows(join(FIXTURES, 'a1.data.gz'));
    const truth = await readNumericRows(join(FIXTURES, 'a1.labels0.gz'));
    const fit = fitKMeans(X, 20, { seed: 11, restarts: 5 });
    expect(fit.converged).toBe(true);
    expect(Array.from(assignNearest(X, fit.centroids, 20))).toEqual(Array.from(fit.labels));
    expect(adjustedRandIndex(fit.labels, truth.values)).toBeGreaterThan(0.9);
  });

  it('an emptied cluster takes the point farthest from its centre', () => {
    const rows = [[0, 0], [0, 0.1], [0.1, 0], [5, 5], [5, 5.1], [9, 0]];
    const X = pointsFromRows(rows);
    const res = lloydHamerly(X, Float64Array.from([0, 0, 5, 5, 1000, 1000]), 3);
    expect(res.converged).toBe(true);
    expect(Array.from(res.labels)).toEqual([0, 0, 0, 1, 1, 2]);
    expect(Array.from(res.centroids.subarray(4))).toEqual([9, 0]);
  });

  it('silhouette is 1-ish for well separated blobs and near 0 for an arbitrary split of one blob', () => {
    const rows: number[][] = [];
    for (let i = 0; i < 200; i++) rows.push([i % 2 === 0 ? 0 : 100, (i % 7) * 0.01]);
    const X = pointsFromRows(rows);
    const good = Int32Array.from(rows, (r) => (r[0] === 0 ? 0 : 1));
    expect(silhouette(X, good, 2)).toBeGreaterThan(0.99);
    const blob = pointsFromRows(Array.from({ length: 200 }, (_, i) => [Math.sin(i) , Math.cos(i * 1.7)]));
    const arbitrary = Int32Array.from({ length: 200 }, (_, i) => i % 2);
    expect(Math.abs(silhouette(blob, arbitrary, 2))).toBeLessThan(0.1);
  });

  it('samples without replacement, reproducibly', () => {
    const a = sampleIndices(1000, 100, 42);
    expect(new Set(a).size).toBe(100);
    expect(Array.from(a)).toEqual(Array.from(sampleIndices(1000, 100, 42)));
    expect(Array.from(a)).not.toEqual(Array.from(sampleIndices(1000, 100, 43)));
  });

  it('auto-k selects on a subsample and refits the winner on all points', async () => {
    const X = await readNumericRows(join(FIXTURES, 's1.data.gz'));
    const res = autoK(X, { seed: 2, kMin: 13, kMax: 17, selectionSample: 2500, silhouetteSample: 2000 });
    expect(res.fit.k).toBe(15);
    expect(res.fit.labels).toHaveLength(5000);
  });
});

describe('warbler kmeans input handling', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kmeans-in-'));

  it('reads comma-separated, gzipped input with a header line', async () => {
    const text = 'x,y\n0,0\n0,1\n10,10\n10,11\n';
    writeFileSync(join(dir, 'pts.csv.gz'), gzipSync(text));
    const res = await runCli(['--input', join(dir, 'pts.csv.gz'), '--k', '2']);
    expect(res.code).toBe(0);
    const labels = res.stdout.trim().split('\n');
    expect(labels).toHaveLength(4);
    expect(labels[0]).toBe(labels[1]);
    expect(labels[2]).toBe(labels[3]);
    expect(labels[0]).not.toBe(labels[2]);
  });

  it('names the line of a bad value and of a ragged row', async () => {
    writeFileSync(join(dir, 'bad.txt'), '1 2\n3 4\n5 x\n');
    const bad = await runCli(['--input', join(dir, 'bad.txt'), '--k', '2']);
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stderr)).toMatchObject({ error: 'cannot read input', line: 3 });
    writeFileSync(join(dir, 'ragged.txt'), '1 2\n3 4 5\n');
    const ragged = await runCli(['--input', join(dir, 'ragged.txt'), '--k', '2']);
    expect(JSON.parse(ragged.stderr)).toMatchObject({ line: 2 });
    expect(ragged.stdout).toBe('');
  });

  it('rejects bad arguments with paths, and k larger than the data', async () => {
    const res = await runCli(['--k', 'many', '--engine', 'gpu']);
    expect(res.code).toBe(2);
    const paths = JSON.parse(res.stderr.split('\n')[0]!).errors.map((e: { path: string }) => e.path);
    expect(paths).toEqual(expect.arrayContaining(['--k', '--engine', '--input']));
    writeFileSync(join(dir, 'two.txt'), '1\n2\n');
    const tooMany = await runCli(['--input', join(dir, 'two.txt'), '--k', '3']);
    expect(tooMany.code).toBe(1);
    expect(JSON.parse(tooMany.stderr).message).toMatch(/exceeds/);
  });
});
