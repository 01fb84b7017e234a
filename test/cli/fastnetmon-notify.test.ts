// `dots-call-home fastnetmon-notify` as FastNetMon runs it: one process per call, details on
// stdin, delivery by HTTP POST to a real HTTP server on loopback (the ISP flow's endpoint), state
// on disk between the ban and the unban.
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { HELP } from "../../src/cli/args";
import { FASTNETMON_FLAGS } from "../../src/cli/fastnetmon";
import mqtt from "mqtt";
import { CLI_MAIN } from "../support/cli-process";
import { requireOrSkip } from "../support/env";
import { TestBroker, hasMosquitto } from "../support/mosquitto";
import { fixture } from "../unit/detect/fixtures";

const BAN = fixture("fastnetmon-1.2.4-ban-udp-flows.txt");
const DETAILS = fixture("fastnetmon-1.2.4-attack-details-udp.txt");

interface Run {
  code: number | null;
  events: Array<Record<string, unknown>>;
  stderr: string;
}

function run(args: string[], stdin?: string): Promise<Run> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI_MAIN, "fastnetmon-notify", ...args], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let stderr = "";
    c.stdout.on("data", (b: Buffer) => (out += b.toString()));
    c.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    c.once("exit", (code) =>
      resolve({
        code,
        stderr,
        events: out
          .split("\n")
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>),
      }),
    );
    if (stdin !== undefined) c.stdin.end(stdin);
    else c.stdin.end();
  });
}

