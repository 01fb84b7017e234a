// Memory per established idle session on the ISP side (the listener holds one per home):
// RSS delta over N sessions (default 1,000) for TLS-PSK (our TlsServer; TLS 1.3, and TLS 1.2 for
// comparison) and DTLS-PSK (our
// DtlsServer, clients through our node-dtls-client wrapper), against a reference measured in the
// same run: N plain TCP connections on a bare net.Server (and, to show our layer's own cost,
// N bare node:tls PSK sessions). Each server runs in a fresh process
// (its RSS is the one measured); its clients run in another process.
// Usage: node .build/<out>/bench/session-memory.js [sessions=1000]
import { fork, type ChildProcess } from "node:child_process";
import * as net from "node:net";
import type { Connection } from "../src/transport/connection";
import { connectDtls } from "../src/transport/dtls-client";
import { DtlsServer } from "../src/transport/dtls/server";
import * as tls from "node:tls";
import { PSK_CIPHERS, connectTls, createTlsServer } from "../src/transport/tls";

type Scenario = "tcp" | "node-tls-psk" | "tls-psk" | "tls12-psk" | "dtls-psk";
const SCENARIOS: Scenario[] = ["tcp", "node-tls-psk", "tls-psk", "tls12-psk", "dtls-psk"];
const KEY = Buffer.from("secretPSK-0123456789");
const WARMUP = 20;
const PARALLEL = 50;

interface Result {
  scenario: Scenario;
  sessions: number;
  rssDelta: number;
  heapDelta: number;
  externalDelta: number;
  setupSeconds: number;
}

type Msg =
  | { kind: "port"; port: number }
  | { kind: "warm" }
  | { kind: "go"; n: number }
  | { kind: "opened"; n: number; failed: number }
  | { kind: "result"; result: Result };

function send(proc: NodeJS.Process | ChildProcess, msg: Msg): void {
  proc.send?.(msg);
}

function next(proc: NodeJS.Process | ChildProcess, kind: Msg["kind"]): Promise<Msg> {
  return new Promise((resolve) => {
    const on = (m: Msg) => {
      if (m.kind !== kind) return;
      proc.off("message", on);
      resolve(m);
    };
    proc.on("message", on);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function settledMemory(): Promise<NodeJS.MemoryUsage> {
  for (let i = 0; i < 3; i++) {
    global.gc?.();
    await sleep(200);
  }
  return process.memoryUsage();
}

/** Server process: owns the sessions whose memory is measured. */
async function serverMain(scenario: Scenario, n: number): Promise<void> {
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
  const before = await settledMemory();
  const base = established;
  const t0 = process.hrtime.bigint();
  send(client, { kind: "go", n });
  const opened = (await next(client, "opened")) as Extract<Msg, { kind: "opened" }>;
  while (established - base < opened.n) await sleep(10);
  const setupSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const after = await settledMemory();
  const count = established - base;
  send(process, {
    kind: "result",
    result: {
      scenario,
      sessions: count,
      rssDelta: after.rss - before.rss,
      heapDelta: after.heapUsed - before.heapUsed,
      externalDelta: after.external + after.arrayBuffers - before.external - before.arrayBuffers,
      setupSeconds,
    },
  });
  client.kill("SIGKILL");
  setTimeout(() => process.exit(0), 100);
}

/** Client process: opens warm-up sessions, then n more, and holds them idle. */
async function clientMain(scenario: Scenario, port: number): Promise<void> {
  const held: unknown[] = [];
  const open = async (): Promise<boolean> => {
    try {
      if (scenario === "tcp") {
        const s = net.connect(port, "127.0.0.1");
        s.on("error", () => undefined);
        await new Promise((r, j) => (s.once("connect", r), s.once("error", j)));
        held.push(s);
      } else if (scenario === "tls-psk" || scenario === "tls12-psk" || scenario === "node-tls-psk") {
        const maxVersion = scenario === "tls12-psk" ? "TLSv1.2" : undefined;
        held.push(await connectTls({ host: "127.0.0.1", port, maxVersion, psk: { identity: `home-${held.length}`, key: KEY } }));
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
  const go = (await next(process, "go")) as Extract<Msg, { kind: "go" }>;
  const { ok, failed } = await many(go.n);
  send(process, { kind: "opened", n: ok, failed });
  await new Promise(() => undefined); // hold until killed
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 1000);
  const results: Result[] = [];
  for (const scenario of SCENARIOS) {
    const server = fork(__filename, ["server", scenario, String(n)], { execArgv: ["--expose-gc"], stdio: "inherit" });
    const msg = (await next(server, "result")) as Extract<Msg, { kind: "result" }>;
    results.push(msg.result);
    await new Promise((r) => server.once("exit", r));
  }
  const ref = results.find((r) => r.scenario === "tcp") as Result;
  const kb = (bytes: number, count: number) => (bytes / count / 1024).toFixed(2);
  console.log(`Idle established sessions held by one server process (node ${process.version}), RSS delta after GC:`);
  console.log("scenario     sessions  RSS total MB  RSS/session KB  heap/session KB  external/session KB  setup s  x TCP ref");
  for (const r of results) {
    const ratio = r.rssDelta / r.sessions / (ref.rssDelta / ref.sessions);
    console.log(
      `${r.scenario.padEnd(12)} ${String(r.sessions).padStart(8)}  ${(r.rssDelta / 1048576).toFixed(1).padStart(12)}  ${kb(r.rssDelta, r.sessions).padStart(14)}  ${kb(r.heapDelta, r.sessions).padStart(15)}  ${kb(r.externalDelta, r.sessions).padStart(19)}  ${r.setupSeconds.toFixed(2).padStart(7)}  ${ratio.toFixed(1).padStart(9)}`,
    );
  }
}

const [role, scenario, arg] = process.argv.slice(2);
if (role === "server") void serverMain(scenario as Scenario, Number(arg));
else if (role === "client") void clientMain(scenario as Scenario, Number(arg));
else void main();
