// How many call-home sessions one listener process holds with heartbeats running. The dialers
// run in child processes so their CPU and memory do not count against the listener; the listener
// process measures its own RSS per session and CPU per heartbeat (sent + received), and reports
// them beside the same process's idle figures measured in the same run.
//   node .build/<name>/bench/capacity.js [--sessions 5000] [--transport udp|tcp] [--hb 15]
//        [--window 30] [--children 2] [--concurrency 40] [--per-source N] [--stall 20]
import { fork } from "node:child_process";
import type { SessionInfo } from "../src/dots/api";
import { CallHomeListener } from "../src/dots/isp-engine";
import { CallHomeDialer } from "../src/dots/home-engine";

const args = process.argv.slice(2);
const arg = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : def;
};
const KEY = Buffer.from("capacity-bench-key-0123");
const PREFIX = "203.0.113.0/24";
const identity = (i: number): string => `cap-home-${i}`;

// ------------------------------------------------------------------------------ child: dialers

interface ChildJob {
  from: number;
  to: number;
  port: number;
  transport: "udp" | "tcp";
  hb: number;
  concurrency: number;
}

async function child(job: ChildJob): Promise<void> {
  // The parent gone (killed, crashed): do not linger.
  process.on("disconnect", () => process.exit(0));
  const dialers: CallHomeDialer[] = [];
  let connected = 0;
  let failed = 0;
  // Sessions the home side saw end (loss detection, closes): they explain missing heartbeats.
  let disconnects = 0;
  const reasons = new Map<string, number>();
  const report = (): void => {
    const c = process.cpuUsage();
    process.send?.({
      type: "progress",
      connected,
      failed,
      disconnects,
      reasons: [...reasons].slice(0, 3),
      cpuMs: (c.user + c.system) / 1000,
    });
  };
  const timer = setInterval(report, 1000);
  let stopping = false;
  // Registered first: a stop may come while set-ups are still waiting out their timeouts.
  process.on("message", (m: { type: string }) => {
    if (m.type !== "stop" || stopping) return;
    stopping = true;
    clearInterval(timer);
    void Promise.all(dialers.map((d) => d.stop())).then(() => process.exit(0));
  });
  let next = job.from;
  const startOne = async (i: number): Promise<void> => {
    const d = new CallHomeDialer({
      hosts: ["127.0.0.1"],
      port: job.port,
      transport: job.transport,
      psk: { identity: identity(i), key: KEY },
      homePrefixes: [PREFIX],
      heartbeatInterval: job.hb,
      reconnect: { minMs: 60_000, maxMs: 300_000 },
    });
    d.on("error", () => undefined);
    d.on("disconnected", (e: { reason: string }) => {
      disconnects++;
      const k = e.reason.slice(0, 60);
      if (reasons.size < 10 || reasons.has(k)) reasons.set(k, (reasons.get(k) ?? 0) + 1);
    });
    dialers.push(d);
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        failed++;
        resolve();
      }, 60_000);
      d.once("connected", () => {
        clearTimeout(t);
        connected++;
        resolve();
      });
      void d.start();
    });
  };
  const worker = async (): Promise<void> => {
    while (next < job.to && !stopping) await startOne(next++);
  };
  await Promise.all(Array.from({ length: job.concurrency }, worker));
  if (!stopping) report();
}

// ------------------------------------------------------------------------------ parent: listener

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) {
    g();
    g();
  }
}

const mb = (b: number): string => `${(b / 1048576).toFixed(1)} MB`;

