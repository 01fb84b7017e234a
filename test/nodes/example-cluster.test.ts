// The example "ISP - cluster member over MQTT" runs as a member of one fleet with a CLI listener:
// both speak docs/mqtt.md on a real mosquitto, a real dialer process dials the Node-RED member.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import mqtt, { type MqttClient } from "mqtt";
import { CliProcess } from "../support/cli-process";
import { requireOrSkip } from "../support/env";
import { hasMosquitto, TestBroker } from "../support/mosquitto";
import { allNodes, freePort, helper, repoRoot } from "./support";

const core = ["common/90-comment", "function/10-function", "function/10-switch", "function/15-change", "network/10-mqtt"].map(
  (p) => require(`@node-red/nodes/core/${p}.js`), // eslint-disable-line @typescript-eslint/no-require-imports
);
const KEY = "3f1e5d7c9b0a2e4c6f8d1b3a5c7e9f02";
type FlowNode = Record<string, any> & { id: string; type: string }; // eslint-disable-line @typescript-eslint/no-explicit-any
type Msg = { topic: string; text: string; json?: Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any

describe("example: ISP - cluster member over MQTT (with a CLI member in the same fleet)", function () {
  this.timeout(60000);
  let broker: TestBroker;
  let watcher: MqttClient | undefined;
  const procs: CliProcess[] = [];
  let dir = "";
  const msgs: Msg[] = [];

  before(async function () {
    requireOrSkip(this, "mosquitto", hasMosquitto());
    broker = await TestBroker.start();
    await helper.startServer();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-nr-cluster-"));
  });
  after(async () => {
    await helper.unload();
    await helper.stopServer();
    for (const p of procs.splice(0)) await p.stop();
    await watcher?.endAsync(true);
    await broker?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const waitMsg = async (pred: (m: Msg) => boolean, what: string, ms = 15000): Promise<Msg> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = msgs.find(pred);
      if (m) return m;
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${what}; got:\n${msgs.map((x) => `${x.topic} ${x.text.slice(0, 200)}`).join("\n")}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const evt = (home: string, event: string, id?: string) => (m: Msg) =>
    m.topic === `dots/evt/${home}` && m.json?.event === event && (id === undefined || m.json?.id === id);

  it("answers MQTT commands for its home (held while away, 2.01 once back), leaves the CLI member's home to it, refuses bad JSON", async () => {
    watcher = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
    watcher.on("message", (topic, payload) => {
      const text = payload.toString();
      let json: Record<string, unknown> | undefined;
      try {
        json = JSON.parse(text) as Record<string, unknown>;
      } catch {
        json = undefined;
      }
      msgs.push({ topic, text, json });
    });
    await watcher.subscribeAsync(["dots/evt/#", "dots/presence/#"], { qos: 1 });

    // the Node-RED member, localised to this machine
    const port = await freePort();
    const flow = (
      JSON.parse(fs.readFileSync(path.join(repoRoot(), "examples", "ISP - cluster member over MQTT.json"), "utf8")) as FlowNode[]
    ).map((n) => {
      if (n.type === "dots-isp-endpoint") return { ...n, port, host: "127.0.0.1" };
      if (n.type === "mqtt-broker") return { ...n, broker: "127.0.0.1", port: String(broker.port) };
      return n;
    });
    const creds: Record<string, unknown> = {};
    for (const n of flow) if (n.type === "dots-psk") creds[n.id] = { identity: "home-1", key: KEY };
    await helper.load([...allNodes, ...core], flow, creds);
    await waitMsg((m) => m.topic === "dots/presence/_proc/isp-nr-1" && m.json?.online === true, "the member's birth message");

    // a CLI member of the same fleet holds home-2
    const cfg = path.join(dir, "cli.json");
    fs.writeFileSync(
      cfg,
      JSON.stringify({
        dtls: true,
        tls: false,
        psk: [{ identity: "home-2", key: `hex:${KEY}`, home: "home-2" }],
        homePrefixes: { "home-2": ["192.0.2.0/24"] },
      }),
    );
    const cli = new CliProcess(
      ["listen", "--config", cfg, "--host", "127.0.0.1", "--port", "0", "--mqtt", broker.url, "--mqtt-client-id", "isp-cli"],
      { name: "isp-cli" },
    );
    procs.push(cli);
    const cliPort = (await cli.waitFor((l) => l.event === "listening", 10000, "listening")).port as number;
    procs.push(
      new CliProcess([
        "dial",
        "127.0.0.1",
        "--port",
        String(cliPort),
        "--transport",
        "udp",
        "--psk-identity",
        "home-2",
        "--psk-key",
        `hex:${KEY}`,
        "--home-prefix",
        "192.0.2.0/24",
        "--auto-decide",
        "enforced",
        "--reconnect-min",
        "100",
        "--reconnect-max",
        "500",
      ]),
    );
    await waitMsg((m) => m.topic === "dots/presence/home-2" && m.json?.clientId === "isp-cli", "home-2 at the CLI member");

    const request = {
      "ietf-dots-signal-channel:mitigation-scope": {
        scope: [{ "target-prefix": ["203.0.113.5/32"], "ietf-dots-call-home:source-prefix": ["198.51.100.9/32"], lifetime: 600 }],
      },
    };
    await watcher.publishAsync("dots/cmd/home-1", JSON.stringify({ cmd: "mitigate", id: "nr-1", request }), { qos: 1 });
    await waitMsg(evt("home-1", "held", "nr-1"), "held while home-1 is away");

    const dial = new CliProcess(
      [
        "dial",
        "127.0.0.1",
        "--port",
        String(port),
        "--transport",
        "udp",
        "--psk-identity",
        "home-1",
        "--psk-key",
        `hex:${KEY}`,
        "--home-prefix",
        "198.51.100.0/24",
        "--auto-decide",
        "enforced",
        "--reconnect-min",
        "100",
        "--reconnect-max",
        "500",
      ],
      { name: "dial-home-1" },
    );
    procs.push(dial);
    const presence = await waitMsg(
      (m) => m.topic === "dots/presence/home-1" && m.json?.clientId === "isp-nr-1",
      "home-1 at the Node-RED member",
    );
    assert.equal(presence.json?.instance, "isp-nr-1");
    const r = await waitMsg(evt("home-1", "response", "nr-1"), "the held mitigation answered");
    assert.equal(r.json?.outcome.code, "2.01");
    assert.equal(r.json?.clientId, "isp-nr-1");

    await watcher.publishAsync("dots/cmd/home-1", JSON.stringify({ cmd: "get", id: "nr-2" }), { qos: 1 });
    const g = await waitMsg(evt("home-1", "response", "nr-2"), "get through the direct subscription");
    assert.equal(g.json?.outcome.code, "2.05");

    await watcher.publishAsync("dots/cmd/home-2", JSON.stringify({ cmd: "get", id: "cli-1" }), { qos: 1 });
    const c = await waitMsg(evt("home-2", "response", "cli-1"), "the CLI member answers for home-2");
    assert.equal(c.json?.clientId, "isp-cli");

    await watcher.publishAsync("dots/cmd/home-1", "{oops", { qos: 1 });
    const bad = await waitMsg(evt("home-1", "error"), "BAD_JSON");
    assert.equal(bad.json?.code, "BAD_JSON");

    await new Promise((res) => setTimeout(res, 300));
    assert.equal(msgs.filter(evt("home-2", "held")).length, 0, "nobody parks a held home's command");
    assert.equal(msgs.filter(evt("home-1", "response", "nr-1")).length, 1, "run once");
    assert.equal(msgs.filter(evt("home-2", "response", "cli-1")).length, 1, "run once");
  });
});
