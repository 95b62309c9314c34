// `warbler kmeans`: general-purpose clustering of a numeric table.
//   warbler kmeans --input FILE [--k N|auto] [--seed S] [--centroids FILE]
//                  [--k-min N] [--k-max N] [--restarts N] [--engine native|ml-kmeans]
// Rows are whitespace- or comma-separated numbers (gzip detected by its magic
// bytes, '-' reads stdin); one label 1..k per input row goes to stdout, the
// centroids as JSON to stderr or --centroids FILE.
import { createReadStream, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { autoK, fitKMeans, rowsOf, type Engine, type KMeansFit, type KSelection, type Points } from '../profiles/kmeans.ts';

export interface CliIo {
  stdout: Writable;
  stderr: Writable;
  stdin: Readable;
}

export class InputError extends Error {
  constructor(
    readonly path: string,
    readonly line: number,
    message: string,
  ) {
    super(`${path}:${line}: ${message}`);
    this.name = 'InputError';
  }
}

async function isGzip(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(2);
    const { bytesRead } = await fh.read(buf, 0, 2, 0);
    return bytesRead === 2 && buf[0] === 0x1f && buf[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

/**
 * Reads numeric rows. Blank lines and '#' comments are skipped; a first line
 * that is not numeric is taken as a header. Any other non-numeric value or a
 * row of another width is an error naming the line.
 */
export async function readNumericRows(path: string, stdin: Readable = process.stdin): Promise<Points> {
  let input: Readable;
  if (path === '-') input = stdin;
  else {
    const file = createReadStream(path);
    input = (await isGzip(path)) ? file.pipe(createGunzip()) : file;
  }
  const rl = createInterface({ input, crlfDelay: Infinity });
  let values = new Float64Array(1 << 16);
  let len = 0;
  let d = -1;
  let lineNo = 0;
  let firstDataLine = true;
  for await (const line of rl) {
    lineNo++;
    const text = line.trim();
    if (text === '' || text.startsWith('#')) continue;
    const tokens = text.split(/[\s,;]+/).filter((t) => t !== '');
    const nums = tokens.map(Number);
    const bad = nums.findIndex((x, i) => !Number.isFinite(x) || tokens[i]!.trim() === '');
    if (bad >= 0) {
      if (firstDataLine) {
        firstDataLine = false;
        continue; // header
      }
      throw new InputError(path, lineNo, `value ${JSON.stringify(tokens[bad])} is not a finite number`);
    }
    firstDataLine = false;
    if (d < 0) d = nums.length;
    else if (nums.length !== d) throw new InputError(path, lineNo, `row has ${nums.length} values, earlier rows have ${d}`);
    if (len + d > values.length) {
      const bigger = new Float64Array(values.length * 2);
      bigger.set(values);
      values = bigger;
    }
    for (const x of nums) values[len++] = x;
  }
  if (d < 0) throw new InputError(path, lineNo, 'no numeric rows');
  return { n: len / d, d, values: values.slice(0, len) };
}

export interface KmeansArgs {
  input: string;
  k: number | 'auto';
  seed: number;
  centroidsOut?: string;
  kMin: number;
  kMax: number;
  restarts: number;
  engine: Engine;
}

const USAGE =
  'usage: warbler kmeans --input FILE [--k N|auto] [--seed S] [--centroids FILE] [--k-min N] [--k-max N] [--restarts N] [--engine native|ml-kmeans]';

export function parseKmeansArgs(argv: readonly string[]): KmeansArgs | { errors: { path: string; message: string }[] } {
  const errors: { path: string; message: string }[] = [];
  const out: Partial<KmeansArgs> = { k: 'auto', seed: 1, kMin: 2, kMax: 20, restarts: 10, engine: 'native' };
  const int = (name: string, v: string | undefined, min: number): number | undefined => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n) || n < min) {
      errors.push({ path: name, message: `expected an integer >= ${min}, got ${JSON.stringify(v ?? null)}` });
      return undefined;
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => inline ?? argv[++i];
    switch (flag) {
      case '--input':
      case '-i':
        out.input = value();
        break;
      case '--k':
      case '-k': {
        const v = value();
        if (v === 'auto') out.k = 'auto';
        else out.k = int('--k', v, 1);
        break;
      }
      case '--seed':
        out.seed = int('--seed', value(), 0);
        break;
      case '--centroids':
        out.centroidsOut = value();
        break;
      case '--k-min':
        out.kMin = int('--k-min', value(), 2);
        break;
      case '--k-max':
        out.kMax = int('--k-max', value(), 2);
        break;
      case '--restarts':
        out.restarts = int('--restarts', value(), 1);
        break;
      case '--engine': {
        const v = value();
        if (v === 'native' || v === 'ml-kmeans') out.engine = v;
        else errors.push({ path: '--engine', message: `expected native or ml-kmeans, got ${JSON.stringify(v ?? null)}` });
        break;
      }
      default:
        errors.push({ path: a, message: 'unknown argument' });
    }
  }
  if (!out.input) errors.push({ path: '--input', message: 'required' });
  if (out.kMin !== undefined && out.kMax !== undefined && out.kMax < out.kMin) errors.push({ path: '--k-max', message: 'must be >= --k-min' });
  if (errors.length > 0) return { errors };
  return out as KmeansArgs;
}

export interface CentroidsReport {
  k: number;
  n: number;
  d: number;
  seed: number;
  centroids: number[][];
  sizes: number[];
  inertia: number;
  silhouette?: number;
  k_selection?: KSelection[];
}

export async function runKmeansCli(argv: readonly string[], io: CliIo = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin }): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout.write(USAGE + '\n');
    return 0;
  }
  const args = parseKmeansArgs(argv);
  if ('errors' in args) {
    io.stderr.write(JSON.stringify({ error: 'invalid arguments', errors: args.errors }) + '\n' + USAGE + '\n');
    return 2;
  }
  let X: Points;
  try {
    X = await readNumericRows(args.input, io.stdin);
  } catch (e) {
    const err = e as Error & { code?: string };
    const detail = e instanceof InputError ? { path: e.path, line: e.line } : { path: args.input, code: err.code };
    io.stderr.write(JSON.stringify({ error: 'cannot read input', message: err.message, ...detail }) + '\n');
    return 1;
  }
  let fit: KMeansFit;
  let silhouette: number | undefined;
  let scores: KSelection[] | undefined;
  try {
    const opts = { seed: args.seed, restarts: args.restarts, engine: args.engine };
    if (args.k === 'auto') {
      const res = autoK(X, { ...opts, kMin: args.kMin, kMax: args.kMax });
      fit = res.fit;
      silhouette = res.silhouette;
      scores = res.scores;
    } else {
      fit = fitKMeans(X, args.k, opts);
    }
  } catch (e) {
    io.stderr.write(JSON.stringify({ error: 'cannot cluster', message: (e as Error).message }) + '\n');
    return 1;
  }
  const report: CentroidsReport = {
    k: fit.k,
    n: X.n,
    d: X.d,
    seed: args.seed,
    centroids: rowsOf(fit.centroids, X.d),
    sizes: fit.sizes,
    inertia: fit.inertia,
    ...(silhouette !== undefined ? { silhouette, k_selection: scores } : {}),
  };
  await writeLabels(io.stdout, fit.labels);
  const json = JSON.stringify(report) + '\n';
  if (args.centroidsOut) writeFileSync(args.centroidsOut, json);
  else io.stderr.write(json);
  return 0;
}

async function writeLabels(out: Writable, labels: Int32Array): Promise<void> {
  const CHUNK = 65536;
  for (let i = 0; i < labels.length; i += CHUNK) {
    let s = '';
    const end = Math.min(labels.length, i + CHUNK);
    for (let j = i; j < end; j++) s += labels[j]! + 1 + '\n';
    if (!out.write(s)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
  }
}

// Runnable on its own: `npx tsx cli/kmeans.ts --input f --k auto`.
if (import.meta.url === `file://${process.argv[1]}`) {
  runKmeansCli(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
