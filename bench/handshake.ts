// DTLS-PSK handshakes per second against our DtlsServer and, in the same run, against libcoap's
// coap-server-openssl (OpenSSL 3) with the same client (node-dtls-client 2.0.3, in a child process
// so it never competes with our server for the event loop); then the RSS cost of 1,000 idle
// established sessions on our server (light scripted clients, also in a child process).
// Usage: node .build/<out>/bench/handshake.js [handshakes=300] [parallel=4] [idleSessions=1000]
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as dgram from "node:dgram";
import * as net from "node:net";
import { DtlsServer } from "../src/transport/dtls";
import { ScriptedDtlsClient } from "../src/transport/dtls/scripted-client";

const IDENTITY = "dots-client-1";
const KEY = "secretPSK-0123456789";
const SUITE = "TLS_PSK_WITH_AES_128_CCM_8";

interface NdcSocket {
  on(event: string, cb: (arg?: unknown) => void): NdcSocket;
  close(): void;
}
const ndc = (): { dtls: { createSocket(o: Record<string, unknown>): NdcSocket } } => require("node-dtls-client");

/** Child mode 1: `n` handshakes with node-dtls-client, `parallel` at a time; prints a JSON result. */
async function clientHandshakes(port: number, n: number, parallel: number): Promise<void> {
  const one = (): Promise<boolean> =>
    new Promise((resolve) => {
      const s = ndc().dtls.createSocket({ type: "udp4", address: "127.0.0.1", port, psk: { [IDENTITY]: Buffer.from(KEY) }, timeout: 3000, ciphers: [SUITE] });
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

/** Child mode 2: hold `n` idle established sessions until stdin closes. */
async function clientIdleSessions(port: number, n: number): Promise<void> {
  const clients: ScriptedDtlsClient[] = [];
  let failed = 0;
  for (let i = 0; i < n; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, n - i) }, async () => {
        const c = new ScriptedDtlsClient({ address: "127.0.0.1", port, identity: IDENTITY, psk: Buffer.from(KEY), extendedMasterSecret: true, renegotiationInfo: true });
        clients.push(c);
        await c.bind();
        await c.connect(10000).catch(() => failed++);
      }),
    );
  }
  process.stdout.write(JSON.stringify({ ready: n - failed, failed }) + "\n");
  process.stdin.resume();
  process.stdin.on("end", async () => {
    // In batches, so the server's socket buffer never overflows and every close_notify arrives.
    for (let i = 0; i < clients.length; i++) {
      await clients[i].close(true);
      if (i % 50 === 49) await new Promise((r) => setTimeout(r, 20));
    }
    process.exit(0);
  });
}

function runChild(args: string[]): { child: ChildProcess; line: Promise<Record<string, number>> } {
  const child = spawn(process.execPath, [__filename, ...args], { stdio: ["pipe", "pipe", "inherit"] });
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

/** coap-server-openssl listens on p (UDP/TCP) and p+1 (DTLS/TLS): find a pair that is free now. */
async function startLibcoap(): Promise<{ proc: ChildProcess; dtlsPort: number }> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const p = 20000 + 2 * Math.floor(Math.random() * 15000);
    if (!(await portFree(p)) || !(await portFree(p + 1))) continue;
    const proc = spawn("coap-server-openssl", ["-k", KEY, "-A", "127.0.0.1", "-p", String(p)], { stdio: "ignore" });
    await new Promise((r) => setTimeout(r, 300));
    if (proc.exitCode === null) return { proc, dtlsPort: p + 1 };
  }
  throw new Error("could not start coap-server-openssl");
}

/** utime + stime of a process in microseconds (from /proc, clock ticks of 10 ms). */
function cpuMicrosOf(pid: number): number {
  const stat = require("node:fs").readFileSync(`/proc/${pid}/stat`, "utf8") as string;
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10000;
}

function rssOf(pid: number): number {
  const status = require("node:fs").readFileSync(`/proc/${pid}/status`, "utf8") as string;
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) (global as { gc?: () => void }).gc?.();
  return new Promise((r) => setTimeout(r, 200));
}

