// Explaining a segment: the generated query, and how many users of the universe
// each node of the expression matches — all nodes counted by ONE extra query
// (a sum per node's 0/1 column over the universe).
import type { ClickHouse } from '../lib/clickhouse.ts';
import { formatPath } from './errors.ts';
import { isoSeconds } from '../lib/instant.ts';
import { prepareSegment } from './evaluate.ts';
import { printSegment } from './print.ts';

export interface ExplainedNode {
  /** JSON-form path of the node, zod style (`[]` is the root, `["and", 1, "not"]` …). */
  path: (string | number)[];
  /** The same path as text (`and[1].not`). */
  at: string;
  /** The node in the text form. */
  text: string;
  kind: string;
  /** Users of the universe for which this node holds. */
  count: number;
}

export interface ExplainResult {
  as_of: string;
  profiles_as_of: string | null;
  /** Users of the app with an event at or before as_of. */
  universe: number;
  /** Members (the root node's count). */
  count: number;
  /** The members query as it runs for evaluate and exports. */
  sql: string;
  /** Whether the members query starts from the universe or from the events scan. */
  driver: 'universe' | 'events' | 'traits' | 'profile' | 'firsts';
  nodes: ExplainedNode[];
}

export async function explainSegment(ch: ClickHouse, appId: string, input: unknown, opts: { asOf?: Date; jobClient?: ClickHouse } = {}): Promise<ExplainResult> {
  const p = await prepareSegment(ch, appId, input, opts.asOf, opts.jobClient ? { jobClient: opts.jobClient } : {});
  const [row] = await ch.rows<Record<string, string>>(p.compiled.nodeCounts);
  const nodes = p.compiled.nodes.map((n) => ({
    path: n.path,
    at: formatPath(n.path),
    text: printSegment(n.node),
    kind: n.node.kind,
    count: Number(row?.[n.column] ?? 0),
  }));
  return {
    as_of: isoSeconds(p.asOf),
    profiles_as_of: p.profilesAsOf ? isoSeconds(p.profilesAsOf) : null,
    universe: Number(row?.universe ?? 0),
    count: nodes[0]?.count ?? 0,
    sql: p.compiled.members.text,
    driver: p.compiled.driver,
    nodes,
  };
}
