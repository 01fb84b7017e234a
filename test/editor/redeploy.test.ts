// A real Node-RED (its own process, our package installed as npm would) runs the call-home loop;
// a full deploy through the admin API, as the editor's Deploy button sends it, keeps the DOTS
// session: the same session id, no session-down at the ISP, no disconnect at the home, and a
// mitigation sent after the deploy is answered 2.01. What the nodes emit is recorded in global
// context by function nodes and read back over HTTP.
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { freePort } from "../support/ports";
import { natTable, PSK_HEX } from "../nodes/flows";
import { startNodeRed, type NodeRedProcess } from "./nr-process";

type Rec = { topic?: string; session?: string; code?: string; mid?: number; status?: string };
type State = { isp: Rec[]; resp: Rec[]; home: Rec[] };

const record = (key: string): string =>
  `const a = global.get(${JSON.stringify(key)}) || []; a.push({ topic: msg.topic, session: msg.dots && msg.dots.session, code: msg.dots && msg.dots.code, mid: msg.dots && msg.dots.mid, status: msg.dots && msg.dots.status }); global.set(${JSON.stringify(key)}, a); return null;`;

function flow(port: number, label: string): unknown[] {
  return [
    { id: "t", type: "tab", label },
    { id: "k", type: "dots-psk", name: "home-1 key", home: "home-1", keyFormat: "hex", version: 1 },
    {
      id: "ispEp",
      type: "dots-isp-endpoint",
      name: "ISP",
      port,
      host: "127.0.0.1",
      dtls: true,
      tls: false,
      psk: "k",
      extraPsks: [],
      tlsConfig: "",
      homePrefixes: "home-1: 198.51.100.0/24",
      allowUnscoped: false,
      dropMaxFailures: 5,
      dropWindow: 60,
      dropBan: 300,
      stateId: "",
      version: 1,
    },
    {
      id: "homeEp",
      type: "dots-home-endpoint",
      name: "home",
      hosts: "127.0.0.1",
      port,
      transport: "udp",
      psk: "k",
      tlsConfig: "",
      homePrefixes: "198.51.100.0/24",
      heartbeatInterval: 30,
      decisionWait: 2000,
      allowIndefinite: false,
      terminatingPeriod: 0,
      stateId: "",
      version: 1,
    },
    {
      id: "go",
      type: "inject",
      z: "t",
      name: label,
      props: [{ p: "payload" }],
      payload: "",
      payloadType: "date",
      repeat: "",
      once: false,
      x: 100,
      y: 60,
      wires: [["req"]],
    },
    {
      id: "req",
      type: "dots-mitigation-request",
      z: "t",
      name: label,
      home: "home-1",
      homeType: "str",
      targetPrefix: "203.0.113.5",
      targetPrefixType: "str",
      sourcePrefix: "198.51.100.7",
      sourcePrefixType: "str",
      sourcePort: "40001",
      sourcePortType: "str",
      targetPort: "443",
      targetPortType: "str",
      protocol: "tcp",
      protocolType: "str",
      lifetime: "600",
      lifetimeType: "str",
      version: 1,
      x: 300,
      y: 60,
      wires: [["lis"]],
    },
    {
      id: "lis",
      type: "dots-call-home-listener",
      z: "t",
      name: label,
      endpoint: "ispEp",
      version: 2,
      x: 500,
      y: 60,
      wires: [["recIsp"], ["recResp"]],
    },
    { id: "recIsp", type: "function", z: "t", func: record("isp"), outputs: 1, x: 700, y: 40, wires: [[]] },
    { id: "recResp", type: "function", z: "t", func: record("resp"), outputs: 1, x: 700, y: 80, wires: [[]] },
    {
      id: "dia",
      type: "dots-call-home-dialer",
      z: "t",
      name: label,
      endpoint: "homeEp",
      version: 2,
      x: 100,
      y: 200,
      wires: [["nat"], ["fil"], ["recHome"]],
    },
    {
      id: "nat",
      type: "dots-nat-lookup",
      z: "t",
      source: "static",
      table: JSON.stringify(natTable),
      netns: "",
      version: 1,
      x: 300,
      y: 200,
      wires: [["fil"]],
    },
    {
      id: "fil",
      type: "dots-filter-action",
      z: "t",
      backend: "dry-run",
      action: "block",
      consent: "auto",
      consentTimeout: 300,
      onTimeout: "reject",
      table: "dots_call_home",
      netns: "",
      version: 1,
      x: 500,
      y: 200,
      wires: [["dia"], []],
    },
    { id: "recHome", type: "function", z: "t", func: record("home"), outputs: 1, x: 300, y: 260, wires: [[]] },
    { id: "stIn", type: "http in", z: "t", url: "/dots-test/state", method: "get", x: 100, y: 320, wires: [["stFn"]] },
    {
      id: "stFn",
      type: "function",
      z: "t",
      func: 'msg.payload = { isp: global.get("isp") || [], resp: global.get("resp") || [], home: global.get("home") || [] }; return msg;',
      outputs: 1,
      x: 300,
      y: 320,
      wires: [["stOut"]],
    },
    { id: "stOut", type: "http response", z: "t", statusCode: "", x: 500, y: 320, wires: [] },
  ];
}

