// `npm run demo`: starts Node-RED (the package's own dev dependency, embedded in this process)
// with the DOTS nodes loaded and the loopback demo flow deployed: ISP listener and home dialer on
// 127.0.0.1 over DTLS-PSK, a trigger, NAT lookup on a static table and a dry-run filter action.
// The PSK and Node-RED's credentialSecret are generated at first start and kept only in the demo
// user dir (git-ignored .demo/ by default); later starts reuse them.
import * as crypto from "node:crypto";
import * as dgram from "node:dgram";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";

const PACKAGE_NAME = "@dots-call-home/node-red";
const DEFAULT_EDITOR_PORT = 1880;
const DEFAULT_DOTS_PORT = 4647;
const HOST = "127.0.0.1";
const PSK_IDENTITY = "home-1";
/** Node-RED log levels (@node-red/util log.js). */
const LOG_ERROR = 20;
const LOG_WARN = 30;
const LOG_INFO = 40;
/** How long to wait for the home to connect before saying that it has not. */
const READY_WAIT_MS = 15000;

const USAGE = `Usage: npm run demo [-- options]
  --port N        editor and HTTP endpoints on 127.0.0.1:N (default ${DEFAULT_EDITOR_PORT}; 0 = any free port)
                  environment: DEMO_PORT
  --dots-port N   DOTS listener port (default ${DEFAULT_DOTS_PORT}, or a free port when ${DEFAULT_DOTS_PORT} is taken;
                  0 = any free port)   environment: DEMO_DOTS_PORT
  --dir PATH      Node-RED user dir with the demo's flows and encrypted credentials
                  (default .demo/ in the repository)   environment: DEMO_DIR
  -h, --help      this text`;

type FlowNode = Record<string, unknown> & { id: string; type: string };

interface EmbeddedRed {
  init(server: http.Server, settings: Record<string, unknown>): void;
  start(): Promise<void>;
  stop(): Promise<void>;
  version(): string;
  httpAdmin: http.RequestListener;
  httpNode: http.RequestListener;
  nodes: { getNode(id: string): unknown };
}

/** Node-RED's log record, as handed to a custom logging handler. */
interface LogRecord {
  level: number;
  type?: string;
  name?: string;
  id?: string;
  msg?: unknown;
}

class UsageError extends Error {}

interface Options {
  editorPort: number;
  /** undefined: 4647 when free, else any free port. */
  dotsPort: number | undefined;
  dir: string | undefined;
}

function portNumber(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) throw new UsageError(`${what} must be a port number 0..65535, got "${text}"`);
  return Number(text);
}

