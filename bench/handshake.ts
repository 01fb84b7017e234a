// DTLS-PSK handshakes per second against our DtlsServer and, in the same run, against libcoap's
// coap-server-openssl (OpenSSL 3) with the same client (node-dtls-client 2.0.3, in a child process
// so it never competes with our server for the event loop), with the ratio; then memory per
// established idle DTLS and TLS session: RSS delta of a fresh server process over 1,000 sessions,
// ours and coap-server-openssl's (see session-memory.ts for how it is measured).
// Usage: node .build/<out>/bench/handshake.js [handshakes=1000] [parallel=4] [idleSessions=1000] [idleMs=6000]
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import { makeTestPki } from "../test/support/certs";
import { DtlsServer, type DtlsCipherSuiteName, type DtlsServerOptions } from "../src/transport/dtls";
import { dtlsClientConnect } from "../src/transport/dtls/client";
import type { DtlsResumption } from "../src/transport/dtls/resumption";
import {
  DEFAULT_IDLE_MS,
  haveLibcoap,
  measureIdleSessions,
  printMemoryTable,
  startLibcoap,
  type MemoryResult,
  type Scenario,
} from "./session-memory";

const IDENTITY = "dots-client-1";
const KEY = "secretPSK-0123456789";
const SUITE = "TLS_PSK_WITH_AES_128_CCM_8";
/** Caps far above the bench's load, so the hardening never paces our server in a measurement. */
const BENCH_CAPS = { maxHandshaking: 5000, maxHandshakingPerSource: 5000, maxPeers: 20000 };

interface NdcSocket {
  on(event: string, cb: (arg?: unknown) => void): NdcSocket;
  close(): void;
}
const ndc = (): { dtls: { createSocket(o: Record<string, unknown>): NdcSocket } } => require("node-dtls-client");

/** Child mode 1: `n` handshakes with node-dtls-client, `parallel` at a time; prints a JSON result. */
async function clientHandshakes(port: number, n: number, parallel: number): Promise<void> {
  const one = (): Promise<boolean> =>
    new Promise((resolve) => {
      const s = ndc().dtls.createSocket({
        type: "udp4",
        address: "127.0.0.1",
        port,
        psk: { [IDENTITY]: Buffer.from(KEY) },
        timeout: 3000,
        ciphers: [SUITE],
      });
      let done = false;
      const finish = (ok: boolean): void => {
        if (done) return;
        done = true;
        try {
          s.close();
        } catch {
          /* already closed by the library after an error */
        }
        resolve(ok);
      };
      s.on("connected", () => finish(true));
      s.on("error", () => finish(false));
    });
  for (let i = 0; i < 10; i++) await one(); // warm-up on both sides
  let ok = 0;
  let failed = 0;
  let started = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (started < n) {
        started++;
        if (await one()) ok++;
        else failed++;
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ ok, failed, seconds }) + "\n");
}

/** Child mode 2: the same with our DTLS client (the home's default) offering one suite. */
async function ourClientHandshakes(port: number, n: number, parallel: number, suite: DtlsCipherSuiteName, resume: boolean): Promise<void> {
  // With `resume`, every handshake after the first offers the first one's ticket (RFC 5077; a
  // ticket may be offered again until it expires, as homes reconnecting after a listener restart do).
  let ticket: DtlsResumption | undefined;
  const one = async (): Promise<boolean> => {
    try {
      // ECDHE_ECDSA: the home's certificate from the files the parent made (DOTS_BENCH_CERTS: cert, key, ca paths).
      const files = process.env.DOTS_BENCH_CERTS
        ? (JSON.parse(process.env.DOTS_BENCH_CERTS) as Record<"cert" | "key" | "ca", string>)
        : undefined;
      const credentials = files
        ? {
            certificate: {
              cert: fs.readFileSync(files.cert),
              key: fs.readFileSync(files.key),
              ca: fs.readFileSync(files.ca),
              servername: "isp.example",
            },
          }
        : { psk: { identity: IDENTITY, key: Buffer.from(KEY) } };
      const c = await dtlsClientConnect({
        address: "127.0.0.1",
        port,
        ...credentials,
        suites: [suite],
        handshakeTimeoutMs: 3000,
        ...(resume && ticket ? { resumeFrom: ticket } : {}),
      });
      if (resume && !ticket) ticket = c.resumption;
      const ok = !resume || c.resumed || ticket === c.resumption;
      c.close();
      return ok;
    } catch {
      return false;
    }
  };
  for (let i = 0; i < 10; i++) await one();
  let ok = 0;
  let failed = 0;
  let started = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (started < n) {
        started++;
        if (await one()) ok++;
        else failed++;
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ ok, failed, seconds }) + "\n");
}

