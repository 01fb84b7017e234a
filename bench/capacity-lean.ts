// One listener process holding many DTLS-PSK homes (issue 10 target: 50,000 homes, 30 s heartbeats,
// 5 minutes, 0 lost, <= 25% of one core, <= 12 KB RSS, and a heartbeat path of <= 30 us: the CPU
// per heartbeat the listener's main thread spends above Node's bare datagram exchange of the same
// traffic, measured in the same process before the homes come).
// The homes are lean so 50,000 fit on a small machine beside the listener: each is a real DTLS 1.2
// PSK client (ScriptedDtlsClient: full handshake with cookie exchange against our DtlsServer, its own
// UDP socket, since the server tells peers apart by address and port) with a minimal RFC 9132 home
// signal channel on top: it answers GET /config (2.05, Max-Age 3600 like the real home), the
// resync GET /mitigate (4.04: nothing active), CoAP pings (RST), the ISP's NON PUT /hb (2.04), and
// sends its own NON PUT /hb every heartbeat interval (both agents send heartbeats, RFC 9132 4.7).
// The homes run in child processes (at most HOMES_PER_CHILD each: one socket per home and the
// process's file limit) whose CPU is reported apart; the listener is this process and measures its
// own CPU per heartbeat and RSS per session beside its idle figures taken in the same run.
//   node .build/<name>/bench/capacity-lean.js [--sessions 50000] [--hb 30] [--hold 300]
//        [--suite ecdhe-psk-chacha20|psk-ccm8] [--concurrency 64] [--profile FILE.cpuprofile]
//        [--heap-snapshot FILE.heapsnapshot]
// --suite: what the homes offer. Default ECDHE_PSK with ChaCha20-Poly1305, the suite our own home
// and ISP negotiate; psk-ccm8 is RFC 9132's mandatory plain PSK suite (older homes).
import { fork } from "node:child_process";
import * as dgram from "node:dgram";
import * as fs from "node:fs";
import { Session } from "node:inspector";
import { monitorEventLoopDelay } from "node:perf_hooks";
import {
  createCipheriv,
  createDecipheriv,
  randomBytes,
  type CipherCCM,
  type CipherChaCha20Poly1305,
  type DecipherCCM,
  type DecipherChaCha20Poly1305,
} from "node:crypto";
import type { SessionInfo } from "../src/dots/api";
import { CallHomeListener } from "../src/dots/isp-engine";
import { ScriptedDtlsClient } from "../test/support/scripted-dtls-client";
import type { DtlsCipherSuiteName } from "../src/transport/dtls";
import { decodeUdp, encodeUdp } from "../src/coap/udp-codec";
import { Code, CONTENT_FORMAT_DOTS_CBOR, OptionNumber, type CoapMessage } from "../src/coap/message";
import { contentFormatOption, getUriPath, uintOption, uriPathOptions } from "../src/coap/options";
import { encodeDotsCbor } from "../src/cbor";
import { buildHeartbeatJson } from "../src/dots/heartbeat";
import { buildConfigJson, DEFAULT_CONFIG_LIMITS, DEFAULT_CONFIG_SET } from "../src/dots/session-config";

const args = process.argv.slice(2);
const arg = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : def;
};
const KEY = Buffer.from("capacity-bench-key-0123");
const PREFIX = "203.0.113.0/24";
const identity = (i: number): string => `cap-home-${i}`;
/** Each home its own loopback address, as real homes have: per-address policies (drop-list) see one home each. */
const homeAddress = (i: number): string => `127.${1 + Math.floor(i / 64000)}.${Math.floor((i % 64000) / 250)}.${1 + (i % 250)}`;
/** One UDP socket per home; the process file limit here is 20,000. */
const HOMES_PER_CHILD = 17_000;
/** --suite values: the suite the homes offer, and its record AEAD for the floor measurement. */
const BENCH_SUITES = {
  "ecdhe-psk-chacha20": { name: "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", aead: "chacha20-poly1305", keyLength: 32, tagLength: 16 },
  "psk-ccm8": { name: "TLS_PSK_WITH_AES_128_CCM_8", aead: "aes-128-ccm", keyLength: 16, tagLength: 8 },
} as const satisfies Record<string, { name: DtlsCipherSuiteName; aead: string; keyLength: number; tagLength: number }>;
type BenchSuite = keyof typeof BENCH_SUITES;

/** Handshakes a home tries before it counts as failed. */
const SETUP_ATTEMPTS = 4;

