// The profile job at two commits, paired: rounds of bench/profiles.ts's pair
// (a full run, then an incremental run an hour later after its 1% new events)
// with this tree's code and with `--base`'s, alternating which goes first, each
// round in a fresh process, on the data bench/profiles.ts keeps. The machine's
// speed drifts over minutes, so a change is judged by the ratio of each round's
// two incremental runs (this tree / base), seconds apart, rather than by
// bench/profiles.ts runs taken at different times.
// With --db and --app, any kept benchmark data with a bench_meta t0: e.g.
// bench/trait-heavy.ts's (--app context; no events after t0, so its incremental
// runs recompute only the users whose windows the hour moves).
// Results: bench/results/<--out>.json and .md (default profiles-ab). Never asserted by tests.
// Usage: npx tsx bench/profiles.ts --db bench_profiles_kept          (once, to load)
//        npx tsx bench/profiles-ab.ts --base <commit> [--rounds 10] [--db bench_profiles_kept] [--app bench] [--out profiles-ab]
// The base is checked out into a temporary git worktree (removed after).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from '../lib/config.ts';
import { median, say } from './report.ts';

const { values } = parseArgs({
  options: {
    base: { type: 'string' },
    rounds: { type: 'string', default: '10' },
    db: { type: 'string', default: 'bench_profiles_kept' },
    app: { type: 'string', default: 'bench' },
    out: { type: 'string', default: 'profiles-ab' },
    // Internal: one round with the code of the tree at this path.
    round: { type: 'string' },
  },
});
const APP = values.app!;
const HOUR = 3600;

if (values.round) {
  // One full → incremental pair, imported from the given tree, against this
  // tree's running stack (WARBLER_HOME is passed down by the driver).
  const tree = values.round;
  const mod = (p: string) => import(pathToFileURL(join(tree, p)).href);
  const [{ ClickHouse }, { loadConfig }, { up }, job, { sql }] = await Promise.all([
    mod('lib/clickhouse.ts'),
    mod('lib/config.ts'),
    mod('lib/stack.ts'),
    mod('profiles/job.ts'),
    mod('lib/sql.ts'),
  ]);
  const stack = await up(loadConfig());
  const ch = new ClickHouse({ url: stack.clickhouseUrl, database: values.db!, queryTimeoutS: 3600 });
  const meta = await ch.one(sql`SELECT t0 FROM bench_meta LIMIT 1`);
  const t0 = Number(meta?.t0);
  if (!Number.isFinite(t0)) throw new Error(`${values.db} has no bench_meta: run bench/profiles.ts --db ${values.db} first`);
  const full = await job.buildProfiles(ch, APP, { asOf: new Date(t0 * 1000), mode: 'full' });
  // As bench/profiles.ts: the earlier round's run at the later as_of would otherwise be the previous run.
  await job.dropSupersededRuns(ch, APP, full.run_id, 0, 0);
  await new Promise((r) => setTimeout(r, 1100));
  const inc = await job.buildProfiles(ch, APP, { asOf: new Date((t0 + HOUR) * 1000), mode: 'incremental' });
  if (inc.mode !== 'incremental' || inc.previous_run_id !== full.run_id) throw new Error(`the incremental run ran as ${inc.mode} on ${inc.previous_run_id}`);
  process.stdout.write(JSON.stringify({ full: full.seconds, incremental: inc.seconds, recomputed: inc.recomputed_users }) + '\n');
  process.exit(0);
}

