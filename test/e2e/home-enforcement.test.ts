// End to end on real conntrack and nftables: a LAN device floods a victim through a NAT router;
// the ISP side reads the NATed source; the router maps it back to the device through its live
// conntrack table and blocks it, while another LAN host keeps reaching the victim.
import { strict as assert } from "node:assert";
import { hasCommand, isRoot, requireOrSkip } from "../support/env";
import { createLab, sleep, waitFor, type Lab, type Sender } from "../support/netns";
import { ConntrackEventSource } from "../../src/home/nat-source";
import { createHomeEnforcer, type HomeEnforcer, type HandleResult, type ConsentRequest } from "../../src/home/enforcer";
import { NftablesBackend } from "../../src/home/filter-backend";
import { mitigationTag } from "../../src/home/nft-script";

const CUID = "dz6pHjaADkaFTbjr0JGBpw";

/** Packets the victim counted from each sender over a window. */
async function rise(lab: Lab, ms: number): Promise<{ dev: number; other: number }> {
  const a = await lab.counters();
  await sleep(ms);
  const b = await lab.counters();
  return { dev: b.dev - a.dev, other: b.other - a.other };
}

describe("home enforcement end to end (netns, conntrack, nftables)", function () {
  this.timeout(60_000);
  let lab: Lab | undefined;
  let senders: Sender[] = [];
  const enforcers: HomeEnforcer[] = [];
  let seen: { address: string; port: number };

  before(async function () {
    requireOrSkip(this, "root", isRoot());
    for (const tool of ["ip", "nft", "conntrack"]) requireOrSkip(this, tool, hasCommand(tool));
    lab = await createLab();
    senders.push(lab.startSender({ from: "lan", target: "203.0.113.5", port: 5555, tag: "dev", sourcePort: 40001, packetsPerSecond: 200, maxSeconds: 55 }));
    senders.push(lab.startSender({ from: "lan2", target: "203.0.113.5", port: 5555, tag: "h2x", sourcePort: 40002, packetsPerSecond: 200, maxSeconds: 55 }));
    // the ISP's view: the flood arrives from the router's public address with some NATed port
    const sources = await waitFor("the flood to reach the victim", async () => {
      const s = await lab!.seenDeviceSources();
      return s.length > 0 ? s : undefined;
    });
    seen = sources[0];
  });

  after(async function () {
    for (const e of enforcers) await e.close();
    for (const s of senders) await s.stop();
    senders = [];
    if (lab) await lab.destroy();
  });

  function enforcer(opts: Partial<Parameters<typeof createHomeEnforcer>[0]> = {}): HomeEnforcer {
    const e = createHomeEnforcer({
      nat: new ConntrackEventSource(lab!.router),
      runner: lab!.router,
      backend: "nftables",
      action: "block",
      ...opts,
    });
    enforcers.push(e);
    return e;
  }

  function scope(lifetime: number): Record<string, unknown> {
    return {
      "target-prefix": ["203.0.113.5/32"],
      "target-port-range": [{ "lower-port": 5555 }],
      "target-protocol": [17],
      "ietf-dots-call-home:source-prefix": [`${seen.address}/32`],
      "ietf-dots-call-home:source-port-range": [{ "lower-port": seen.port }],
      lifetime,
    };
  }

  async function tableTags(): Promise<string[]> {
    const els = await new NftablesBackend(lab!.router).listElements();
    return els.map((e) => e.comment ?? "");
  }

  it("the ISP sees the device only as the router's public address", () => {
    assert.equal(seen.address, "198.51.100.2");
  });

  it("maps the NATed source to 192.168.1.10, blocks it, spares the other host, and withdrawal lifts the block", async () => {
    const e = enforcer();
    const before = await rise(lab!, 500);
    assert.ok(before.dev > 20 && before.other > 20, `both senders reach the victim before the block: ${JSON.stringify(before)}`);

    const r = await e.handle({ cuid: CUID, mid: 1, scope: scope(3600), lifetime: 3600, kind: "new" });
    assert.equal(r.outcome, "enforced", r.detail);
    assert.deepEqual(r.devices.map((d) => d.address), ["192.168.1.10"]);
    assert.equal(r.devices[0].mac, lab!.deviceMac);
    assert.deepEqual(r.devices[0].ports, [40001]);
    assert.ok(r.script?.includes("192.168.1.10 . 17 . 203.0.113.5 . 5555 timeout 3600s"), r.script);
    assert.ok((await tableTags()).includes(mitigationTag(CUID, 1)));

    await sleep(200); // packets already past the router
    const during = await rise(lab!, 1000);
    assert.equal(during.dev, 0, "the device's flood no longer reaches the victim");
    assert.ok(during.other > 50, `the other LAN host still reaches the victim: ${during.other}`);

    const ended = await e.end({ cuid: CUID, mid: 1 });
    assert.ok(ended.removed > 0);
    assert.deepEqual(await tableTags(), []);
    await sleep(200);
    const afterEnd = await rise(lab!, 1000);
    assert.ok(afterEnd.dev > 50, `withdrawal lets the device's traffic through again: ${afterEnd.dev}`);
  });

  it("manual consent with reject answers legitimate and adds no rule", async () => {
    const e = enforcer({ consent: { mode: "manual", timeoutMs: 20_000, onTimeout: "approve" } });
    const asked = new Promise<ConsentRequest>((res) => e.once("consent-request", res));
    const decided = new Promise<HandleResult>((res) => e.once("decision", res));
    const r = await e.handle({ cuid: CUID, mid: 2, scope: scope(3600), lifetime: 3600, kind: "new" });
    assert.equal(r.outcome, "pending");
    const req = await asked;
    assert.deepEqual(req.devices.map((d) => d.address), ["192.168.1.10"]);
    assert.ok(req.script.includes("add element inet dots_call_home block4"));
    assert.equal(e.reject(2), true);
    const d = await decided;
    assert.equal(d.outcome, "legitimate");
    assert.equal(d.reason, "consent-rejected");
    assert.ok(!(await tableTags()).includes(mitigationTag(CUID, 2)));
    const flow = await rise(lab!, 500);
    assert.ok(flow.dev > 20, "the device is not blocked");
    // a refresh of the rejected mitigation gets the same answer without asking again
    const again = await e.handle({ cuid: CUID, mid: 2, scope: scope(3600), lifetime: 3600, kind: "refresh" });
    assert.equal(again.outcome, "legitimate");
  });

  it("a 3 s lifetime expires in the kernel by itself and traffic flows again", async () => {
    const e = enforcer();
    const expired = new Promise<void>((res) => e.on("enforcement", (c) => c.change === "expired" && res()));
    const r = await e.handle({ cuid: CUID, mid: 3, scope: scope(3), lifetime: 3, kind: "new" });
    assert.equal(r.outcome, "enforced", r.detail);
    await sleep(200);
    assert.equal((await rise(lab!, 1000)).dev, 0, "blocked while the lifetime runs");
    await waitFor("the kernel to drop the element", async () => !(await tableTags()).includes(mitigationTag(CUID, 3)), 6000, 200);
    await expired;
    await sleep(200);
    assert.ok((await rise(lab!, 1000)).dev > 50, "traffic flows again after expiry");
  });
});