// ------------------------------------------------------------------------------ child: lean homes

interface ChildJob {
  /** Local address of this child's homes, or "per-home" (each its own; one address has only 28,232 ephemeral ports). */
  address: string;
  from: number;
  to: number;
  port: number;
  hb: number;
  concurrency: number;
  suite: BenchSuite;
}

interface ChildStats {
  type: "progress";
  connected: number;
  failed: number;
  hbSent: number;
  hbAnswered: number;
  hbReceived: number;
  configAnswered: number;
  otherRequests: number;
  alerts: number;
  cpuMs: number;
  rss: number;
  /** Handshakes tried again after one failed (each home tries SETUP_ATTEMPTS times at most). */
  redials: number;
  /** Why handshakes failed, with counts (redialled ones included). */
  failureReasons: Record<string, number>;
}

interface Home {
  client: ScriptedDtlsClient;
  mid: number;
}

async function child(job: ChildJob): Promise<void> {
  process.on("disconnect", () => process.exit(0));
  const stats: ChildStats = {
    type: "progress",
    connected: 0,
    failed: 0,
    hbSent: 0,
    hbAnswered: 0,
    hbReceived: 0,
    configAnswered: 0,
    otherRequests: 0,
    alerts: 0,
    cpuMs: 0,
    rss: 0,
    redials: 0,
    failureReasons: {},
  };
  const report = (): void => {
    const c = process.cpuUsage();
    stats.cpuMs = (c.user + c.system) / 1000;
    stats.rss = process.memoryUsage().rss;
    process.send?.(stats);
  };
  setInterval(report, 1000);
  const hbPayload = encodeDotsCbor(buildHeartbeatJson(true));
  const configPayload = encodeDotsCbor(
    buildConfigJson(
      { idle: { ...DEFAULT_CONFIG_SET, heartbeatInterval: job.hb }, mitigating: { ...DEFAULT_CONFIG_SET, heartbeatInterval: job.hb } },
      { idle: DEFAULT_CONFIG_LIMITS, mitigating: DEFAULT_CONFIG_LIMITS },
    ),
  );
  const hbOptions = [...uriPathOptions([".well-known", "dots", "hb"]), contentFormatOption(CONTENT_FORMAT_DOTS_CBOR)];
  const cbor = contentFormatOption(CONTENT_FORMAT_DOTS_CBOR);
  const configOptions = [cbor, uintOption(OptionNumber.MaxAge, 3600)];

  const send = (h: Home, msg: CoapMessage): void => {
    h.client.send(encodeUdp(msg));
    h.client.sent.length = 0; // the scripted client records every datagram; homes here live long
  };
  const answer = (
    h: Home,
    req: CoapMessage,
    code: number,
    options: CoapMessage["options"] = [],
    payload: Buffer = Buffer.alloc(0),
  ): void => {
    const con = req.type === "CON";
    h.mid = (h.mid + 1) & 0xffff;
    send(h, { type: con ? "ACK" : "NON", code, messageId: con ? req.messageId : h.mid, token: req.token, options, payload });
  };
  const onApplicationData = (h: Home, data: Buffer): void => {
    let m: CoapMessage;
    try {
      m = decodeUdp(data);
    } catch {
      return;
    }
    if (m.code === Code.Empty) {
      if (m.type === "CON")
        send(h, { type: "RST", code: 0, messageId: m.messageId, token: Buffer.alloc(0), options: [], payload: Buffer.alloc(0) });
      return;
    }
    if (m.code >= 0x40) {
      if (m.code === Code.Changed) stats.hbAnswered++;
      if (m.type === "CON")
        send(h, { type: "ACK", code: 0, messageId: m.messageId, token: Buffer.alloc(0), options: [], payload: Buffer.alloc(0) });
      return;
    }
    const path = getUriPath(m.options);
    const resource = path[0] === ".well-known" && path[1] === "dots" ? path[2] : undefined;
    if (resource === "hb" && m.code === Code.PUT) {
      stats.hbReceived++;
      answer(h, m, Code.Changed);
    } else if (resource === "config" && m.code === Code.GET) {
      stats.configAnswered++;
      answer(h, m, Code.Content, configOptions, configPayload);
    } else {
      // GET /mitigate/cuid=X (resync): nothing active on this home.
      stats.otherRequests++;
      answer(h, m, Code.NotFound);
    }
  };

  // Heartbeat wheel: one timer for all homes, a home in the slot of its connect time.
  const SLOT_MS = 100;
  const slots: Home[][] = Array.from({ length: Math.max(1, Math.round((job.hb * 1000) / SLOT_MS)) }, () => []);
  let cursor = 0;
  setInterval(() => {
    for (const h of slots[cursor]) {
      h.mid = (h.mid + 1) & 0xffff;
      stats.hbSent++;
      send(h, { type: "NON", code: Code.PUT, messageId: h.mid, token: randomBytes(4), options: hbOptions, payload: hbPayload });
    }
    cursor = (cursor + 1) % slots.length;
  }, SLOT_MS);

  const homes: Home[] = [];
  let next = job.from;
  /** One DTLS handshake from a fresh socket; the client, or the reason it failed. */
  const handshake = async (i: number): Promise<ScriptedDtlsClient | string> => {
    const socket = dgram.createSocket("udp4");
    const bound = await new Promise<boolean>((resolve) => {
      socket.once("error", () => resolve(false));
      socket.bind(0, job.address === "per-home" ? homeAddress(i) : job.address, () => resolve(true));
    });
    if (!bound) {
      socket.close();
      return "bind failed";
    }
    const client = new ScriptedDtlsClient({
      address: "127.0.0.1",
      port: job.port,
      identity: identity(i),
      psk: KEY,
      suites: [BENCH_SUITES[job.suite].name],
      retransmitMs: 1000,
      socket,
    });
    try {
      await client.connect(30_000);
      return client;
    } catch (e) {
      await client.close(false);
      return (e as Error).message.slice(0, 80);
    }
  };
  const startOne = async (i: number): Promise<void> => {
    // Like the dialer, a home whose handshake failed dials again after a back-off.
    let client: ScriptedDtlsClient | string = "";
    for (let attempt = 0; attempt < SETUP_ATTEMPTS; attempt++) {
      if (attempt > 0) {
        stats.redials++;
        await new Promise((r) => setTimeout(r, 1000 * 2 ** attempt * (0.5 + Math.random())));
      }
      client = await handshake(i);
      if (typeof client !== "string") break;
      stats.failureReasons[client] = (stats.failureReasons[client] ?? 0) + 1;
    }
    if (typeof client === "string") {
      stats.failed++;
      return;
    }
    const h: Home = { client, mid: Math.floor(Math.random() * 0xffff) };
    homes.push(h);
    stats.connected++;
    // From here on this handler replaces the scripted client's own (which queues everything).
    client.socket.removeAllListeners("message");
    client.received.length = 0;
    client.socket.on("message", (msg: Buffer) => {
      for (const r of client.openRecords(msg)) {
        if (!r.plaintext || r.epoch !== 1) continue;
        if (r.type === 23) onApplicationData(h, r.plaintext);
        else if (r.type === 21) stats.alerts++;
      }
    });
    slots[cursor].push(h);
  };
  const worker = async (): Promise<void> => {
    while (next < job.to) await startOne(next++);
  };
  await Promise.all(Array.from({ length: job.concurrency }, worker));
  report();
}

