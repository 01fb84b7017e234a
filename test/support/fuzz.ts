// Fuzz case counts: the full count in `npm test` and CI; DOTS_FUZZ_SCALE (a fraction, e.g. 0.02
// in `npm run test:unit`) shrinks them for a fast edit-test loop. Seeds stay the same, so a
// smaller run checks a prefix of the same cases.
const raw = process.env.DOTS_FUZZ_SCALE;
const scale = raw === undefined || raw === "" ? 1 : Number(raw);
if (!(scale > 0 && scale <= 1)) throw new Error(`DOTS_FUZZ_SCALE must be a number in (0, 1], got "${raw}"`);

/** `full` cases, scaled by DOTS_FUZZ_SCALE (at least 100, never more than `full`). */
export function fuzzRuns(full: number): number {
  return Math.min(full, Math.max(100, Math.round(full * scale)));
}
