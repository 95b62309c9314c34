// The segment AST: one closed union of node kinds shared by the parser, the JSON
// form, the printer, the checker, the compiler and the reference evaluator.
// Adding a kind here must break every exhaustive `switch (node.kind)` until it
// has a rule everywhere — that is the point of the `never` checks downstream.

/** UTF-16 offsets (JavaScript string indices) into the source text, so text.slice(start, end) is the node; present only for nodes parsed from text. */
export interface Span {
  start: number;
  end: number;
}

export type Literal = string | number | boolean;

export type CompareOp = 'eq' | 'neq' | 'gt' | 'gte' | 'lt' | 'lte';
export type ListOp = 'in' | 'nin';
export type StringOp = 'contains' | 'starts_with' | 'matches';
export type NullOp = 'is_null' | 'is_not_null';
export type ValueOp = CompareOp | ListOp | 'between' | StringOp | NullOp;

/** The right-hand side of a comparison, shaped by its operator. */
export type Predicate =
  | { op: CompareOp; value: Literal }
  | { op: ListOp; value: Literal[] }
  | { op: 'between'; value: [Literal, Literal] }
  | { op: StringOp; value: string }
  | { op: NullOp };

/** A duration such as `30d`; `seconds` is derived from amount × unit. */
export interface Duration {
  amount: number;
  unit: 's' | 'm' | 'h' | 'd' | 'w';
  seconds: number;
}

/** `within 30d` (relative to as_of) or `between "from" and "to"` (absolute, [from, to)). */
export type TimeWindow =
  | { kind: 'within'; duration: Duration }
  | { kind: 'between'; from: string; to: string };

// ---- event-property conditions (the `where` of did/agg/sequence steps) ----

export type PropExpr =
  | { kind: 'and'; items: PropExpr[]; span?: Span }
  | { kind: 'or'; items: PropExpr[]; span?: Span }
  | { kind: 'not'; item: PropExpr; span?: Span }
  | ({ kind: 'prop'; prop: string; span?: Span } & Predicate);

// ---- user conditions ----

export type AggFn = 'sum' | 'avg' | 'min' | 'max' | 'count_distinct';

export interface SequenceStep {
  event: string;
  where?: PropExpr;
}

export type Expr =
  | { kind: 'and'; items: Expr[]; span?: Span }
  | { kind: 'or'; items: Expr[]; span?: Span }
  | { kind: 'not'; item: Expr; span?: Span }
  /** A profile field or trait (`traits.<key>` always names a trait). */
  | ({ kind: 'attr'; attr: string; span?: Span } & Predicate)
  | {
      kind: 'did';
      event: string;
      where?: PropExpr;
      /** Absent means `count >= 1`. */
      count?: { op: CompareOp; value: number };
      window?: TimeWindow;
      span?: Span;
    }
  | { kind: 'first_did'; event: string; where?: PropExpr; window?: TimeWindow; span?: Span }
  | { kind: 'stopped'; event: string; where?: PropExpr; within: Duration; before: Duration; span?: Span }
  | { kind: 'sequence'; steps: SequenceStep[]; within?: Duration; inLast?: Duration; span?: Span }
  | {
      kind: 'agg';
      fn: AggFn;
      event: string;
      prop: string;
      where?: PropExpr;
      window?: TimeWindow;
      op: CompareOp;
      value: number;
      span?: Span;
    }
  | { kind: 'tag'; tag: string; span?: Span }
  | { kind: 'in_segment'; ref: string; span?: Span };

export type ExprKind = Expr['kind'];

/** Exhaustiveness guard for visitors over closed unions. */
export function unreachable(x: never): never {
  throw new Error(`unhandled node: ${JSON.stringify(x)}`);
}

export const DURATION_SECONDS: Record<Duration['unit'], number> = {
  s: 1,
  m: 60,
  h: 3600,
  d: 86_400,
  w: 604_800,
};

export function duration(amount: number, unit: Duration['unit']): Duration {
  return { amount, unit, seconds: amount * DURATION_SECONDS[unit] };
}