// ------------------------------------------------------------------------------ parent: listener

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) {
    g();
    g();
  }
}

/** CPU ms per thread name of this process (main thread, V8 GC workers, libuv pool) from /proc. */
function threadCpu(): Map<string, { user: number; system: number }> {
  const out = new Map<string, { user: number; system: number }>();
  const tick = 10; // USER_HZ 100 on Linux: 10 ms per tick
  try {
    for (const tid of fs.readdirSync("/proc/self/task")) {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      // The main thread (JavaScript, I/O callbacks) apart from the rest (V8's GC helpers, libuv's pool), which share its name.
      const name = Number(tid) === process.pid ? "main" : stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")).replace(/[0-9]+$/, "");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const prev = out.get(name) ?? { user: 0, system: 0 };
      out.set(name, { user: prev.user + Number(f[11]) * tick, system: prev.system + Number(f[12]) * tick });
    }
  } catch {
    // not Linux: no breakdown
  }
  return out;
}

/** Datagrams the kernel dropped at the listener's own UDP socket (full receive buffer), from /proc/net/udp. */
function socketDrops(port: number): number {
  try {
    const hexPort = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
    for (const line of fs.readFileSync("/proc/net/udp", "utf8").split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[1]?.endsWith(hexPort)) return Number(f[f.length - 1]);
    }
  } catch {
    // not Linux
  }
  return NaN;
}

