// Small measuring helpers shared by the benchmarks.

/** Calls `fn` in batches for about `ms` milliseconds; returns calls per second. */
export function rate(fn: () => void, ms: number, batch = 1000): number {
  let n = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(ms) * 1_000_000n;
  let now = start;
  while (now < end) {
    for (let i = 0; i < batch; i++) fn();
    n += batch;
    now = process.hrtime.bigint();
  }
  return n / (Number(now - start) / 1e9);
}

/** The middle value (upper middle for an even count). */
export function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

/** A rate as a right-aligned whole number with thousands separators. */
export function fmtRate(n: number): string {
  return Math.round(n).toLocaleString("en-US").padStart(12);
}