async function parent(): Promise<void> {
  const N = Number(arg("sessions", "5000"));
  const transport = arg("transport", "udp") as "udp" | "tcp";
  const hb = Number(arg("hb", "15"));
  const windowS = Number(arg("window", "30"));
  const children = Number(arg("children", "2"));
  const concurrency = Number(arg("concurrency", "40"));
  // Every dialer here comes from 127.0.0.1, where real homes come from their own addresses: lift
  // the per-source TCP cap (a drop-list policy, default 256) so it does not stand in for capacity.
  const perSource = Number(arg("per-source", String(N + 100)));

  const psk = Array.from({ length: N }, (_, i) => ({ identity: identity(i), key: KEY, home: identity(i) }));
  const homePrefixes: Record<string, string[]> = {};
  for (let i = 0; i < N; i++) homePrefixes[identity(i)] = [PREFIX];
  const listener = new CallHomeListener(
    { port: 0, host: "127.0.0.1", transports: { dtls: transport === "udp", tls: transport === "tcp" }, psk, homePrefixes },
    { maxSessions: N + 100, maxDtlsPeers: N + 100, maxTcpPerAddress: perSource },
  );
  let errors = 0;
  listener.on("error", () => errors++);
  let up = 0;
  let down = 0;
  let hbIn = 0;
  let hbOut = 0;
  listener.on("session-up", (_s: SessionInfo) => up++);
  listener.on("session-down", () => down++);
  listener.on("heartbeat", (h: { direction: string }) => (h.direction === "in" ? hbIn++ : hbOut++));
  await listener.start();
  gc();
  const rss0 = process.memoryUsage().rss;
  const heap0 = process.memoryUsage().heapUsed;

  // Idle reference: the listener's own CPU with no sessions, same duration as one second.
  const idleCpu0 = process.cpuUsage();
  await new Promise((r) => setTimeout(r, 1000));
  const idleCpu = process.cpuUsage(idleCpu0);

  console.log(
    `capacity bench: ${N} ${transport === "udp" ? "DTLS-PSK" : "TLS-PSK"} sessions, heartbeat-interval ${hb} s, ${children} dialer processes, node ${process.version}${transport === "tcp" ? `, per-source TCP cap ${perSource} (all dialers share 127.0.0.1)` : ""}`,
  );
  const t0 = Date.now();
  const per = Math.ceil(N / children);
  const childStats: Array<{ cpuMs: number; connected: number; failed: number; disconnects: number; reasons: Array<[string, number]> }> = [];
  const kids = Array.from({ length: children }, (_, k) => {
    const job: ChildJob = { from: k * per, to: Math.min(N, (k + 1) * per), port: listener.port as number, transport, hb, concurrency };
    const c = fork(__filename, ["--child", JSON.stringify(job)], {
      execArgv: ["--max-old-space-size=8192"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    c.on(
      "message",
      (m: {
        type: string;
        cpuMs?: number;
        connected?: number;
        failed?: number;
        disconnects?: number;
        reasons?: Array<[string, number]>;
      }) => {
        if (m.type === "progress")
          childStats[k] = {
            cpuMs: m.cpuMs ?? 0,
            connected: m.connected ?? 0,
            failed: m.failed ?? 0,
            disconnects: m.disconnects ?? 0,
            reasons: m.reasons ?? [],
          };
      },
    );
    return c;
  });
  const deadline = Date.now() + Number(arg("setup-timeout", "600")) * 1000;
  let lastPrint = 0;
  // Stop waiting when set-up stalls: the rest wait out the RFC reconnect back-off (>= 60 s).
  const stallMs = Number(arg("stall", "20")) * 1000;
  let lastCount = -1;
  let lastChange = Date.now();
  while (up - down < N && Date.now() < deadline && Date.now() - lastChange < stallMs) {
    await new Promise((r) => setTimeout(r, 500));
    if (up - down !== lastCount) {
      lastCount = up - down;
      lastChange = Date.now();
    }
    if (Date.now() - lastPrint > 10_000) {
      lastPrint = Date.now();
      console.log(`  ... ${up - down} sessions up after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    }
  }
  const setupS = (Math.min(Date.now(), lastChange) - t0) / 1000;
  const live = listener.sessions().length;
  console.log(
    `  sessions up: ${live} / ${N} after ${setupS.toFixed(1)} s (${(live / setupS).toFixed(0)} set-ups/s incl. handshakes and GET /config)`,
  );

  gc();
  const mem = process.memoryUsage();
  const rssPer = (mem.rss - rss0) / Math.max(1, live);
  const heapPer = (mem.heapUsed - heap0) / Math.max(1, live);

  // Steady state: let one heartbeat interval pass so start-up replies are over, then measure.
  await new Promise((r) => setTimeout(r, hb * 1000));
  const kidCpu0 = childStats.map((c) => c.cpuMs);
  hbIn = 0;
  hbOut = 0;
  const downBefore = down;
  const cpu0 = process.cpuUsage();
  const w0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, windowS * 1000));
  const cpu = process.cpuUsage(cpu0);
  const wallS = Number(process.hrtime.bigint() - w0) / 1e9;
  const cpuMs = (cpu.user + cpu.system) / 1000;
  const beats = hbIn + hbOut;

  console.log(
    `  listener RSS: ${mb(rss0)} idle -> ${mb(mem.rss)} with ${live} sessions: ${(rssPer / 1024).toFixed(1)} KB RSS and ${(heapPer / 1024).toFixed(1)} KB heap per session`,
  );
  console.log(
    `  heartbeats in ${wallS.toFixed(1)} s: ${hbIn} received + ${hbOut} sent = ${(beats / wallS).toFixed(0)}/s; sessions lost meanwhile: ${down - downBefore}`,
  );
  console.log(
    `  listener CPU: ${cpuMs.toFixed(0)} ms over ${wallS.toFixed(1)} s = ${((cpuMs / (wallS * 1000)) * 100).toFixed(1)}% of one core; ${beats ? ((cpuMs * 1000) / beats).toFixed(1) : "n/a"} us CPU per heartbeat`,
  );
  const idleMsPerS = (idleCpu.user + idleCpu.system) / 1000;
  console.log(
    `  reference (same process, no sessions): ${idleMsPerS.toFixed(1)} ms CPU per second idle; with sessions ${(cpuMs / wallS).toFixed(1)} ms per second = ${(cpuMs / wallS / Math.max(0.1, idleMsPerS)).toFixed(0)}x idle; engine errors seen: ${errors}`,
  );
  console.log(
    `  dialer processes (not counted above): ${childStats.map((c, i) => `#${i} ${(((c.cpuMs - (kidCpu0[i] ?? 0)) / (wallS * 1000)) * 100).toFixed(0)}% CPU, ${c.failed} set-ups timed out, ${c.disconnects} disconnects`).join("; ")}`,
  );
  const why = childStats.flatMap((c) => c.reasons);
  if (why.length) console.log(`  home-side disconnect reasons: ${why.map(([r, n]) => `${n} x "${r}"`).join("; ")}`);
  console.log(`  target >= 5000 sessions: ${live >= 5000 ? "met" : "NOT met"}`);

  for (const c of kids) c.send({ type: "stop" });
  await Promise.all(kids.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once("exit", r)))));
  await listener.stop();
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
