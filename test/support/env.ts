// Decides whether a test that needs a system tool or privilege runs. Under CI (CI=true) a missing
// tool is a failure, not a skip: .ci/run installs everything, so absence there is a real defect.
import { spawnSync } from "node:child_process";

export const inCI = process.env.CI === "true" || process.env.CI === "1";

export function hasCommand(name: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" }).status === 0;
}

export function isRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

/**
 * Call inside a mocha `before` with `this`: skips the suite locally when a requirement is missing,
 * throws under CI so the gap is visible.
 */
export function requireOrSkip(ctx: Mocha.Context, what: string, available: boolean): void {
  if (available) return;
  if (inCI) throw new Error(`required for this suite but missing on the CI machine: ${what}`);
  ctx.skip();
}
