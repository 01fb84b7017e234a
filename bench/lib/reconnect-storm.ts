// Reconnect storm (issue #11): N homes, each with its own PSK identity and key or its own client
// certificate, all come back to one DtlsServer at once: first without tickets (full handshakes,
// each home keeps the ticket it gets), then, after every connection is closed, each with its own
// ticket (RFC 5077 abbreviated handshakes). The homes run in several client processes so that the
// clients' CPU, which in a real storm is spread over N devices, does not set the pace: the figure
// that carries is the server's CPU per handshake, measured in this process.
// Between the passes the server is restarted: closed, and a new instance listens on the same port
// with the same ticket secret (sessionTicketSecret), as a restarted listener process or another
// member of the cluster would; only the secret carries over. (The new instance shares this process's
// already-compiled code, which a real new process would compile again.)
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as readline from "node:readline";
import type { TestPki } from "../../test/support/certs";
import { DtlsServer, type DtlsCipherSuiteName, type DtlsServerOptions } from "../../src/transport/dtls";
import { dtlsClientConnect, type DtlsClient, type DtlsClientOptions } from "../../src/transport/dtls/client";
import type { DtlsResumption } from "../../src/transport/dtls/resumption";
import { cpuMicrosOf, startCpuProfile, type CpuProfileSummary } from "./cpu";
import type { HomeCertificate } from "./home-certificates";

export interface StormOptions {
  suite: DtlsCipherSuiteName;
  homes: number;
  /** Client processes the homes are split among. */
  clients: number;
  /** Handshakes in flight per client process. */
  parallel: number;
  pki: TestPki;
  /** One per home, for certificate suites. */
  homeCertificates?: readonly HomeCertificate[];
  /** Extra server options (the bench's caps). */
  serverOptions?: Partial<DtlsServerOptions>;
  /** After the measured passes, one more resumed pass under the CPU profiler: its top entries. */
  profile?: boolean;
}

export interface StormPass {
  ok: number;
  failed: number;
  /** Handshakes the clients saw resumed, and the server counted as resumed. */
  resumedAtClients: number;
  resumedAtServer: number;
  /** Of resumedAtServer: answered without a cookie round (DtlsServerOptions.resumeWithoutCookie). */
  resumedWithoutCookie: number;
  /** From the go to the last home connected. */
  wallSeconds: number;
  /** CPU per successful handshake in microseconds: this process (the server), all client processes. */
  serverUs: number;
  clientUs: number;
  /** Up to three error messages with their counts. */
  errors: string[];
}

export interface StormResult {
  full: StormPass;
  resumed: StormPass;
  /** With `profile`: where the server's CPU went over one more resumed pass. */
  profile?: CpuProfileSummary;
}

/** What a client process needs: its homes' credentials (files, read once before the storm). */
interface ClientPlan {
  port: number;
  suite: DtlsCipherSuiteName;
  parallel: number;
  caPath?: string;
  homes: HomePlan[];
  /** Not one of the homes: warms the code paths (full and resumed) before the first pass. */
  warmUp: HomePlan;
}

interface HomePlan {
  identity: string;
  /** PSK, hex. */
  key?: string;
  certPath?: string;
  keyPath?: string;
}

type ClientMessage =
  | { type: "ready" }
  | { type: "pass"; ok: number; failed: number; resumed: number; errors: Array<[message: string, count: number]> }
  | { type: "closed" };

const WARM_UP_HANDSHAKES = 5;
const HANDSHAKE_TIMEOUT_MS = 5000;
/** Bounds on each step: credentials + warm-up, a pass of all homes, closing them. */
const READY_TIMEOUT_MS = 60_000;
const PASS_TIMEOUT_MS = 180_000;
const CLOSE_TIMEOUT_MS = 10_000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A client process and its messages, one JSON line each. */
class StormClient {
  private readonly queue: ClientMessage[] = [];
  private waiting: { resolve: (m: ClientMessage) => void; reject: (e: Error) => void } | undefined;
  private gone: Error | undefined;

  constructor(readonly proc: ChildProcess) {
    readline.createInterface({ input: proc.stdout! }).on("line", (line) => {
      let m: ClientMessage;
      try {
        m = JSON.parse(line) as ClientMessage;
      } catch {
        return; // not ours (a stray log line)
      }
      const w = this.waiting;
      this.waiting = undefined;
      if (w) w.resolve(m);
      else this.queue.push(m);
    });
    proc.once("exit", (code, signal) => {
      this.gone = new Error(`storm client ${proc.pid} exited (${code ?? signal})`);
      this.waiting?.reject(this.gone);
      this.waiting = undefined;
    });
  }