function runChild(args: string[], env?: Record<string, string>): { child: ChildProcess; line: Promise<Record<string, number>> } {
  const child = spawn(process.execPath, [__filename, ...args], { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, ...env } });
  let buf = "";
  const line = new Promise<Record<string, number>>((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf("\n");
      if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)) as Record<string, number>);
    });
    child.once("exit", (code) => reject(new Error(`client child exited with ${code} before reporting`)));
  });
  return { child, line };
}

/** utime + stime of a process in microseconds (from /proc, clock ticks of 10 ms). */
function cpuMicrosOf(pid: number): number {
  const stat = require("node:fs").readFileSync(`/proc/${pid}/stat`, "utf8") as string;
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10000;
}

async function main(): Promise<void> {
  const [mode, a, b, c] = process.argv.slice(2);
  if (mode === "--client-handshakes") return clientHandshakes(Number(a), Number(b), Number(c));
  if (mode === "--our-client-handshakes")
    return ourClientHandshakes(Number(a), Number(b), Number(c), process.argv[6] as DtlsCipherSuiteName, process.argv[7] === "resume");
  const handshakes = Number(mode ?? 1000);
  const parallel = Number(a ?? 4);
  const idle = Number(b ?? 1000);
  const idleMs = Number(c ?? DEFAULT_IDLE_MS);
  const libcoap = haveLibcoap();

  console.log(
    `DTLS 1.2 PSK handshakes, client node-dtls-client 2.0.3 (${SUITE}), ${handshakes} handshakes, ${parallel} in parallel, after 10 warm-up handshakes`,
  );
  // Same flight shape for both servers: libcoap sends the PSK hint "CoAP".
  const server = new DtlsServer({
    pskLookup: (id) => (id === IDENTITY ? Buffer.from(KEY) : undefined),
    pskHint: "CoAP",
    maxHandshaking: 5000,
    maxPeers: 20000,
  });
  server.on("connection", () => undefined);
  const { port } = await server.listen(0, "127.0.0.1");
  const cpu0 = process.cpuUsage();
  const ours = await runChild(["--client-handshakes", String(port), String(handshakes), String(parallel)]).line;
  const cpu = process.cpuUsage(cpu0);
  await server.close();
  const oursRate = ours.ok / ours.seconds;
  // The CPU figure includes the 10 warm-up handshakes, like the reference's.
  const oursCpu = (cpu.user + cpu.system) / (ours.ok + 10);
  console.log(
    `  ours (DtlsServer, Node ${process.version})          ${oursRate.toFixed(1).padStart(8)} handshakes/s  server CPU ${oursCpu.toFixed(0).padStart(5)} us/handshake  (ok ${ours.ok}, failed ${ours.failed})`,
  );

  if (libcoap) {
    const lib = await startLibcoap();
    try {
      const libCpu0 = cpuMicrosOf(lib.proc.pid!);
      const ref = await runChild(["--client-handshakes", String(lib.securePort), String(handshakes), String(parallel)]).line;
      const refCpu = (cpuMicrosOf(lib.proc.pid!) - libCpu0) / (ref.ok + 10);
      const refRate = ref.ok / ref.seconds;
      console.log(
        `  reference (coap-server-openssl, libcoap/OpenSSL) ${refRate.toFixed(1).padStart(8)} handshakes/s  server CPU ${refCpu.toFixed(0).padStart(5)} us/handshake  (ok ${ref.ok}, failed ${ref.failed})`,
      );
      console.log(
        `  ratio ours / reference: ${(oursRate / refRate).toFixed(2)}x handshake rate (goal >= 0.5x); server CPU per handshake ${(oursCpu / refCpu).toFixed(2)}x`,
      );
    } finally {
      lib.proc.kill("SIGKILL");
    }
  } else {
    console.log("  reference skipped: coap-server-openssl not installed (apt-get install libcoap3-bin)");
  }

  // Our client (the home's default) against both servers, per suite: ECDHE_PSK is what our home and
  // ISP negotiate by default; PSK_CCM_8 is the RFC 9132 mandatory suite; ECDHE_ECDSA is for homes
  // with certificates (mutual, P-256; coap-server-openssl with -c/-j/-C).
  const pki = await makeTestPki();
  const certEnv = { DOTS_BENCH_CERTS: JSON.stringify({ cert: pki.home1.certPath, key: pki.home1.keyPath, ca: pki.ca.certPath }) };
  const pskServer = { pskLookup: (id: string) => (id === IDENTITY ? Buffer.from(KEY) : undefined) };
  const certServer = { certificate: { cert: pki.isp.cert, key: pki.isp.key, ca: pki.ca.cert } };
  /** Our server with `serverOptions`, our client in a child: rate, server CPU per handshake (10 warm-ups included). */
  const ourServerRun = async (
    serverOptions: DtlsServerOptions,
    suite: DtlsCipherSuiteName,
    env?: Record<string, string>,
    mode?: string,
  ) => {
    const srv = new DtlsServer({ ...serverOptions, ...BENCH_CAPS });
    srv.on("connection", () => undefined);
    const port = (await srv.listen(0, "127.0.0.1")).port;
    const c0 = process.cpuUsage();
    const args = ["--our-client-handshakes", String(port), String(handshakes), String(parallel), suite, ...(mode ? [mode] : [])];
    const r = await runChild(args, env).line;
    const used = process.cpuUsage(c0);
    const resumed = srv.stats.handshakesResumed;
    await srv.close();
    return { r, rate: r.ok / r.seconds, cpuPer: (used.user + used.system) / (r.ok + 10), resumed };
  };
  for (const suite of [
    "TLS_PSK_WITH_AES_128_CCM_8",
    "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
  ] as DtlsCipherSuiteName[]) {
    const certificates = suite.includes("ECDSA");
    const env = certificates ? certEnv : undefined;
    console.log(
      `\nDTLS 1.2 handshakes${certificates ? " with certificates" : ""}, client: ours (${suite}${certificates ? ", mutual" : ""}), ${handshakes} handshakes, ${parallel} in parallel`,
    );
    const { r, rate, cpuPer } = await ourServerRun(certificates ? certServer : { ...pskServer, pskHint: "CoAP" }, suite, env);
    console.log(
      `  ours (DtlsServer)                                ${rate.toFixed(1).padStart(8)} handshakes/s  server CPU ${cpuPer.toFixed(0).padStart(5)} us/handshake  (ok ${r.ok}, failed ${r.failed})`,
    );
    if (!libcoap) continue;
    const lib = await startLibcoap(certificates ? ["-c", pki.isp.certPath, "-j", pki.isp.keyPath, "-C", pki.ca.certPath] : undefined);
    try {
      const libCpu0 = cpuMicrosOf(lib.proc.pid!);
      const ref = await runChild(["--our-client-handshakes", String(lib.securePort), String(handshakes), String(parallel), suite], env)
        .line;
      const refCpu = (cpuMicrosOf(lib.proc.pid!) - libCpu0) / (ref.ok + 10);
      const refRate = ref.ok / ref.seconds;
      console.log(
        `  reference (coap-server-openssl, libcoap/OpenSSL) ${refRate.toFixed(1).padStart(8)} handshakes/s  server CPU ${refCpu.toFixed(0).padStart(5)} us/handshake  (ok ${ref.ok}, failed ${ref.failed})`,
      );
      console.log(
        `  ratio ours / reference: ${(rate / refRate).toFixed(2)}x handshake rate (goal >= 1.0x); server CPU per handshake ${(cpuPer / refCpu).toFixed(2)}x (goal <= 1.5x)`,
      );
    } finally {
      lib.proc.kill("SIGKILL");
    }
  }

  // Reconnect storm: the same homes come back after a listener restart, with and without tickets,
  // for PSK homes (ECDHE_PSK) and certificate homes (ECDHE_ECDSA, where a full handshake signs and verifies).
  for (const suite of [
    "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
  ] as DtlsCipherSuiteName[]) {
    const certificates = suite.includes("ECDSA");
    const env = certificates ? certEnv : undefined;
    console.log(
      `\nReconnect storm, our client and server (${suite}), ${handshakes} handshakes, ${parallel} in parallel: full vs resumed (RFC 5077 tickets)`,
    );
    const rows: Array<{ rate: number; cpu: number }> = [];
    for (const mode of ["full", "resume"]) {
      const { r, rate, cpuPer, resumed } = await ourServerRun(certificates ? certServer : pskServer, suite, env, mode);
      rows.push({ rate, cpu: cpuPer });
      console.log(
        `  ${mode === "full" ? "full handshakes " : "resumed (ticket)"}  ${rate.toFixed(1).padStart(8)} handshakes/s  server CPU ${cpuPer.toFixed(0).padStart(5)} us/handshake  (ok ${r.ok}, failed ${r.failed}, resumed at the server ${resumed})`,
      );
    }
    console.log(
      `  ratio resumed / full: ${(rows[1].rate / rows[0].rate).toFixed(2)}x rate (goal >= 3x), server CPU per handshake ${(rows[1].cpu / rows[0].cpu).toFixed(2)}x`,
    );
  }

  // Memory: each server in a fresh process, clients in another (our DTLS and TLS clients).
  const scenarios: Scenario[] = ["dtls-psk", "tls-psk", "tls12-psk"];
  if (libcoap) scenarios.push("libcoap-dtls-psk", "libcoap-tls-psk");
  const results: MemoryResult[] = [];
  for (const scenario of scenarios) results.push(await measureIdleSessions(scenario, idle, idleMs));
  console.log(`\nMemory per established idle session, RSS delta of the server process over ${idle} sessions (goal: DTLS < 10 KB):`);
  printMemoryTable(results, idleMs);
  const perSession = (s: Scenario): number | undefined => {
    const r = results.find((x) => x.scenario === s);
    return r && r.sessions > 0 ? r.idle.rss / r.sessions / 1024 : undefined;
  };
  const dtls = perSession("dtls-psk");
  const libDtls = perSession("libcoap-dtls-psk");
  const ourTls = perSession("tls-psk");
  const libTls = perSession("libcoap-tls-psk");
  if (dtls !== undefined)
    console.log(
      `  ours DTLS idle: ${dtls.toFixed(2)} KB/session (goal < 10 KB)${libDtls ? `, ${(dtls / libDtls).toFixed(2)}x coap-server-openssl's ${libDtls.toFixed(2)} KB` : ""}`,
    );
  if (ourTls !== undefined)
    console.log(
      `  ours TLS 1.3 idle: ${ourTls.toFixed(2)} KB/session${libTls ? `, ${(ourTls / libTls).toFixed(2)}x coap-server-openssl's ${libTls.toFixed(2)} KB` : ""}`,
    );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
