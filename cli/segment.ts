// `warbler segment "<expression>" [--as-of ISO] [--count|--explain|--format ndjson|csv] [--app demo]`
// Prints every member (NDJSON by default, streamed in user_id order), or the
// count, or the explanation (generated SQL and per-node counts) as JSON.
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { parseInstant } from '../segments/check.ts';
import { formatPath, SegmentSyntaxError } from '../segments/errors.ts';
import { evaluateSegment, prepareSegment } from '../segments/evaluate.ts';
import { explainSegment } from '../segments/explain.ts';
import { clickhouseFromConfig } from './stack.ts';

const USAGE = `usage: warbler segment "<expression>" [--as-of ISO] [--count | --explain | --format ndjson|csv] [--app APP]

  <expression>   text form (see segments.md), or a JSON form starting with '{'
  --as-of ISO    evaluate at this instant (default: now)
  --count        print only the number of members
  --explain      print the generated SQL and how many users match each node (JSON)
  --format F     members as ndjson (default) or csv, streamed in user_id order
  --app APP      the app (default: demo)
`;

export async function runSegment(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'as-of': { type: 'string' },
        count: { type: 'boolean' },
        explain: { type: 'boolean' },
        format: { type: 'string' },
        app: { type: 'string', default: 'demo' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    process.stderr.write(`warbler segment: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = args;
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const problems: string[] = [];
  if (positionals.length !== 1) problems.push('give exactly one expression (quote it)');
  if ([values.count, values.explain, values.format !== undefined].filter(Boolean).length > 1) {
    problems.push('--count, --explain and --format exclude each other');
  }
  const format = values.format ?? 'ndjson';
  if (format !== 'ndjson' && format !== 'csv') problems.push(`--format must be ndjson or csv, not ${JSON.stringify(format)}`);
  let asOf: Date | undefined;
  if (values['as-of'] !== undefined) {
    const at = parseInstant(values['as-of']);
    if (!at) problems.push('--as-of must be an ISO 8601 instant with an offset or Z, e.g. 2026-01-01T00:00:00Z');
    else asOf = new Date(at.seconds * 1000);
  }
  if (problems.length > 0) {
    process.stderr.write(problems.map((p) => `warbler segment: ${p}\n`).join('') + '\n' + USAGE);
    return 2;
  }
  const text = positionals[0]!;
  let input: unknown = text;
  if (text.trimStart().startsWith('{')) {
    try {
      input = JSON.parse(text);
    } catch (e) {
      process.stderr.write(`warbler segment: the expression starts with '{' but is not JSON: ${(e as Error).message}\n`);
      return 2;
    }
  }
  const app = values.app!;
  const ch = clickhouseFromConfig();
  try {
    if (values.count) {
      const r = await evaluateSegment(ch, app, input, { asOf, limit: 0 });
      process.stdout.write(`${r.count}\n`);
    } else if (values.explain) {
      process.stdout.write(JSON.stringify(await explainSegment(ch, app, input, { asOf }), null, 2) + '\n');
    } else {
      const p = await prepareSegment(ch, app, input, asOf);
      const stream = await ch.stream(p.compiled.members, format === 'csv' ? 'CSVWithNames' : 'JSONEachRow');
      // The client yields arrays of rows, each with its line of text.
      for await (const rows of stream as AsyncIterable<{ text: string }[]>) {
        const chunk = rows.map((r) => r.text + '\n').join('');
        if (!process.stdout.write(chunk)) await once(process.stdout, 'drain');
      }
    }
    return 0;
  } catch (e) {
    if (e instanceof SegmentSyntaxError) {
      for (const err of e.errors) {
        const where = err.path && err.path.length > 0 && err.line === undefined ? ` (at ${formatPath(err.path)})` : '';
        process.stderr.write(`error: ${err.message}${where}\n`);
        if (err.excerpt) process.stderr.write(err.excerpt.split('\n').map((l) => `  ${l}`).join('\n') + '\n');
      }
      return 2;
    }
    throw e;
  } finally {
    await ch.close();
  }
}
