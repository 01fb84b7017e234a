// Memory per established idle session on the ISP side (the listener holds one per home): RSS delta
// of the server process over N sessions (default 1,000), for DTLS-PSK (our DtlsServer) and TLS-PSK
// (our TlsServer, TLS 1.3 and 1.2), against references measured in the same run: N plain TCP
// connections on a bare net.Server, N bare node:tls PSK sessions (our TLS layer's own cost), and
// libcoap's coap-server-openssl holding N DTLS and N TLS PSK sessions. Every server runs in a fresh
// process (the one measured); its clients run in another process (our DTLS and TLS clients).
//
// Two figures per row, both against a baseline taken the same way:
// - "after handshakes": GC right after the last handshake. This includes what V8 keeps from the
//   burst itself (the young generation grows while 1,000 handshakes allocate and is not shrunk yet).
// - "idle": the sessions then sit idle for IDLE_MS before the GC; V8 judges its allocation rate
//   over about 5 s and only then gives the young generation back. This is what idle sessions cost.
// Heap used and external (Buffer) bytes are per session too; for libcoap only RSS exists.
// Usage: node .build/<out>/bench/session-memory.js [sessions=1000] [idleMs=6000]
import { fork, spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as dgram from "node:dgram";
import * as fs from "node:fs";
import * as net from "node:net";
import * as tls from "node:tls";
import type { Connection } from "../src/transport/connection";
import { connectDtls } from "../src/transport/dtls-client";
import { DtlsServer } from "../src/transport/dtls/server";
import { PSK_CIPHERS, connectTls, createTlsServer } from "../src/transport/tls";

export type Scenario = "tcp" | "node-tls-psk" | "tls-psk" | "tls12-psk" | "dtls-psk" | "libcoap-dtls-psk" | "libcoap-tls-psk";
export const PSK_KEY_TEXT = "secretPSK-0123456789";
const KEY = Buffer.from(PSK_KEY_TEXT);
const WARMUP = 20;
const PARALLEL = 50;
export const DEFAULT_IDLE_MS = 6000;

interface Snapshot {
  rss: number;
  heapUsed: number;
  /** external (it includes arrayBuffers, the Buffer contents); NaN for a non-Node server. */
  external: number;
}

export interface MemoryResult {
  scenario: Scenario;
  sessions: number;
  failed: number;
  afterHandshakes: Snapshot;
  idle: Snapshot;
  /**
   * The same for `sessions` more on top (idle too): what one more session costs once the process has
   * reached its steady state (the allocator's high-water mark from the first burst of handshakes).
   */
  marginal: Snapshot;
  marginalSessions: number;
  setupSeconds: number;
}

type Msg =
  | { kind: "port"; port: number }
  | { kind: "warm" }
  | { kind: "go"; n: number }
  | { kind: "opened"; n: number; failed: number }
  | { kind: "result"; result: MemoryResult };

function send(proc: NodeJS.Process | ChildProcess, msg: Msg): void {
  proc.send?.(msg);
}

function next(proc: NodeJS.Process | ChildProcess, kind: Msg["kind"]): Promise<Msg> {
  return new Promise((resolve, reject) => {
    const on = (m: Msg) => {
      if (m.kind !== kind) return;
      proc.off("message", on);
      proc.off("exit", onExit);
      resolve(m);
    };
    const onExit = (code: number | null) => reject(new Error(`process exited (${code}) while waiting for '${kind}'`));
    proc.on("message", on);
    if (proc !== process) proc.once("exit", onExit);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function nodeSnapshot(idleMs: number): Promise<Snapshot> {
  if (idleMs > 0) await sleep(idleMs);
  for (let i = 0; i < 3; i++) {
    global.gc?.();
    await sleep(200);
  }
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external };
}

function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

const minus = (a: Snapshot, b: Snapshot): Snapshot => ({
  rss: a.rss - b.rss,
  heapUsed: a.heapUsed - b.heapUsed,
  external: a.external - b.external,
});

/** Server process (Node scenarios): owns the sessions whose memory is measured. */
async function serverMain(scenario: Scenario, n: number, idleMs: number): Promise<void> {
  let established = 0;
  let port: number;
  const keep: unknown[] = [];
  if (scenario === "tcp") {
    const server = net.createServer((s) => {
      s.on("error", () => undefined);
      keep.push(s);
      established++;
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as net.AddressInfo).port;
  } else if (scenario === "node-tls-psk") {
    // Bare node:tls with the same suites, to show what our Connection layer adds on top.
    const server = tls.createServer({ pskCallback: () => KEY, ciphers: PSK_CIPHERS, ALPNProtocols: ["coap"] }, (s) => {
      s.on("error", () => undefined);
      s.on("data", () => undefined);
      keep.push(s);
      established++;
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as net.AddressInfo).port;
  } else if (scenario === "tls-psk" || scenario === "tls12-psk") {
    const server = createTlsServer({ psk: { lookup: () => KEY } });
    server.on("connection", (c: Connection) => (keep.push(c), established++));
    port = (await server.listen(0, "127.0.0.1")).port;
  } else {
    const server = new DtlsServer({ pskLookup: () => KEY });
    server.on("connection", (c: Connection) => (keep.push(c), established++));
    port = (await server.listen(0, "127.0.0.1")).port;
  }
  const client = fork(__filename, ["client", scenario, String(port)], { stdio: "inherit" });
  await next(client, "warm");
  while (established < WARMUP) await sleep(10);
  const beforeNow = await nodeSnapshot(0);
  const beforeIdle = await nodeSnapshot(idleMs);
  const base = established;
  const t0 = process.hrtime.bigint();
  send(client, { kind: "go", n });
  const opened = (await next(client, "opened")) as Extract<Msg, { kind: "opened" }>;
  while (established - base < opened.n) await sleep(10);
  const setupSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const afterNow = await nodeSnapshot(0);
  const afterIdle = await nodeSnapshot(idleMs);
  const sessions = established - base;
  const steady = established;
  send(client, { kind: "go", n });
  const more = (await next(client, "opened")) as Extract<Msg, { kind: "opened" }>;
  while (established - steady < more.n) await sleep(10);
  const moreIdle = await nodeSnapshot(idleMs);
  send(process, {
    kind: "result",
    result: {
      scenario,
      sessions,
      failed: opened.failed,
      afterHandshakes: minus(afterNow, beforeNow),
      idle: minus(afterIdle, beforeIdle),
      marginal: minus(moreIdle, afterIdle),
      marginalSessions: established - steady,
      setupSeconds,
    },
  });
  client.kill("SIGKILL");
  setTimeout(() => process.exit(0), 100);
}

/** Client process: opens warm-up sessions, then n more, and holds them idle. */
async function clientMain(scenario: Scenario, port: number): Promise<void> {
  const held: unknown[] = [];
  const tlsScenario = scenario === "tls-psk" || scenario === "tls12-psk" || scenario === "node-tls-psk" || scenario === "libcoap-tls-psk";
  const open = async (): Promise<boolean> => {
    try {
      if (scenario === "tcp") {
        const s = net.connect(port, "127.0.0.1");
        s.on("error", () => undefined);
        await new Promise((r, j) => (s.once("connect", r), s.once("error", j)));
        held.push(s);
      } else if (tlsScenario) {
        const maxVersion = scenario === "tls12-psk" ? "TLSv1.2" : undefined;
        // libcoap does not select ALPN on PSK sessions.
        const requireAlpn = scenario !== "libcoap-tls-psk";
        const conn = await connectTls({
          host: "127.0.0.1",
          port,
          maxVersion,
          requireAlpn,
          psk: { identity: `home-${held.length}`, key: KEY },
        });
        // libcoap expects a CSM (RFC 8323 5.3) first: an empty one is the frame 00 e1.
        if (scenario === "libcoap-tls-psk") conn.send(Buffer.from([0x00, 0xe1]));
        held.push(conn);
      } else {
        held.push(await connectDtls({ host: "127.0.0.1", port, psk: { identity: `home-${held.length}`, key: KEY }, attempts: 5 }));
      }
      return true;
    } catch {
      return false;
    }
  };
  const many = async (n: number): Promise<{ ok: number; failed: number }> => {
    let started = 0;
    let ok = 0;
    let failed = 0;
    await Promise.all(
      Array.from({ length: Math.min(PARALLEL, n) }, async () => {
        while (started < n) {
          started++;
          if (await open()) ok++;
          else failed++;
        }
      }),
    );
    return { ok, failed };
  };
  await many(WARMUP);
  send(process, { kind: "warm" });
  // Each "go" opens that many more; all are held until the process is killed.
  for (;;) {
    const go = (await next(process, "go")) as Extract<Msg, { kind: "go" }>;
    const { ok, failed } = await many(go.n);
    send(process, { kind: "opened", n: ok, failed });
  }
}

export function haveLibcoap(): boolean {
  return spawnSync("sh", ["-c", "command -v coap-server-openssl"]).status === 0;
}

async function portFree(port: number): Promise<boolean> {
  const udp = await new Promise<boolean>((resolve) => {
    const s = dgram.createSocket("udp4");
    s.once("error", () => resolve(false));
    s.bind(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
  if (!udp) return false;
  return new Promise<boolean>((resolve) => {
    const t = net.createServer();
    t.once("error", () => resolve(false));
    t.listen(port, "127.0.0.1", () => t.close(() => resolve(true)));
  });
}

/** coap-server-openssl -k listens on p (UDP/TCP) and p+1 (DTLS/TLS): find a pair that is free now. */
/** `credentials`: coap-server-openssl's own flags (default the bench PSK; -c/-j/-C for certificates). */
export async function startLibcoap(credentials: string[] = ["-k", PSK_KEY_TEXT]): Promise<{ proc: ChildProcess; securePort: number }> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const p = 20000 + 2 * Math.floor(Math.random() * 15000);
    if (!(await portFree(p)) || !(await portFree(p + 1))) continue;
    const proc = spawn("coap-server-openssl", [...credentials, "-A", "127.0.0.1", "-p", String(p)], { stdio: "ignore" });
    await sleep(300);
    if (proc.exitCode === null) return { proc, securePort: p + 1 };
  }
  throw new Error("could not start coap-server-openssl");
}

/** Reference: libcoap's server process holding the sessions (RSS only; it has no GC to wait for). */
async function measureLibcoap(scenario: Scenario, n: number, idleMs: number): Promise<MemoryResult> {
  const lib = await startLibcoap();
  const pid = lib.proc.pid!;
  const client = fork(__filename, ["client", scenario, String(lib.securePort)], { stdio: "inherit" });
  try {
    await next(client, "warm");
    await sleep(300);
    const beforeNow = rssOf(pid);
    await sleep(idleMs);
    const beforeIdle = rssOf(pid);
    const t0 = process.hrtime.bigint();
    send(client, { kind: "go", n });
    const opened = (await next(client, "opened")) as Extract<Msg, { kind: "opened" }>;
    const setupSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    await sleep(300);
    const afterNow = rssOf(pid);
    await sleep(idleMs);
    const afterIdle = rssOf(pid);
    send(client, { kind: "go", n });
    const more = (await next(client, "opened")) as Extract<Msg, { kind: "opened" }>;
    await sleep(idleMs);
    const moreIdle = rssOf(pid);
    const rssOnly = (rss: number): Snapshot => ({ rss, heapUsed: NaN, external: NaN });
    return {
      scenario,
      sessions: opened.n,
      failed: opened.failed,
      afterHandshakes: rssOnly(afterNow - beforeNow),
      idle: rssOnly(afterIdle - beforeIdle),
      marginal: rssOnly(moreIdle - afterIdle),
      marginalSessions: more.n,
      setupSeconds,
    };
  } finally {
    client.kill("SIGKILL");
    lib.proc.kill("SIGKILL");
  }
}

/** Runs one scenario in fresh processes and returns its per-session figures. */
export async function measureIdleSessions(scenario: Scenario, n: number, idleMs = DEFAULT_IDLE_MS): Promise<MemoryResult> {
  if (scenario === "libcoap-dtls-psk" || scenario === "libcoap-tls-psk") return measureLibcoap(scenario, n, idleMs);
  const server = fork(__filename, ["server", scenario, String(n), String(idleMs)], { execArgv: ["--expose-gc"], stdio: "inherit" });
  const msg = (await next(server, "result")) as Extract<Msg, { kind: "result" }>;
  await new Promise((r) => server.once("exit", r));
  return msg.result;
}

const LABELS: Record<Scenario, string> = {
  tcp: "plain TCP (reference)",
  "node-tls-psk": "bare node:tls PSK (reference)",
  "tls-psk": "TLS 1.3 PSK (our TlsServer)",
  "tls12-psk": "TLS 1.2 PSK (our TlsServer)",
  "dtls-psk": "DTLS 1.2 PSK (our DtlsServer)",
  "libcoap-dtls-psk": "DTLS PSK coap-server-openssl (ref)",
  "libcoap-tls-psk": "TLS PSK coap-server-openssl (ref)",
};

/**
 * One line per result: KB per session, RSS right after the handshakes, once idle, and for as many
 * sessions again on top (idle: the steady-state cost of one more session); heap and external idle.
 */
export function printMemoryTable(results: MemoryResult[], idleMs: number): void {
  const kb = (bytes: number, count: number) => (Number.isNaN(bytes) || count === 0 ? "-" : (bytes / count / 1024).toFixed(2));
  const columns = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(36) : c.padStart([8, 16, 15, 16, 13, 12, 8][i - 1]))).join(" ");
  console.log(
    columns(["server", "sessions", "RSS KB/session", "RSS KB/session", "RSS KB/session", "heap used KB", "external KB", "setup s"]),
  );
  console.log(columns(["", "", "after handshakes", `idle ${idleMs / 1000} s`, "as many more", "(idle)", "(idle)", ""]));
  for (const r of results) {
    const n = r.sessions;
    console.log(
      columns([
        LABELS[r.scenario],
        String(n),
        kb(r.afterHandshakes.rss, n),
        kb(r.idle.rss, n),
        kb(r.marginal.rss, r.marginalSessions),
        kb(r.idle.heapUsed, n),
        kb(r.idle.external, n),
        r.setupSeconds.toFixed(2),
      ]) + (r.failed ? `  (${r.failed} failed)` : ""),
    );
  }
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 1000);
  const idleMs = Number(process.argv[3] ?? DEFAULT_IDLE_MS);
  const scenarios: Scenario[] = ["tcp", "node-tls-psk", "tls-psk", "tls12-psk", "dtls-psk"];
  if (haveLibcoap()) scenarios.push("libcoap-dtls-psk", "libcoap-tls-psk");
  else console.log("libcoap references skipped: coap-server-openssl not installed (apt-get install libcoap3-bin)");
  const results: MemoryResult[] = [];
  for (const scenario of scenarios) results.push(await measureIdleSessions(scenario, n, idleMs));
  console.log(`Idle established sessions held by one server process (node ${process.version}), RSS delta per session, ${n} sessions:`);
  printMemoryTable(results, idleMs);
  const tcp = results.find((r) => r.scenario === "tcp")!;
  const perSession = (r: MemoryResult) => r.idle.rss / Math.max(1, r.sessions);
  console.log(
    `idle RSS per session relative to plain TCP: ${results
      .filter((r) => r !== tcp)
      .map((r) => `${r.scenario} ${(perSession(r) / perSession(tcp)).toFixed(1)}x`)
      .join(", ")}`,
  );
}

if (require.main === module) {
  const [role, scenario, arg, arg2] = process.argv.slice(2);
  if (role === "server") void serverMain(scenario as Scenario, Number(arg), Number(arg2));
  else if (role === "client") void clientMain(scenario as Scenario, Number(arg));
  else
    main().catch((err: unknown) => {
      console.error(err);
      process.exit(1);
    });
}