function parseOptions(argv: string[], env: NodeJS.ProcessEnv): Options | "help" {
  const o: Options = {
    editorPort: env.DEMO_PORT ? portNumber(env.DEMO_PORT, "DEMO_PORT") : DEFAULT_EDITOR_PORT,
    dotsPort: env.DEMO_DOTS_PORT ? portNumber(env.DEMO_DOTS_PORT, "DEMO_DOTS_PORT") : undefined,
    dir: env.DEMO_DIR || undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf("=");
    const name = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    const value = (): string => {
      if (eq > 0 && arg.startsWith("--")) return arg.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${name} needs a value`);
      return v;
    };
    switch (name) {
      case "-h":
      case "--help":
        return "help";
      case "--port":
        o.editorPort = portNumber(value(), "--port");
        break;
      case "--dots-port":
        o.dotsPort = portNumber(value(), "--dots-port");
        break;
      case "--dir":
        o.dir = value();
        break;
      default:
        throw new UsageError(`unknown option "${arg}"`);
    }
  }
  return o;
}

/** The repository (package) root: the nearest folder above this script with our package.json. */
function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, "package.json");
    if (fs.existsSync(pkg) && (JSON.parse(fs.readFileSync(pkg, "utf8")) as { name?: string }).name === PACKAGE_NAME) return dir;
    if (path.dirname(dir) === dir) throw new Error(`cannot find the ${PACKAGE_NAME} package above ${from}`);
  }
}

/**
 * The folder Node-RED loads our nodes from. After `npm run build` that is the repository itself
 * (package.json points into dist/). A build elsewhere (DOTS_BUILD_OUT) gets a package folder laid
 * out as npm would install it: package.json, dist/ -> that build, examples/.
 */
function nodesPackageDir(root: string, buildRoot: string, demoDir: string): string {
  if (path.resolve(root, "dist") === buildRoot) return root;
  const dir = path.join(demoDir, "package");
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  fs.copyFileSync(path.join(root, "package.json"), path.join(dir, "package.json"));
  fs.symlinkSync(buildRoot, path.join(dir, "dist"), "dir");
  fs.symlinkSync(path.join(root, "examples"), path.join(dir, "examples"), "dir");
  return dir;
}

/** Reads a secret file, or creates it (owner-only) with fresh random bytes. */
function secretFile(file: string, bytes: number): { value: string; created: boolean } {
  if (fs.existsSync(file)) {
    const value = fs.readFileSync(file, "utf8").trim();
    if (/^[0-9a-f]{32,}$/.test(value)) return { value, created: false };
  }
  const value = crypto.randomBytes(bytes).toString("hex");
  fs.writeFileSync(file, value + "\n", { mode: 0o600 });
  return { value, created: true };
}

/**
 * One demo per user dir: two Node-RED runtimes on one flows file would overwrite each other's
 * deploys. A pid file left by a killed demo is stale once that process is gone.
 */
function lockDemoDir(dir: string): void {
  const file = path.join(dir, "demo.pid");
  const other = fs.existsSync(file) ? Number(fs.readFileSync(file, "utf8").trim()) : NaN;
  if (Number.isInteger(other) && other > 0 && other !== process.pid && isDemoProcess(other)) {
    throw new UsageError(
      `another demo (pid ${other}) is already running with the user dir ${dir}; stop it first, or give this one its own --dir`,
    );
  }
  fs.writeFileSync(file, `${process.pid}\n`, { mode: 0o600 });
  process.on("exit", () => {
    try {
      if (fs.readFileSync(file, "utf8").trim() === String(process.pid)) fs.unlinkSync(file);
    } catch {
      // already gone
    }
  });
}

function isDemoProcess(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
  try {
    // The pid may have been reused by an unrelated process since a demo was killed.
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("demo");
  } catch {
    return true; // no /proc: trust the live pid
  }
}

function udpPortFree(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const s = dgram.createSocket("udp4");
    s.once("error", () => {
      s.close();
      resolve(undefined);
    });
    s.bind(port, HOST, () => {
      const bound = s.address().port;
      s.close(() => resolve(bound));
    });
  });
}

/** The DOTS listener's UDP port: the one asked for, or 4647, or a free one when 4647 is taken. */
async function chooseDotsPort(asked: number | undefined): Promise<{ port: number; note?: string }> {
  if (asked !== undefined) {
    const port = await udpPortFree(asked);
    if (port === undefined)
      throw new UsageError(
        `the DOTS port ${asked} (UDP on ${HOST}) is already in use; choose another with --dots-port N or DEMO_DOTS_PORT=N, or 0 for any free port`,
      );
    return { port };
  }
  const port = await udpPortFree(DEFAULT_DOTS_PORT);
  if (port !== undefined) return { port };
  const free = await udpPortFree(0);
  if (free === undefined) throw new Error("no free UDP port on " + HOST);
  return { port: free, note: `UDP port ${DEFAULT_DOTS_PORT} is in use, so the DOTS listener uses ${free} instead` };
}

function listen(server: http.Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      if (err.code === "EADDRINUSE") {
        reject(
          new UsageError(
            `the editor port ${port} on ${HOST} is already in use (another Node-RED?); choose another: DEMO_PORT=${port + 1} npm run demo, or npm run demo -- --port ${port + 1} (0 = any free port)`,
          ),
        );
      } else reject(err);
    };
    server.once("error", onError);
    server.listen(port, HOST, () => {
      server.off("error", onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** The loopback example, the flow the demo deploys. */
function loadExample(root: string): FlowNode[] {
  const dir = path.join(root, "examples");
  const file = fs.readdirSync(dir).find((f) => f.startsWith("Loopback demo") && f.endsWith(".json"));
  if (!file) throw new Error(`no "Loopback demo*.json" in ${dir}`);
  return JSON.parse(fs.readFileSync(path.join(dir, file), "utf8")) as FlowNode[];
}

/** Points the ISP and home endpoints at 127.0.0.1:port; true when something changed. */
function localise(n: FlowNode, dotsPort: number): boolean {
  const set = (key: string, value: unknown, same: boolean): boolean => {
    if (same) return false;
    n[key] = value;
    return true;
  };
  let changed = false;
  // The endpoints hold the settings (config version 2); a stored v1 flow has them in the nodes.
  if (n.type === "dots-isp-endpoint" || (n.type === "dots-call-home-listener" && !n.endpoint)) {
    changed = set("port", dotsPort, Number(n.port) === dotsPort) || changed;
    changed = set("host", HOST, n.host === HOST) || changed;
  } else if (n.type === "dots-home-endpoint" || (n.type === "dots-call-home-dialer" && !n.endpoint)) {
    changed = set("port", dotsPort, Number(n.port) === dotsPort) || changed;
    changed = set("hosts", HOST, n.hosts === HOST) || changed;
  }
  return changed;
}

/**
 * Points the demo's listener and dialer in a stored flows.json at 127.0.0.1:port before Node-RED
 * starts it (ports and hosts are not credentials), so a restart on another port never brings up a
 * session that a deploy would replace at once.
 */
function localiseStoredFlows(file: string, example: FlowNode[], dotsPort: number): void {
  let flows: unknown;
  try {
    flows = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch {
    return; // none yet, or broken: Node-RED starts empty or reports it, and the deploy below fixes it
  }
  if (!Array.isArray(flows)) return;
  const ids = new Set(example.map((n) => n.id));
  let changed = false;
  for (const n of flows as FlowNode[]) if (n && ids.has(n.id)) changed = localise(n, dotsPort) || changed;
  if (changed) fs.writeFileSync(file, JSON.stringify(flows, null, 4));
}

/** Talks to the embedded runtime's admin API over loopback, as the editor does. */
class AdminApi {
  constructor(private readonly base: string) {}
  private async call(method: string, what: string, body?: unknown): Promise<unknown> {
    const res = await fetch(this.base + what, {
      method,
      headers: { "content-type": "application/json", "Node-RED-API-Version": "v1", "Node-RED-Deployment-Type": "full" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} /${what} answered ${res.status}: ${text.slice(0, 300)}`);
    return text ? JSON.parse(text) : undefined;
  }
  flows(): Promise<FlowNode[]> {
    return this.call("GET", "flows") as Promise<FlowNode[]>;
  }
  deploy(flows: FlowNode[]): Promise<unknown> {
    return this.call("POST", "flows", flows);
  }
  /** Text credentials and has_<name> flags for password ones; never the password itself. */
  credentials(type: string, id: string): Promise<Record<string, unknown>> {
    return this.call("GET", `credentials/${type}/${id}`) as Promise<Record<string, unknown>>;
  }
}

