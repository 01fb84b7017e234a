// `npm run demo` as a user runs it: the compiled demo script in its own process, a POST to the
// trigger URL it prints, the mitigation going round (ISP listener -> home dialer -> NAT lookup ->
// dry-run filter -> status 2 back at the ISP), Ctrl-C, and a second start on the same user dir.
import { strict as assert } from "node:assert";
import { spawn, type ChildProcess } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { repoRoot } from "../support/paths";

const demoScript = path.resolve(__dirname, "../../scripts/demo.js");
const PSK_ID = "e5f0c0de00000020"; // the dots-psk node of the loopback example

type FlowNode = Record<string, unknown> & { id: string; type: string };

class DemoProcess {
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  readonly exited: Promise<number | null>;

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    const clean = { ...process.env };
    for (const k of ["DEMO_PORT", "DEMO_DOTS_PORT", "DEMO_DIR"]) delete clean[k];
    this.child = spawn(process.execPath, [demoScript, ...args], { env: { ...clean, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    this.child.stdout?.on("data", (d: Buffer) => (this.stdout += d.toString()));
    this.child.stderr?.on("data", (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits until the output matches; fails early with the output when the process ends. */
  async output(re: RegExp, ms = 15000): Promise<RegExpMatchArray> {
    const end = Date.now() + ms;
    for (;;) {
      const m = re.exec(this.stdout);
      if (m) return m;
      if (!this.running || Date.now() > end) {
        throw new Error(
          `${this.running ? "timed out" : "demo exited"} waiting for ${re}\n--- stdout\n${this.stdout}\n--- stderr\n${this.stderr}`,
        );
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  kill(): void {
    if (this.running) this.child.kill("SIGKILL");
  }
}

/** Node-RED's flows_cred.json format: {"$": hex IV (16 bytes) + base64 AES-256-CTR}, key = sha256(secret). */
function decryptCredentials(dir: string): Record<string, Record<string, string>> {
  const secret = fs.readFileSync(path.join(dir, "credential-secret"), "utf8").trim();
  const file = JSON.parse(fs.readFileSync(path.join(dir, "flows_cred.json"), "utf8")) as Record<string, string>;
  assert.deepEqual(Object.keys(file), ["$"], "flows_cred.json holds only the encrypted blob");
  const blob = file.$;
  const key = crypto.createHash("sha256").update(secret).digest();
  const decipher = crypto.createDecipheriv("aes-256-ctr", key, Buffer.from(blob.slice(0, 32), "hex"));
  return JSON.parse(decipher.update(blob.slice(32), "base64", "utf8") + decipher.final("utf8")) as Record<string, Record<string, string>>;
}

async function getJson(url: string): Promise<Record<string, any>> {
  // eslint-disable-line @typescript-eslint/no-explicit-any
  const res = await fetch(url);
  assert.equal(res.status, 200, `GET ${url}`);
  return (await res.json()) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** Triggers the demo attack and waits for the ISP side to report status 2 for a newer mitigation. */
async function mitigateAndWait(base: string, after?: string): Promise<Record<string, any>> {
  // eslint-disable-line @typescript-eslint/no-explicit-any
  const res = await fetch(base + "dots/demo/attack", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  assert.equal(res.status, 202);
  const end = Date.now() + 10000;
  for (;;) {
    const state = await getJson(base + "dots/demo/status");
    if (state.isp && state.isp.receivedAt !== after && state.isp.status === 2) return state;
    if (Date.now() > end) throw new Error(`the ISP never reported status 2: ${JSON.stringify(state)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function readFlows(dir: string): FlowNode[] {
  return JSON.parse(fs.readFileSync(path.join(dir, "flows.json"), "utf8")) as FlowNode[];
}

describe("npm run demo", function () {
  this.timeout(30000);
  let dir = "";
  const started: DemoProcess[] = [];
  let firstKey = "";
  const start = (args: string[], env?: NodeJS.ProcessEnv): DemoProcess => {
    const p = new DemoProcess(args, env);
    started.push(p);
    return p;
  };

  before(() => {
    assert.ok(fs.existsSync(demoScript), `compiled demo at ${demoScript}`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-demo-"));
  });
  // A failed case must not leave its demo running into the next one (it holds the user dir's lock).
  afterEach(async () => {
    const ended = started.splice(0);
    for (const p of ended) p.kill();
    await Promise.all(ended.map((p) => p.exited));
  });
  after(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("first start: generates the PSK, deploys the loopback flow, and a POST mitigation comes back as status 2", async () => {
    const demo = start(["--port", "0", "--dots-port", "0"], { DEMO_DIR: dir });
    const base = (await demo.output(/Editor:\s+(http:\/\/127\.0\.0\.1:\d+\/)/))[1];
    await demo.output(/^Ready: the home dialer is connected/m);
    assert.match(demo.stdout, /generated a new DTLS pre-shared key for identity "home-1"/);
    assert.match(demo.stdout, new RegExp(`curl -X POST ${base}dots/demo/attack`));
    assert.match(demo.stdout, /listens on 127\.0\.0\.1 only/);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const redVersion = (require("node-red/package.json") as { version: string }).version;
    assert.ok(demo.stdout.includes(`Node-RED ${redVersion} with`), "the banner names the release of the Node-RED it runs");
    assert.doesNotMatch(demo.stdout, /Node-RED [\d.]+-git/);

    const state = await mitigateAndWait(base);
    assert.equal(state.isp.statusName, "attack-successfully-mitigated");
    assert.equal(state.home.outcome, "enforced");
    assert.equal(state.home.mid, state.isp.mid);
    assert.deepEqual(state.home.devices, ["192.168.1.20"]);
    // The dry-run filter names the NAT-mapped device and the attack target, without touching nft.
    assert.match(state.home.script, /add element inet dots_call_home block4 \{ 192\.168\.1\.20 \. 6 \. 203\.0\.113\.5 \. 443 /);
    // ... and the terminal shows the same: the nft commands and the status at the ISP.
    await demo.output(
      /home: nft rule \(dry run\): mid \d+ enforced; nft commands it would apply[^\n]*\n\s+add element inet dots_call_home block4 \{ 192\.168\.1\.20/,
    );
    await demo.output(/ISP: mitigation status: mid \d+: status 2 attack-successfully-mitigated/);

    // The key lives only encrypted in flows_cred.json; the admin API never hands it out.
    const creds = decryptCredentials(dir);
    firstKey = creds[PSK_ID]?.key ?? "";
    assert.match(firstKey, /^[0-9a-f]{64}$/);
    assert.equal(creds[PSK_ID].identity, "home-1");
    const flowsText = fs.readFileSync(path.join(dir, "flows.json"), "utf8");
    assert.ok(!flowsText.includes(firstKey), "flows.json has no key");
    assert.ok(!flowsText.includes('"credentials"'), "flows.json has no credentials");
    assert.ok(!fs.readFileSync(path.join(dir, "flows_cred.json"), "utf8").includes(firstKey));
    assert.ok(!demo.stdout.includes(firstKey) && !demo.stderr.includes(firstKey), "the key is never printed");
    const apiCreds = await getJson(`${base}credentials/dots-psk/${PSK_ID}`);
    assert.equal(apiCreds.has_key, true);
    assert.ok(!JSON.stringify(apiCreds).includes(firstKey));
    assert.equal(fs.statSync(dir).mode & 0o077, 0, "the demo dir is private to its owner");
    assert.equal(fs.statSync(path.join(dir, "credential-secret")).mode & 0o077, 0);

    // Ctrl-C stops Node-RED cleanly.
    demo.child.kill("SIGINT");
    assert.equal(await demo.exited, 0, demo.stderr);
    assert.match(demo.stdout, /Stopped\./);
    assert.doesNotMatch(demo.stderr, /\] error /, "no node reported an error");
  });

  it("second start on the same dir: reuses the stored PSK and follows a new DOTS port", async function () {
    if (!firstKey) this.skip();
    const demo = start(["--dir", dir, "--port", "0", "--dots-port", "0"]);
    const base = (await demo.output(/Editor:\s+(http:\/\/127\.0\.0\.1:\d+\/)/))[1];
    const dotsPort = Number((await demo.output(/DOTS listener: 127\.0\.0\.1:(\d+) UDP/))[1]);
    await demo.output(/^Ready: the home dialer is connected/m);
    assert.match(demo.stdout, /reusing the pre-shared key stored \(encrypted\) in the user dir/);
    assert.equal(decryptCredentials(dir)[PSK_ID].key, firstKey);
    const flows = readFlows(dir);
    const ispEndpoint = flows.find((n) => n.type === "dots-isp-endpoint");
    const homeEndpoint = flows.find((n) => n.type === "dots-home-endpoint");
    assert.equal(Number(ispEndpoint?.port), dotsPort);
    assert.equal(Number(homeEndpoint?.port), dotsPort);
    assert.equal(flows.find((n) => n.type === "dots-call-home-listener")?.endpoint, ispEndpoint?.id);
    assert.equal(flows.find((n) => n.type === "dots-call-home-dialer")?.endpoint, homeEndpoint?.id);
    const state = await mitigateAndWait(base);
    assert.equal(state.home.outcome, "enforced");

    // A second demo on the same user dir would fight over flows.json: refused.
    const twin = start(["--dir", dir, "--port", "0", "--dots-port", "0"]);
    assert.equal(await twin.exited, 1);
    assert.match(twin.stderr, new RegExp(`another demo \\(pid ${demo.child.pid}\\) is already running with the user dir`));

    demo.child.kill("SIGTERM");
    assert.equal(await demo.exited, 0, demo.stderr);
    assert.ok(!fs.existsSync(path.join(dir, "demo.pid")), "the pid file goes with the demo");
  });

  it("a demo dir from 0.1 (listener and dialer settings inline): the nodes move onto the endpoints, keep their state dirs, and the demo works", async () => {
    const oldDir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-demo-v1-"));
    try {
      // The loopback example as 0.1 stored it: each endpoint's settings inline in its user node.
      const example = JSON.parse(
        fs.readFileSync(path.join(repoRoot(), "examples", "Loopback demo - both sides on one machine.json"), "utf8"),
      ) as FlowNode[];
      const endpoints = new Map(example.filter((n) => /^dots-(isp|home)-endpoint$/.test(n.type)).map((n) => [n.id, n]));
      const v1 = example
        .filter((n) => !endpoints.has(n.id))
        .map((n) => {
          const ep = typeof n.endpoint === "string" ? endpoints.get(n.endpoint) : undefined;
          if (!ep) return n;
          const { id: _i, type: _t, name: _n, stateId: _s, version: _v, ...settings } = ep;
          const { endpoint: _e, ...rest } = n;
          return { ...rest, ...settings, version: 1 };
        });
      fs.writeFileSync(path.join(oldDir, "flows.json"), JSON.stringify(v1));
      const demo = start(["--dir", oldDir, "--port", "0", "--dots-port", "0"]);
      const base = (await demo.output(/Editor:\s+(http:\/\/127\.0\.0\.1:\d+\/)/))[1];
      await demo.output(/^Ready: the home dialer is connected/m);
      const flows = readFlows(oldDir);
      const listener = flows.find((n) => n.type === "dots-call-home-listener")!;
      const dialer = flows.find((n) => n.type === "dots-call-home-dialer")!;
      assert.equal(listener.version, 2);
      assert.equal(listener.port, undefined, "no inline settings left");
      const ispEndpoint = flows.find((n) => n.id === listener.endpoint)!;
      const homeEndpoint = flows.find((n) => n.id === dialer.endpoint)!;
      assert.equal(ispEndpoint.stateId, listener.id, "the ISP endpoint keeps the listener's state dir");
      assert.equal(homeEndpoint.stateId, dialer.id, "the home endpoint keeps the dialer's state dir");
      assert.ok(fs.statSync(path.join(oldDir, "dots-call-home", String(dialer.id))).isDirectory());
      assert.equal((await mitigateAndWait(base)).home.outcome, "enforced");
      demo.child.kill("SIGTERM");
      assert.equal(await demo.exited, 0, demo.stderr);
      assert.doesNotMatch(demo.stderr, /\] error /, "no node reported an error");
    } finally {
      fs.rmSync(oldDir, { recursive: true, force: true });
    }
  });

  it("a taken editor port is reported with how to choose another, and nothing starts", async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    try {
      const port = (blocker.address() as net.AddressInfo).port;
      const demo = start(["--dots-port", "0"], { DEMO_DIR: dir, DEMO_PORT: String(port) });
      assert.equal(await demo.exited, 1);
      assert.match(demo.stderr, new RegExp(`the editor port ${port} on 127\\.0\\.0\\.1 is already in use`));
      assert.match(demo.stderr, /--port/);
      assert.doesNotMatch(demo.stdout, /Editor:/);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  it("a bad option is refused with the usage text", async () => {
    const demo = start(["--port", "http"], { DEMO_DIR: dir });
    assert.equal(await demo.exited, 2);
    assert.match(demo.stderr, /--port must be a port number 0\.\.65535, got "http"/);
    assert.match(demo.stderr, /Usage: npm run demo/);
  });
});
