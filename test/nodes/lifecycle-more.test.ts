// More of the call-home loop through the nodes: consent (approve and reject), redeploys that
// rebind the same port, two listeners side by side, and credentials that never leave the runtime.
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import { freePort, helper, waitFor, collect, allNodes } from "./support";
import { loopCredentials, loopFlow } from "./flows";
import { requireFromNodeRed } from "../support/node-red";

/** True when nothing listens on the UDP port any more (we can bind it ourselves). */
function udpPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket("udp4");
    s.once("error", () => resolve(false));
    s.bind(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

describe("call-home nodes: consent, redeploy, several listeners, credentials", function () {
  this.timeout(60000);
  afterEach(async () => {
    await helper.unload();
  });

  for (const answer of ["approve", "reject"] as const) {
    it(`consent required: pending first, then ${answer} reaches the ISP as ${answer === "approve" ? "mitigated" : "legitimate traffic"}`, async () => {
      const port = await freePort();
      await helper.load(allNodes, loopFlow({ port, consent: "manual" }), loopCredentials);
      const ispEvents = collect("ispEvents");
      const ispResp = collect("ispResp");
      const decisions = collect("decisions");
      const notices = collect("notices");
      await waitFor("session-up", () => ispEvents.find((m) => m.topic === "session-up"));
      helper.getNode("req").receive({ payload: "x" });
      const response = await waitFor("mitigate response", () => ispResp.find((m) => m.topic === "mitigate"));
      assert.equal(response.dots.code, "2.01");
      const mid = response.dots.mid;
      const request = await waitFor("consent request", () => notices.find((m) => m.topic === "consent-request"));
      assert.equal(request.payload.mid, mid);
      assert.match(request.payload.script, /192\.168\.1\.20/);
      assert.equal((await waitFor("pending decision", () => decisions[0])).payload.outcome, "pending");
      assert.match(JSON.stringify(response.payload), /attack-mitigation-in-progress/);

      helper.getNode("filter").receive({ topic: answer, dots: { mid } });
      const final = await waitFor("final decision", () => decisions[1]);
      assert.equal(final.payload.outcome, answer === "approve" ? "enforced" : "legitimate");
      const note = await waitFor("status notification at the ISP", () =>
        ispResp.find(
          (m) =>
            m.topic === "status" &&
            m.dots.mid === mid &&
            (answer === "approve" ? m.dots.status === "attack-successfully-mitigated" : m.dots.conflictCause !== undefined),
        ),
      );
      if (answer === "reject") assert.match(String(note.dots.conflictCause), /legitimate|^4$/);
    });
  }

  it("approve for a mid that is not pending is an error for Catch", async () => {
    const port = await freePort();
    await helper.load(allNodes, loopFlow({ port, consent: "manual" }), loopCredentials);
    const caught = collect("caught");
    helper.getNode("filter").receive({ topic: "approve", dots: { mid: 999 } });
    const err = await waitFor("catch", () => caught[0]);
    assert.match(err.error.message, /999|not-pending/);
    assert.equal(err.error.source.id, "filter");
  });

  it("full and partial redeploys that change the endpoint rebind the same port without EADDRINUSE, and unload frees it", async () => {
    const port = await freePort();
    const flow = loopFlow({ port });
    await helper.load(allNodes, flow, loopCredentials);
    let events = collect("ispEvents");
    await waitFor("first session-up", () => events.find((m) => m.topic === "session-up"));
    for (const [i, type] of ["full", "nodes", "flows"].entries()) {
      // Change both endpoints so each deploy restarts the listener on the same port and the
      // dialer with it (a dialer left running would wait out RFC 9132's reconnect back-off).
      const next = flow.map((n) => {
        const id = (n as { id: string }).id;
        if (id === "ispEp") return { ...(n as object), dropBan: 300 + i + 1 };
        if (id === "homeEp") return { ...(n as object), heartbeatInterval: 30 + i + 1 };
        return n;
      });
      await helper.setFlows(next, type, loopCredentials);
      events = collect("ispEvents");
      const caught = collect("caught");
      await waitFor(`session-up after ${type} deploy`, () => events.find((m) => m.topic === "session-up"), 20000);
      assert.deepEqual(
        caught.filter((m) => /EADDRINUSE/.test(m.error.message)),
        [],
      );
    }
    await helper.unload();
    // Stopping the flows stops the endpoint's engine; its socket closes within a few turns.
    for (let i = 0; i < 100 && !(await udpPortFree(port)); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await udpPortFree(port), true, "the port is free after the flows stop");
  });

  it("two listeners on different ports run side by side", async () => {
    const [p1, p2] = [await freePort(), await freePort()];
    const flow = [
      { id: "t", type: "tab" },
      { id: "k", type: "dots-psk", home: "home-1", keyFormat: "hex" },
      {
        id: "l1",
        type: "dots-call-home-listener",
        z: "t",
        port: p1,
        host: "127.0.0.1",
        dtls: true,
        tls: true,
        psk: "k",
        homePrefixes: "",
        wires: [["e1"], []],
      },
      {
        id: "l2",
        type: "dots-call-home-listener",
        z: "t",
        port: p2,
        host: "127.0.0.1",
        dtls: true,
        tls: false,
        psk: "k",
        homePrefixes: "",
        wires: [["e2"], []],
      },
      { id: "e1", type: "helper", z: "t" },
      { id: "e2", type: "helper", z: "t" },
    ];
    await helper.load(allNodes, flow, loopCredentials);
    const statuses: Record<string, string[]> = { l1: [], l2: [] };
    for (const id of ["l1", "l2"])
      helper.getNode(id).on("call:status", (c: { args: Array<{ text?: string }> }) => statuses[id].push(String(c.args[0].text)));
    let busy1 = false;
    let busy2 = false;
    for (let i = 0; i < 200 && !(busy1 && busy2); i++) {
      busy1 = !(await udpPortFree(p1));
      busy2 = !(await udpPortFree(p2));
      if (!(busy1 && busy2)) await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal(busy1, true, "listener 1 holds its port");
    assert.equal(busy2, true, "listener 2 holds its port");
  });

  it("a port already in use turns the listener red and raises a catchable error", async () => {
    const port = await freePort();
    const blocker = dgram.createSocket("udp4");
    await new Promise<void>((r) => blocker.bind(port, "127.0.0.1", () => r()));
    try {
      const flow = [
        { id: "t", type: "tab" },
        { id: "k", type: "dots-psk", home: "home-1", keyFormat: "hex" },
        {
          id: "lis",
          type: "dots-call-home-listener",
          z: "t",
          port,
          host: "127.0.0.1",
          dtls: true,
          tls: false,
          psk: "k",
          homePrefixes: "",
          wires: [[], []],
        },
        { id: "c1", type: "catch", z: "t", scope: null, uncaught: false, wires: [["caught"]] },
        { id: "caught", type: "helper", z: "t" },
      ];
      await helper.load(allNodes, flow, loopCredentials);
      const statuses: Array<{ fill?: string }> = [];
      helper.getNode("lis").on("call:status", (c: { args: Array<{ fill?: string }> }) => statuses.push(c.args[0]));
      const caught = collect("caught");
      const err = await waitFor("catch", () => caught[0]);
      assert.match(err.error.message, /EADDRINUSE|in use/i);
      await waitFor("red status", () => statuses.some((s) => s.fill === "red"));
    } finally {
      blocker.close();
    }
  });

  it("exported flows carry no PSK: the key exists only as a credential", async () => {
    const port = await freePort();
    await helper.startServer();
    try {
      await helper.load(allNodes, loopFlow({ port }), loopCredentials);
      // What the runtime stores as the flow configuration has no key; the editor's export (checked
      // in test/editor) works from the same data.
      const flows = (requireFromNodeRed("@node-red/runtime/lib/nodes") as { getFlows(): { flows: unknown } }).getFlows();
      const text = JSON.stringify(flows.flows);
      assert.ok(text.includes("dots-psk"), "flows are readable");
      assert.ok(!text.includes(loopCredentials.k.key), "the key is not in the flows");
      // The runtime holds the key as a credential of the config node (the editor test checks
      // that the admin API only reports has_key).
      assert.equal(helper.getNode("k").credentials.key, loopCredentials.k.key);
    } finally {
      await helper.stopServer();
    }
  });
});
