// The command/event contract over MQTT (docs/mqtt.md) with a real mosquitto broker on loopback:
// two `dots-call-home listen` processes, real dialer processes (DTLS-PSK), and an MQTT client
// standing in for a detector that publishes mitigations and reads answers.
import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import mqtt, { type MqttClient } from "mqtt";
import { decodeTopicLevel, encodeTopicLevel } from "../../src/cli/mqtt-carrier";
import { makeTestPki } from "../support/certs";
import { CLI_MAIN, CliProcess } from "../support/cli-process";
import { requireOrSkip } from "../support/env";
import { hasMosquitto, TestBroker } from "../support/mosquitto";

const HOMES = [
  { identity: "home-1", key: "text:secretPSK-home-1-0123456789", prefix: "203.0.113.0/24" },
  { identity: "home-2", key: "text:secretPSK-home-2-0123456789", prefix: "198.51.100.0/24" },
];

type Msg = { topic: string; retain: boolean; text: string; json?: Record<string, unknown> };

/** The detector/operator side: an MQTT 5 client that records everything under dots/. */
class Watcher {
  readonly msgs: Msg[] = [];
  private waiters: Array<{ pred: (m: Msg) => boolean; resolve: (m: Msg) => void }> = [];
  constructor(readonly client: MqttClient) {
    client.on("message", (topic, payload, packet) => {
      const text = payload.toString();
      let json: Record<string, unknown> | undefined;
      try {
        json = JSON.parse(text) as Record<string, unknown>;
      } catch {
        json = undefined;
      }
      const m: Msg = { topic, retain: packet.retain, text, json };
      this.msgs.push(m);
      this.waiters = this.waiters.filter((x) => !(x.pred(m) && (x.resolve(m), true)));
    });
  }

  static async connect(url: string, topics = ["dots/evt/#", "dots/presence/#"]): Promise<Watcher> {
    const client = await mqtt.connectAsync(url, {
      protocolVersion: 5,
      clientId: `watcher-${process.pid}-${Math.random().toString(16).slice(2)}`,
      reconnectPeriod: 200,
    });
    const w = new Watcher(client);
    await client.subscribeAsync(topics, { qos: 1 });
    return w;
  }

  waitFor(pred: (m: Msg) => boolean, ms = 15000, what = "message"): Promise<Msg> {
    const seen = this.msgs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(`timed out waiting for ${what}; got:\n${this.msgs.map((m) => `${m.topic} ${m.text.slice(0, 300)}`).join("\n")}`),
          ),
        ms,
      );
      this.waiters.push({ pred, resolve: (m) => (clearTimeout(timer), resolve(m)) });
    });
  }

  publish(topic: string, payload: string | Buffer | object): Promise<unknown> {
    const body = typeof payload === "string" || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload);
    return this.client.publishAsync(topic, body, { qos: 1 });
  }

  async end(): Promise<void> {
    await this.client.endAsync(true);
  }
}

const evt = (home: string, event: string, id?: unknown) => (m: Msg) =>
  m.topic === `dots/evt/${home}` && m.json?.event === event && (id === undefined || m.json?.id === id);
const scope = (target: string, home: (typeof HOMES)[number]) => ({
  "target-prefix": [target],
  "ietf-dots-call-home:source-prefix": [home.prefix.replace(/0\/24$/, "9/32")],
  lifetime: 600,
});

describe("mqtt topic levels (home names in topics)", () => {
  it("keeps plain names, escapes what MQTT reserves, and never collides with _ or _proc", () => {
    assert.equal(encodeTopicLevel("home-1"), "home-1");
    assert.equal(encodeTopicLevel("a/b+c#d%e"), "a%2Fb%2Bc%23d%25e");
    assert.equal(encodeTopicLevel("_"), "%5F");
    assert.equal(encodeTopicLevel("_proc"), "%5Fproc");
    assert.equal(encodeTopicLevel("$SYS"), "%24SYS");
    assert.equal(encodeTopicLevel("x_y"), "x_y");
    assert.equal(encodeTopicLevel("ma\u0000i\n"), "ma%00i%0A");
    assert.equal(encodeTopicLevel("zürich-7"), "zürich-7");
    for (const name of ["home-1", "a/b+c#d%e", "_proc", "$SYS", "zürich/🏠", "x%y"])
      assert.equal(decodeTopicLevel(encodeTopicLevel(name)), name);
    assert.equal(decodeTopicLevel("%E0%A4%A"), undefined);
  });
});

