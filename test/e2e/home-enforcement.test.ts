// End to end on real conntrack and nftables: a LAN device floods a victim through a NAT router;
// the ISP side reads the NATed source; the router maps it back to the device through its live
// conntrack table and blocks it, while another LAN host keeps reaching the victim.
import { strict as assert } from "node:assert";
import { hasCommand, isRoot, requireOrSkip } from "../support/env";
import { createLab, sleep, waitFor, type Lab, type Sender } from "../support/netns";
import { ConntrackEventSource, ConntrackListSource, ProcConntrackSource, createNatSource } from "../../src/home/nat-source";
import { NatLookup } from "../../src/home/nat-lookup";
import { createHomeEnforcer, type HomeEnforcer, type HandleResult, type ConsentRequest } from "../../src/home/enforcer";
import { NftablesBackend } from "../../src/home/filter-backend";
import { addElementsScript, mitigationTag } from "../../src/home/nft-script";
import { NftError } from "../../src/home/errors";
import { scopeToQuery } from "../../src/home/scope";
import { wireDialer } from "../../src/home/wiring";
import { HomeResources, type ResourceResponse } from "../../src/dots/home-resources";
import { MitigationStore } from "../../src/dots/mitigation-store";
import { SessionConfig } from "../../src/dots/session-config";
import { decodeDotsCbor, encodeDotsCbor } from "../../src/cbor";
import { Code, CONTENT_FORMAT_DOTS_CBOR } from "../../src/coap/message";

const CUID = "dz6pHjaADkaFTbjr0JGBpw";