  /** Resolves once the process has exited, or after `timeoutMs` (the caller then kills it). */
  exited(timeoutMs: number): Promise<void> {
    if (this.gone) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.proc.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  send(command: "full" | "resume" | "close" | "exit"): void {
    this.proc.stdin!.write(command + "\n");
  }

  /** The next message, which must be of `type`, within `timeoutMs`. */
  async next<T extends ClientMessage["type"]>(type: T, timeoutMs: number): Promise<Extract<ClientMessage, { type: T }>> {
    const queued = this.queue.shift();
    let timer: NodeJS.Timeout | undefined;
    const m =
      queued ??
      (await new Promise<ClientMessage>((resolve, reject) => {
        if (this.gone) return reject(this.gone);
        this.waiting = { resolve, reject };
        timer = setTimeout(() => {
          this.waiting = undefined;
          reject(new Error(`storm client ${this.pid}: no "${type}" within ${timeoutMs} ms`));
        }, timeoutMs);
      }).finally(() => clearTimeout(timer)));
    if (m.type !== type) throw new Error(`storm client ${this.pid}: expected "${type}", got "${m.type}"`);
    return m as Extract<ClientMessage, { type: T }>;
  }
}

export async function runReconnectStorm(o: StormOptions): Promise<StormResult> {
  const certificates = o.suite.includes("ECDSA");
  if (certificates && (o.homeCertificates?.length ?? 0) < o.homes) throw new Error("a certificate storm needs one certificate per home");
  const clients = Math.max(1, Math.min(o.clients, o.homes));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-storm-"));

  // PSK homes: home-<i> with its own random key, looked up in a table made before the storm.
  const homes: HomePlan[] = Array.from({ length: o.homes }, (_, i) =>
    certificates
      ? { identity: `home-${i}`, certPath: o.homeCertificates![i].certPath, keyPath: o.homeCertificates![i].keyPath }
      : { identity: `home-${i}`, key: randomBytes(16).toString("hex") },
  );
  const warmUps: HomePlan[] = Array.from({ length: clients }, (_, c) =>
    certificates
      ? { identity: `warm-up-${c}`, certPath: o.pki.home1.certPath, keyPath: o.pki.home1.keyPath }
      : { identity: `warm-up-${c}`, key: randomBytes(16).toString("hex") },
  );
  const keys = new Map<string, Buffer>();
  for (const h of [...homes, ...warmUps]) if (h.key) keys.set(h.identity, Buffer.from(h.key, "hex"));

  const ticketSecret = randomBytes(48);
  const makeServer = (): DtlsServer => {
    const srv = new DtlsServer({
      ...(certificates
        ? { certificate: { cert: o.pki.isp.cert, key: o.pki.isp.key, ca: o.pki.ca.cert } }
        : { pskLookup: (identity: string) => keys.get(identity) }),
      sessionTicketSecret: ticketSecret,
      ...o.serverOptions,
    });
    srv.on("connection", () => undefined);
    srv.on("error", () => undefined);
    return srv;
  };
  let server = makeServer();
  const kids: StormClient[] = [];
  try {
    const { port } = await server.listen(0, "127.0.0.1");
    for (let c = 0; c < clients; c++) {
      const plan: ClientPlan = {
        port,
        suite: o.suite,
        parallel: o.parallel,
        ...(certificates ? { caPath: o.pki.ca.certPath } : {}),
        // Every client-th home: each process gets an even share.
        homes: homes.filter((_, i) => i % clients === c),
        warmUp: warmUps[c],
      };
      const planPath = path.join(dir, `client-${c}.json`);
      fs.writeFileSync(planPath, JSON.stringify(plan));
      const proc = spawn(process.execPath, [__filename, "--storm-client", planPath], { stdio: ["pipe", "pipe", "inherit"] });
      kids.push(new StormClient(proc));
    }
    await Promise.all(kids.map((k) => k.next("ready", READY_TIMEOUT_MS)));

    const pass = async (command: "full" | "resume"): Promise<StormPass> => {
      (globalThis as { gc?: () => void }).gc?.(); // with --expose-gc: no collection left over from set-up
      const before = { ...server.stats };
      const kidCpu0 = kids.map((k) => cpuMicrosOf(k.pid));
      const cpu0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      for (const k of kids) k.send(command);
      const reports = await Promise.all(kids.map((k) => k.next("pass", PASS_TIMEOUT_MS)));
      const wallSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const cpu = process.cpuUsage(cpu0);
      const clientCpu = kids.reduce((sum, k, i) => sum + cpuMicrosOf(k.pid) - kidCpu0[i], 0);
      const ok = reports.reduce((s, r) => s + r.ok, 0);
      const errors = new Map<string, number>();
      for (const r of reports) for (const [e, n] of r.errors) errors.set(e, (errors.get(e) ?? 0) + n);
      return {
        ok,
        failed: reports.reduce((s, r) => s + r.failed, 0),
        resumedAtClients: reports.reduce((s, r) => s + r.resumed, 0),
        resumedAtServer: server.stats.handshakesResumed - before.handshakesResumed,
        resumedWithoutCookie: server.stats.resumedWithoutCookie - before.resumedWithoutCookie,
        wallSeconds,
        serverUs: (cpu.user + cpu.system) / Math.max(1, ok),
        clientUs: clientCpu / Math.max(1, ok),
        errors: [...errors].slice(0, 3).map(([e, n]) => `${n} x ${e}`),
      };
    };
    // Between passes every home closes (close_notify) and the server forgets the session.
    const closeAll = async (): Promise<void> => {
      for (const k of kids) k.send("close");
      await Promise.all(kids.map((k) => k.next("closed", CLOSE_TIMEOUT_MS)));
      const deadline = Date.now() + CLOSE_TIMEOUT_MS;
      while (server.sessionCount > 0 && Date.now() < deadline) await sleep(20);
    };

    const full = await pass("full");
    await closeAll();
    // The listener restarts: nothing of the first instance is left but the shared ticket secret.
    await server.close();
    server = makeServer();
    await server.listen(port, "127.0.0.1");
    const resumed = await pass("resume");
    let profile: CpuProfileSummary | undefined;
    if (o.profile) {
      // The server issues no new ticket on resumption, so each home offers the same ticket again.
      await closeAll();
      const stop = await startCpuProfile();
      await pass("resume");
      profile = await stop();
    }
    for (const k of kids) k.send("exit");
    await Promise.all(kids.map((k) => k.exited(CLOSE_TIMEOUT_MS)));
    return { full, resumed, ...(profile ? { profile } : {}) };
  } finally {
    for (const k of kids) if (k.proc.exitCode === null && k.proc.signalCode === null) k.proc.kill("SIGKILL");
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ----------------------------------------------------------------------------- client process

async function clientProcess(planPath: string): Promise<void> {
  const plan = JSON.parse(fs.readFileSync(planPath, "utf8")) as ClientPlan;
  const ca = plan.caPath ? fs.readFileSync(plan.caPath, "utf8") : undefined;
  // Each home's credentials, read once here, before any timing.
  const load = (h: HomePlan): Pick<DtlsClientOptions, "psk" | "certificate"> =>
    h.key
      ? { psk: { identity: h.identity, key: Buffer.from(h.key, "hex") } }
      : {
          certificate: {
            cert: fs.readFileSync(h.certPath!, "utf8"),
            key: fs.readFileSync(h.keyPath!, "utf8"),
            ca: ca!,
            servername: "isp.example",
          },
        };
  const credentials = plan.homes.map(load);
  const warmUp = load(plan.warmUp);
  const tickets: Array<DtlsResumption | undefined> = new Array<DtlsResumption | undefined>(credentials.length);
  const open: DtlsClient[] = [];
  const send = (m: ClientMessage): boolean => process.stdout.write(JSON.stringify(m) + "\n");
  const connect = (c: Pick<DtlsClientOptions, "psk" | "certificate">, resumeFrom?: DtlsResumption): Promise<DtlsClient> =>
    dtlsClientConnect({
      address: "127.0.0.1",
      port: plan.port,
      ...c,
      suites: [plan.suite],
      handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
      ...(resumeFrom ? { resumeFrom } : {}),
    });

  let warmTicket: DtlsResumption | undefined;
  for (let i = 0; i < WARM_UP_HANDSHAKES; i++) {
    const c = await connect(warmUp);
    warmTicket = c.resumption;
    c.close();
  }
  for (let i = 0; i < WARM_UP_HANDSHAKES; i++) (await connect(warmUp, warmTicket)).close();
  send({ type: "ready" });

  // Every home once: `parallel` at a time, each keeping its connection (a home stays connected).
  const pass = async (resume: boolean): Promise<void> => {
    let next = 0;
    let ok = 0;
    let failed = 0;
    let resumed = 0;
    const errors = new Map<string, number>();
    await Promise.all(
      Array.from({ length: Math.min(plan.parallel, credentials.length) }, async () => {
        while (next < credentials.length) {
          const i = next++;
          try {
            const c = await connect(credentials[i], resume ? tickets[i] : undefined);
            ok++;
            if (c.resumed) resumed++;
            // The full pass's ticket is the one the home offers next; a resumption may bring none.
            tickets[i] = c.resumption ?? tickets[i];
            open.push(c);
          } catch (e) {
            failed++;
            const msg = (e as Error).message;
            errors.set(msg, (errors.get(msg) ?? 0) + 1);
          }
        }
      }),
    );
    send({ type: "pass", ok, failed, resumed, errors: [...errors].slice(0, 3) });
  };
  const closeAll = (): void => {
    for (const c of open.splice(0)) c.close();
  };

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line === "full") await pass(false);
    else if (line === "resume") await pass(true);
    else if (line === "close") {
      closeAll();
      await sleep(50); // the close_notify datagrams leave before the parent checks the server
      send({ type: "closed" });
    } else if (line === "exit") break;
  }
  // Also when the parent went away (stdin ended).
  closeAll();
  await sleep(50);
  process.exit(0);
}

if (require.main === module && process.argv[2] === "--storm-client") {
  clientProcess(process.argv[3]).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
