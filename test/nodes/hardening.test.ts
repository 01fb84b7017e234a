// What a Node-RED user notices when nodes are badly behaved, checked for ours: a broken
// configuration of a node without input still reaches a Catch node at start-up; stopping the
// flows leaves no socket or timer behind; two listeners serve their own homes; redeploys of a
// listener on DTLS and TLS at once rebind both ports; a flow saved by a newer release is flagged.
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import * as net from "node:net";
import { freePort, helper, waitFor, collect, type Msg, allNodes } from "./support";
import { loopCredentials, loopFlow, PSK_HEX } from "./flows";

/** What a Catch node has sent so far (the helper spies on send, so errors raised during load count). */
function catchSent(id: string): Msg[] {
  const n = helper.getNode(id);
  return (n.send.getCalls() as Array<{ thisValue: unknown; args: unknown[] }>)
    .filter((c) => c.thisValue === n)
    .map((c) => c.args[0] as Msg);
}

function udpPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket("udp4");
    s.once("error", () => resolve(false));
    s.bind(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}
function tcpPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/** Sockets and timers of this process by kind (what a leak would add to). */
function resources(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) if (/UDP|TCP|Timeout|Pipe|Process/i.test(r)) out[r] = (out[r] ?? 0) + 1;
  return out;
}

