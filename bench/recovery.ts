// Recovery time of many homes when the ISP listener restarts. A real `dots-call-home listen`
// process (DTLS and TLS on one port) serves N homes (half UDP, half TCP, RFC 9132 reconnect
// spacing 60 s / 300 s and default heartbeat settings) that run many per process in child
// processes. Three phases, each timed from the moment the listener is started or signalled:
//   cold      all homes dial a fresh listener, start times spread uniformly over the same 5 s as
//             the first-attempt jitter (the reference, measured in this run)
//   graceful  SIGTERM (sessions closed, homes told), then the listener is started again
//   crash     SIGKILL (homes told nothing), then the listener is started again
// For each: time until 50/95/100 % of the homes are back (session-up on the new process),
// session set-ups per second during the storm (peak 1 s and mean), and the listener's CPU.
//   node dist/bench/recovery.js [--homes 1000] [--children 2] [--settle 62] [--crash-wait 150]
import { fork, spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CallHomeDialer } from "../src/dots/home-engine";
import { DEFAULT_FIRST_ATTEMPT_JITTER_MS } from "../src/dots/dialer-connect";

const args = process.argv.slice(2);
const arg = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : def;
};
const KEY = "recovery-bench-key-0123";
const PREFIX = "203.0.113.0/24";
const identity = (i: number): string => `rec-home-${i}`;
const CLI_MAIN = path.resolve(__dirname, "../src/cli/main.js");

// ------------------------------------------------------------------------------ child: homes

interface ChildJob {
  from: number;
  to: number;
  port: number;
}

async function child(job: ChildJob): Promise<void> {
  process.on("disconnect", () => process.exit(0));
  const dialers: CallHomeDialer[] = [];
  const reasons = new Map<string, number>();
  let stopping = false;
  process.on("message", (m: { type: string }) => {
    if (m.type === "reasons") process.send?.({ type: "reasons", reasons: [...reasons] });
    if (m.type !== "stop" || stopping) return;
    stopping = true;
    void Promise.all(dialers.map((d) => d.stop())).then(() => process.exit(0));
  });
  for (let i = job.from; i < job.to; i++) {
    const d = new CallHomeDialer({
      hosts: ["127.0.0.1"],
      port: job.port,
      // Even homes over UDP (DTLS-PSK), odd ones over TCP (TLS-PSK).
      transport: i % 2 === 0 ? "udp" : "tcp",
      psk: { identity: identity(i), key: Buffer.from(KEY) },
      homePrefixes: [PREFIX],
      reconnect: { minMs: 60_000, maxMs: 300_000 },
    });
    d.on("error", () => undefined);
    d.on("disconnected", (e: { reason: string }) => {
      const k = e.reason.replace(/\d+/g, "N").slice(0, 70);
      if (reasons.size < 20 || reasons.has(k)) reasons.set(k, (reasons.get(k) ?? 0) + 1);
    });
    dialers.push(d);
  }
  process.send?.({ type: "ready" });
  const spreadMs = await new Promise<number>((resolve) => process.once("message", (m: { spreadMs: number }) => resolve(m.spreadMs)));
  // Cold start spread like the first-attempt jitter, so the reference storm has the same shape.
  for (const d of dialers) setTimeout(() => void d.start(), Math.floor(Math.random() * spreadMs));
}

// ------------------------------------------------------------------------------ parent

interface Listener {
  proc: ChildProcess;
  startedAt: number;
  /** session-up times (ms since startedAt) per home. */
  ups: Map<string, number>;
  listening: Promise<number>;
}

function cpuMsOf(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const tick = 100; // USER_HZ on Linux
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / tick;
  } catch {
    return NaN;
  }
}

function startListener(configFile: string, port: number, t0: number): Listener {
  const proc = spawn(process.execPath, [CLI_MAIN, "listen", "--config", configFile, "--port", String(port)], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const ups = new Map<string, number>();
  const l: Listener = { proc, startedAt: t0, ups, listening: undefined as unknown as Promise<number> };
  let buf = "";
  let onListening: (p: number) => void = () => undefined;
  const listening = new Promise<number>((r) => (onListening = r));
  proc.stdout!.on("data", (c: Buffer) => {
    buf += c.toString();
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.includes('"event":"session-up"')) {
        const m = /"home":"([^"]+)"/.exec(line);
        if (m && !ups.has(m[1])) ups.set(m[1], Date.now() - l.startedAt);
      } else if (line.includes('"event":"listening"')) {
        const m = /"port":(\d+)/.exec(line);
        onListening(m ? Number(m[1]) : 0);
      }
    }
  });
  l.listening = listening;
  return l;
}

