// Every node with a bad configuration: a red status, and a message sent to it ends in an error a
// Catch node receives (nothing crashes, nothing is sent on).
import { strict as assert } from "node:assert";
import { freePort, helper, nodeModule, type Msg } from "./support";
import { natTable } from "./flows";

const nodes = ["dots-psk", "dots-call-home-listener", "dots-call-home-dialer", "dots-nat-lookup", "dots-filter-action"].map(nodeModule);

const goodPsk = { id: "k", type: "dots-psk", home: "home-1", keyFormat: "hex" };
const creds = { k: { identity: "home-1", key: "00112233445566778899aabbccddeeff" }, bad: { identity: "x", key: "not-hex" } };

function withCatch(node: Record<string, unknown>): unknown[] {
  return [
    { id: "t", type: "tab" },
    goodPsk,
    { id: "bad", type: "dots-psk", keyFormat: "hex" },
    { ...node, id: "n", z: "t", wires: [["out"], ["out"], ["out"]] },
    { id: "out", type: "helper", z: "t" },
    { id: "c1", type: "catch", z: "t", scope: null, uncaught: false, wires: [["caught"]] },
    { id: "caught", type: "helper", z: "t" },
  ];
}

async function expectConfigError(node: Record<string, unknown>, input: Record<string, unknown>, pattern: RegExp): Promise<void> {
  await helper.load(nodes, withCatch(node), creds);
  const n = helper.getNode("n");
  // The helper spies on Node.prototype.status; the constructor already set it.
  const statuses = (n.status.getCalls() as Array<{ thisValue: unknown; args: Array<{ fill?: string }> }>)
    .filter((c) => c.thisValue === n)
    .map((c) => c.args[0]);
  assert.equal(statuses[statuses.length - 1]?.fill, "red", "the node shows a red status");
  let sent = 0;
  helper.getNode("out").on("input", () => sent++);
  const caught = new Promise<Msg>((resolve) => helper.getNode("caught").on("input", resolve));
  n.receive(input);
  const got = await caught;
  assert.match(String(got.error.message), pattern);
  assert.equal(got.error.source.id, "n");
  assert.equal(sent, 0);
}

