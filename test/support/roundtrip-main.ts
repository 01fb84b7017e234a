// `node dist/test/support/roundtrip-main.js udp tcp`: the call-home round trip without mocha
// (mocha 12 needs require(esm), which Node 22.9-22.11 lack). Exit 0 when every transport passed.
import type { CliProcess } from "./cli-process";
import { callHomeRoundTrip } from "./roundtrip";

async function run(transports: string[]): Promise<number> {
  let failed = 0;
  for (const t of transports) {
    if (t !== "udp" && t !== "tcp") throw new Error(`transport must be udp or tcp, got ${t}`);
    const procs: CliProcess[] = [];
    const started = Date.now();
    try {
      const { cipher } = await callHomeRoundTrip(t, procs);
      console.log(`ok   call-home round trip over ${t} on Node ${process.version}: ${cipher} (${Date.now() - started} ms)`);
    } catch (e) {
      failed++;
      console.log(`FAIL call-home round trip over ${t} on Node ${process.version}: ${(e as Error).message}`);
    } finally {
      for (const p of procs) await p.stop();
    }
  }
  return failed === 0 ? 0 : 1;
}

run(process.argv.slice(2).length ? process.argv.slice(2) : ["udp", "tcp"]).then(
  (code) => process.exit(code),
  (e: Error) => {
    console.error(e.message);
    process.exit(2);
  },
);