describe("dots-call-home listen --mqtt (commands and events over a real mosquitto)", function () {
  this.timeout(60000);
  let broker: TestBroker;
  let dir = "";
  let config = "";
  const procs: CliProcess[] = [];
  const watchers: Watcher[] = [];

  before(async function () {
    requireOrSkip(this, "mosquitto", hasMosquitto());
    broker = await TestBroker.start();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-mqtt-cli-"));
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
  after(async () => {
    await broker?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });
  afterEach(async () => {
    for (const p of procs.splice(0)) await p.stop();
    for (const w of watchers.splice(0)) await w.end();
    // no retained state leaks into the next test
    const c = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
    const retained: string[] = [];
    c.on("message", (t, p, pk) => pk.retain && p.length > 0 && retained.push(t));
    await c.subscribeAsync(["dots/presence/#", "dots/held/#"], { qos: 1 });
    await new Promise((r) => setTimeout(r, 200));
    for (const t of retained) await c.publishAsync(t, "", { qos: 1, retain: true });
    await c.endAsync();
  });

  async function listener(clientId: string, extra: string[] = []): Promise<{ proc: CliProcess; port: number }> {
    const proc = new CliProcess(
      ["listen", "--config", config, "--host", "127.0.0.1", "--port", "0", "--mqtt", broker.url, "--mqtt-client-id", clientId, ...extra],
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

  async function watcher(topics?: string[]): Promise<Watcher> {
    const w = await Watcher.connect(broker.url, topics);
    watchers.push(w);
    return w;
  }

  const presenceOf = (home: string, clientId?: string) => (m: Msg) =>
    m.topic === `dots/presence/${home}` && (clientId === undefined ? m.text === "" : m.json?.clientId === clientId);

  /** Two listeners, a watcher (of `topics`), and home-1 dialled into isp-a and present there. */
  async function homeAtIspA(topics?: string[]) {
    const a = await listener("isp-a");
    const b = await listener("isp-b");
    const w = await watcher(topics);
    const home = dialer(HOMES[0], a.port);
    await w.waitFor(presenceOf("home-1", "isp-a"), 15000, "presence of home-1 at isp-a");
    return { a, b, w, home };
  }

  it("routes a mitigation to the process that holds the home: 2.01 with its id on P/evt/<home>; presence retained while held, cleared when the session goes", async () => {
    const a = await listener("isp-a");
    const b = await listener("isp-b");
    const w = await watcher();
    const d1 = dialer(HOMES[0], a.port);
    dialer(HOMES[1], b.port);
    await w.waitFor(presenceOf("home-1", "isp-a"), 15000, "presence of home-1 at isp-a");
    await w.waitFor(presenceOf("home-2", "isp-b"), 15000, "presence of home-2 at isp-b");

    await w.publish("dots/cmd/home-1", { cmd: "mitigate", id: "m-1", request: scope("192.0.2.10/32", HOMES[0]) });
    await w.publish("dots/cmd/home-2", { cmd: "mitigate", id: "m-2", request: scope("192.0.2.20/32", HOMES[1]) });
    const r1 = await w.waitFor(evt("home-1", "response", "m-1"), 15000, "answer m-1");
    const r2 = await w.waitFor(evt("home-2", "response", "m-2"), 15000, "answer m-2");
    assert.equal((r1.json?.outcome as Record<string, unknown>).code, "2.01");
    assert.equal(r1.json?.clientId, "isp-a");
    assert.equal(r1.json?.home, "home-1");
    assert.equal((r2.json?.outcome as Record<string, unknown>).code, "2.01");
    assert.equal(r2.json?.clientId, "isp-b");
    // the status notification of the new mitigation reaches the home's topic too
    await w.waitFor(evt("home-1", "status"), 10000, "status of home-1");
    // the same stdout log as ever, with the command's carrier named
    await a.proc.waitFor((l) => l.event === "response" && l.id === "m-1" && l.via === "mqtt", 5000, "stdout response");

    // run once: only isp-a answered, and no "held" for a held home
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(w.msgs.filter(evt("home-1", "response", "m-1")).length, 1);
    assert.equal(w.msgs.filter(evt("home-1", "held")).length, 0);
    // a re-sent id is answered again, not run again: the home saw one request
    await w.publish("dots/cmd/home-1", { cmd: "mitigate", id: "m-1", request: scope("192.0.2.10/32", HOMES[0]) });
    const again = await w.waitFor((m) => evt("home-1", "response", "m-1")(m) && m.json?.repeated === true, 10000, "repeated answer");
    assert.equal((again.json?.outcome as Record<string, unknown>).mid, (r1.json?.outcome as Record<string, unknown>).mid);
    assert.equal(d1.lines.filter((l) => l.event === "mitigation").length, 1, "the home received one request");

    // a late reader sees the retained presence
    const late = await watcher(["dots/presence/#"]);
    const p = await late.waitFor(presenceOf("home-1", "isp-a"), 5000, "retained presence");
    assert.equal(p.retain, true);

    await d1.stop();
    await w.waitFor(presenceOf("home-1"), 15000, "presence of home-1 cleared");
    await w.waitFor(evt("home-1", "session-down"), 5000, "session-down on P/evt/home-1");
    const later = await watcher(["dots/presence/#"]);
    await later.waitFor(presenceOf("home-2", "isp-b"), 5000, "home-2 still present");
    assert.ok(
      !later.msgs.some((m) => m.topic === "dots/presence/home-1" && m.text !== ""),
      "no retained presence of home-1 after its session went",
    );

    // a clean stop clears the process's presences and says it is offline
    await b.proc.stop();
    await w.waitFor(presenceOf("home-2"), 10000, "presence of home-2 cleared at stop");
    await w.waitFor((m) => m.topic === "dots/presence/_proc/isp-b" && m.json?.online === false, 10000, "isp-b offline");
  });

  it("one home, one session across the fleet: a home that vanished from one process and dialled another is closed at the first, whose release leaves the new presence alone", async () => {
    const { a, b, w, home: d1 } = await homeAtIspA();
    // Gone without a word (power cut, or a handshake it gave up on): isp-a's session stays up.
    await d1.stop("SIGKILL");
    dialer(HOMES[0], b.port);
    const moved = await w.waitFor(presenceOf("home-1", "isp-b"), 15000, "presence of home-1 at isp-b");
    const down = await a.proc.waitFor(
      (l) => l.event === "session-down" && (l.session as Record<string, unknown>)?.home === "home-1",
      10000,
      "isp-a closing its stale session",
    );
    assert.match(String(down.reason), /newer session at isp-b/);
    await new Promise((r) => setTimeout(r, 500));
    const after = w.msgs.slice(w.msgs.indexOf(moved) + 1).filter((m) => m.topic === "dots/presence/home-1");
    assert.deepEqual(
      after.map((m) => m.text),
      [],
      "nothing overwrote or cleared isp-b's presence",
    );
    await w.publish("dots/cmd/home-1", { cmd: "mitigate", id: "one-1", request: scope("192.0.2.11/32", HOMES[0]) });
    const r = await w.waitFor(evt("home-1", "response", "one-1"), 15000, "answer one-1");
    assert.equal((r.json?.outcome as Record<string, unknown>).code, "2.01");
    assert.equal(r.json?.clientId, "isp-b");
    // A clear from elsewhere (a process the home left, racing the new holder): isp-b says again that it holds the home.
    const before = w.msgs.length;
    await w.client.publishAsync("dots/presence/home-1", "", { qos: 1, retain: true });
    await w.waitFor((m) => w.msgs.indexOf(m) >= before && presenceOf("home-1", "isp-b")(m), 10000, "isp-b's presence again");
  });

  it("answers a command for a home nobody holds with held, runs it when the home comes back (at another process), and refuses hold 0 and unknown homes", async () => {
    const a = await listener("isp-a");
    await listener("isp-b");
    const w = await watcher();
    await w.publish("dots/cmd/home-1", { cmd: "mitigate", id: "m-wait", request: scope("192.0.2.30/32", HOMES[0]) });
    const held = await w.waitFor(evt("home-1", "held", "m-wait"), 10000, "held");
    assert.ok(Date.parse(String(held.json?.until)) > Date.now() + 500_000, "default hold 600 s");
    await w.publish("dots/cmd/home-1", { cmd: "get", id: "g-now", hold: 0 });
    const unheld = await w.waitFor(evt("home-1", "error", "g-now"), 10000, "UNHELD");
    assert.equal(unheld.json?.code, "UNHELD");
    await w.publish("dots/cmd/nobody", { cmd: "get", id: "g-x" });
    const unknown = await w.waitFor(evt("nobody", "error", "g-x"), 10000, "UNKNOWN_HOME");
    assert.equal(unknown.json?.code, "UNKNOWN_HOME");
    await w.waitFor((m) => m.topic === "dots/evt/_" && m.json?.code === "UNKNOWN_HOME", 5000, "copy on P/evt/_");

    await w.publish("dots/cmd/home-2", { cmd: "get", id: "g-short", hold: 1 });
    await w.waitFor(evt("home-2", "held", "g-short"), 10000, "held for 1 s");
    const expired = await w.waitFor(evt("home-2", "error", "g-short"), 10000, "EXPIRED");
    assert.equal(expired.json?.code, "EXPIRED");

    dialer(HOMES[0], a.port);
    const r = await w.waitFor(evt("home-1", "response", "m-wait"), 20000, "answer after the home is back");
    assert.equal((r.json?.outcome as Record<string, unknown>).code, "2.01");
    assert.equal(r.json?.clientId, "isp-a");
    // the parked copy is gone once answered
    const check = await watcher(["dots/held/#"]);
    await new Promise((res) => setTimeout(res, 500));
    assert.ok(!check.msgs.some((m) => m.text !== ""), `no parked command left: ${check.msgs.map((m) => m.topic).join(", ")}`);
    assert.equal(w.msgs.filter(evt("home-1", "response", "m-wait")).length, 1, "run once");
  });

  it("kill -9 of a listener: its last will marks the presence stale, a command meanwhile is held and answered by the process the home moves to", async () => {
    const { a, b, w, home: d } = await homeAtIspA(["dots/evt/#", "dots/presence/#"]);
    const instanceA = (await w.waitFor((m) => m.topic === "dots/presence/_proc/isp-a" && m.json?.online === true, 5000, "isp-a online"))
      .json?.instance;

    a.proc.child.kill("SIGKILL");
    const will = await w.waitFor((m) => m.topic === "dots/presence/_proc/isp-a" && m.json?.online === false, 10000, "last will of isp-a");
    assert.equal(will.json?.instance, instanceA, "the will names the dead run");
    // the home's retained presence still names isp-a: a reader sees it is stale by the will
    const reader = await watcher(["dots/presence/#"]);
    const stale = await reader.waitFor(presenceOf("home-1", "isp-a"), 5000, "stale presence");
    assert.equal(stale.json?.instance, instanceA);

    await w.publish("dots/cmd/home-1", { cmd: "mitigate", id: "m-outage", request: scope("192.0.2.40/32", HOMES[0]) });
    const held = await w.waitFor(evt("home-1", "held", "m-outage"), 10000, "held during the outage");
    assert.equal(held.json?.clientId, "isp-b");

    // the load balancer would move the home; here its router reconnects to isp-b
    await d.stop("SIGKILL");
    dialer(HOMES[0], b.port);
    await w.waitFor(presenceOf("home-1", "isp-b"), 15000, "presence at isp-b");
    const r = await w.waitFor(evt("home-1", "response", "m-outage"), 15000, "answer once the home is back");
    assert.equal((r.json?.outcome as Record<string, unknown>).code, "2.01");
    assert.equal(r.json?.clientId, "isp-b");
  });

  it("commands published while a home moves between processes are each answered exactly once (held ones once it is back)", async () => {
    const { b, w, home: d1 } = await homeAtIspA();
    const ids: string[] = [];
    let moved = false;
    for (let i = 0; i < 40; i++) {
      const id = `move-${i}`;
      ids.push(id);
      await w.publish("dots/cmd/home-1", { cmd: "get", id });
      if (i === 12)
        void d1
          .stop()
          .then(() => dialer(HOMES[0], b.port))
          .then(() => (moved = true));
      await new Promise((r) => setTimeout(r, 100));
    }
    await w.waitFor(presenceOf("home-1", "isp-b"), 20000, "presence at isp-b");
    assert.ok(moved);
    const final = (id: string) => (m: Msg) =>
      m.topic === "dots/evt/home-1" && m.json?.id === id && (m.json?.event === "response" || m.json?.event === "error");
    for (const id of ids) await w.waitFor(final(id), 20000, `the answer to ${id}`);
    await new Promise((r) => setTimeout(r, 500));
    const counts = ids.map((id) => w.msgs.filter(final(id)).length);
    assert.deepEqual(
      counts,
      ids.map(() => 1),
      "one answer per command",
    );
    const held = ids.filter((id) => w.msgs.some(evt("home-1", "held", id)));
    assert.ok(held.length > 0, "some commands came while nobody held the home");
    for (const id of held) assert.equal(w.msgs.find(final(id))?.json?.clientId, "isp-b", `${id} ran where the home went`);
  });

  it("malformed, oversized and misaddressed commands get clear errors on P/evt/<home> and P/evt/_; the process keeps serving", async () => {
    const a = await listener("isp-a");
    const w = await watcher();
    dialer(HOMES[0], a.port);
    await w.waitFor(presenceOf("home-1", "isp-a"), 15000, "presence");
    const errors = () => w.msgs.filter((m) => m.topic === "dots/evt/home-1" && m.json?.event === "error");
    await w.publish("dots/cmd/home-1", "{not json");
    await w.publish("dots/cmd/home-1", "[1,2]");
    await w.publish("dots/cmd/home-1", { cmd: "reboot", id: "x1" });
    await w.publish("dots/cmd/home-1", { cmd: "get", id: "x2", session: "home-2" });
    await w.publish("dots/cmd/home-1", { cmd: "sessions", id: "x3" });
    await w.publish("dots/cmd/home-1", { cmd: "withdraw", id: "x4" });
    await w.publish("dots/cmd/home-1", Buffer.alloc((1 << 20) + 10, 0x20));
    await w.waitFor(() => errors().length >= 7, 10000, "seven errors");
    const codes = errors().map((m) => m.json?.code);
    assert.deepEqual(codes, ["BAD_JSON", "BAD_COMMAND", "BAD_COMMAND", "WRONG_HOME", "BAD_COMMAND", "BAD_COMMAND", "TOO_LARGE"]);
    assert.match(String(errors()[3].json?.message), /does not match the topic's home/);
    assert.match(String(errors()[5].json?.message), /mid/);
    await w.waitFor(
      () => w.msgs.filter((m) => m.topic === "dots/evt/_" && m.json?.event === "error").length >= 7,
      5000,
      "each copied to P/evt/_",
    );
    assert.deepEqual(
      w.msgs.filter((m) => m.topic === "dots/evt/_" && m.json?.event === "error").map((m) => [m.json?.home, m.json?.code]),
      codes.map((c) => ["home-1", c]),
    );
    assert.ok(a.proc.running);
    await w.publish("dots/cmd/home-1", { cmd: "get", id: "ok" });
    const r = await w.waitFor(evt("home-1", "response", "ok"), 10000, "a good command after the bad ones");
    assert.equal((r.json?.outcome as Record<string, unknown>).code, "4.04", "the home's answer: no mitigations yet");
  });

  it("broker restart: the session keeps running on stdin, presence and the command subscription come back on reconnect", async () => {
    const a = await listener("isp-a");
    const d = dialer(HOMES[0], a.port);
    let w = await watcher();
    await w.waitFor(presenceOf("home-1", "isp-a"), 15000, "presence");
    await w.end();
    watchers.splice(watchers.indexOf(w), 1);

    await broker.pause();
    await a.proc.waitFor((l) => l.event === "mqtt-disconnected", 10000, "mqtt-disconnected");
    a.proc.send({ cmd: "mitigate", id: "stdin-1", session: "home-1", request: scope("192.0.2.50/32", HOMES[0]) });
    const r = await a.proc.waitFor((l) => l.event === "response" && l.id === "stdin-1", 10000, "stdin answer without a broker");
    assert.equal((r.outcome as Record<string, unknown>).code, "2.01");
    assert.ok(d.running && !d.lines.some((l) => l.event === "disconnected"), "the home's session did not notice");

    await broker.resume(); // no persistence: retained presence is gone with the old broker
    const before = a.proc.lines.filter((l) => l.event === "mqtt-connected").length;
    await a.proc.waitFor(() => a.proc.lines.filter((l) => l.event === "mqtt-connected").length > before, 20000, "reconnected");
    w = await watcher();
    await w.waitFor(presenceOf("home-1", "isp-a"), 10000, "presence republished");
    await w.publish("dots/cmd/home-1", { cmd: "get", id: "after" });
    const g = await w.waitFor(evt("home-1", "response", "after"), 10000, "command after the broker came back");
    assert.equal((g.json?.outcome as Record<string, unknown>).code, "2.05");
  });

  it("refuses a password on the command line and a stray --mqtt-* flag without --mqtt", () => {
    const r1 = spawnSync(process.execPath, [CLI_MAIN, "listen", "--config", config, "--mqtt", "mqtt://u:secret@127.0.0.1:1"], {
      encoding: "utf8",
    });
    assert.equal(r1.status, 2);
    assert.match(r1.stdout, /no password in the URL/);
    const r2 = spawnSync(process.execPath, [CLI_MAIN, "listen", "--config", config, "--mqtt-prefix", "x"], { encoding: "utf8" });
    assert.equal(r2.status, 2);
    assert.match(r2.stdout, /--mqtt-prefix needs --mqtt URL/);
  });
  it("mqtts with a CA, a client certificate, and a user whose password comes from a file: commands flow; a wrong password is an mqtt-error, not a crash", async () => {
    const pki = await makeTestPki();
    const secure = await TestBroker.start({
      tls: { ca: pki.ca.cert, cert: pki.isp.cert, key: pki.isp.key, requireCertificate: true },
      user: { name: "isp", password: "broker-pw-1" },
    });
    try {
      const pw = path.join(dir, "mqtt.pw");
      fs.writeFileSync(pw, "broker-pw-1\n", { mode: 0o600 });
      const tlsArgs = [
        "--mqtt-ca",
        pki.ca.certPath,
        "--mqtt-cert",
        pki.home1.certPath,
        "--mqtt-key",
        pki.home1.keyPath,
        "--mqtt-username",
        "isp",
      ];
      const proc = new CliProcess(
        [
          "listen",
          "--config",
          config,
          "--host",
          "127.0.0.1",
          "--port",
          "0",
          "--mqtt",
          secure.url,
          "--mqtt-client-id",
          "isp-tls",
          ...tlsArgs,
          "--mqtt-password-file",
          pw,
        ],
        { name: "isp-tls" },
      );
      procs.push(proc);
      const port = (await proc.waitFor((l) => l.event === "listening", 10000, "listening")).port as number;
      await proc.waitFor((l) => l.event === "mqtt-connected", 10000, "mqtt-connected over TLS");
      dialer(HOMES[0], port);
      const w = new Watcher(
        await mqtt.connectAsync(secure.url, {
          protocolVersion: 5,
          ca: pki.ca.cert,
          cert: pki.home2.cert,
          key: pki.home2.key,
          username: "isp",
          password: "broker-pw-1",
        }),
      );
      watchers.push(w);
      await w.client.subscribeAsync(["dots/evt/#", "dots/presence/#"], { qos: 1 });
      await w.waitFor(presenceOf("home-1", "isp-tls"), 15000, "presence over TLS");
      await w.publish("dots/cmd/home-1", { cmd: "get", id: "tls-1" });
      await w.waitFor(evt("home-1", "response", "tls-1"), 10000, "answer over TLS");

      fs.writeFileSync(pw, "wrong\n");
      const bad = new CliProcess(
        [
          "listen",
          "--config",
          config,
          "--host",
          "127.0.0.1",
          "--port",
          "0",
          "--mqtt",
          secure.url,
          "--mqtt-client-id",
          "isp-bad",
          ...tlsArgs,
          "--mqtt-password-file",
          pw,
        ],
        { name: "isp-bad" },
      );
      procs.push(bad);
      const err = await bad.waitFor((l) => l.event === "mqtt-error", 10000, "mqtt-error");
      assert.match(String(err.message), /Not authorized|Bad User Name or Password/i);
      await bad.waitFor((l) => l.event === "listening", 10000, "still listening");
      assert.ok(bad.running);
    } finally {
      await secure.stop();
    }
  });
});
