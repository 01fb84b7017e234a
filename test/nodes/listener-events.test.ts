// The listener node forwards the endpoint's resynced event on its session-events output with the
// session and home, and the dialer's status carries the disconnect code and hint.
import { strict as assert } from "node:assert";
import * as path from "node:path";
import { allNodes, collect, freePort, helper, outRoot, waitFor } from "./support";
import { loopCredentials, loopFlow } from "./flows";

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { disconnectReason } = require(path.join(outRoot, "nodes", "lib", "home-endpoint.js")) as {
  disconnectReason(info: Record<string, unknown>): string;
};

type FlowNode = Record<string, unknown> & { id: string };

describe("listener node: auth-failure and drop events", function () {
  this.timeout(60000);
  afterEach(async () => {
    await helper.unload();
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
