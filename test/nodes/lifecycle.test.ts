// The whole call-home lifecycle through the nodes in one Node-RED runtime: the home dials the
// ISP over DTLS-PSK on loopback, the ISP sends a mitigation request, the home maps it through
// its NAT table, blocks in dry run and reports back; then the ISP withdraws it.
import { strict as assert } from "node:assert";
import { freePort, helper, waitFor, collect, allNodes } from "./support";
import { loopCredentials, loopFlow } from "./flows";

describe("call-home lifecycle through the nodes (one runtime, DTLS-PSK on loopback)", function () {
  this.timeout(60000);
  afterEach(async () => {
    await helper.unload();
  });

  it("session up, mitigation enforced in dry run, status back to the ISP, withdrawal removes the filter", async () => {
    const port = await freePort();
    await helper.load(allNodes, loopFlow({ port }), loopCredentials);
    const ispEvents = collect("ispEvents");
    const ispResp = collect("ispResp");
    const homeMit = collect("homeMit");
    const homeEnded = collect("homeEnded");
    const homeEvents = collect("homeEvents");
    const decisions = collect("decisions");
    const notices = collect("notices");
    const caught = collect("caught");

    const up = await waitFor("session-up at the ISP", () => ispEvents.find((m) => m.topic === "session-up"));
    assert.equal(up.payload.home, "home-1");
    assert.equal(up.payload.transport, "dtls");
    await waitFor("connected at the home", () => homeEvents.find((m) => m.topic === "connected"));

    helper.getNode("req").receive({ payload: "attack seen" });
    const response = await waitFor("the mitigate response", () => ispResp.find((m) => m.topic === "mitigate"));
    assert.match(response.dots.code, /^2\.01$/);
    const mid = response.dots.mid;
    assert.equal(typeof mid, "number");

    const mitigation = await waitFor("the mitigation at the home", () => homeMit[0]);
    assert.equal(mitigation.dots.mid, mid);
    const decision = await waitFor("the filter decision", () => decisions[0]);
    assert.equal(decision.payload.outcome, "enforced");
    assert.equal(decision.payload.devices[0].address, "192.168.1.20");
    assert.match(decision.payload.script, /192\.168\.1\.20/);
    assert.match(decision.payload.script, /203\.0\.113\.5/);

    // The ISP learns the outcome: either in the response body or in a later notification.
    const mitigated = await waitFor("status attack-successfully-mitigated at the ISP", () => {
      const inResponse = JSON.stringify(response.payload).includes("attack-successfully-mitigated");
      return inResponse || ispResp.some((m) => m.topic === "status" && m.dots.status === "attack-successfully-mitigated") || undefined;
    });
    assert.ok(mitigated);

    helper.getNode("lis").receive({ dots: { action: "withdraw", session: "home-1", mid } });
    const withdrawn = await waitFor("the withdraw response", () => ispResp.find((m) => m.topic === "withdraw"));
    assert.match(withdrawn.dots.code, /^2\.02$/);
    const ended = await waitFor("the withdrawal at the home", () => homeEnded[0]);
    assert.equal(ended.dots.mid, mid);
    assert.equal(ended.dots.reason, "withdrawn");
    const removed = await waitFor("the filter removal", () => notices.find((m) => m.topic === "ended"));
    assert.equal(removed.payload.removed > 0, true);
    assert.deepEqual(
      caught.map((m) => m.error.message),
      [],
    );
  });
});
