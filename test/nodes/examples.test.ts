// The example flows (Import > Examples) run, not just parse: each is loaded into a runtime with
// only its ports and addresses changed for the test, and driven the way a user would drive it:
// a real HTTP POST, a message published on a real mosquitto broker, an inject click.
import { strict as assert } from "node:assert";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { freePort, helper, nodeModule, repoRoot, waitFor, collect } from "./support";
import { natTable } from "./flows";
import { hasCommand, requireOrSkip } from "../support/env";

const ours = [
  "dots-psk",
  "dots-isp-endpoint",
  "dots-home-endpoint",
  "dots-mitigation-request",
  "dots-call-home-listener",
  "dots-call-home-dialer",
  "dots-nat-lookup",
  "dots-filter-action",
].map(nodeModule);
const core = [
  "common/20-inject",
  "common/21-debug",
  "common/90-comment",
  "function/10-switch",
  "function/15-change",
  "network/21-httpin",
  "network/10-mqtt",
].map(
  (p) => require(`@node-red/nodes/core/${p}.js`), // eslint-disable-line @typescript-eslint/no-require-imports
);

// HTTP-in routes live on RED.httpNode; a probe "module" captures it so requests go to that app.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
let httpNodeApp: any;
const probe = (RED: { httpNode: unknown }): void => {
  httpNodeApp = RED.httpNode;
};
// eslint-disable-next-line @typescript-eslint/no-require-imports
const supertest = require("supertest") as (app: unknown) => any; // eslint-disable-line @typescript-eslint/no-explicit-any
const http = () => supertest(httpNodeApp);

type FlowNode = Record<string, any> & { id: string; type: string }; // eslint-disable-line @typescript-eslint/no-explicit-any
const examplesDir = path.join(repoRoot(), "examples");
const KEY = "3f1e5d7c9b0a2e4c6f8d1b3a5c7e9f02";

function example(name: string): FlowNode[] {
  return JSON.parse(fs.readFileSync(path.join(examplesDir, `${name}.json`), "utf8")) as FlowNode[];
}

/** Points the ISP and home endpoints at 127.0.0.1:port, and static NAT tables at the test table. */
function localise(flow: FlowNode[], port: number, opts: { staticNat?: boolean; mqttPort?: number } = {}): FlowNode[] {
  return flow.map((n) => {
    if (n.type === "dots-isp-endpoint") return { ...n, port, host: "127.0.0.1" };
    if (n.type === "dots-home-endpoint") return { ...n, port, hosts: "127.0.0.1", transport: "udp", terminatingPeriod: 0 };
    if (n.type === "dots-nat-lookup" && opts.staticNat) return { ...n, source: "static", table: JSON.stringify(natTable) };
    if (n.type === "mqtt-broker" && opts.mqttPort) return { ...n, broker: "127.0.0.1", port: String(opts.mqttPort) };
    return n;
  });
}

function pskCredentials(flow: FlowNode[]): Record<string, { identity: string; key: string }> {
  const creds: Record<string, { identity: string; key: string }> = {};
  for (const n of flow) if (n.type === "dots-psk") creds[n.id] = { identity: "home-1", key: KEY };
  return creds;
}

function byType(flow: FlowNode[], type: string, name?: string): FlowNode {
  const n = flow.find((x) => x.type === type && (name === undefined || x.name === name));
  if (!n) throw new Error(`no ${type} ${name ?? ""} in the example`);
  return n;
}

async function load(flow: FlowNode[]): Promise<void> {
  await helper.load([...ours, ...core, probe], flow, pskCredentials(flow));
}

/** Waits until the listener reports a session with the home. */
async function sessionUp(flow: FlowNode[]): Promise<void> {
  const lis = byType(flow, "dots-call-home-listener");
  const events = collect(lis.wires[0][0]);
  await waitFor("session-up", () => events.find((m) => m.topic === "session-up"));
}

