// RFM scoring: the rules as data, shared by the SQL builder (profiles/sql.ts),
// which applies them inside ClickHouse, and by anything that needs them in process.
//
// Score of a purchaser on one metric = ceil(5 * p), p = (beaten + tied / 2) / n:
// the mid-rank percentile, where n is the number of the app's purchasers,
// `beaten` the number with a strictly worse value and `tied` the number with the
// same value (the purchaser included). Equal values always get equal scores
// (decided by the value alone, never by user_id or scan order), a block of ties
// sits at the middle of the ranks it spans (a lone purchaser, or everyone equal,
// scores 3), and with distinct values each score holds a fifth of the
// purchasers. Worse means: larger recency_days, fewer purchases, less revenue. Revenue is compared at micro-unit precision
// (floor(revenue * 1e6 + 0.5)) so that float summation order cannot split a tie.

export type RfmSegment =
  | 'champions'
  | 'loyal'
  | 'potential_loyalist'
  | 'new_customers'
  | 'promising'
  | 'need_attention'
  | 'about_to_sleep'
  | 'at_risk'
  | 'cannot_lose'
  | 'hibernating'
  | 'lost';

/** 1..5 from the purchasers strictly beaten, those tied (self included) and all purchasers. */
export function quintileScore(beaten: number, tied: number, n: number): number {
  if (!(n > 0) || beaten < 0 || tied < 1 || beaten + tied > n) throw new RangeError(`beaten ${beaten}, tied ${tied} out of range for n ${n}`);
  // ceil(5 * (2 * beaten + tied) / (2 * n)) in integers, as the SQL computes it.
  const a = 5 * (2 * beaten + tied);
  const b = 2 * n;
  return Math.floor((a + b - 1) / b);
}

/**
 * The largest monetary key (revenue 9.2e12): ClickHouse holds the key as Int64,
 * and past 2^63 micro-units toInt64 wraps to a negative key. Revenues above it
 * tie at the top.
 */
export const MONETARY_KEY_MAX = 9.2e18;

/** The monetary comparison key: revenue at micro-unit precision, capped at MONETARY_KEY_MAX. */
export function monetaryKey(revenue: number): number {
  return Math.min(Math.floor(revenue * 1e6 + 0.5), MONETARY_KEY_MAX);
}

/** The combined frequency/monetary score: the mean of f and m, halves rounded up. */
export function fmScore(f: number, m: number): number {
  return Math.floor((f + m + 1) / 2);
}

// Rows: r_score 1..5; columns: fm score 1..5. The widely used RFM grid on
// recency × frequency (here frequency and monetary averaged), with the
// "hibernating" cell r=1, fm=1 split out as "lost".
const GRID: readonly (readonly RfmSegment[])[] = [
  /* r=1 */ ['lost', 'hibernating', 'at_risk', 'at_risk', 'cannot_lose'],
  /* r=2 */ ['hibernating', 'hibernating', 'at_risk', 'at_risk', 'cannot_lose'],
  /* r=3 */ ['about_to_sleep', 'about_to_sleep', 'need_attention', 'loyal', 'loyal'],
  /* r=4 */ ['promising', 'potential_loyalist', 'potential_loyalist', 'loyal', 'loyal'],
  /* r=5 */ ['new_customers', 'potential_loyalist', 'potential_loyalist', 'champions', 'champions'],
];

export function rfmSegment(r: number, f: number, m: number): RfmSegment {
  const seg = GRID[r - 1]?.[fmScore(f, m) - 1];
  if (!seg) throw new RangeError(`scores out of range: r=${r} f=${f} m=${m}`);
  return seg;
}

/** The grid as (r * 10 + fm) → segment pairs, for a SQL `transform`. */
export function segmentTable(): { keys: number[]; names: RfmSegment[] } {
  const keys: number[] = [];
  const names: RfmSegment[] = [];
  GRID.forEach((row, ri) =>
    row.forEach((name, fi) => {
      keys.push((ri + 1) * 10 + fi + 1);
      names.push(name);
    }),
  );
  return { keys, names };
}
