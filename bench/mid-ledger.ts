// Cost of keeping mids durable on the ISP side: MidLedger.reserve() for N consecutive mids of one
// home (one atomic write + fsync per block of MID_BLOCK mids), beside the reference measured in
// the same run and directory: one atomic write + fsync per mid (what storing every mid would
// cost). The ratio is the figure.
//   node dist/bench/mid-ledger.js [--n 2048] [--dir /var/tmp]
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import { MID_BLOCK, MidLedger, writeAtomically } from "../src/dots/isp-mid-ledger";

const args = process.argv.slice(2);
const arg = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : def;
};
const N = Number(arg("n", "2048"));
const base = arg("dir", os.tmpdir());

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(base, "mid-ledger-bench-"));
  try {
    const ledger = new MidLedger(dir, (e) => console.error(e.message));
    await ledger.open();
    const id = "psk-benchbenchbenchbenchbe";
    const t0 = performance.now();
    for (let mid = 0; mid < N; mid++) await ledger.reserve(id, "bench", "bench-cuid", mid);
    const blocked = (performance.now() - t0) / N;

    const file = path.join(dir, "reference.json");
    const t1 = performance.now();
    for (let mid = 0; mid < N; mid++)
      await writeAtomically(file, JSON.stringify({ version: 1, home: "bench", mids: { "bench-cuid": mid } }) + "\n");
    const each = (performance.now() - t1) / N;

    console.log(`directory: ${dir} (${N} mids, one home)`);
    console.log(`reserve(), a write per ${MID_BLOCK} mids   ${(blocked * 1000).toFixed(1).padStart(10)} us per mid`);
    console.log(`reference: write + fsync per mid     ${(each * 1000).toFixed(1).padStart(10)} us per mid`);
    console.log(`ratio (reserve / reference)          ${(blocked / each).toFixed(3).padStart(10)}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