/**
 * Deploys the demo flow where it is missing or points elsewhere, keeping what the user changed.
 * A PSK is generated only when the dots-psk node has none; otherwise Node-RED keeps the stored one
 * (a deploy without a node's `credentials` leaves them as they are).
 */
async function ensureDemoFlow(api: AdminApi, example: FlowNode[], dotsPort: number): Promise<{ keyGenerated: boolean; deployed: boolean }> {
  const flows = await api.flows();
  let changed = false;
  // A demo dir from release 0.1 has the listener and dialer settings inline (config version 1):
  // those nodes now use the example's endpoints, which keep the nodes' state directories.
  const stateIdFor = new Map<unknown, string>();
  for (const wanted of example) {
    const have = flows.find((n) => n.id === wanted.id);
    if (have && wanted.endpoint && !have.endpoint) {
      for (const k of Object.keys(have)) if (!["id", "type", "z", "g", "d", "name", "x", "y", "wires"].includes(k)) delete have[k];
      have.endpoint = wanted.endpoint;
      have.version = wanted.version;
      stateIdFor.set(wanted.endpoint, wanted.id);
      changed = true;
    }
  }
  for (const wanted of example) {
    const have = flows.find((n) => n.id === wanted.id);
    if (have) {
      changed = localise(have, dotsPort) || changed;
    } else {
      const copy = JSON.parse(JSON.stringify(wanted)) as FlowNode;
      if (stateIdFor.has(copy.id)) copy.stateId = stateIdFor.get(copy.id);
      localise(copy, dotsPort);
      flows.push(copy);
      changed = true;
    }
  }
  let keyGenerated = false;
  for (const psk of flows.filter((n) => n.type === "dots-psk" && example.some((e) => e.id === n.id))) {
    const stored = await api.credentials("dots-psk", psk.id).catch(() => ({}) as Record<string, unknown>);
    if (stored.has_key === true && typeof stored.identity === "string" && stored.identity) continue;
    psk.keyFormat = "hex";
    psk.credentials = { identity: PSK_IDENTITY, key: crypto.randomBytes(32).toString("hex") };
    keyGenerated = true;
    changed = true;
  }
  if (changed) await api.deploy(flows);
  return { keyGenerated, deployed: changed };
}