describe("example flows", function () {
  this.timeout(60000);
  before(async () => {
    await helper.startServer();
  });
  after(async () => {
    await helper.stopServer();
  });
  afterEach(async () => {
    await helper.unload();
  });

  it("every example starts with a Comment node and uses only our nodes and core nodes", () => {
    const files = fs.readdirSync(examplesDir).filter((f) => f.endsWith(".json"));
    assert.ok(files.length >= 5);
    const coreTypes = new Set([
      "tab",
      "comment",
      "inject",
      "debug",
      "catch",
      "switch",
      "change",
      "http in",
      "http response",
      "mqtt in",
      "mqtt out",
      "mqtt-broker",
      "status",
      "function",
    ]);
    for (const f of files) {
      const flow = JSON.parse(fs.readFileSync(path.join(examplesDir, f), "utf8")) as FlowNode[];
      const first = flow.find((n) => n.type !== "tab");
      assert.equal(first?.type, "comment", `${f} starts with a Comment`);
      for (const n of flow) assert.ok(n.type.startsWith("dots-") || coreTypes.has(n.type), `${f}: unexpected node type ${n.type}`);
      assert.ok(!JSON.stringify(flow).includes('"key"'), `${f} carries no key`);
    }
  });

  it("every example fits a 1600 px wide canvas and no node overlaps another", () => {
    // A node's x, y is its centre; a conservative box (labels up to ~180 px wide, 30 px high plus margin).
    const BOX_W = 180;
    const BOX_H = 50;
    const MAX_X = 1600;
    const files = fs.readdirSync(examplesDir).filter((f) => f.endsWith(".json"));
    for (const f of files) {
      const placed = (JSON.parse(fs.readFileSync(path.join(examplesDir, f), "utf8")) as FlowNode[]).filter(
        (n) => n.type !== "tab" && typeof n.x === "number",
      );
      assert.ok(placed.length > 0, `${f} has placed nodes`);
      for (const n of placed) {
        assert.ok(
          n.x - BOX_W / 2 >= 0 && n.x + BOX_W / 2 <= MAX_X && n.y - BOX_H / 2 >= 0,
          `${f}: ${n.type} ${n.id} at (${n.x}, ${n.y}) is outside 0..${MAX_X}`,
        );
      }
      for (let i = 0; i < placed.length; i++) {
        for (let j = i + 1; j < placed.length; j++) {
          const a = placed[i];
          const b = placed[j];
          if (a.z !== b.z) continue;
          const overlap = Math.abs(a.x - b.x) < BOX_W && Math.abs(a.y - b.y) < BOX_H;
          assert.ok(!overlap, `${f}: ${a.type} ${a.id} at (${a.x}, ${a.y}) overlaps ${b.type} ${b.id} at (${b.x}, ${b.y})`);
        }
      }
    }
  });

  it("ISP over HTTP + home router: a real HTTP POST starts a mitigation that the home enforces", async () => {
    const port = await freePort();
    const isp = localise(example("ISP - mitigation request from HTTP"), port);
    const home = localise(example("Home router - NAT lookup and filter action"), port, { staticNat: true });
    const flow = [...isp, ...home];
    await load(flow);
    const decisions = collect(byType(home, "debug", "decisions").id);
    await sessionUp(flow);

    const res = await http()
      .post("/dots/mitigate")
      .send({
        home: "home-1",
        target: "203.0.113.5",
        source: "198.51.100.7",
        sourcePort: "40001",
        protocol: "tcp",
        targetPort: 443,
        lifetime: 600,
      })
      .expect(200);
    assert.equal(res.body.code, "2.01");
    assert.equal(typeof res.body.mid, "number");
    const decision = await waitFor("home decision", () => decisions[0]);
    assert.equal(decision.payload.outcome, "enforced");
    assert.equal(decision.payload.devices[0].address, "192.168.1.20");

    const bad = await http().post("/dots/mitigate").send({ home: "home-1", target: "203.0.113.5", source: "300.1.2.3" }).expect(400);
    assert.match(bad.body.error, /source-prefix/);
  });

  it("home router with consent over HTTP: pending until POST .../approve, then enforced", async () => {
    const port = await freePort();
    const isp = localise(example("ISP - mitigation request from HTTP"), port);
    const home = localise(example("Home router - consent via HTTP"), port, { staticNat: true });
    const flow = [...isp, ...home];
    await load(flow);
    const decisions = collect(byType(home, "debug", "decisions").id);
    await sessionUp(flow);
    const res = await http()
      .post("/dots/mitigate")
      .send({ home: "home-1", target: "203.0.113.5", source: "198.51.100.7", sourcePort: "40001", protocol: "tcp" });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const mid = res.body.mid as number;
    assert.equal((await waitFor("pending", () => decisions[0])).payload.outcome, "pending");
    const answer = await http().post(`/dots/consent/${mid}/approve`).expect(202);
    assert.equal(answer.body.mid, mid);
    assert.equal((await waitFor("enforced", () => decisions[1])).payload.outcome, "enforced");
  });

  it("loopback demo: the inject and the HTTP trigger both reach the home, the nft rule and the status come back", async () => {
    const port = await freePort();
    const flow = localise(example("Loopback demo - both sides on one machine"), port);
    await load(flow);
    const rules = collect(byType(flow, "debug", "home: decision and nft rule").id);
    const ispAnswers = collect(byType(flow, "debug", "ISP: answers and status").id);
    await sessionUp(flow);
    helper.getNode(byType(flow, "inject").id).receive({ payload: Date.now() });
    const rule = await waitFor("nft rule", () => rules[0]);
    assert.equal(rule.payload.outcome, "enforced");
    assert.match(rule.payload.script, /192\.168\.1\.20/);
    await waitFor("ISP learns it is mitigated", () =>
      ispAnswers.find(
        (m) =>
          JSON.stringify(m.payload ?? "").includes("attack-successfully-mitigated") || m.dots?.status === "attack-successfully-mitigated",
      ),
    );
    await http().post("/dots/demo/attack").send({}).expect(202);
    await waitFor("second mitigation via HTTP", () => ispAnswers.filter((m) => m.topic === "mitigate").length >= 2);
  });

  describe("with a real mosquitto broker", () => {
    let broker: ChildProcess | undefined;
    let mqttPort = 0;
    let confDir = "";
    before(async function () {
      requireOrSkip(
        this,
        "mosquitto and mosquitto_pub",
        hasCommand("mosquitto") && hasCommand("mosquitto_pub") && hasCommand("mosquitto_sub"),
      );
      mqttPort = await freePort();
      confDir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-mqtt-"));
      const conf = path.join(confDir, "mosquitto.conf");
      fs.writeFileSync(conf, `listener ${mqttPort} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
      broker = spawn("mosquitto", ["-c", conf], { stdio: "ignore" });
      await waitFor("mosquitto listening", () => {
        const s = net.connect(mqttPort, "127.0.0.1");
        let ok: boolean | undefined;
        s.once("connect", () => ((ok = true), s.destroy()));
        s.once("error", () => (ok = false));
        return new Promise<boolean>((r) => setTimeout(() => r(ok === true), 50));
      }).then(async (p) => {
        for (let i = 0; i < 100 && !(await p); i++) {
          p = new Promise<boolean>((resolve) => {
            const s = net.connect(mqttPort, "127.0.0.1");
            s.once("connect", () => (s.destroy(), resolve(true)));
            s.once("error", () => resolve(false));
          });
          if (!(await p)) await new Promise((r) => setTimeout(r, 50));
        }
      });
    });
    after(() => {
      broker?.kill("SIGTERM");
      if (confDir) fs.rmSync(confDir, { recursive: true, force: true });
    });

    it("ISP over MQTT: a message published on dots/mitigate/home-1 reaches the home, the result is published back", async () => {
      const port = await freePort();
      const isp = localise(example("ISP - mitigation request from MQTT"), port, { mqttPort });
      const home = localise(example("Home router - NAT lookup and filter action"), port, { staticNat: true });
      const flow = [...isp, ...home];
      await load(flow);
      const decisions = collect(byType(home, "debug", "decisions").id);
      await sessionUp(flow);
      // Subscribe to the result topic first, then publish the attack once the flow's client is up.
      const sub = spawn("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(mqttPort), "-t", "dots/result/#", "-C", "1", "-W", "20"]);
      let published = "";
      sub.stdout.on("data", (d: Buffer) => (published += d.toString()));
      const mqttIn = helper.getNode(byType(isp, "mqtt in").id);
      await waitFor("mqtt in connected", () => {
        const calls = (mqttIn.status.getCalls() as Array<{ thisValue: unknown; args: Array<{ text?: string }> }>).filter(
          (c) => c.thisValue === mqttIn,
        );
        return (
          calls.length > 0 &&
          /connected/.test(String(calls[calls.length - 1].args[0].text)) &&
          !/dis/.test(String(calls[calls.length - 1].args[0].text))
        );
      });
      await new Promise((r) => setTimeout(r, 300)); // mosquitto_sub subscribes
      const pub = spawnSync("mosquitto_pub", [
        "-h",
        "127.0.0.1",
        "-p",
        String(mqttPort),
        "-t",
        "dots/mitigate/home-1",
        "-q",
        "1",
        "-m",
        JSON.stringify({ target: "203.0.113.5", source: "198.51.100.7", sourcePort: "40001", protocol: "tcp" }),
      ]);
      assert.equal(pub.status, 0, String(pub.stderr));
      const decision = await waitFor("home decision", () => decisions[0], 20000);
      assert.equal(decision.payload.outcome, "enforced");
      await waitFor("result published", () => published.length > 0 || undefined, 20000);
      const result = JSON.parse(published.trim().split("\n")[0]);
      assert.equal(result.code, "2.01");
      await new Promise<void>((r) => (sub.exitCode !== null ? r() : sub.once("exit", () => r())));
    });
  });
});
