// `warbler <command>`: each command lives in its own module and is loaded only
// when asked for, so `warbler kmeans` does not pay for Kafka or ClickHouse.
import { ConfigError } from '../lib/config.ts';
import { log } from '../lib/log.ts';

type Run = (argv: string[]) => Promise<number>;

const COMMANDS: Record<string, { help: string; load: () => Promise<Run> }> = {
  up: { help: 'start the local ClickHouse and Kafka broker (installs them if missing)', load: async () => (await import('./stack.ts')).runUp },
  down: { help: 'stop everything `up`, `serve` and `ingest` started', load: async () => (await import('./stack.ts')).runDown },
  status: { help: 'show the local stack', load: async () => (await import('./stack.ts')).runStatus },
  migrate: { help: 'apply sql/migrations to the configured database', load: async () => (await import('./stack.ts')).runMigrate },
  generate: { help: 'generate realistic demo events (file, Kafka or ClickHouse)', load: async () => (await import('./generate.ts')).runGenerate },
  ingest: { help: 'run Kafka consumers that store events in ClickHouse (`--workers N`)', load: async () => (await import('./ingest.ts')).runIngest },
  segment: { help: 'evaluate a segment expression (`--count`, `--explain`, `--format ndjson|csv`)', load: async () => (await import('./segment.ts')).runSegment },
  serve: { help: 'run the HTTP API', load: async () => (await import('./serve.ts')).runServe },
  profiles: { help: 'build profiles: `profiles build [--as-of T] [--full|--incremental]`', load: async () => (await import('./profiles.ts')).runProfiles },
  clusters: { help: 'train clusters, show the model, export features as Arrow', load: async () => (await import('./clusters.ts')).runClusters },
  demo: { help: 'the whole pipeline on the local default, then a report', load: async () => (await import('./demo.ts')).runDemo },
  kmeans: { help: 'cluster numeric rows from a file: labels to stdout, centroids as JSON', load: async () => (await import('./kmeans.ts')).runKmeansCli },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  const lines = Object.entries(COMMANDS).map(([k, v]) => `  ${k.padEnd(width)}  ${v.help}`);
  return `usage: warbler <command> [options]\n\ncommands:\n${lines.join('\n')}\n\nrun \`warbler <command> --help\` for a command's options`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage() + '\n');
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`warbler: unknown command '${name}'\n\n${usage()}\n`);
    return 2;
  }
  const run = await cmd.load();
  return run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError) process.stderr.write(`${err.message}\n`);
    else log.error('command failed', { error: err instanceof Error ? err.message : String(err), stack: err instanceof Error ? err.stack : undefined });
    process.exitCode = 1;
  },
);
