// `warbler clusters train|features|show`: the cluster job and its Arrow export
// from the command line, with progress on stderr and results as JSON on stdout.
import { parseArgs } from 'node:util';
import { ClusterJobError, exportFeaturesArrow, latestModel, trainClusters } from '../profiles/clusters-job.ts';
import { clickhouseFromConfig } from './stack.ts';

const USAGE = `usage:
  warbler clusters train [--app ID] [--k N|auto] [--features a,b,c] [--seed S] [--sample N]
  warbler clusters features --out FILE.arrow [--app ID] [--features a,b,c] [--sample N]
  warbler clusters show [--app ID]`;

export async function runClusters(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        app: { type: 'string', default: 'demo' },
        k: { type: 'string', default: 'auto' },
        features: { type: 'string' },
        seed: { type: 'string' },
        sample: { type: 'string' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    process.stderr.write(`warbler clusters: ${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  const sub = positionals[0];
  if (values.help || !sub || !['train', 'features', 'show'].includes(sub)) {
    process.stdout.write(USAGE + '\n');
    return values.help ? 0 : 2;
  }
  const num = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new ClusterJobError(`--${name} must be a positive integer, got ${JSON.stringify(v)}`);
    return n;
  };
  const features = values.features?.split(',').map((s) => s.trim()).filter(Boolean);
  const ch = clickhouseFromConfig();
  try {
    if (sub === 'show') {
      const model = await latestModel(ch, values.app);
      if (!model) {
        process.stderr.write(`no cluster model for app ${values.app}; run: warbler clusters train --app ${values.app}\n`);
        return 1;
      }
      process.stdout.write(JSON.stringify(model, null, 2) + '\n');
      return 0;
    }
    if (sub === 'features') {
      if (!values.out) {
        process.stderr.write(`warbler clusters features: --out FILE.arrow is required\n`);
        return 2;
      }
      const r = await exportFeaturesArrow(ch, values.app, values.out, { features, sampleSize: num('sample', values.sample), seed: num('seed', values.seed) });
      process.stdout.write(JSON.stringify(r) + '\n');
      return 0;
    }
    const k = values.k === 'auto' ? 'auto' : num('k', values.k);
    let lastStage = '';
    const r = await trainClusters(
      ch,
      values.app,
      { k, features, seed: num('seed', values.seed), sampleSize: num('sample', values.sample) },
      (fraction, stage) => {
        if (stage !== lastStage) {
          lastStage = stage;
          process.stderr.write(`clusters ${Math.round(fraction * 100)}% ${stage}\n`);
        }
      },
    );
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return 0;
  } catch (err) {
    if (err instanceof ClusterJobError) {
      process.stderr.write(`warbler clusters: ${err.message}\n`);
      return 1;
    }
    throw err;
  } finally {
    await ch.close();
  }
}