function text(value: unknown): string {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.message;
  return JSON.stringify(value);
}

async function main(): Promise<void> {
  let options: Options | "help";
  try {
    options = parseOptions(process.argv.slice(2), process.env);
  } catch (e) {
    process.stderr.write(`demo: ${text(e)}\n${USAGE}\n`);
    process.exit(2);
  }
  if (options === "help") {
    process.stdout.write(USAGE + "\n");
    return;
  }
  const root = findPackageRoot(__dirname);
  const buildRoot = path.resolve(__dirname, "..");
  if (!fs.existsSync(path.join(buildRoot, "nodes", "dots-psk", "dots-psk.js"))) {
    throw new Error(`the nodes are not built in ${buildRoot}: run "npm run build" first`);
  }
  const demoDir = path.resolve(options.dir ?? path.join(root, ".demo"));
  fs.mkdirSync(demoDir, { recursive: true, mode: 0o700 });
  fs.chmodSync(demoDir, 0o700); // flows_cred.json inside is written world-readable by Node-RED
  lockDemoDir(demoDir);

  // Fail early, before Node-RED loads, when a port is taken.
  const server = http.createServer();
  const editorPort = await listen(server, options.editorPort);
  const dots = await chooseDotsPort(options.dotsPort);

  const secret = secretFile(path.join(demoDir, "credential-secret"), 32);
  const nodesDir = nodesPackageDir(root, buildRoot, demoDir);
  const base = `http://${HOST}:${editorPort}/`;

  // Debug nodes with "console" output print here in a readable form, as do warnings and errors;
  // the rest of Node-RED's start-up log stays quiet. Debug lines wait until the banner is out.
  let held: string[] | undefined = [];
  const printLog = (record: LogRecord): void => {
    const debugLine = record.type === "debug" && record.level === LOG_INFO;
    if (!debugLine && record.level > LOG_WARN) return;
    const body = text(record.msg).replace(/^\n/, "").trimEnd();
    // Expected, so not worth a warning: no credentials file on a first start; no projects.
    if (!debugLine && ((secret.created && /^Encrypted credentials not found/.test(body)) || /^Projects disabled/.test(body))) return;
    const who = record.type ? `${record.name || record.id}` : "Node-RED";
    const level = debugLine ? "" : record.level <= LOG_ERROR ? " error" : " warning";
    const line = `[${new Date().toISOString().slice(11, 19)}]${level} ${who}: ${body.replace(/\n/g, "\n    ")}\n`;
    if (!debugLine) process.stderr.write(line);
    else if (held) held.push(line);
    else process.stdout.write(line);
  };

  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const RED = require("node-red") as EmbeddedRed;
  // The release of the Node-RED this process runs (RED.version() adds "-git" in a source checkout).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const redVersion = (require("node-red/package.json") as { version: string }).version;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const express = require("express") as () => http.RequestListener & { use(path: string, handler: http.RequestListener): void };
  const app = express();
  server.on("request", app);
  const example = loadExample(root);
  localiseStoredFlows(path.join(demoDir, "flows.json"), example, dots.port);
  RED.init(server, {
    userDir: demoDir,
    flowFile: "flows.json",
    flowFilePretty: true,
    credentialSecret: secret.value,
    nodesDir: [nodesDir],
    httpAdminRoot: "/",
    httpNodeRoot: "/",
    uiHost: HOST,
    uiPort: editorPort,
    // Without these Node-RED 4.1 asks about update notifications and starts a tour.
    telemetry: { enabled: false, updateNotification: false },
    editorTheme: { tours: false },
    logging: { demo: { level: "info", handler: () => printLog } },
  });
  app.use("/", RED.httpAdmin);
  app.use("/", RED.httpNode);

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      process.stdout.write("Stopping anyway.\n");
      process.exit(130);
    }
    stopping = true;
    process.stdout.write(`\n${signal}: stopping Node-RED (closes the DOTS session and the listener)...\n`);
    const force = setTimeout(() => {
      process.stderr.write("demo: Node-RED did not stop within 15 s; exiting anyway\n");
      process.exit(1);
    }, 15000);
    force.unref();
    void Promise.resolve(RED.stop())
      .catch((e) => process.stderr.write(`demo: ${text(e)}\n`))
      .then(
        () =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections();
          }),
      )
      .then(() => {
        process.stdout.write("Stopped.\n");
        process.exit(0);
      });
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));

  await RED.start();
  const deployed = await ensureDemoFlow(new AdminApi(base), example, dots.port);
  // Ready once the ISP endpoint of the flows now running has a session: one a deploy kept, or a
  // new one when the deploy changed the endpoints (Node-RED runs in this process: ask it).
  const ispEndpoint = example.find((n) => n.type === "dots-isp-endpoint")?.id ?? "";
  const ready = (async (): Promise<boolean> => {
    const deadline = Date.now() + READY_WAIT_MS;
    while (Date.now() < deadline && !stopping) {
      const node = RED.nodes.getNode(ispEndpoint) as { hub?: { engine?: { sessions(): unknown[] } } } | null;
      if ((node?.hub?.engine?.sessions().length ?? 0) > 0) return true;
      await new Promise((r) => setTimeout(r, 100));
    }
    return false;
  })();

  const lines = [
    "",
    `DOTS Call Home demo: Node-RED ${redVersion} with ${PACKAGE_NAME}`,
    `  User dir:      ${demoDir}`,
    `                 (flows, encrypted credentials and the credential secret; delete it to start afresh)`,
    deployed.keyGenerated
      ? `  Credentials:   generated a new DTLS pre-shared key for identity "${PSK_IDENTITY}"; it is stored only in flows_cred.json, encrypted`
      : `  Credentials:   reusing the pre-shared key stored (encrypted) in the user dir`,
    `  DOTS listener: ${HOST}:${dots.port} UDP, DTLS-PSK; the home dialer connects to it`,
    ...(dots.note ? [`                 (${dots.note})`] : []),
    `  Editor:        ${base}`,
    `  Trigger a mitigation:`,
    `    curl -X POST ${base}dots/demo/attack`,
    `  Last status the ISP received, and the home's nft rule:`,
    `    curl ${base}dots/demo/status`,
    `  The editor has no login: it listens on ${HOST} only. Press Ctrl-C to stop.`,
    "",
  ];
  process.stdout.write(lines.join("\n") + "\n" + held.join(""));
  held = undefined;
  if (await ready) {
    process.stdout.write(
      `Ready: the home dialer is connected to the ISP listener. Click "attack seen" in the editor or run the curl line above.\n`,
    );
  } else if (!stopping) {
    process.stdout.write(
      `The home dialer has not connected within ${READY_WAIT_MS / 1000} s: see the dialer's status and the debug sidebar in the editor.\n`,
    );
  }
}

main().catch((e) => {
  if (e instanceof UsageError) {
    process.stderr.write(`demo: ${e.message}\n`);
  } else {
    process.stderr.write(`demo: ${e instanceof Error && e.stack ? e.stack : text(e)}\n`);
  }
  process.exit(1);
});
