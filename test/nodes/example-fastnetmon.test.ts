// The "ISP - FastNetMon detection" example runs: the real `dots-call-home fastnetmon-notify`
// process, fed what FastNetMon 1.2.4 wrote on a ban, POSTs to the example's HTTP endpoint; the
// example's listener sends the mitigation to the home router example (static NAT table), which
// enforces it (dry run); the unban call withdraws it by the mid the ban's answer carried.
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { CLI_MAIN } from "../support/cli-process";
import { fixture } from "../unit/detect/fixtures";
import { allNodes, collect, freePort, helper, repoRoot, waitFor } from "./support";

const core = [
  "common/20-inject",
  "common/21-debug",
  "common/90-comment",
  "function/10-switch",
  "function/15-change",
  "network/21-httpin",
].map(
  (p) => require(`@node-red/nodes/core/${p}.js`), // eslint-disable-line @typescript-eslint/no-require-imports
);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
let httpNodeApp: any;
const probe = (RED: { httpNode: unknown }): void => {
  httpNodeApp = RED.httpNode;
};
type FlowNode = Record<string, any> & { id: string; type: string }; // eslint-disable-line @typescript-eslint/no-explicit-any
const KEY = "3f1e5d7c9b0a2e4c6f8d1b3a5c7e9f02";
// what the router's conntrack would say about the flood FastNetMon saw (fixture: 198.51.100.2:40001 -> 203.0.113.5:5555/udp)
const NAT = [
  {
    protocol: "udp",
    device: "192.168.1.10",
    devicePort: 40001,
    public: "198.51.100.2",
    publicPort: 40001,
    target: "203.0.113.5",
    targetPort: 5555,
    mac: "02:00:00:00:00:10",
  },
];

function example(name: string): FlowNode[] {
  return JSON.parse(fs.readFileSync(path.join(repoRoot(), "examples", `${name}.json`), "utf8")) as FlowNode[];
}

function localise(flow: FlowNode[], port: number): FlowNode[] {
  return flow.map((n) => {
    if (n.type === "dots-isp-endpoint") return { ...n, port, host: "127.0.0.1" };
    if (n.type === "dots-home-endpoint") return { ...n, port, hosts: "127.0.0.1", transport: "udp", terminatingPeriod: 0 };
    if (n.type === "dots-nat-lookup") return { ...n, source: "static", table: JSON.stringify(NAT) };
    return n;
  });
}

function notify(args: string[], stdin?: string): Promise<{ code: number | null; events: Array<Record<string, unknown>> }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI_MAIN, "fastnetmon-notify", ...args], { stdio: ["pipe", "pipe", "inherit"] });
    let out = "";
    c.stdout.on("data", (b: Buffer) => (out += b.toString()));
    c.once("exit", (code) =>
      resolve({
        code,
        events: out
          .split("\n")
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>),
      }),
    );
    c.stdin.end(stdin ?? "");
  });
}

describe("example flow: ISP - FastNetMon detection", function () {
  this.timeout(60_000);
  let server: http.Server | undefined;
  let dir = "";

  before(async () => {
    await helper.startServer();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-fnm-example-"));
  });
  after(async () => {
    server?.close();
    await helper.unload();
    await helper.stopServer();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("a FastNetMon ban through the notify's HTTP POST is enforced at the home; its unban withdraws it; a bad POST gets 400", async () => {
    const port = await freePort();
    const isp = localise(example("ISP - FastNetMon detection"), port);
    const home = localise(example("Home router - NAT lookup and filter action"), port);
    const flow = [...isp, ...home];
    const creds: Record<string, unknown> = {};
    for (const n of flow) if (n.type === "dots-psk") creds[n.id] = { identity: "home-1", key: KEY };
    await helper.load([...allNodes, ...core, probe], flow, creds);
    // the flow's HTTP-in routes on a real socket, as FastNetMon's notify reaches them
    server = http.createServer(httpNodeApp);
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const listener = isp.find((n) => n.type === "dots-call-home-listener")!;
    const sessionEvents = collect(listener.wires[0][0]);
    const decisions = collect(home.find((n) => n.type === "debug" && n.name === "decisions")!.id);
    await waitFor("session-up", () => sessionEvents.find((m) => m.topic === "session-up"));

    const args = [
      "--home-prefix",
      "home-1=198.51.100.0/24",
      "--http",
      `${base}/dots/fastnetmon/mitigate`,
      "--state-dir",
      dir,
      "--lifetime",
      "600",
    ];
    const ban = await notify([...args, "198.51.100.2", "outgoing", "432", "ban"], fixture("fastnetmon-1.2.4-ban-udp-flows.txt"));
    assert.equal(ban.code, 0, JSON.stringify(ban.events));
    const answer = ban.events.find((e) => e.event === "answer");
    assert.equal(answer?.code, "2.01", JSON.stringify(ban.events));
    assert.equal(typeof answer?.mid, "number");
    const decision = await waitFor("home decision", () => decisions[0]);
    assert.equal(decision.payload.outcome, "enforced");
    assert.deepEqual(
      decision.payload.devices.map((d: { address: string }) => d.address),
      ["192.168.1.10"],
    );

    const unban = await notify([...args, "198.51.100.2", "outgoing", "432", "unban"]);
    assert.equal(unban.code, 0, JSON.stringify(unban.events));
    const withdrawn = unban.events.find((e) => e.event === "answer");
    assert.equal(withdrawn?.code, "2.02", JSON.stringify(unban.events));

    const bad = await fetch(`${base}/dots/fastnetmon/mitigate`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ home: "home-1", target: ["203.0.113.5/32"], source: ["192.0.2.9/32"], lifetime: 60 }),
    });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: string }).error, /source-prefix/);
  });
});