describe("a real Node-RED: a full deploy through the admin API keeps the DOTS session", function () {
  this.timeout(90000);
  let tmp = "";
  let nr: NodeRedProcess | undefined;

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "dots-redeploy-"));
    nr = await startNodeRed(tmp);
  });
  after(async () => {
    await nr?.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  async function deploy(body: unknown[]): Promise<void> {
    const res = await fetch(nr!.url + "flows", {
      method: "POST",
      headers: { "content-type": "application/json", "Node-RED-Deployment-Type": "full" },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 204, await res.text());
  }
  async function state(): Promise<State> {
    const res = await fetch(nr!.url + "api/dots-test/state");
    // The deploy answers before the flows have started: the route may not be there yet.
    if (!res.ok) return { isp: [], resp: [], home: [] };
    return (await res.json()) as State;
  }
  async function until<T>(what: string, check: (s: State) => T | undefined, ms = 20000): Promise<T> {
    const deadline = Date.now() + ms;
    for (;;) {
      const s = await state();
      const v = check(s);
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(s)}\n${nr!.log()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  /** Clicks the inject button; the node exists once the deployed flows have started. */
  async function inject(): Promise<void> {
    let res = await fetch(nr!.url + "inject/go", { method: "POST" });
    for (let i = 0; i < 100 && res.status === 404; i++) {
      await new Promise((r) => setTimeout(r, 100));
      res = await fetch(nr!.url + "inject/go", { method: "POST" });
    }
    assert.equal(res.status, 200, await res.text());
  }

  it("same session, no session-down, no disconnect, and a mitigation after the deploy gets 2.01; state dirs 0700 under the user dir", async () => {
    const port = await freePort();
    const first = flow(port, "before");
    // The key goes in once, as the editor sends a newly typed credential.
    (first[1] as Record<string, unknown>).credentials = { identity: "home-1", key: PSK_HEX };
    await deploy(first);
    const up = await until("session-up", (s) => s.isp.find((r) => r.topic === "session-up"));
    await inject();
    const before = await until("the first answer", (s) => s.resp.find((r) => r.topic === "mitigate"));
    assert.equal(before.code, "2.01");

    // Full deploy of changed flows (names, the tab label) without the credentials, as the editor
    // sends them when no key was retyped: every node, the endpoints included, is recreated.
    await deploy(flow(port, "after"));
    await inject();
    const answers = await until("the answer after the deploy", (s) => {
      const m = s.resp.filter((r) => r.topic === "mitigate");
      return m.length >= 2 ? m : undefined;
    });
    assert.equal(answers[1].code, "2.01");
    assert.equal(answers[1].session, up.session, "the same session answered");
    const s = await state();
    assert.deepEqual(
      s.isp.filter((r) => r.topic === "session-down"),
      [],
      "no session-down at the ISP",
    );
    assert.equal(s.isp.filter((r) => r.topic === "session-up").length, 1, "one session for the whole test");
    assert.deepEqual(
      s.home.filter((r) => r.topic === "disconnected"),
      [],
      "the home never lost the session",
    );
    assert.equal(s.home.filter((r) => r.topic === "connected").length, 1);
    for (const id of ["ispEp", "homeEp"]) {
      const dir = path.join(nr!.userDir, "dots-call-home", id);
      assert.equal(fs.statSync(dir).mode & 0o777, 0o700, `${dir} is 0700`);
    }
    assert.doesNotMatch(nr!.log(), /\[error\]/i);
  });

  it("an endpoint whose PSK has no key (an imported example): nothing listens and the listener and dialer say why in words", async () => {
    const port = await freePort();
    const body = flow(port, "no key").map((n) => {
      const node = n as Record<string, unknown>;
      if (node.type === "dots-psk") return { ...node, id: "k9", name: "imported key" };
      if (node.psk === "k") return { ...node, psk: "k9" };
      return node;
    });
    await deploy(body);
    const deadline = Date.now() + 10000;
    while (Date.now() < deadline && (nr!.log().match(/PSK key missing in "imported key"/g) ?? []).length < 2)
      await new Promise((r) => setTimeout(r, 100));
    const lines = nr!
      .log()
      .split("\n")
      .filter((l) => /PSK key missing in "imported key"/.test(l));
    assert.ok(
      lines.some((l) => /dots-call-home-listener/.test(l)),
      nr!.log(),
    );
    assert.ok(
      lines.some((l) => /dots-call-home-dialer/.test(l)),
      nr!.log(),
    );
    const free = await new Promise<boolean>((resolve) => {
      const sock = dgram.createSocket("udp4");
      sock.once("error", () => resolve(false));
      sock.bind(port, "127.0.0.1", () => sock.close(() => resolve(true)));
    });
    assert.equal(free, true, "nothing listens without a key");
  });
});