const mb = (b: number): string => `${(b / 1048576).toFixed(1)} MB`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Top self-time entries of a V8 CPU profile, as "percent  function  file:line". */
function topOfProfile(profile: {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }>;
  samples: number[];
}): string[] {
  const self = new Map<string, number>();
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  for (const id of profile.samples) {
    const n = byId.get(id);
    if (!n) continue;
    const f = n.callFrame;
    const key = `${f.functionName || "(anonymous)"}  ${f.url.replace(/^.*\/(dist|\.build\/[^/]+)\//, "")}:${f.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + 1);
  }
  const total = profile.samples.length;
  return [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 25)
    .map(([k, v]) => `${((v / total) * 100).toFixed(1).padStart(5)}%  ${k}`);
}

async function parent(): Promise<void> {
  const N = Number(arg("sessions", "50000"));
  const hb = Number(arg("hb", "30"));
  const holdS = Number(arg("hold", "300"));
  const concurrency = Number(arg("concurrency", "64"));
  const profileFile = arg("profile", "");
  const suite = arg("suite", "ecdhe-psk-chacha20") as BenchSuite;
  if (!(suite in BENCH_SUITES)) throw new Error(`--suite: one of ${Object.keys(BENCH_SUITES).join(", ")}`);
  const children = Math.max(1, Math.ceil(N / HOMES_PER_CHILD));

  const psk = Array.from({ length: N }, (_, i) => ({ identity: identity(i), key: KEY, home: identity(i) }));
  const homePrefixes: Record<string, string[]> = {};
  for (let i = 0; i < N; i++) homePrefixes[identity(i)] = [PREFIX];
  const listener = new CallHomeListener(
    { port: 0, host: "127.0.0.1", transports: { dtls: true, tls: false }, psk, homePrefixes },
    { maxSessions: N + 100, maxDtlsPeers: N + 100 },
  );
  let errors = 0;
  const errorSamples: string[] = [];
  listener.on("error", (e: Error) => {
    errors++;
    if (errorSamples.length < 3) errorSamples.push(e.message.slice(0, 120));
  });
  let up = 0;
  let down = 0;
  let hbIn = 0;
  let hbOut = 0;
  const downReasons = new Map<string, number>();
  listener.on("session-up", (_s: SessionInfo) => up++);
  listener.on("session-down", (_s: SessionInfo, reason: string) => {
    down++;
    const k = String(reason).slice(0, 60);
    downReasons.set(k, (downReasons.get(k) ?? 0) + 1);
  });
  listener.on("heartbeat", (h: { direction: string }) => (h.direction === "in" ? hbIn++ : hbOut++));
  await listener.start();
  gc();
  const mem0 = process.memoryUsage();
  const rss0 = mem0.rss;
  const heap0 = mem0.heapUsed;
  const idleCpu0 = process.cpuUsage();
  const idleW0 = process.hrtime.bigint();
  await sleep(5000);
  const idleCpu = process.cpuUsage(idleCpu0);
  const idleMsPerS = (idleCpu.user + idleCpu.system) / 1000 / (Number(process.hrtime.bigint() - idleW0) / 1e9);
  // Both agents heartbeat: per interval the listener receives 2 datagrams per home and sends 2.
  const floor = await nodeFloor((2 * N) / hb, suite);

  console.log(
    `capacity-lean bench: ${N} DTLS-PSK homes (${BENCH_SUITES[suite].name}; lean homes in ${children} processes), heartbeat-interval ${hb} s, hold ${holdS} s, node ${process.version}, load average ${require("node:os")
      .loadavg()
      .map((l: number) => l.toFixed(1))
      .join(" ")}`,
  );
  const t0 = Date.now();
  const per = Math.ceil(N / children);
  const kidStats: ChildStats[] = [];
  const kids = Array.from({ length: children }, (_, k) => {
    const job: ChildJob = {
      address: "per-home",
      from: k * per,
      to: Math.min(N, (k + 1) * per),
      port: listener.port as number,
      hb,
      concurrency,
      suite,
    };
    const c = fork(__filename, ["--child", JSON.stringify(job)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    c.on("message", (m: ChildStats) => (kidStats[k] = m));
    return c;
  });
  const sum = (f: (s: ChildStats) => number): number => kidStats.reduce((a, s) => a + (s ? f(s) : 0), 0);
  let lastPrint = 0;
  while (sum((s) => s.connected + s.failed) < N && Date.now() - t0 < 900_000) {
    await sleep(500);
    if (Date.now() - lastPrint > 10_000) {
      lastPrint = Date.now();
      console.log(`  ... ${up - down} sessions up after ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    }
  }
  // The last GET /config and resync exchanges finish after the handshakes.
  while (up - down < sum((s) => s.connected) && Date.now() - t0 < 900_000) await sleep(200);
  const setupS = (Date.now() - t0) / 1000;
  const live = listener.sessions().length;
  const reasons = new Map<string, number>();
  for (const k of kidStats) for (const [r, n] of Object.entries(k?.failureReasons ?? {})) reasons.set(r, (reasons.get(r) ?? 0) + n);
  console.log(
    `  sessions up: ${live} / ${N} after ${setupS.toFixed(1)} s (${(live / setupS).toFixed(0)} set-ups/s), ${sum((s) => s.redials)} handshakes redialled, ${sum((s) => s.failed)} homes failed after ${SETUP_ATTEMPTS} attempts${reasons.size ? ` (handshake failures: ${[...reasons].map(([r, n]) => `${n} x "${r}"`).join("; ")})` : ""}`,
  );

  // Steady state: one heartbeat interval so the set-up burst is over, then the measured hold.
  await sleep(hb * 1000);
  gc();
  const memSteady = process.memoryUsage();
  const perSessionKb = (b: number, b0: number): string => ((b - b0) / Math.max(1, live) / 1024).toFixed(1);
  // Where the RSS goes: V8's heap (used, and committed pages), memory held by Buffers and
  // node:crypto objects outside it, and the rest (malloc arenas of OpenSSL and the runtime).
  console.log(
    `  per session at steady state: RSS ${perSessionKb(memSteady.rss, mem0.rss)} KB = V8 heap committed ${perSessionKb(memSteady.heapTotal, mem0.heapTotal)} KB (used ${perSessionKb(memSteady.heapUsed, mem0.heapUsed)}) + external ${perSessionKb(memSteady.external, mem0.external)} KB (Buffers ${perSessionKb(memSteady.arrayBuffers, mem0.arrayBuffers)}) + other ${perSessionKb(memSteady.rss - memSteady.heapTotal - memSteady.external, mem0.rss - mem0.heapTotal - mem0.external)} KB`,
  );
  const heapFile = arg("heap-snapshot", "");
  if (heapFile) console.log(`  heap snapshot with ${live} sessions: ${require("node:v8").writeHeapSnapshot(heapFile)}`);
  const kidCpu0 = kidStats.map((s) => s.cpuMs);
  const kidHb0 = { sent: sum((s) => s.hbSent), answered: sum((s) => s.hbAnswered), received: sum((s) => s.hbReceived) };
  hbIn = 0;
  hbOut = 0;
  const downBefore = down;
  const drops0 = socketDrops(listener.port as number);
  let profiler: Session | undefined;
  if (profileFile) {
    profiler = new Session();
    profiler.connect();
    await new Promise<void>((r) => profiler!.post("Profiler.enable", () => profiler!.post("Profiler.start", () => r())));
  }
  // Where the hold allocates (garbage included): V8's sampling heap profiler.
  const allocFile = arg("alloc-profile", "");
  let allocSession: Session | undefined;
  if (allocFile) {
    allocSession = new Session();
    allocSession.connect();
    await new Promise<void>((r) =>
      allocSession!.post(
        "HeapProfiler.startSampling",
        {
          samplingInterval: 256,
          includeObjectsCollectedByMajorGC: true,
          includeObjectsCollectedByMinorGC: process.env.ALLOC_MINOR !== "0",
        },
        () => r(),
      ),
    );
  }
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const threads0 = threadCpu();
  const cpu0 = process.cpuUsage();
  const w0 = process.hrtime.bigint();
  let maxRss = 0;
  const holdEnd = Date.now() + holdS * 1000;
  while (Date.now() < holdEnd) {
    await sleep(Math.min(10_000, holdEnd - Date.now()));
    maxRss = Math.max(maxRss, process.memoryUsage().rss);
  }
  const cpu = process.cpuUsage(cpu0);
  const wallS = Number(process.hrtime.bigint() - w0) / 1e9;
  loopDelay.disable();
  const drops = socketDrops(listener.port as number) - drops0;
  const threads = [...threadCpu()].map(([name, t]) => {
    const b = threads0.get(name) ?? { user: 0, system: 0 };
    return `${name} ${(t.user - b.user).toFixed(0)} user + ${(t.system - b.system).toFixed(0)} system ms`;
  });
  if (allocSession) {
    const a = allocSession;
    const profile = await new Promise<unknown>((r) =>
      a.post("HeapProfiler.stopSampling", (_e, res) => r((res as { profile: unknown }).profile)),
    );
    fs.writeFileSync(allocFile, JSON.stringify(profile));
    console.log(`  allocation profile of the listener over the hold: ${allocFile}`);
    a.disconnect();
  }
  if (profiler) {
    const p = profiler;
    const profile = await new Promise<Parameters<typeof topOfProfile>[0]>((r) =>
      p.post("Profiler.stop", (_e, res) => r((res as unknown as { profile: Parameters<typeof topOfProfile>[0] }).profile)),
    );
    fs.writeFileSync(profileFile, JSON.stringify(profile));
    console.log(`  CPU profile of the listener over the hold (${profileFile}), top self time:`);
    for (const l of topOfProfile(profile)) console.log(`    ${l}`);
    p.disconnect();
  }
  const cpuMs = (cpu.user + cpu.system) / 1000;
  const beats = hbIn + hbOut;
  gc();
  const memEnd = process.memoryUsage();
  const kidHb = {
    sent: sum((s) => s.hbSent) - kidHb0.sent,
    answered: sum((s) => s.hbAnswered) - kidHb0.answered,
    received: sum((s) => s.hbReceived) - kidHb0.received,
  };
  const lost = down - downBefore;
  const perSession = (b: number) => `${((b - rss0) / Math.max(1, live) / 1024).toFixed(1)} KB`;

  console.log(
    `  listener RSS: ${mb(rss0)} idle (PSK table of ${N} loaded) -> ${mb(memSteady.rss)} with ${live} sessions = ${perSession(memSteady.rss)} RSS per session (heap ${((memSteady.heapUsed - heap0) / Math.max(1, live) / 1024).toFixed(1)} KB); after the hold ${mb(memEnd.rss)} = ${perSession(memEnd.rss)}, peak ${mb(maxRss)}`,
  );
  console.log(
    `  heartbeats in ${wallS.toFixed(0)} s: listener ${hbIn} received + ${hbOut} sent = ${(beats / wallS).toFixed(0)}/s; homes sent ${kidHb.sent}, got ${kidHb.answered} answers (${kidHb.sent - kidHb.answered} unanswered), received ${kidHb.received}; sessions lost: ${lost}`,
  );
  console.log(
    `  listener CPU: ${cpuMs.toFixed(0)} ms over ${wallS.toFixed(1)} s = ${((cpuMs / (wallS * 1000)) * 100).toFixed(1)}% of one core; ${beats ? ((cpuMs * 1000) / beats).toFixed(1) : "n/a"} us per heartbeat (one received or sent, with its answer)`,
  );
  if (threads.length) console.log(`  listener CPU by thread: ${threads.join("; ")}`);
  const mainNow = threadCpu().get("main");
  const main0 = threads0.get("main");
  // The issue's heartbeat path: what we add on the main thread to Node's bare datagram exchange.
  let pathUs: number | undefined;
  if (mainNow && main0 && beats > 0) {
    const mainUs = ((mainNow.user + mainNow.system - main0.user - main0.system) * 1000) / beats;
    const otherUs = (cpuMs * 1000) / beats - mainUs;
    pathUs = mainUs - floor.echoMainUs;
    console.log(
      `  heartbeat path on the main thread (record decrypt, CoAP, CBOR, response, encrypt, timers, the main thread's GC), above Node's bare datagram exchange: ${(mainUs - floor.echoMainUs).toFixed(1)} us per heartbeat event (main thread ${mainUs.toFixed(1)} us - the reference's main thread ${floor.echoMainUs.toFixed(1)} us, same process); other threads (V8's concurrent GC) ${otherUs.toFixed(1)} us`,
    );
  }
  console.log(
    `  listener event loop delay: p50 ${(loopDelay.percentile(50) / 1e6).toFixed(1)} ms, p99 ${(loopDelay.percentile(99) / 1e6).toFixed(1)} ms, max ${(loopDelay.max / 1e6).toFixed(0)} ms; datagrams the kernel dropped at the listener socket (receive buffer full): ${drops} (${socketDrops(listener.port as number)} since start)`,
  );
  console.log(
    `  reference (same process, no sessions, before the homes came): ${idleMsPerS.toFixed(2)} ms CPU per second; with sessions ${(cpuMs / wallS).toFixed(1)} ms per second; engine errors: ${errors}${errorSamples.length ? ` (${errorSamples.join(" | ")})` : ""}`,
  );
  console.log(
    `  home processes (not counted above): ${kidStats.map((s, i) => `#${i} ${(((s.cpuMs - (kidCpu0[i] ?? 0)) / (wallS * 1000)) * 100).toFixed(0)}% CPU, ${mb(s.rss)} RSS, ${s.failed} failed, ${s.alerts} alerts`).join("; ")}`,
  );
  if (downReasons.size) console.log(`  session-down reasons: ${[...downReasons].map(([r, n]) => `${n} x "${r}"`).join("; ")}`);
  console.log(
    `  reference (same process, before the homes came, ${((2 * N) / hb).toFixed(0)} datagrams/s, the hold's pattern: half home heartbeats in wheel-slot bursts, echoed; half ours from a 1 ms timer, answered): bare Node dgram costs ${floor.echoUs.toFixed(1)} us CPU per datagram in + out, and sealing + opening one heartbeat-sized ${BENCH_SUITES[suite].aead} record with node:crypto ${floor.aeadUs.toFixed(1)} us: Node's floor per heartbeat event ${(floor.echoUs + floor.aeadUs).toFixed(1)} us; ours ${beats ? ((cpuMs * 1000) / beats / (floor.echoUs + floor.aeadUs)).toFixed(2) : "n/a"}x that`,
  );
  const cpuPct = (cpuMs / (wallS * 1000)) * 100;
  const rssKb = (memEnd.rss - rss0) / Math.max(1, live) / 1024;
  const usPerHb = beats ? (cpuMs * 1000) / beats : Infinity;
  console.log(
    `  targets: ${live} >= 50000 sessions ${live >= 50000 ? "met" : "NOT met"}; 0 lost ${lost === 0 ? "met" : "NOT met"}; <= 25% core ${cpuPct <= 25 ? "met" : "NOT met"}; <= 12 KB RSS/session ${rssKb <= 12 ? "met" : "NOT met"}; <= 30 us heartbeat path ${pathUs === undefined ? "n/a (no per-thread CPU here)" : `${pathUs <= 30 ? "met" : "NOT met"} (${pathUs.toFixed(1)} us above Node's bare exchange; ${usPerHb.toFixed(1)} us per heartbeat in all)`}`,
  );
  for (const c of kids) c.kill("SIGKILL");
  await listener.stop();
}