if (!values.base) throw new Error('--base <commit> is required: the commit to compare this tree with');
const ROUNDS = Number(values.rounds);
const git = (...args: string[]) => execFileSync('git', args, { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
const baseCommit = git('rev-parse', '--verify', `${values.base}^{commit}`);
const head = git('rev-parse', 'HEAD');
// Only code counts as a change here: results and notes are rewritten by benchmarks anyway.
const dirty = git('status', '--porcelain', '--untracked-files=no', '--', '.', ':!bench/results', ':!*.md') !== '';
const baseTree = mkdtempSync(join(tmpdir(), 'warbler-ab-'));
git('worktree', 'add', '--detach', baseTree, baseCommit);
symlinkSync(join(REPO_ROOT, 'node_modules'), join(baseTree, 'node_modules'));

type Round = { full: number; incremental: number; recomputed: number };
const runRound = (tree: string): Round => {
  const r = spawnSync('npx', ['tsx', join(REPO_ROOT, 'bench/profiles-ab.ts'), '--round', tree, '--db', values.db!, '--app', APP], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { ...process.env, WARBLER_HOME: process.env.WARBLER_HOME ?? join(REPO_ROOT, '.warbler') },
    maxBuffer: 64 * 1024 * 1024,
  });
  const line = r.stdout.split('\n').find((l) => l.startsWith('{"full"'));
  if (r.status !== 0 || !line) throw new Error(`round with ${tree} failed (exit ${r.status}):\n${r.stderr.slice(-2000)}`);
  return JSON.parse(line) as Round;
};

const rounds: { first: 'this' | 'base'; this: Round; base: Round }[] = [];
try {
  for (let i = 0; i < ROUNDS; i++) {
    const first: 'this' | 'base' = i % 2 === 0 ? 'this' : 'base';
    const order = first === 'this' ? [REPO_ROOT, baseTree] : [baseTree, REPO_ROOT];
    const [a, b] = order.map(runRound) as [Round, Round];
    const round = first === 'this' ? { first, this: a, base: b } : { first, this: b, base: a };
    rounds.push(round);
    say(`round ${i + 1}/${ROUNDS}: incremental ${round.this.incremental} s here, ${round.base.incremental} s at base (full ${round.this.full} s, ${round.base.full} s)`);
  }
} finally {
  git('worktree', 'remove', '--force', baseTree);
  rmSync(baseTree, { recursive: true, force: true });
}

const r3 = (x: number) => +x.toFixed(3);
const paired = rounds.map((r) => r3(r.this.incremental / r.base.incremental));
const pairedFull = rounds.map((r) => r3(r.this.full / r.base.full));
const ratioHere = rounds.map((r) => r3(r.this.incremental / r.this.full));
const ratioBase = rounds.map((r) => r3(r.base.incremental / r.base.full));
const out = {
  base: baseCommit,
  head,
  uncommitted_changes: dirty,
  rounds: ROUNDS,
  recomputed_users: rounds[0]?.this.recomputed,
  incremental_here_over_base: { median: median(paired), rounds: paired },
  full_here_over_base: { median: median(pairedFull), rounds: pairedFull },
  incremental_seconds: { here: median(rounds.map((r) => r.this.incremental)), base: median(rounds.map((r) => r.base.incremental)) },
  full_seconds: { here: median(rounds.map((r) => r.this.full)), base: median(rounds.map((r) => r.base.full)) },
  incremental_over_full: { here: { median: median(ratioHere), rounds: ratioHere }, base: { median: median(ratioBase), rounds: ratioBase } },
};
writeFileSync(`bench/results/${values.out}.json`, JSON.stringify(out, null, 2) + '\n');
const command = ['npx tsx bench/profiles-ab.ts', `--base ${values.base}`, `--rounds ${ROUNDS}`, ...(values.db !== 'bench_profiles_kept' ? [`--db ${values.db}`] : []), ...(APP !== 'bench' ? [`--app ${APP}`] : []), ...(values.out !== 'profiles-ab' ? [`--out ${values.out}`] : [])].join(' ');
writeFileSync(
  `bench/results/${values.out}.md`,
  `# Profile job: this tree against a base commit, paired

\`${command}\` — this tree (${head.slice(0, 7)}${dirty ? ' with uncommitted changes' : ''}) against
${baseCommit.slice(0, 7)}, on app \`${APP}\` of \`${values.db}\`, ClickHouse 18.16 on this 2-core machine. Each round runs
bench/profiles.ts's pair (a full run at the data's t0, then an incremental run an hour later; ${out.recomputed_users} users
recomputed) once with each code, alternating which goes first, each in a fresh process; medians over the rounds.

| | this tree | base |
|---|---:|---:|
| incremental run, s | ${out.incremental_seconds.here} | ${out.incremental_seconds.base} |
| full run, s | ${out.full_seconds.here} | ${out.full_seconds.base} |
| incremental / full (each round's own pair) | ${out.incremental_over_full.here.median} | ${out.incremental_over_full.base.median} |

Incremental run here / at base, paired within rounds: **${out.incremental_here_over_base.median}**
(rounds: ${paired.join(', ')}).
Full run here / at base, paired within rounds: **${out.full_here_over_base.median}**
(rounds: ${pairedFull.join(', ')}).
Incremental / full by round, here: ${ratioHere.join(', ')}; at base: ${ratioBase.join(', ')}.
`,
);
say(`incremental here / base: ${out.incremental_here_over_base.median} (rounds ${paired.join(', ')}), full ${out.full_here_over_base.median}; written to bench/results/${values.out}.md`);