/** Packets the victim counted from each sender over a window. */
async function rise(lab: Lab, ms: number): Promise<{ dev: number; other: number; dev6: number }> {
  const a = await lab.counters();
  await sleep(ms);
  const b = await lab.counters();
  return { dev: b.dev - a.dev, other: b.other - a.other, dev6: b.dev6 - a.dev6 };
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
    senders.push(
      lab.startSender({
        from: "lan",
        target: "203.0.113.5",
        port: 5555,
        tag: "dev",
        sourcePort: 40001,
        packetsPerSecond: 200,
        maxSeconds: 55,
      }),
    );
    senders.push(
      lab.startSender({
        from: "lan2",
        target: "203.0.113.5",
        port: 5555,
        tag: "h2x",
        sourcePort: 40002,
        packetsPerSecond: 200,
        maxSeconds: 55,
      }),
    );
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
    const els = await new NftablesBackend(lab!.router).list();
    return els.map((e) => e.comment ?? "");
  }

  it("the ISP sees the device only as the router's public address", () => {
    assert.equal(seen.address, "198.51.100.2");
  });

  it("every kernel source maps the NATed source to the device: conntrack listing, event index, /proc, auto", async () => {
    const sources = [
      new ConntrackListSource(lab!.router),
      new ConntrackEventSource(lab!.router),
      new ProcConntrackSource(lab!.router),
      await createNatSource("auto", { runner: lab!.router }),
    ];
    for (const source of sources) {
      const lookup = new NatLookup({ source, runner: lab!.router });
      try {
        const r = await lookup.lookup(scope(3600));
        assert.equal(r.found, true, source.kind);
        assert.deepEqual(
          r.devices.map((d) => [d.address, d.mac, d.ports, d.publicPorts]),
          [["192.168.1.10", lab!.deviceMac, [40001], [seen.port]]],
          source.kind,
        );
      } finally {
        await lookup.close();
      }
    }
  });

  it("maps the NATed source to 192.168.1.10, blocks it, spares the other host, and withdrawal lifts the block", async () => {
    const e = enforcer();
    const before = await rise(lab!, 500);
    assert.ok(before.dev > 20 && before.other > 20, `both senders reach the victim before the block: ${JSON.stringify(before)}`);

    const r = await e.handle({ cuid: CUID, mid: 1, scope: scope(3600), lifetime: 3600, kind: "new" });
    assert.equal(r.outcome, "enforced", r.detail);
    assert.deepEqual(
      r.devices.map((d) => d.address),
      ["192.168.1.10"],
    );
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
    assert.deepEqual(
      req.devices.map((d) => d.address),
      ["192.168.1.10"],
    );
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
  it("the conntrack event index follows the kernel (NEW and DESTROY) and answers from memory", async () => {
    const src = new ConntrackEventSource(lab!.router);
    try {
      await src.start();
      assert.equal(src.inSync, true);
      const hits = src.index.lookup(scopeToQuery(scope(3600)));
      assert.deepEqual(
        hits.map((f) => f.orig.src),
        ["192.168.1.10"],
      );
      const probe = scopeToQuery({
        "target-prefix": ["203.0.113.5/32"],
        "target-port-range": [{ "lower-port": 5556 }],
        "ietf-dots-call-home:source-prefix": ["198.51.100.2/32"],
      });
      assert.equal(src.index.lookup(probe).length, 0);
      lab!.exec("lan2", ["bash", "-c", "echo h2x > /dev/udp/203.0.113.5/5556"]);
      const added = await waitFor("a NEW event for the new flow", async () => {
        const h = src.index.lookup(probe);
        return h.length > 0 ? h : undefined;
      });
      assert.equal(added[0].orig.src, "192.168.1.11");
      lab!.exec("router", ["conntrack", "-D", "-p", "udp", "--orig-src", "192.168.1.11", "--orig-port-dst", "5556"]);
      await waitFor("the DESTROY event", async () => src.index.lookup(probe).length === 0);
    } finally {
      await src.close();
    }
  });

  it("IPv6 without NAT: matches the device directly and its MAC keeps it blocked after a privacy-address change", async () => {
    const first = lab!.startSender({
      from: "lan",
      target: "2001:db8:c000::5",
      port: 5555,
      tag: "dev",
      sourcePort: 40011,
      sourceAddress: "2001:db8:1::10",
    });
    senders.push(first);
    await waitFor("IPv6 flood at the victim", async () => (await rise(lab!, 300)).dev6 > 10);
    const e = enforcer();
    const r = await e.handle({
      cuid: CUID,
      mid: 20,
      scope: {
        "target-prefix": ["2001:db8:c000::5/128"],
        "target-protocol": [17],
        "target-port-range": [{ "lower-port": 5555 }],
        "ietf-dots-call-home:source-prefix": ["2001:db8:1::10/128"],
        "ietf-dots-call-home:source-port-range": [{ "lower-port": 40011 }],
      },
      lifetime: 600,
    });
    assert.equal(r.outcome, "enforced", r.detail);
    assert.deepEqual(
      r.devices.map((d) => [d.address, d.mac]),
      [["2001:db8:1::10", lab!.deviceMac]],
    );
    assert.ok(r.script!.includes(`add element inet dots_call_home blockmac6 { ${lab!.deviceMac} . 17 . 2001:db8:c000::5 . 5555`), r.script);
    await sleep(200);
    assert.equal((await rise(lab!, 800)).dev6, 0, "blocked");
    // the device moves to a new privacy address and carries on
    lab!.exec("lan", ["ip", "addr", "add", "2001:db8:1::beef/64", "dev", "eth0", "nodad"]);
    await first.stop();
    const second = lab!.startSender({
      from: "lan",
      target: "2001:db8:c000::5",
      port: 5555,
      tag: "dev",
      sourcePort: 40012,
      sourceAddress: "2001:db8:1::beef",
    });
    senders.push(second);
    await sleep(300);
    assert.equal((await rise(lab!, 1000)).dev6, 0, "still blocked by its MAC from the new address");
    await e.end({ cuid: CUID, mid: 20 });
    await sleep(200);
    assert.ok((await rise(lab!, 800)).dev6 > 50, "withdrawal lifts it");
    await second.stop();
  });

  it("issue 12 #2: a scope re-issued under a higher mid (other source port) replaces the old mid's elements, no orphan", async () => {
    const e = enforcer();
    const store = new MitigationStore();
    const home = new HomeResources({
      store,
      config: new SessionConfig(),
      codec: { encode: (j) => encodeDotsCbor(j), decode: (b) => decodeDotsCbor(b) },
      homePrefixes: [`${seen.address}/32`],
      decisionWaitMs: 10_000,
    });
    const unwire = wireDialer(home, e);
    const put = (mid: number, sourcePort: number) =>
      new Promise<ResourceResponse>((respond) =>
        home.handle({
          method: Code.PUT,
          path: [".well-known", "dots", "mitigate", `cuid=${CUID}`, `mid=${mid}`],
          contentFormat: CONTENT_FORMAT_DOTS_CBOR,
          payload: encodeDotsCbor({
            "ietf-dots-signal-channel:mitigation-scope": {
              scope: [{ ...scope(3600), "ietf-dots-call-home:source-port-range": [{ "lower-port": sourcePort }] }],
            },
          }),
          respond,
        }),
      );
    try {
      // mid 60 names a neighbouring source port; the ISP corrects it under mid 61 (same target).
      assert.equal((await put(60, seen.port + 1)).code, Code.Created);
      assert.ok((await tableTags()).includes(mitigationTag(CUID, 60)));
      assert.equal((await put(61, seen.port)).code, Code.Created);
      await waitFor("mid 60's elements to leave the table", async () => {
        const tags = await tableTags();
        return !tags.includes(mitigationTag(CUID, 60)) && tags.includes(mitigationTag(CUID, 61)) ? true : undefined;
      });
      await sleep(200);
      assert.equal((await rise(lab!, 500)).dev, 0, "the device stays blocked by mid 61");
    } finally {
      unwire();
      home.dropConnectionState();
      store.clear();
      await e.end({ cuid: CUID, mid: 60 });
      await e.end({ cuid: CUID, mid: 61 });
    }
    assert.deepEqual(await tableTags(), []);
  });

  it("a refresh extends the kernel timeout, also to indefinite", async () => {
    const e = enforcer();
    assert.equal((await e.handle({ cuid: CUID, mid: 40, scope: scope(5), lifetime: 5 })).outcome, "enforced");
    const r = await e.handle({ cuid: CUID, mid: 40, scope: scope(3600), lifetime: 3600, kind: "refresh" });
    assert.equal(r.outcome, "enforced");
    const els = (await new NftablesBackend(lab!.router).list()).filter((x) => x.comment === mitigationTag(CUID, 40));
    assert.ok(els.length > 0);
    assert.ok(
      els.every((x) => x.expiresSec! > 3000),
      JSON.stringify(els),
    );
    // to an indefinite lifetime: `add` never drops a timeout, so the elements are re-added without one
    const forever = await e.handle({ cuid: CUID, mid: 40, scope: scope(-1), lifetime: -1, kind: "refresh" });
    assert.equal(forever.outcome, "enforced");
    const after = (await new NftablesBackend(lab!.router).list()).filter((x) => x.comment === mitigationTag(CUID, 40));
    assert.ok(after.length === els.length && after.every((x) => x.expiresSec === undefined), JSON.stringify(after));
    assert.equal((await rise(lab!, 500)).dev, 0, "still blocked throughout");
    await e.end({ cuid: CUID, mid: 40 });
    assert.deepEqual(await tableTags(), []);
  });

  it("the block survives a restart; reconcile adopts what is believed active and removes the rest", async () => {
    const e1 = enforcer();
    assert.equal((await e1.handle({ cuid: CUID, mid: 30, scope: scope(3600), lifetime: 3600 })).outcome, "enforced");
    await e1.close(); // the process goes away without withdrawing
    await sleep(200);
    assert.equal((await rise(lab!, 800)).dev, 0, "the kernel keeps blocking without us");
    const e2 = enforcer();
    const rep = await e2.reconcile([{ cuid: CUID, mid: 30 }]);
    assert.deepEqual(rep.kept, [{ cuid: CUID, mid: 30 }]);
    assert.deepEqual(rep.removed, []);
    assert.deepEqual(
      e2.activeMitigations().map((a) => a.mid),
      [30],
    );
    const ended = await e2.end({ cuid: CUID, mid: 30 });
    assert.ok(ended.removed > 0);
    await sleep(200);
    assert.ok((await rise(lab!, 800)).dev > 50);

    const e3 = enforcer();
    await e3.handle({ cuid: CUID, mid: 31, scope: scope(3600), lifetime: 3600 });
    await e3.close();
    const e4 = enforcer();
    const rep4 = await e4.reconcile([]);
    assert.ok(rep4.removed.length > 0 && rep4.removed.every((x) => x.comment === mitigationTag(CUID, 31)));
    assert.deepEqual(await tableTags(), []);
  });

  it("an nft error is typed, carries nft's message, and applies nothing (one transaction)", async () => {
    const b = new NftablesBackend(lab!.router);
    const good = addElementsScript("dots_call_home", [
      { element: { set: "quarantine4", key: "192.168.1.10" }, opts: { comment: "dots:atomic/1" } },
    ]);
    const script = good + "add element inet dots_call_home quarantine4 { 2001:db8::1 }\n";
    await assert.rejects(
      b.apply(script),
      (err: unknown) => err instanceof NftError && /Error/.test(err.nftMessage) && err.script === script,
    );
    assert.ok(!(await tableTags()).includes("dots:atomic/1"), "the valid half was not applied");
    assert.ok((await rise(lab!, 500)).dev > 20, "the device is not quarantined");
  });

  it("dry-run returns exactly the script the nftables backend applies", async () => {
    const dry = enforcer({ backend: "dry-run" });
    const real = enforcer();
    const input = { cuid: CUID, mid: 50, scope: scope(600), lifetime: 600 };
    const a = await dry.handle(input);
    const b = await real.handle(input);
    assert.equal(a.outcome, "enforced");
    assert.equal(b.outcome, "enforced");
    assert.equal(a.script, b.script);
    await real.end(input);
  });

  it("quarantine stops everything the device forwards, by address and MAC, and spares the other host", async () => {
    const e = enforcer({ action: "quarantine" });
    const r = await e.handle({ cuid: CUID, mid: 60, scope: scope(600), lifetime: 600 });
    assert.equal(r.outcome, "enforced", r.detail);
    assert.ok(r.script!.includes("add element inet dots_call_home quarantine4 { 192.168.1.10 timeout 600s"), r.script);
    assert.ok(r.script!.includes(`add element inet dots_call_home quarantinemac { ${lab!.deviceMac} timeout 600s`), r.script);
    await sleep(200);
    const during = await rise(lab!, 1000);
    assert.equal(during.dev, 0);
    assert.ok(during.other > 50);
    // any other destination too: the block covered port 5555 only, quarantine covers everything
    const probe = () => lab!.exec("lan", ["bash", "-c", "for i in 1 2 3 4 5; do echo x > /dev/udp/203.0.113.5/7777; done"]);
    const p0 = (await lab!.counters()).probe;
    probe();
    await sleep(300);
    assert.equal((await lab!.counters()).probe, p0, "a new flow to another port is dropped too");
    await e.end({ cuid: CUID, mid: 60 });
    await sleep(200);
    assert.ok((await rise(lab!, 800)).dev > 50);
    probe();
    await waitFor("the probe to arrive after the quarantine ends", async () => (await lab!.counters()).probe >= p0 + 5, 3000);
  });

  it("IPv6: a mitigation naming the device's old privacy address finds it at its new one through the MAC", async () => {
    const e = enforcer();
    const old = lab!.startSender({
      from: "lan",
      target: "2001:db8:c000::5",
      port: 5555,
      tag: "dev",
      sourcePort: 40021,
      sourceAddress: "2001:db8:1::10",
    });
    senders.push(old);
    await waitFor("IPv6 flood from the old address", async () => (await rise(lab!, 300)).dev6 > 10);
    await e.lookup.neighbours!.refresh(); // the periodic neighbour read that builds the history
    // the device moves on: new address, the old one, its neighbour entry and its flows are gone
    lab!.exec("lan", ["ip", "addr", "add", "2001:db8:1::cafe/64", "dev", "eth0", "nodad"]);
    await old.stop();
    lab!.exec("lan", ["ip", "addr", "del", "2001:db8:1::10/64", "dev", "eth0"]);
    const now = lab!.startSender({
      from: "lan",
      target: "2001:db8:c000::5",
      port: 5555,
      tag: "dev",
      sourcePort: 40022,
      sourceAddress: "2001:db8:1::cafe",
    });
    senders.push(now);
    await waitFor("IPv6 flood from the new address", async () => (await rise(lab!, 300)).dev6 > 10);
    lab!.exec("router", ["ip", "-6", "neigh", "flush", "2001:db8:1::10"]);
    spawnQuiet(lab!, ["conntrack", "-D", "-f", "ipv6", "--orig-src", "2001:db8:1::10"]);
    const r = await e.handle({
      cuid: CUID,
      mid: 70,
      scope: {
        "target-prefix": ["2001:db8:c000::5/128"],
        "target-protocol": [17],
        "ietf-dots-call-home:source-prefix": ["2001:db8:1::10/128"],
        "ietf-dots-call-home:source-port-range": [{ "lower-port": 40021 }],
      },
      lifetime: 600,
    });
    assert.equal(r.outcome, "enforced", r.detail);
    const dev = r.devices.find((d) => d.address === "2001:db8:1::cafe");
    assert.ok(dev && dev.flows.length > 0, JSON.stringify(r.devices.map((d) => d.address)));
    assert.equal(dev.mac, lab!.deviceMac);
    assert.ok(dev.otherAddresses.includes("2001:db8:1::10"));
    await sleep(200);
    assert.equal((await rise(lab!, 800)).dev6, 0, "the device is blocked at its new address");
    await e.end({ cuid: CUID, mid: 70 });
    await sleep(200);
    assert.ok((await rise(lab!, 800)).dev6 > 50);
    await now.stop();
  });
});

/** conntrack -D exits 1 when nothing matched; that is fine here. */
function spawnQuiet(lab: Lab, argv: string[]): void {
  try {
    lab.exec("router", argv);
  } catch {
    // nothing to delete
  }
}