describe("node hardening: start-up errors, freed resources, several listeners, newer flows", function () {
  this.timeout(60000);
  afterEach(async () => {
    await helper.unload();
  });

  // Node-RED starts the nodes of a flow in order; a Catch node placed after the broken node must
  // still get the error the broken node raises while it starts.
  for (const catchFirst of [true, false]) {
    it(`a listener without credentials raises a catchable error at start-up (Catch node ${catchFirst ? "before" : "after"} it)`, async () => {
      const catcher = [
        { id: "c1", type: "catch", z: "t", scope: null, uncaught: false, wires: [["caught"]] },
        { id: "caught", type: "helper", z: "t" },
      ];
      const listener = {
        id: "lis",
        type: "dots-call-home-listener",
        z: "t",
        port: 0,
        host: "127.0.0.1",
        dtls: true,
        tls: false,
        psk: "",
        homePrefixes: "",
        wires: [[], []],
      };
      const flow = [{ id: "t", type: "tab" }, ...(catchFirst ? [...catcher, listener] : [listener, ...catcher])];
      await helper.load(allNodes, flow);
      const err = await waitFor("start-up error at the Catch node", () => catchSent("c1")[0], 3000);
      assert.match(String(err.error.message), /credentials|certificate|PSK/i);
      assert.equal(err.error.source.id, "lis");
    });
  }

  it("a flow of many of our nodes adds no MaxListenersExceededWarning (one shared start-up listener)", async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error): void => {
      warnings.push(`${w.name}: ${w.message}`);
    };
    process.on("warning", onWarning);
    try {
      const flow: unknown[] = [{ id: "t", type: "tab" }];
      for (let i = 0; i < 25; i++)
        flow.push({ id: `nat${i}`, type: "dots-nat-lookup", z: "t", source: "static", table: "[]", wires: [[]] });
      await helper.load(allNodes, flow);
      await helper.unload();
      await helper.load(allNodes, flow);
      await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
    } finally {
      process.removeListener("warning", onWarning);
    }
    assert.deepEqual(
      warnings.filter((w) => /MaxListeners/.test(w)),
      [],
    );
  });

  it("a dialer whose PSK config is missing raises a catchable error at start-up", async () => {
    const flow = [
      { id: "t", type: "tab" },
      {
        id: "dia",
        type: "dots-call-home-dialer",
        z: "t",
        hosts: "127.0.0.1",
        port: 4647,
        transport: "udp",
        psk: "gone",
        homePrefixes: "198.51.100.0/24",
        wires: [[], [], []],
      },
      { id: "c1", type: "catch", z: "t", scope: null, uncaught: false, wires: [["caught"]] },
      { id: "caught", type: "helper", z: "t" },
    ];
    await helper.load(allNodes, flow);
    const err = await waitFor("start-up error at the Catch node", () => catchSent("c1")[0], 3000);
    assert.match(String(err.error.message), /PSK|psk-missing/);
    assert.equal(err.error.source.id, "dia");
  });

  it("stopping the flows after a whole mitigation leaves no socket, timer or child process behind", async () => {
    const port = await freePort();
    // Warm up once so lazily created runtime timers exist before the baseline is taken.
    await helper.load(allNodes, [{ id: "t", type: "tab" }]);
    await helper.unload();
    const baseline = resources();
    await helper.load(allNodes, loopFlow({ port, listenerTls: true }), loopCredentials);
    const ispEvents = collect("ispEvents");
    const decisions = collect("decisions");
    await waitFor("session-up", () => ispEvents.find((m) => m.topic === "session-up"));
    helper.getNode("req").receive({ payload: "go" });
    assert.equal((await waitFor("decision", () => decisions[0])).payload.outcome, "enforced");
    const during = resources();
    assert.ok(
      Object.keys(during).some((k) => /UDP/.test(k)),
      "the flows hold sockets while running",
    );
    await helper.unload();
    // Closed sockets leave the list on the next turns of the event loop.
    let after = resources();
    for (let i = 0; i < 40 && JSON.stringify(after) !== JSON.stringify(baseline); i++) {
      await new Promise((r) => setTimeout(r, 25));
      after = resources();
    }
    for (const [kind, n] of Object.entries(after))
      assert.ok(n <= (baseline[kind] ?? 0), `${kind}: ${n} after stop, ${baseline[kind] ?? 0} before start`);
    assert.equal(await udpPortFree(port), true, "UDP port free");
    assert.equal(await tcpPortFree(port), true, "TCP port free");
  });

  it("two listeners on different ports each serve their own home", async () => {
    const [p1, p2] = [await freePort(), await freePort()];
    const flow = [
      { id: "t", type: "tab" },
      { id: "k1", type: "dots-psk", home: "home-1", keyFormat: "hex" },
      { id: "k2", type: "dots-psk", home: "home-2", keyFormat: "hex" },
      {
        id: "l1",
        type: "dots-call-home-listener",
        z: "t",
        port: p1,
        host: "127.0.0.1",
        dtls: true,
        tls: false,
        psk: "k1",
        homePrefixes: "home-1: 198.51.100.0/24",
        wires: [["e1"], []],
      },
      {
        id: "l2",
        type: "dots-call-home-listener",
        z: "t",
        port: p2,
        host: "127.0.0.1",
        dtls: true,
        tls: true,
        psk: "k2",
        homePrefixes: "home-2: 192.0.2.0/24",
        wires: [["e2"], []],
      },
      {
        id: "d1",
        type: "dots-call-home-dialer",
        z: "t",
        hosts: "127.0.0.1",
        port: p1,
        transport: "udp",
        psk: "k1",
        homePrefixes: "198.51.100.0/24",
        wires: [[], [], []],
      },
      {
        id: "d2",
        type: "dots-call-home-dialer",
        z: "t",
        hosts: "127.0.0.1",
        port: p2,
        transport: "tcp",
        psk: "k2",
        homePrefixes: "192.0.2.0/24",
        wires: [[], [], []],
      },
      { id: "e1", type: "helper", z: "t" },
      { id: "e2", type: "helper", z: "t" },
    ];
    await helper.load(allNodes, flow, {
      k1: { identity: "home-1", key: PSK_HEX },
      k2: { identity: "home-2", key: "00112233445566778899aabbccddeeff" },
    });
    const e1 = collect("e1");
    const e2 = collect("e2");
    const up1 = await waitFor("home-1 at listener 1", () => e1.find((m) => m.topic === "session-up"));
    const up2 = await waitFor("home-2 at listener 2", () => e2.find((m) => m.topic === "session-up"));
    assert.equal(up1.payload.home, "home-1");
    assert.equal(up1.payload.transport, "dtls");
    assert.equal(up2.payload.home, "home-2");
    assert.equal(up2.payload.transport, "tls");
    assert.equal(e1.filter((m) => m.topic === "session-up").length, 1, "listener 1 saw only its home");
    assert.equal(e2.filter((m) => m.topic === "session-up").length, 1, "listener 2 saw only its home");
  });

  it("full and partial redeploys that change a DTLS+TLS endpoint rebind both ports", async () => {
    const port = await freePort();
    const flow = loopFlow({ port, listenerTls: true, transport: "tcp" });
    await helper.load(allNodes, flow, loopCredentials);
    let events = collect("ispEvents");
    await waitFor("first session-up", () => events.find((m) => m.topic === "session-up"));
    for (const [i, type] of ["nodes", "full"].entries()) {
      // A changed endpoint setting (the ban time) restarts the listener on the same ports, and
      // the dialer with it (so it does not wait out RFC 9132's reconnect back-off).
      const next = flow.map((n) => {
        const id = (n as { id: string }).id;
        if (id === "ispEp") return { ...(n as object), dropBan: 300 + i + 1 };
        if (id === "homeEp") return { ...(n as object), heartbeatInterval: 30 + i + 1 };
        return n;
      });
      await helper.setFlows(next, type, loopCredentials);
      events = collect("ispEvents");
      const caught = collect("caught");
      const up = await waitFor(`session-up over TLS after a ${type} deploy`, () => events.find((m) => m.topic === "session-up"), 20000);
      assert.equal(up.payload.transport, "tls");
      assert.deepEqual(
        caught.map((m) => String(m.error.message)).filter((t) => /EADDRINUSE|in use/i.test(t)),
        [],
      );
    }
  });

  it("a node saved by a newer release (config version 3) warns that settings may be ignored", async () => {
    const port = await freePort();
    const flow = [
      { id: "t", type: "tab" },
      { id: "k", type: "dots-psk", home: "home-1", keyFormat: "hex", version: 2 },
      {
        id: "lis",
        type: "dots-call-home-listener",
        z: "t",
        port,
        host: "127.0.0.1",
        dtls: true,
        psk: "k",
        homePrefixes: "",
        version: 3,
        wires: [[], []],
      },
      { id: "nat", type: "dots-nat-lookup", z: "t", source: "static", table: "[]", version: 1, wires: [[]] },
    ];
    await helper.load(allNodes, flow, loopCredentials);
    const warned = (id: string): string[] => {
      const n = helper.getNode(id);
      return (n.warn.getCalls() as Array<{ thisValue: unknown; args: unknown[] }>)
        .filter((c) => c.thisValue === n)
        .map((c) => String(c.args[0]));
    };
    assert.ok(
      warned("lis").some((w) => /newer-version|version 3/.test(w)),
      `listener warns: ${JSON.stringify(warned("lis"))}`,
    );
    assert.ok(
      warned("k").some((w) => /newer-version|version 2/.test(w)),
      "config node warns",
    );
    assert.deepEqual(
      warned("nat").filter((w) => /newer-version|version/.test(w)),
      [],
      "a current node does not warn",
    );
  });
});