/** The time by which p % of `of` homes were back; NaN when fewer than that came back. */
function pct(sorted: number[], p: number, of: number): number {
  const k = Math.ceil((p / 100) * of);
  return k >= 1 && k <= sorted.length ? sorted[k - 1] : NaN;
}

interface PhaseResult {
  name: string;
  back: number;
  p50: number;
  p95: number;
  p100: number;
  byTransport: Record<string, { n: number; p50: number; p95: number; p100: number }>;
  peakPerS: number;
  meanPerS: number;
  cpuMs: number;
  spanMs: number;
  /** From the signal until the new listener process was listening. */
  downMs?: number;
}

async function measure(name: string, l: Listener, homes: number, waitMs: number): Promise<PhaseResult> {
  const cpu0 = cpuMsOf(l.proc.pid!);
  const deadline = Date.now() + waitMs;
  while (l.ups.size < homes && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
  const cpuMs = cpuMsOf(l.proc.pid!) - cpu0;
  const times = [...l.ups.values()].sort((a, b) => a - b);
  const byTransport: PhaseResult["byTransport"] = {};
  for (const t of ["udp", "tcp"]) {
    const ts = [...l.ups]
      .filter(([h]) => (Number(h.slice(h.lastIndexOf("-") + 1)) % 2 === 0) === (t === "udp"))
      .map(([, ms]) => ms)
      .sort((a, b) => a - b);
    byTransport[t] = { n: ts.length, p50: pct(ts, 50, homes / 2), p95: pct(ts, 95, homes / 2), p100: pct(ts, 100, homes / 2) };
  }
  const buckets = new Map<number, number>();
  for (const t of times) buckets.set(Math.floor(t / 1000), (buckets.get(Math.floor(t / 1000)) ?? 0) + 1);
  const spanMs = times.length > 1 ? Math.max(1, times[times.length - 1] - times[0]) : 1;
  return {
    name,
    back: times.length,
    p50: pct(times, 50, homes),
    p95: pct(times, 95, homes),
    p100: pct(times, 100, homes),
    byTransport,
    peakPerS: Math.max(0, ...buckets.values()),
    meanPerS: times.length / (spanMs / 1000),
    cpuMs,
    spanMs,
  };
}

const s = (ms: number): string => (Number.isNaN(ms) ? "  n/a" : `${(ms / 1000).toFixed(1).padStart(5)} s`);

function stopped(p: ChildProcess): Promise<void> {
  return new Promise((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once("exit", () => r())));
}

async function parent(): Promise<void> {
  const N = Number(arg("homes", "1000"));
  const children = Number(arg("children", "2"));
  const settleS = Number(arg("settle", "62"));
  const crashWaitMs = Number(arg("crash-wait", "150")) * 1000;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-recovery-bench-"));
  const configFile = path.join(dir, "listen.json");
  const homePrefixes: Record<string, string[]> = {};
  for (let i = 0; i < N; i++) homePrefixes[identity(i)] = [PREFIX];
  fs.writeFileSync(
    configFile,
    JSON.stringify({
      host: "127.0.0.1",
      dtls: true,
      tls: true,
      psk: Array.from({ length: N }, (_, i) => ({ identity: identity(i), key: `text:${KEY}`, home: identity(i) })),
      homePrefixes,
      // Every home here comes from 127.0.0.1; real ones come from their own addresses.
      maxTcpPerAddress: N + 100,
      dropList: { maxFailures: 1_000_000, windowMs: 60_000, banMs: 1000 },
    }),
  );
  console.log(
    `recovery bench: ${N} homes (${N / 2} DTLS-PSK over UDP, ${N / 2} TLS-PSK over TCP) in ${children} processes against one \`dots-call-home listen\` process; RFC defaults (heartbeat 30 s, missing-hb-allowed 15, reconnect 60 s / 300 s), node ${process.version}, ${os.cpus().length} cores`,
  );

  let t0 = Date.now();
  let l = startListener(configFile, 0, t0);
  const port = await l.listening;
  const per = Math.ceil(N / children);
  const kids = Array.from({ length: children }, (_, k) =>
    fork(__filename, ["--child", JSON.stringify({ from: k * per, to: Math.min(N, (k + 1) * per), port })], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    }),
  );
  await Promise.all(kids.map((c) => new Promise((r) => c.once("message", r))));
  const results: PhaseResult[] = [];

  // Cold: every home dials at once (no jitter: dialers start together).
  l.startedAt = Date.now();
  l.ups.clear();
  for (const c of kids) c.send({ type: "go", spreadMs: DEFAULT_FIRST_ATTEMPT_JITTER_MS });
  results.push(await measure("cold start (reference)", l, N, 120_000));

  for (const [name, signal] of [
    ["graceful restart (SIGTERM)", "SIGTERM"],
    ["crash (SIGKILL)", "SIGKILL"],
  ] as const) {
    // Let the last reconnects age past 60 s, so this phase starts from a settled state.
    await new Promise((r) => setTimeout(r, settleS * 1000));
    t0 = Date.now();
    l.proc.kill(signal);
    await stopped(l.proc);
    l = startListener(configFile, port, t0);
    await l.listening;
    const downMs = Date.now() - t0;
    results.push({ ...(await measure(name, l, N, signal === "SIGKILL" ? crashWaitMs : 90_000)), downMs });
  }

  const ref = results[0];
  console.log("");
  console.log("  phase                        back        50%      95%     100%   UDP 95%  TCP 95%   set-ups/s peak | mean   listener CPU");
  for (const r of results) {
    console.log(
      `  ${r.name.padEnd(27)} ${String(r.back).padStart(5)}/${N}  ${s(r.p50)}  ${s(r.p95)}  ${s(r.p100)}  ${s(r.byTransport.udp.p95)}  ${s(r.byTransport.tcp.p95)}   ${String(r.peakPerS).padStart(8)} | ${r.meanPerS.toFixed(0).padStart(4)}   ${r.cpuMs.toFixed(0)} ms`,
    );
  }
  console.log("");
  for (const r of results.slice(1)) {
    const ratio = Number.isNaN(r.p95) || Number.isNaN(ref.p95) ? "n/a" : `${(r.p95 / ref.p95).toFixed(1)}x`;
    console.log(
      `  ${r.name}: 95% back in ${s(r.p95).trim()} = ${ratio} the cold-start 95% (${s(ref.p95).trim()}); listener CPU ${(r.cpuMs / ref.cpuMs).toFixed(1)}x the cold start's`,
    );
  }
  for (const r of results.slice(1))
    console.log(`  ${r.name}: listener away ${s(r.downMs ?? NaN).trim()} (signal -> old process gone -> new process listening)`);
  const graceful = results[1];
  const crash = results[2];
  console.log(
    `  target graceful p95 <= 10 s: ${graceful.p95 <= 10_000 ? "met" : "NOT met"}; target crash (UDP) 100% <= 90 s: ${crash.byTransport.udp.p100 <= 90_000 ? "met" : "NOT met"}`,
  );
  const reasons = await Promise.all(
    kids.map(
      (c) =>
        new Promise<Array<[string, number]>>((r) => {
          c.once("message", (m: { reasons: Array<[string, number]> }) => r(m.reasons));
          c.send({ type: "reasons" });
        }),
    ),
  );
  const merged = new Map<string, number>();
  for (const list of reasons) for (const [k, n] of list) merged.set(k, (merged.get(k) ?? 0) + n);
  console.log(
    `  home-side disconnect reasons: ${[...merged]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 6)
      .map(([k, n]) => `${n} x "${k}"`)
      .join("; ")}`,
  );

  for (const c of kids) c.send({ type: "stop" });
  await Promise.all(kids.map(stopped));
  l.proc.kill("SIGTERM");
  await stopped(l.proc);
  fs.rmSync(dir, { recursive: true, force: true });
}

if (args[0] === "--child") {
  void child(JSON.parse(args[1]) as ChildJob);
} else {
  parent().then(
    () => process.exit(0),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