// ------------------------------------------------------------------- reference: Node's own floor

/** First byte of the floor's datagrams: a home's heartbeat, the listener's, a home's answer to it. */
const FLOOR_HOME_BEAT = 0;
const FLOOR_LISTENER_BEAT = 1;
const FLOOR_ANSWER = 2;
/** The homes' heartbeat wheel turns every SLOT_MS; the listener's own heartbeats leave from its timers, spread out. */
const FLOOR_SLOT_MS = 100;

/**
 * Child of the floor reference: `sockets` UDP sockets (one loopback address each, like the homes).
 * Like the homes, they send heartbeat-sized datagrams to `port` in bursts, one wheel slot at a time
 * (`rate` per second in all), and answer each datagram the listener sends them at once.
 */
function floorChild(job: { port: number; rate: number; sockets: number; bytes: number }): void {
  process.on("disconnect", () => process.exit(0));
  const answer = Buffer.alloc(job.bytes, 0x5a);
  answer[0] = FLOOR_ANSWER;
  const socks = Array.from({ length: job.sockets }, (_, i) => {
    const s = dgram.createSocket("udp4");
    s.on("message", (m, r) => {
      if (m[0] === FLOOR_LISTENER_BEAT) s.send(answer, r.port, r.address);
    });
    s.bind(0, homeAddress(i));
    return s;
  });
  const payload = Buffer.alloc(job.bytes, 0x5a);
  payload[0] = FLOOR_HOME_BEAT;
  const perSlot = (job.rate * FLOOR_SLOT_MS) / 1000;
  let due = 0;
  let next = 0;
  setInterval(() => {
    for (due += perSlot; due >= 1; due--) socks[next++ % socks.length].send(payload, job.port, "127.0.0.1");
  }, FLOOR_SLOT_MS);
}

