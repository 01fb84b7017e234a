// Bad input and broker faults on the MQTT carrier (docs/mqtt.md), with a real mosquitto: garbage on
// the fleet's own topics (presence, liveness, parked commands), a command topic that names no home,
// a packet above the size the listener accepts, and a broker with persistence that stops and comes
// back while sessions change. Complements test/cli/mqtt.test.ts (bad commands, plain restart).
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import mqtt, { type MqttClient } from "mqtt";
import { MQTT_MAX_PACKET } from "../../src/cli/mqtt-carrier";
import { CliProcess } from "../support/cli-process";
import { requireOrSkip } from "../support/env";
import { hasMosquitto, TestBroker } from "../support/mosquitto";

const HOMES = [
  { identity: "home-1", key: "text:faultsPSK-home-1-0123456789", prefix: "203.0.113.0/24" },
  { identity: "home-2", key: "text:faultsPSK-home-2-0123456789", prefix: "198.51.100.0/24" },
];

type Msg = { topic: string; text: string; json?: Record<string, unknown> };

class Reader {
  readonly msgs: Msg[] = [];
  private waiters: Array<{ pred: (m: Msg) => boolean; resolve: (m: Msg) => void }> = [];
  constructor(readonly client: MqttClient) {
    client.on("message", (topic, payload) => {
      const text = payload.length > 4096 ? `(${payload.length} bytes)` : payload.toString();
      let json: Record<string, unknown> | undefined;
      try {
        json = JSON.parse(text) as Record<string, unknown>;
      } catch {
        json = undefined;
      }
      const m: Msg = { topic, text, json };
      this.msgs.push(m);
      this.waiters = this.waiters.filter((x) => !(x.pred(m) && (x.resolve(m), true)));
    });
  }
  waitFor(pred: (m: Msg) => boolean, ms = 15000, what = "message"): Promise<Msg> {
    const seen = this.msgs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(`timed out waiting for ${what}; got:\n${this.msgs.map((m) => `${m.topic} ${m.text.slice(0, 200)}`).join("\n")}`),
          ),
        ms,
      );
      this.waiters.push({ pred, resolve: (m) => (clearTimeout(timer), resolve(m)) });
    });
  }
}

const evt = (home: string, event: string, id?: unknown) => (m: Msg) =>
  m.topic === `dots/evt/${home}` && m.json?.event === event && (id === undefined || m.json?.id === id);
const presenceOf = (home: string, clientId?: string) => (m: Msg) =>
  m.topic === `dots/presence/${home}` && (clientId === undefined ? m.text === "" : m.json?.clientId === clientId);
const scope = (target: string, home: (typeof HOMES)[number]) => ({
  "ietf-dots-signal-channel:mitigation-scope": {
    scope: [{ "target-prefix": [target], "ietf-dots-call-home:source-prefix": [home.prefix.replace(/0\/24$/, "9/32")], lifetime: 600 }],
  },
});

