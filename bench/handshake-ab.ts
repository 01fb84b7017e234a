// A/B of two builds of our DTLS server: this build and a baseline build directory (for example a
// copy of dist/ made before a change), each in its own process, with coap-server-openssl in the same
// run as the reference. Rounds alternate the order of the two builds; each handshake pass is ours
// (bench/handshake.js --our-client-handshakes) in a child process. Server CPU is read from
// /proc/<pid>/task/*/schedstat (nanoseconds), fine enough to see a few percent where the 10 ms ticks
// of /proc/<pid>/stat are not. The figure to read is the median of the per-round new/base ratios:
// this machine is noisy (about +-10% per round), a ratio within a round is the fairest.
// Usage: node dist/bench/handshake-ab.js <baseline dist dir> [suite=TLS_PSK_WITH_AES_128_CCM_8]
//   [--handshakes=1000] [--rounds=8] [--warmup=3]
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { threadCpuMicrosOf } from "./lib/cpu";
import { haveLibcoap, startLibcoap, PSK_KEY_TEXT } from "./session-memory";

const KEY = Buffer.from(PSK_KEY_TEXT);
const HANDSHAKE_BENCH = path.join(__dirname, "handshake.js");

/** Child mode: a DtlsServer from the build in `dir`; prints its port. */
function serve(dir: string): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { DtlsServer } = require(path.resolve(dir, "src/transport/dtls")) as typeof import("../src/transport/dtls");
  const server = new DtlsServer({
    pskHint: "CoAP", // as libcoap sends
    pskLookup: () => KEY,
    maxHandshaking: 5000,
    maxHandshakingPerSource: 5000,
    maxPeers: 20000,
  });
  server.on("connection", () => undefined);
  void server.listen(0, "127.0.0.1").then(({ port }) => process.stdout.write(`${port}\n`));
}

async function startBuild(dir: string): Promise<{ proc: ChildProcess; port: number }> {
  const proc = spawn(process.execPath, [__filename, "--serve", dir], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.once("data", (d: Buffer) => resolve(Number(String(d).trim())));
    proc.once("exit", (code) => reject(new Error(`server of ${dir} exited (${code})`)));
  });
  return { proc, port };
}

interface Pass {
  us: number;
  rate: number;
}

async function pass(port: number, pid: number, handshakes: number, suite: string): Promise<Pass> {
  const c0 = threadCpuMicrosOf(pid);
  const child = spawn(process.execPath, [HANDSHAKE_BENCH, "--our-client-handshakes", String(port), String(handshakes), "4", suite], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  const r = await new Promise<{ ok: number; seconds: number }>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      out += String(d);
      if (out.includes("\n")) resolve(JSON.parse(out) as { ok: number; seconds: number });
    });
    child.once("exit", (code) => (out.includes("\n") ? undefined : reject(new Error(`client exited (${code})`))));
  });
  if (r.ok === 0) throw new Error(`no handshake completed on port ${port}`);
  return { us: (threadCpuMicrosOf(pid) - c0) / r.ok, rate: r.ok / r.seconds };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const flag = (name: string, fallback: number): number => {
    const v = argv.find((x) => x.startsWith(`--${name}=`));
    return v ? Number(v.slice(name.length + 3)) : fallback;
  };
  const [baseline, suite = "TLS_PSK_WITH_AES_128_CCM_8"] = argv.filter((x) => !x.startsWith("--"));
  if (!baseline) {
    // Run by `npm run bench` with the others: there is nothing to compare without a baseline build.
    console.log("no baseline build given, nothing to compare: handshake-ab.js <baseline dist dir> [suite]");
    return;
  }
  if (!fs.existsSync(path.join(baseline, "src/transport/dtls/index.js"))) throw new Error(`${baseline} has no src/transport/dtls build`);
  const handshakes = flag("handshakes", 1000);
  const rounds = flag("rounds", 8);
  const builds = { base: await startBuild(baseline), new: await startBuild(path.join(__dirname, "..")) };
  const ref = haveLibcoap() ? await startLibcoap() : undefined;
  try {
    const run = (which: "base" | "new" | "ref"): Promise<Pass> =>
      which === "ref"
        ? pass(ref!.securePort, ref!.proc.pid!, handshakes, suite)
        : pass(builds[which].port, builds[which].proc.pid!, handshakes, suite);
    const order: Array<"base" | "new" | "ref"> = ref ? ["base", "new", "ref"] : ["base", "new"];
    for (let i = 0; i < flag("warmup", 3); i++) for (const w of order) await run(w);
    console.log(
      `A/B of our DTLS server, ${suite}, node ${process.version}: ${rounds} rounds of ${handshakes} handshakes (4 in parallel) on each`,
    );
    const rows: Record<"base" | "new" | "ref", Pass[]> = { base: [], new: [], ref: [] };
    for (let i = 0; i < rounds; i++) {
      const roundOrder = i % 2 === 0 ? order : [order[1], order[0], ...order.slice(2)];
      for (const w of roundOrder) rows[w].push(await run(w));
      const line = order.map((w) => `${w} ${rows[w][i].us.toFixed(0)} us ${rows[w][i].rate.toFixed(0)}/s`).join("; ");
      console.log(`  round ${i + 1}: ${line}`);
    }
    const ratio = (a: "base" | "new" | "ref", b: "base" | "new" | "ref", f: (p: Pass) => number): string =>
      median(rows[a].map((p, i) => f(p) / f(rows[b][i]))).toFixed(3);
    console.log(`  server CPU per handshake, median of the per-round ratios: new/base ${ratio("new", "base", (p) => p.us)}`);
    if (ref) {
      console.log(
        `  against coap-server-openssl: CPU base ${ratio("base", "ref", (p) => p.us)}x, new ${ratio("new", "ref", (p) => p.us)}x; ` +
          `rate base ${ratio("base", "ref", (p) => p.rate)}x, new ${ratio("new", "ref", (p) => p.rate)}x`,
      );
    }
  } finally {
    builds.base.proc.kill();
    builds.new.proc.kill();
    ref?.proc.kill("SIGKILL");
  }
}

if (process.argv[2] === "--serve") serve(process.argv[3]);
else
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