/**
 * What Node itself costs per heartbeat event, measured in this process at the hold's datagram rate
 * and in the hold's pattern: half the events are home heartbeats arriving in wheel-slot bursts and
 * echoed at once, half are our own sent from a 1 ms timer and answered by the home (each of those
 * wakes the home's process: the dearer kind on loopback). No DTLS, CoAP or timers per session. Plus
 * sealing and opening one record of a heartbeat's size with node:crypto, in the suite the homes negotiate.
 */
async function nodeFloor(ratePerS: number, suite: BenchSuite): Promise<{ echoUs: number; echoMainUs: number; aeadUs: number }> {
  let events = 0;
  const peers: Array<{ address: string; port: number }> = [];
  const known = new Set<string>();
  const echo = dgram.createSocket("udp4");
  echo.on("message", (m, r) => {
    events++;
    if (m[0] !== FLOOR_HOME_BEAT) return;
    echo.send(m, r.port, r.address);
    if (peers.length < 2000 && !known.has(`${r.address}:${r.port}`)) {
      known.add(`${r.address}:${r.port}`);
      peers.push({ address: r.address, port: r.port });
    }
  });
  await new Promise<void>((r) => echo.bind(0, "127.0.0.1", () => r()));
  const port = (echo.address() as { port: number }).port;
  const kid = fork(__filename, ["--floor", JSON.stringify({ port, rate: ratePerS / 2, sockets: 2000, bytes: 64 })], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  await sleep(2000);
  const beat = Buffer.alloc(64, 0x5a);
  beat[0] = FLOOR_LISTENER_BEAT;
  let due = 0;
  let next = 0;
  const ours = setInterval(() => {
    if (peers.length === 0) return;
    for (due += ratePerS / 2 / 1000; due >= 1; due--) {
      const p = peers[next++ % peers.length];
      echo.send(beat, p.port, p.address);
    }
  }, 1);
  await sleep(1000);
  const n0 = events;
  const c0 = process.cpuUsage();
  const main0 = threadCpu().get("main");
  await sleep(8000);
  const c = process.cpuUsage(c0);
  const main1 = threadCpu().get("main");
  const n = events - n0;
  const echoMainUs = main0 && main1 && n > 0 ? ((main1.user + main1.system - main0.user - main0.system) * 1000) / n : NaN;
  clearInterval(ours);
  kid.kill("SIGKILL");
  echo.close();
  const { aead, keyLength, tagLength } = BENCH_SUITES[suite];
  const key = randomBytes(keyLength);
  const aad = randomBytes(13);
  const plain = randomBytes(40);
  const seal = (nonce: Buffer): Buffer => {
    // Two calls for node's per-algorithm overloads.
    const ci: CipherCCM | CipherChaCha20Poly1305 =
      aead === "aes-128-ccm"
        ? createCipheriv(aead, key, nonce, { authTagLength: tagLength })
        : createCipheriv(aead, key, nonce, { authTagLength: tagLength });
    ci.setAAD(aad, { plaintextLength: plain.length });
    return Buffer.concat([ci.update(plain), ci.final(), ci.getAuthTag()]);
  };
  const open = (nonce: Buffer, sealed: Buffer): Buffer => {
    const de: DecipherCCM | DecipherChaCha20Poly1305 =
      aead === "aes-128-ccm"
        ? createDecipheriv(aead, key, nonce, { authTagLength: tagLength })
        : createDecipheriv(aead, key, nonce, { authTagLength: tagLength });
    de.setAuthTag(sealed.subarray(sealed.length - tagLength));
    de.setAAD(aad, { plaintextLength: sealed.length - tagLength });
    return de.update(sealed.subarray(0, sealed.length - tagLength));
  };
  const rounds = 20_000;
  const nonce = randomBytes(12);
  for (let i = 0; i < 2000; i++) open(nonce, seal(nonce));
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) {
    nonce.writeUInt32BE(i, 8);
    open(nonce, seal(nonce));
  }
  const aeadUs = Number(process.hrtime.bigint() - t0) / 1000 / rounds;
  return { echoUs: n > 0 ? (c.user + c.system) / n : Infinity, echoMainUs, aeadUs };
}

if (args[0] === "--child") {
  void child(JSON.parse(args[1]) as ChildJob);
} else if (args[0] === "--floor") {
  floorChild(JSON.parse(args[1]) as { port: number; rate: number; sockets: number; bytes: number });
} else {
  parent().then(
    () => process.exit(0),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