describe("listen --mqtt: bad input on the fleet's topics and broker faults (real mosquitto)", function () {
  this.timeout(60000);
  let dir = "";
  let config = "";
  const procs: CliProcess[] = [];
  const clients: MqttClient[] = [];
  const brokers: TestBroker[] = [];

  before(function () {
    requireOrSkip(this, "mosquitto", hasMosquitto());
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-mqtt-faults-"));
    config = path.join(dir, "listen.json");
    fs.writeFileSync(
      config,
      JSON.stringify({
        dtls: true,
        tls: false,
        psk: HOMES.map((h) => ({ identity: h.identity, key: h.key, home: h.identity })),
        homePrefixes: Object.fromEntries(HOMES.map((h) => [h.identity, [h.prefix]])),
        requestRepeatMs: 200,
        requestTimeoutMs: 5000,
      }),
    );
  });
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.stop();
    for (const c of clients.splice(0)) await c.endAsync(true);
    for (const b of brokers.splice(0)) await b.stop();
  });
  after(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function broker(opts: Parameters<typeof TestBroker.start>[0] = {}): Promise<TestBroker> {
    const b = await TestBroker.start(opts);
    brokers.push(b);
    return b;
  }

  async function listener(b: TestBroker, clientId: string): Promise<{ proc: CliProcess; port: number }> {
    const proc = new CliProcess(
      ["listen", "--config", config, "--host", "127.0.0.1", "--port", "0", "--mqtt", b.url, "--mqtt-client-id", clientId],
      { name: clientId },
    );
    procs.push(proc);
    const port = (await proc.waitFor((l) => l.event === "listening", 10000, "listening")).port as number;
    await proc.waitFor((l) => l.event === "mqtt-connected", 10000, "mqtt-connected");
    return { proc, port };
  }

  function dialer(home: (typeof HOMES)[number], port: number): CliProcess {
    const proc = new CliProcess(
      [
        "dial",
        "127.0.0.1",
        "--port",
        String(port),
        "--transport",
        "udp",
        "--psk-identity",
        home.identity,
        "--psk-key",
        home.key,
        "--home-prefix",
        home.prefix,
        "--auto-decide",
        "enforced",
        "--reconnect-min",
        "100",
        "--reconnect-max",
        "500",
      ],
      { name: `dial-${home.identity}` },
    );
    procs.push(proc);
    return proc;
  }

  async function reader(b: TestBroker, opts: mqtt.IClientOptions = {}, topics = ["dots/evt/#", "dots/presence/#"]): Promise<Reader> {
    const client = await mqtt.connectAsync(b.url, {
      protocolVersion: 5,
      clientId: `reader-${process.pid}-${Math.random().toString(16).slice(2)}`,
      reconnectPeriod: 200,
      ...opts,
    });
    clients.push(client);
    const r = new Reader(client);
    await client.subscribeAsync(topics, { qos: 1 });
    return r;
  }

  it("garbage on presence, liveness and parked-command topics, and a command topic naming no home: mqtt-error/error events on P/evt/_, nothing crashes, routing goes on", async () => {
    const b = await broker();
    const r = await reader(b);
    const pub = r.client;
    // left behind by a broken tool before the listener starts (retained: every process reads them)
    await pub.publishAsync("dots/presence/home-1", "not json", { qos: 1, retain: true });
    await pub.publishAsync("dots/presence/_proc/ghost", '{"online":true}', { qos: 1, retain: true });
    await pub.publishAsync("dots/held/home-1/k1", '{"until":"tomorrow"}', { qos: 1, retain: true });
    const a = await listener(b, "isp-a");
    const bad = (code: string, topic: string) => (m: Msg) =>
      m.topic === "dots/evt/_" && m.json?.event === "mqtt-error" && m.json?.code === code && m.json?.topic === topic;
    await r.waitFor(bad("BAD_PRESENCE", "dots/presence/home-1"), 10000, "BAD_PRESENCE for home-1");
    await r.waitFor(bad("BAD_PRESENCE", "dots/presence/_proc/ghost"), 10000, "BAD_PRESENCE for _proc/ghost");
    await r.waitFor(bad("BAD_HELD", "dots/held/home-1/k1"), 10000, "BAD_HELD");
    const e = r.msgs.find(bad("BAD_PRESENCE", "dots/presence/home-1"));
    assert.equal(e?.json?.payload, "not json", "the event quotes what it ignored");
    assert.equal(e?.json?.clientId, "isp-a");

    // command topics that name no home
    await pub.publishAsync("dots/cmd/%ZZ", JSON.stringify({ cmd: "get", id: "t1" }), { qos: 1 });
    await pub.publishAsync("dots/cmd/_", JSON.stringify({ cmd: "get", id: "t2" }), { qos: 1 });
    await r.waitFor(
      () => r.msgs.filter((m) => m.topic === "dots/evt/_" && m.json?.event === "error" && m.json?.code === "BAD_TOPIC").length >= 2,
      10000,
      "two BAD_TOPIC errors",
    );
    assert.ok(a.proc.running);

    // the garbage presence counts as absent: a command for home-1 is held, and runs when it comes
    await pub.publishAsync("dots/cmd/home-1", JSON.stringify({ cmd: "mitigate", id: "m1", request: scope("192.0.2.1/32", HOMES[0]) }), {
      qos: 1,
    });
    await r.waitFor(evt("home-1", "held", "m1"), 10000, "held");
    dialer(HOMES[0], a.port);
    await r.waitFor(presenceOf("home-1", "isp-a"), 15000, "a real presence replaces the garbage");
    const ans = await r.waitFor(evt("home-1", "response", "m1"), 15000, "answer");
    assert.equal((ans.json?.outcome as Record<string, unknown>).code, "2.01");
    assert.equal(a.proc.lines.filter((l) => l.event === "__not-json__").length, 0, "stdout stays JSON lines");
    for (const t of ["dots/presence/_proc/ghost", "dots/held/home-1/k1"]) await pub.publishAsync(t, "", { qos: 1, retain: true });
  });

  it("a packet above the listener's maximum packet size never reaches it (the broker drops it); the connection stays and the next command is answered", async () => {
    const b = await broker();
    const a = await listener(b, "isp-a");
    const r = await reader(b);
    dialer(HOMES[0], a.port);
    await r.waitFor(presenceOf("home-1", "isp-a"), 15000, "presence");
    await r.client.publishAsync("dots/cmd/home-1", Buffer.alloc(MQTT_MAX_PACKET + 1024, 0x20), { qos: 1 });
    await r.client.publishAsync("dots/cmd/home-1", JSON.stringify({ cmd: "get", id: "after-big" }), { qos: 1 });
    const g = await r.waitFor(evt("home-1", "response", "after-big"), 15000, "the command after the big one");
    assert.equal((g.json?.outcome as Record<string, unknown>).code, "4.04");
    assert.ok(a.proc.running);
    assert.ok(!a.proc.lines.some((l) => l.event === "mqtt-disconnected"), "the listener's broker connection stayed up");
  });

  it("a broker with persistence stops and comes back: sessions run on meanwhile, events of the outage reach a persistent reader, a session that ended meanwhile loses its presence, commands for it are held", async () => {
    const b = await broker({ persistence: true });
    const a = await listener(b, "isp-a");
    const bb = await listener(b, "isp-b");
    // an operator's dashboard with a persistent session (QoS 1 messages wait for it at the broker)
    const dash = await reader(b, { clientId: `dash-${process.pid}`, clean: false, properties: { sessionExpiryInterval: 600 } });
    dialer(HOMES[0], a.port);
    const d2 = dialer(HOMES[1], bb.port);
    await dash.waitFor(presenceOf("home-1", "isp-a"), 15000, "home-1 at isp-a");
    await dash.waitFor(presenceOf("home-2", "isp-b"), 15000, "home-2 at isp-b");

    await b.pause();
    await a.proc.waitFor((l) => l.event === "mqtt-disconnected", 10000, "isp-a disconnected");
    await bb.proc.waitFor((l) => l.event === "mqtt-disconnected", 10000, "isp-b disconnected");
    // without the broker: a mitigation through stdin works, and home-2 goes away
    a.proc.send({ cmd: "mitigate", id: "stdin-1", session: "home-1", request: scope("192.0.2.50/32", HOMES[0]) });
    const s = await a.proc.waitFor((l) => l.event === "response" && l.id === "stdin-1", 10000, "stdin answer");
    assert.equal((s.outcome as Record<string, unknown>).code, "2.01");
    await d2.stop();
    await bb.proc.waitFor((l) => l.event === "session-down", 10000, "home-2's session ended at isp-b");

    await b.resume(); // the db brings back retained presence (home-2 still at isp-b) and the dashboard's session
    // the outage's events, queued by isp-a, reach the dashboard
    const late = await dash.waitFor(
      (m) => evt("home-1", "response")(m) && m.json?.id === "stdin-1",
      20000,
      "the stdin answer from the outage on dots/evt/home-1",
    );
    assert.equal((late.json?.outcome as Record<string, unknown>).code, "2.01");
    // isp-b clears the presence the broker kept for the session that ended while it was away
    await dash.waitFor(presenceOf("home-2"), 20000, "home-2's stale presence cleared");
    // so a command for home-2 is held (not silently dropped by a fleet that thinks isp-b holds it)
    await dash.client.publishAsync("dots/cmd/home-2", JSON.stringify({ cmd: "get", id: "g2" }), { qos: 1 });
    await dash.waitFor(evt("home-2", "held", "g2"), 10000, "held for home-2");
    // and home-1 is routed as before
    await dash.client.publishAsync("dots/cmd/home-1", JSON.stringify({ cmd: "get", id: "g1" }), { qos: 1 });
    const g1 = await dash.waitFor(evt("home-1", "response", "g1"), 10000, "home-1 answered after the restart");
    assert.equal((g1.json?.outcome as Record<string, unknown>).code, "2.05");
    assert.equal(g1.json?.clientId, "isp-a");
    assert.ok(a.proc.running && bb.proc.running);
    await dash.client.publishAsync("dots/held/home-2/g2", "", { qos: 1, retain: true });
  });
});
