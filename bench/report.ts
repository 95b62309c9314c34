// Small helpers every benchmark script shares: progress lines, timings, medians.

/** A progress line on stderr (stdout stays free for results). */
export const say = (m: string): void => void process.stderr.write(m + '\n');

/** Seconds since `t` (a performance.now() reading), to the millisecond. */
export const secs = (t: number): number => +((performance.now() - t) / 1000).toFixed(3);

/** The median of a non-empty list (the upper one of an even count). */
export const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