describe("node configuration errors", function () {
  this.timeout(30000);
  afterEach(async () => {
    await helper.unload();
  });

  const listener = (o: Record<string, unknown>) => ({
    type: "dots-call-home-listener",
    port: 0,
    host: "127.0.0.1",
    dtls: true,
    tls: false,
    psk: "k",
    homePrefixes: "",
    ...o,
  });
  const dialer = (o: Record<string, unknown>) => ({
    type: "dots-call-home-dialer",
    hosts: "127.0.0.1",
    port: 4647,
    transport: "udp",
    psk: "k",
    homePrefixes: "198.51.100.0/24",
    ...o,
  });
  const decision = { payload: { outcome: "enforced" }, dots: { mid: 1 } };
  const mitigate = { payload: {}, dots: { session: "home-1" } };

  const cases: Array<[string, Record<string, unknown>, Record<string, unknown>, RegExp]> = [
    ["listener: port out of range", listener({ port: 70000 }), mitigate, /port|not-running/],
    ["listener: no transport", listener({ dtls: false, tls: false }), mitigate, /not-running|transport/],
    ["listener: no credentials", listener({ psk: "" }), mitigate, /not-running|credentials/],
    ["listener: PSK config with a bad key", listener({ psk: "bad" }), mitigate, /not-running|key/],
    ["listener: bad home prefixes", listener({ homePrefixes: "home-1: 300.0.0.0/8" }), mitigate, /not-running|prefix/],
    ["listener: no DTLS handshake per source", listener({ handshakesPerSource: 0 }), mitigate, /not-running|handshakes per source/],
    ["dialer: no ISP address", dialer({ hosts: "" }), decision, /not-running|hosts/],
    ["dialer: bad transport", dialer({ transport: "sctp" }), decision, /not-running|transport/],
    ["dialer: no home prefixes", dialer({ homePrefixes: "" }), decision, /not-running|prefixes/],
    ["dialer: bad home prefix", dialer({ homePrefixes: "198.51.100.0/40" }), decision, /not-running|prefix/],
    ["dialer: heartbeat below 15 s", dialer({ heartbeatInterval: 5 }), decision, /not-running|heartbeat/],
    ["dialer: no credentials", dialer({ psk: "" }), decision, /not-running|credentials/],
    [
      "NAT lookup: static table is not JSON",
      { type: "dots-nat-lookup", source: "static", table: "[{" },
      { payload: {} },
      /table-json|JSON/,
    ],
    ["NAT lookup: unknown source", { type: "dots-nat-lookup", source: "ldap" }, { payload: {} }, /source/],
    ["NAT lookup: bad namespace name", { type: "dots-nat-lookup", source: "auto", netns: "a b" }, { payload: {} }, /netns|Namespace/],
    ["filter action: unknown backend", { type: "dots-filter-action", backend: "iptables" }, { payload: {} }, /not-running|backend/],
    ["filter action: unknown action", { type: "dots-filter-action", action: "drop-all" }, { payload: {} }, /not-running|action/],
  ];
  for (const [what, node, input, pattern] of cases) {
    it(`${what}: red status and a catchable error on input`, async () => {
      await expectConfigError(node, input, pattern);
    });
  }

  describe("bad messages", () => {
    it("listener: unknown action, missing session, missing mid are catchable errors", async () => {
      const port = await freePort();
      await helper.load(nodes, withCatch(listener({ port })), creds);
      const caught: Msg[] = [];
      helper.getNode("caught").on("input", (m: Msg) => caught.push(m));
      const n = helper.getNode("n");
      n.receive({ payload: {}, dots: { action: "explode", session: "home-1" } });
      n.receive({ payload: {}, dots: {} });
      n.receive({ dots: { action: "withdraw", session: "home-1" } });
      n.receive({ dots: { action: "efficacy", session: "home-1", mid: 3 } });
      n.receive({ payload: { "ietf-dots-signal-channel:mitigation-scope": { scope: [{}] } }, dots: { session: "nobody" } });
      for (let i = 0; i < 200 && caught.length < 5; i++) await new Promise((r) => setTimeout(r, 20));
      const text = caught.map((m) => String(m.error.message)).join("\n");
      assert.equal(caught.length, 5, text);
      assert.match(text, /action/);
      assert.match(text, /no-session|session/);
      assert.match(text, /no-mid|mid/);
      assert.match(text, /attack-status|attackStatus/);
      assert.match(text, /nobody|session/);
    });

    it("dialer: bad outcome and missing mid are catchable errors", async () => {
      await helper.load(nodes, withCatch(dialer({ port: await freePort() })), creds);
      const caught: Msg[] = [];
      helper.getNode("caught").on("input", (m: Msg) => caught.push(m));
      const n = helper.getNode("n");
      n.receive({ payload: { outcome: "maybe" }, dots: { mid: 1 } });
      n.receive({ payload: { outcome: "enforced" } });
      n.receive({ payload: { outcome: "enforced" }, dots: { mid: 12345 } });
      for (let i = 0; i < 200 && caught.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(caught.length, 3);
      assert.match(caught[0].error.message, /outcome/);
      assert.match(caught[1].error.message, /mid/);
    });

    it("NAT lookup: a scope without source-prefix is a catchable error naming the field", async () => {
      await helper.load(nodes, withCatch({ type: "dots-nat-lookup", source: "static", table: JSON.stringify(natTable) }), creds);
      const caught = new Promise<Msg>((resolve) => helper.getNode("caught").on("input", resolve));
      helper.getNode("n").receive({ payload: { "target-prefix": ["203.0.113.5/32"] } });
      assert.match((await caught).error.message, /source-prefix/);
    });

    it("NAT lookup: finds the device behind the public address, or says none", async () => {
      await helper.load(nodes, withCatch({ type: "dots-nat-lookup", source: "static", table: JSON.stringify(natTable) }), creds);
      const out: Msg[] = [];
      helper.getNode("out").on("input", (m: Msg) => out.push(m));
      const n = helper.getNode("n");
      n.receive({
        payload: {
          "ietf-dots-call-home:source-prefix": ["198.51.100.7/32"],
          "ietf-dots-call-home:source-port-range": [{ "lower-port": 40001 }],
          "target-prefix": ["203.0.113.5/32"],
        },
      });
      n.receive({ payload: { "ietf-dots-call-home:source-prefix": ["198.51.100.99/32"], "target-prefix": ["203.0.113.5/32"] } });
      for (let i = 0; i < 200 && out.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(out[0].nat.found, true);
      assert.equal(out[0].nat.devices[0].address, "192.168.1.20");
      assert.equal(out[0].nat.devices[0].mac, "02:00:00:00:00:20");
      assert.equal(out[1].nat.found, false);
    });

    it("filter action: a mitigation without msg.nat or cuid is a catchable error", async () => {
      await helper.load(nodes, withCatch({ type: "dots-filter-action", backend: "dry-run" }), creds);
      const caught: Msg[] = [];
      helper.getNode("caught").on("input", (m: Msg) => caught.push(m));
      const n = helper.getNode("n");
      n.receive({ payload: {}, dots: { cuid: "c", mid: 1 } });
      n.receive({ payload: {}, dots: { mid: 1 }, nat: { devices: [] } });
      for (let i = 0; i < 200 && caught.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
      assert.match(caught[0].error.message, /nat/);
      assert.match(caught[1].error.message, /cuid/);
    });
  });
});
