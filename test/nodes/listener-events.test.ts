// The listener node forwards the endpoint's auth-failure, drop and resynced events on its
// session-events output, its status shows a ban, and the dialer's status carries the disconnect
// code and hint. A real loopback listener and dialers (one with the wrong key).
import { strict as assert } from "node:assert";
import * as path from "node:path";
import { allNodes, collect, freePort, helper, outRoot, waitFor } from "./support";
import { loopCredentials, loopFlow } from "./flows";

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { disconnectReason } = require(path.join(outRoot, "nodes", "lib", "home-endpoint.js")) as {
  disconnectReason(info: Record<string, unknown>): string;
};

type FlowNode = Record<string, unknown> & { id: string };

function statusTexts(id: string): string[] {
  const n = helper.getNode(id);
  return (n.status.getCalls() as Array<{ thisValue: unknown; args: Array<{ text?: string }> }>)
    .filter((c) => c.thisValue === n)
    .map((c) => String(c.args[0]?.text ?? ""));
}

describe("listener node: auth-failure and drop events", function () {
  this.timeout(60000);
  afterEach(async () => {
    await helper.unload();
  });

  it("a dialer with the wrong PSK key: auth-failure (PSK_MISMATCH) and drop reach output 1, the status shows the ban", async () => {
    const port = await freePort();
    const flow = (loopFlow({ port }) as FlowNode[]).map((n) => {
      // own endpoint ids: no state (reconnect back-off, drop-list) carried over from other tests
      if (n.id === "ispEp") return { ...n, id: "ispEpBan", dropMaxFailures: 1, dropWindow: 60, dropBan: 300 };
      if (n.id === "homeEp") return { ...n, id: "homeEpWrongKey", psk: "kWrong" };
      if (n.id === "lis") return { ...n, endpoint: "ispEpBan" };
      if (n.id === "dia") return { ...n, endpoint: "homeEpWrongKey" };
      return n;
    });
    flow.push({ id: "kWrong", type: "dots-psk", home: "home-1", keyFormat: "hex" });
    const credentials = {
      ...loopCredentials,
      kWrong: {
        identity: "home-1",
        key: "f0e1d2c3b4a5968778695a4b3c2d1e0f",
      } /* used by no other test: the runtime keeps credentials between tests */,
    };
    // the listener runs first and its output is watched before the dialer is deployed: the first
    // failure (the one that bans) is not lost to a race with the start of the flows
    await helper.load(
      allNodes,
      flow.filter((n) => n.id !== "dia"),
      credentials,
    );
    const events = collect("ispEvents");
    await helper.setFlows(flow, "nodes", credentials);
    const failure = await waitFor(
      "auth-failure on the session-events output",
      () => events.find((m) => m.topic === "auth-failure"),
      20000,
    ).catch((e: Error) =>
      assert.fail(
        `${e.message}; got ${JSON.stringify(events.map((m) => [m.topic, m.payload?.port ?? m.payload?.remote ?? m.payload?.remoteAddress]))} listener port ${port}; dialer status ${JSON.stringify(statusTexts("dia"))}`,
      ),
    );
    assert.equal(failure.payload.reason, "PSK_MISMATCH", JSON.stringify(failure.payload));
    assert.equal(failure.payload.identity, "home-1");
    const drop = await waitFor("drop on the session-events output", () => events.find((m) => m.topic === "drop"), 30000);
    assert.equal(drop.payload.remoteAddress, "127.0.0.1");
    assert.equal(drop.payload.lastReason, "PSK_MISMATCH");
    assert.ok(!events.some((m) => m.topic === "session-up"), "no session with the wrong key");
    // the test runtime has no message catalog: the status shows the key of "banned __address__ until __until__"
    await waitFor(
      "the ban in the listener's status",
      () =>
        statusTexts("lis").find((t) => t === "dots-call-home-listener.status.banned" || /^banned 127\.0\.0\.1 until \d\d:\d\d$/.test(t)),
      5000,
    );
  });

  it("after an endpoint restart the home's session comes back and a resynced event reaches output 1 with session and home", async () => {
    const port = await freePort();
    const flow = loopFlow({ port }) as FlowNode[];
    await helper.load(allNodes, flow, loopCredentials);
    let events = collect("ispEvents");
    await waitFor("the first resynced", () => events.find((m) => m.topic === "resynced"), 30000);
    // changed settings on both endpoints restart the listener and the dialer
    const next = flow.map((n) => (n.id === "ispEp" ? { ...n, dropBan: 301 } : n.id === "homeEp" ? { ...n, heartbeatInterval: 31 } : n));
    await helper.setFlows(next, "full", loopCredentials);
    events = collect("ispEvents");
    const up = await waitFor("session-up after the restart", () => events.find((m) => m.topic === "session-up"), 30000);
    const r = await waitFor("resynced after the restart", () => events.find((m) => m.topic === "resynced"), 30000);
    assert.equal(r.payload.sessionId, up.payload.id);
    assert.equal(r.dots.session, up.payload.id);
    assert.equal(r.dots.home, "home-1");
    assert.ok(Array.isArray(r.payload.mitigations), JSON.stringify(r.payload));
    assert.equal(typeof r.payload.complete, "boolean");
  });

  it("the dialer's status reason carries the disconnect code and hint, clipped to 80 characters", () => {
    const reason = 'the PSK key for identity "home-1" does not match the ISP\'s';
    assert.equal(disconnectReason({ reason, code: "PSK_MISMATCH" }), `PSK_MISMATCH: ${reason}`);
    const long = disconnectReason({
      reason: "no answer to the handshake",
      code: "HANDSHAKE_TIMEOUT",
      hint: "Earlier attempts failed with PSK_MISMATCH: the ISP may have banned this address",
    });
    assert.ok(long.startsWith("HANDSHAKE_TIMEOUT: no answer to the handshake (Earlier attempts failed"), long);
    assert.ok(long.length <= 80 && long.endsWith("..."), long);
    assert.equal(disconnectReason({ reason: "closed by peer" }), "closed by peer");
  });
});