async function main(): Promise<void> {
  const [mode, a, b, c] = process.argv.slice(2);
  if (mode === "--client-handshakes") return clientHandshakes(Number(a), Number(b), Number(c));
  if (mode === "--client-idle") return clientIdleSessions(Number(a), Number(b));
  if (!(global as { gc?: unknown }).gc) {
    // Re-run with --expose-gc so memory figures are measured after collection.
    const r = spawnSync(process.execPath, ["--expose-gc", __filename, ...process.argv.slice(2)], { stdio: "inherit" });
    process.exit(r.status ?? 1);
  }
  const handshakes = Number(mode ?? 300);
  const parallel = Number(a ?? 4);
  const idle = Number(b ?? 1000);
  const haveLibcoap = spawnSync("sh", ["-c", "command -v coap-server-openssl"]).status === 0;

  console.log(`DTLS 1.2 PSK handshakes, client node-dtls-client 2.0.3 (${SUITE}), ${handshakes} handshakes, ${parallel} in parallel`);
  // Same flight shape for both servers: libcoap sends the PSK hint "CoAP".
  const server = new DtlsServer({ pskLookup: (id) => (id === IDENTITY ? Buffer.from(KEY) : undefined), pskHint: "CoAP", maxHandshaking: 5000, maxPeers: 20000 });
  server.on("connection", () => undefined);
  const { port } = await server.listen(0, "127.0.0.1");
  const cpu0 = process.cpuUsage();
  const ours = await runChild(["--client-handshakes", String(port), String(handshakes), String(parallel)]).line;
  const cpu = process.cpuUsage(cpu0);
  const oursRate = ours.ok / ours.seconds;
  // The CPU figure includes the 10 warm-up handshakes, like the reference's.
  const oursCpu = (cpu.user + cpu.system) / (ours.ok + 10);
  console.log(`  ours (DtlsServer, Node ${process.version})          ${oursRate.toFixed(1).padStart(8)} handshakes/s  server CPU ${oursCpu.toFixed(0).padStart(5)} us/handshake  (ok ${ours.ok}, failed ${ours.failed})`);

  if (haveLibcoap) {
    const lib = await startLibcoap();
    try {
      const libCpu0 = cpuMicrosOf(lib.proc.pid!);
      const ref = await runChild(["--client-handshakes", String(lib.dtlsPort), String(handshakes), String(parallel)]).line;
      const refCpu = (cpuMicrosOf(lib.proc.pid!) - libCpu0) / (ref.ok + 10);
      const refRate = ref.ok / ref.seconds;
      console.log(`  reference (coap-server-openssl, libcoap/OpenSSL) ${refRate.toFixed(1).padStart(8)} handshakes/s  server CPU ${refCpu.toFixed(0).padStart(5)} us/handshake  (ok ${ref.ok}, failed ${ref.failed})`);
      console.log(`  ratio ours / reference: ${(oursRate / refRate).toFixed(2)}x handshake rate (goal >= 0.5x); server CPU per handshake ${(oursCpu / refCpu).toFixed(2)}x`);
    } finally {
      lib.proc.kill("SIGKILL");
    }
  } else {
    console.log("  reference skipped: coap-server-openssl not installed (apt-get install libcoap3-bin)");
  }

  // Memory: established idle sessions on our server, in three rounds of open-measure-close. The
  // first rounds also pay for V8 growing its heap under the handshakes' short-lived garbage (heap
  // total grows, heap used does not); by round 3 the heap has settled, so round 3 shows what a
  // session itself keeps. "heap used" is the retained JS memory, "external" the buffers' bytes.
  await server.close();
  const memServer = new DtlsServer({ pskLookup: () => Buffer.from(KEY), maxHandshaking: 5000, maxPeers: 20000 });
  const memPort = (await memServer.listen(0, "127.0.0.1")).port;
  console.log(`\nIdle established DTLS sessions on our server (goal < 10 KB RSS per session):`);
  for (const round of ["round 1 (cold)", "round 2", "round 3 (settled)"]) {
    await settle();
    const rssBefore = process.memoryUsage().rss;
    const heapBefore = process.memoryUsage().heapUsed;
    const externalBefore = process.memoryUsage().external;
    const idleChild = runChild(["--client-idle", String(memPort), String(idle)]);
    const held = await idleChild.line;
    await settle();
    const rssAfter = process.memoryUsage().rss;
    const heapAfter = process.memoryUsage().heapUsed;
    const externalAfter = process.memoryUsage().external;
    const n = memServer.sessionCount;
    console.log(
      `  ${round}: ${n} sessions (client: ${held.ready} ready, ${held.failed} failed); ` +
        `RSS delta ${((rssAfter - rssBefore) / 1024).toFixed(0)} KB = ${((rssAfter - rssBefore) / n / 1024).toFixed(2)} KB/session; ` +
        `heap used ${((heapAfter - heapBefore) / n / 1024).toFixed(2)} KB/session; external ${((externalAfter - externalBefore) / n / 1024).toFixed(2)} KB/session`,
    );
    idleChild.child.stdin!.end(); // the clients send close_notify and the server frees the sessions
    await new Promise((r) => idleChild.child.once("exit", r));
    for (let i = 0; i < 200 && memServer.sessionCount > 0; i++) await new Promise((r) => setTimeout(r, 10));
  }
  await memServer.close();

  if (haveLibcoap) {
    // Same measurement for libcoap as a reference point.
    const lib = await startLibcoap();
    try {
      await new Promise((r) => setTimeout(r, 200));
      const before = rssOf(lib.proc.pid!);
      const child = runChild(["--client-idle", String(lib.dtlsPort), String(idle)]);
      const r = await child.line;
      await new Promise((res) => setTimeout(res, 300));
      const after = rssOf(lib.proc.pid!);
      console.log(`  reference coap-server-openssl: ${r.ready} sessions, RSS delta ${((after - before) / 1024).toFixed(0)} KB total, ${((after - before) / Math.max(1, r.ready) / 1024).toFixed(2)} KB per session`);
      child.child.stdin!.end();
      await new Promise((res) => child.child.once("exit", res));
    } finally {
      lib.proc.kill("SIGKILL");
    }
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