describe("dots-call-home fastnetmon-notify (HTTP delivery, real processes)", function () {
  this.timeout(30_000);
  let server: http.Server;
  let url = "";
  let dir = "";
  const posts: Array<{ path: string; body: Record<string, unknown> }> = [];
  let answer: (p: string) => { status: number; body: unknown } = () => ({ status: 200, body: { code: "2.01", mid: 7 } });

  before(async () => {
    server = http.createServer((req, res) => {
      let text = "";
      req.on("data", (b: Buffer) => (text += b.toString()));
      req.on("end", () => {
        posts.push({ path: req.url ?? "", body: JSON.parse(text) as Record<string, unknown> });
        const a = answer(req.url ?? "");
        res.writeHead(a.status, { "content-type": "application/json" });
        res.end(JSON.stringify(a.body));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/dots/mitigate`;
  });

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-fnm-notify-"));
    posts.length = 0;
    answer = (p) => ({ status: 200, body: p.endsWith("/withdraw") ? { code: "2.02", mid: 7 } : { code: "2.01", mid: 7 } });
  });

  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));
  after(() => server.close());

  const flags = (): string[] => [
    "--home-prefix",
    "home-1=198.51.100.0/24",
    "--http",
    url,
    "--state-dir",
    path.join(dir, "state"),
    "--lifetime",
    "600",
    "--wait-ms",
    "5000",
  ];

  it("ban -> POST with the attacking flow's NATed port; attack_details adds nothing; unban -> POST withdraw with the mid; the record is gone", async () => {
    const ban = await run([...flags(), "198.51.100.2", "outgoing", "432", "ban"], BAN);
    assert.equal(ban.code, 0, JSON.stringify(ban.events) + ban.stderr);
    assert.deepEqual(
      posts.map((p) => p.path),
      ["/dots/mitigate"],
    );
    assert.deepEqual(posts[0].body, {
      home: "home-1",
      target: ["203.0.113.5/32"],
      source: ["198.51.100.2/32"],
      lifetime: 600,
      sourcePort: ["40001"],
      targetPort: ["5555"],
      protocol: ["17"],
    });
    assert.ok(ban.events.some((e) => e.event === "answer" && e.code === "2.01" && e.mid === 7));
    const rec = JSON.parse(fs.readFileSync(path.join(dir, "state", "ban-198.51.100.2.json"), "utf8")) as { mid: number; home: string };
    assert.deepEqual([rec.mid, rec.home], [7, "home-1"]);

    const details = await run([...flags(), "198.51.100.2", "outgoing", "432", "attack_details"], DETAILS);
    assert.equal(details.code, 0);
    assert.equal(posts.length, 1, "the ban's request already named the ports");
    assert.ok(details.events.some((e) => e.event === "ignored"));

    const unban = await run([...flags(), "198.51.100.2", "outgoing", "432", "unban"]);
    assert.equal(unban.code, 0, JSON.stringify(unban.events));
    assert.deepEqual(posts[1], { path: "/dots/withdraw", body: { home: "home-1", mid: 7 } });
    assert.ok(!fs.existsSync(path.join(dir, "state", "ban-198.51.100.2.json")));
    const again = await run([...flags(), "198.51.100.2", "outgoing", "432", "unban"]);
    assert.equal(again.code, 0);
    assert.equal(posts.length, 2, "nothing left to withdraw");
  });

  it("ban without flows waits; attack_details with samples whose ports are mangled sends a request without ports and says why", async () => {
    const noFlows = BAN.slice(0, BAN.indexOf("Outgoing\n"));
    const ban = await run([...flags(), "198.51.100.2", "outgoing", "432", "ban"], noFlows);
    assert.equal(ban.code, 0);
    assert.equal(posts.length, 0);
    assert.ok(ban.events.some((e) => e.event === "waiting"));
    const mangled = DETAILS.replace(/protocol: udp frag/g, "protocol: ??? frag"); // samples only; "Attack protocol: udp" stays
    const d = await run([...flags(), "198.51.100.2", "outgoing", "432", "attack_details"], mangled);
    assert.equal(d.code, 0, JSON.stringify(d.events));
    assert.deepEqual(
      posts.map((p) => p.body),
      [{ home: "home-1", target: ["203.0.113.5/32"], source: ["198.51.100.2/32"], lifetime: 600, protocol: ["17"] }],
    );
    assert.ok(
      d.events.some((e) => e.event === "note" && /no ports/.test(String(e.note))),
      JSON.stringify(d.events),
    );
  });

  it("an address outside every home, an incoming attack, garbage on stdin: no request, exit 0, a clear line", async () => {
    const outside = await run([...flags(), "192.0.2.7", "outgoing", "432", "ban"], BAN);
    assert.equal(outside.code, 0);
    assert.match(String(outside.events.find((e) => e.event === "ignored")?.reason), /inside no home's prefixes/);
    const incoming = await run([...flags(), "198.51.100.2", "incoming", "432", "ban"], BAN);
    assert.match(String(incoming.events.find((e) => e.event === "ignored")?.reason), /incoming/);
    const garbage = await run([...flags(), "198.51.100.2", "outgoing", "432", "ban"], "\u0000\u00ff garbage\n198.51.100.2:1 > nowhere\n");
    assert.equal(garbage.code, 0);
    assert.ok(garbage.events.some((e) => e.event === "waiting"));
    assert.equal(posts.length, 0);
  });

  it("bad arguments or no delivery configured: exit 2 with a usage error, never a crash", async () => {
    const r = await run([...flags(), "198.51.100.2", "outgoing", "ban"]);
    assert.equal(r.code, 2);
    assert.equal(r.events[0].code, "USAGE");
    const noWay = await run(["--home-prefix", "home-1=198.51.100.0/24", "198.51.100.2", "outgoing", "1", "ban"]);
    assert.equal(noWay.code, 2);
    assert.match(String(noWay.events[0].message), /--mqtt URL .*--http URL/);
  });

  it("the listener refuses (HTTP 502): exit 1, the record stays for the unban to find", async () => {
    answer = () => ({ status: 502, body: { code: "5.03" } });
    const r = await run([...flags(), "198.51.100.2", "outgoing", "432", "ban"], BAN);
    assert.equal(r.code, 1);
    assert.ok(r.events.some((e) => e.event === "answer" && e.kind === "error"));
    assert.ok(fs.existsSync(path.join(dir, "state", "ban-198.51.100.2.json")));
    const unban = await run([...flags(), "198.51.100.2", "outgoing", "432", "unban"]);
    assert.equal(unban.code, 0);
    assert.match(String(unban.events.find((e) => e.event === "ignored")?.reason), /never named the mid/);
  });

  it("concurrent ban and attack_details (FastNetMon runs them in parallel threads) send one request", async () => {
    const [a, b] = await Promise.all([
      run([...flags(), "198.51.100.2", "outgoing", "432", "ban"], BAN),
      run([...flags(), "198.51.100.2", "outgoing", "432", "attack_details"], DETAILS),
    ]);
    assert.deepEqual([a.code, b.code], [0, 0]);
    assert.equal(posts.length, 1, JSON.stringify(posts));
  });

  it("attack_details first, then the ban of the same attack: one request; a ban with another scope refreshes the mid", async () => {
    const details = await run([...flags(), "198.51.100.2", "outgoing", "432", "attack_details"], DETAILS);
    assert.equal(details.code, 0, JSON.stringify(details.events));
    assert.equal(posts.length, 1);
    const ban = await run([...flags(), "198.51.100.2", "outgoing", "432", "ban"], BAN);
    assert.equal(ban.code, 0);
    assert.equal(posts.length, 1, JSON.stringify(posts));
    assert.match(String(ban.events.find((e) => e.event === "ignored")?.reason), /mid 7 went out with this very scope/);
    const other = await run([...flags(), "198.51.100.2", "outgoing", "432", "ban"], BAN.replace(/5555/g, "6666"));
    assert.equal(other.code, 0);
    assert.equal(posts.length, 2, "a new scope goes out");
    assert.equal(posts[1].body.mid, 7, "as a refresh of the mid the listener named");
  });

  it("--help documents every flag", () => {
    for (const flag of Object.keys(FASTNETMON_FLAGS)) assert.ok(HELP.includes(`--${flag}`), flag);
  });
});

describe("dots-call-home fastnetmon-notify (MQTT delivery, real mosquitto)", function () {
  this.timeout(30_000);
  let broker: TestBroker | undefined;
  let dir = "";

  before(async function () {
    requireOrSkip(this, "mosquitto", hasMosquitto());
    broker = await TestBroker.start();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-fnm-mqtt-"));
  });
  after(async () => {
    await broker?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it("publishes the listener's stdin command object on P/cmd/<home>; a listener's response on P/evt/<home> gives the mid the unban withdraws", async () => {
    const flags = [
      "--home-prefix",
      "home-1=198.51.100.0/24",
      "--mqtt",
      broker!.url,
      "--mqtt-prefix",
      "isp",
      "--state-dir",
      dir,
      "--lifetime",
      "600",
      "--wait-ms",
      "5000",
    ];
    // stands in for `listen --mqtt` (tested against this contract in test/cli/mqtt.test.ts): answers each command by its id
    const peer = await mqtt.connectAsync(broker!.url, { protocolVersion: 5 });
    const seen: Array<Record<string, unknown>> = [];
    peer.on("message", (topic, payload) => {
      const cmd = JSON.parse(payload.toString()) as Record<string, unknown>;
      seen.push({ topic, ...cmd });
      const outcome = cmd.cmd === "mitigate" ? { code: "2.01", mid: 41 } : { code: "2.02", mid: 41 };
      void peer.publishAsync("isp/evt/home-1", JSON.stringify({ event: "response", home: "home-1", cmd: cmd.cmd, id: cmd.id, outcome }), {
        qos: 1,
      });
    });
    await peer.subscribeAsync("isp/cmd/+", { qos: 1 });
    try {
      const ban = await run([...flags, "198.51.100.2", "outgoing", "432", "ban"], BAN);
      assert.equal(ban.code, 0, JSON.stringify(ban.events));
      assert.equal(seen.length, 1);
      assert.equal(seen[0].topic, "isp/cmd/home-1");
      assert.equal(seen[0].cmd, "mitigate");
      assert.equal(seen[0].session, "home-1");
      assert.match(String(seen[0].id), /^fnm-198\.51\.100\.2-\d+$/);
      assert.deepEqual((seen[0].request as Record<string, unknown>)["ietf-dots-call-home:source-port-range"], [{ "lower-port": 40001 }]);
      const unban = await run([...flags, "198.51.100.2", "outgoing", "432", "unban"]);
      assert.equal(unban.code, 0, JSON.stringify(unban.events));
      assert.deepEqual([seen[1].cmd, seen[1].mid, seen[1].id], ["withdraw", 41, `${String(seen[0].id)}-unban`]);
    } finally {
      await peer.endAsync();
    }
  });

  it("no listener on the broker: no answer within --wait-ms, exit 1, the record stays (the next ban refreshes it, else its lifetime ends it)", async () => {
    const r = await run(
      [
        "--home-prefix",
        "home-2=198.51.100.0/24",
        "--mqtt",
        broker!.url,
        "--state-dir",
        dir,
        "--wait-ms",
        "800",
        "198.51.100.3",
        "outgoing",
        "432",
        "ban",
      ],
      BAN.replace(/198\.51\.100\.2/g, "198.51.100.3"),
    );
    assert.equal(r.code, 1, JSON.stringify(r.events));
    assert.ok(r.events.some((e) => e.event === "answer" && e.kind === "none"));
    assert.ok(fs.existsSync(path.join(dir, "ban-198.51.100.3.json")));
  });

  it("an unreachable broker: a DELIVERY error line and exit 1, not a crash", async () => {
    const r = await run(
      [
        "--home-prefix",
        "home-1=198.51.100.0/24",
        "--mqtt",
        "mqtt://127.0.0.1:1",
        "--state-dir",
        dir,
        "--wait-ms",
        "2000",
        "198.51.100.4",
        "outgoing",
        "432",
        "ban",
      ],
      BAN.replace(/198\.51\.100\.2/g, "198.51.100.4"),
    );
    assert.equal(r.code, 1, JSON.stringify(r.events) + r.stderr);
    assert.ok(
      r.events.some((e) => e.event === "error" && e.code === "DELIVERY"),
      JSON.stringify(r.events),
    );
  });
});
