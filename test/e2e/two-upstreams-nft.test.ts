// Two upstream ISPs on one router (RFC 9066: one session per upstream domain): two dialers' enforcers
// share one nft table in a network namespace. With --nft-owner each, one restarting and reconciling
// leaves the other ISP's blocks in the kernel, both ways; without owners the clean-up takes all.
import { strict as assert } from "node:assert";
import { hasCommand, isRoot, requireOrSkip } from "../support/env";
import { createLab, type Lab } from "../support/netns";
import { createHomeEnforcer, type HomeEnforcer } from "../../src/home/enforcer";
import { NftablesBackend } from "../../src/home/filter-backend";
import { NatLookup } from "../../src/home/nat-lookup";
import { StaticTableSource } from "../../src/home/nat-source";

const CH = "ietf-dots-call-home:";
const TABLE_NAME = "dots_two_isps";
const FLOWS = [
  {
    protocol: "udp",
    device: "192.168.1.10",
    devicePort: 40001,
    public: "198.51.100.2",
    publicPort: 61001,
    target: "203.0.113.5",
    targetPort: 5555,
  },
  {
    protocol: "udp",
    device: "192.168.1.11",
    devicePort: 40002,
    public: "198.51.100.2",
    publicPort: 61002,
    target: "203.0.113.6",
    targetPort: 6666,
  },
];

function scope(publicPort: number, target: string, port: number): Record<string, unknown> {
  return {
    "target-prefix": [`${target}/32`],
    "target-port-range": [{ "lower-port": port }],
    "target-protocol": [17],
    [`${CH}source-prefix`]: ["198.51.100.2/32"],
    [`${CH}source-port-range`]: [{ "lower-port": publicPort }],
  };
}

describe("two upstream ISPs share one nft table (netns, real nft)", function () {
  this.timeout(60_000);
  let lab: Lab | undefined;
  const enforcers: HomeEnforcer[] = [];

  before(async function () {
    this.timeout(20_000);
    requireOrSkip(this, "root", isRoot());
    for (const tool of ["ip", "nft"]) requireOrSkip(this, tool, hasCommand(tool));
    lab = await createLab();
  });
  after(async () => {
    for (const e of enforcers.splice(0)) await e.close();
    await lab?.destroy();
  });

  function enforcer(owner: string | undefined): HomeEnforcer {
    const e = createHomeEnforcer({
      nat: new NatLookup({ source: new StaticTableSource({ entries: FLOWS }) }),
      backend: "nftables",
      runner: lab!.router,
      table: TABLE_NAME,
      action: "block",
      ...(owner !== undefined ? { owner } : {}),
    });
    enforcers.push(e);
    return e;
  }
  async function tags(): Promise<string[]> {
    // each owner has its own sets: what the whole table holds is the union
    const els = [];
    for (const owner of [undefined, "isp-a", "isp-b"]) els.push(...(await new NftablesBackend(lab!.router, TABLE_NAME, owner).list()));
    return [...new Set(els.map((e) => e.comment ?? ""))].sort();
  }
  async function flush(): Promise<void> {
    for (const e of enforcers.splice(0)) await e.close();
    lab!.exec("router", ["nft", "delete", "table", "inet", TABLE_NAME]);
  }

  it("a block by ISP A survives ISP B's restart and reconcile, and vice versa", async () => {
    const a = enforcer("isp-a");
    const b = enforcer("isp-b");
    assert.equal((await a.handle({ cuid: "cuidA", mid: 1, scope: scope(61001, "203.0.113.5", 5555), lifetime: 300 })).outcome, "enforced");
    assert.equal((await b.handle({ cuid: "cuidB", mid: 7, scope: scope(61002, "203.0.113.6", 6666), lifetime: 300 })).outcome, "enforced");
    assert.deepEqual(await tags(), ["dots:isp-a:cuidA/1", "dots:isp-b:cuidB/7"]);

    // B's dialer restarts with nothing held (its ISP withdrew everything meanwhile)
    const b2 = enforcer("isp-b");
    const repB = await b2.reconcile([]);
    assert.equal(repB.removed.length > 0, true, "B's own stale elements are removed");
    assert.deepEqual(await tags(), ["dots:isp-a:cuidA/1"], "A's block is still in the kernel");

    // B blocks again, then A restarts holding its mitigation: B's block stays, A's is kept
    assert.equal((await b2.handle({ cuid: "cuidB", mid: 8, scope: scope(61002, "203.0.113.6", 6666), lifetime: 300 })).outcome, "enforced");
    const a2 = enforcer("isp-a");
    const repA = await a2.reconcile([{ cuid: "cuidA", mid: 1 }]);
    assert.deepEqual(repA.kept, [{ cuid: "cuidA", mid: 1 }]);
    assert.equal(repA.removed.length, 0);
    assert.deepEqual(await tags(), ["dots:isp-a:cuidA/1", "dots:isp-b:cuidB/8"]);
    // and A's later withdrawal removes only A's
    await a2.end({ cuid: "cuidA", mid: 1 });
    assert.deepEqual(await tags(), ["dots:isp-b:cuidB/8"]);
    await flush();
  });

  it("an owner-less dialer's clean-up leaves owner-tagged elements alone", async () => {
    const a = enforcer("isp-a");
    assert.equal((await a.handle({ cuid: "cuidA", mid: 2, scope: scope(61001, "203.0.113.5", 5555), lifetime: 300 })).outcome, "enforced");
    const plain = enforcer(undefined);
    await plain.reconcile([]);
    assert.deepEqual(await tags(), ["dots:isp-a:cuidA/2"]);
    await flush();
  });
  it("upgrade: sets made without counters get them and keep their elements; owner-tagged elements in the shared sets move to the owner's", async () => {
    // the layout an earlier version left: shared sets without counters, one element per ISP
    const legacy = [
      `add table inet ${TABLE_NAME}`,
      `add set inet ${TABLE_NAME} block4 { type ipv4_addr . inet_proto . ipv4_addr . inet_service; flags interval,timeout; }`,
      `add chain inet ${TABLE_NAME} forward { type filter hook forward priority filter - 10; policy accept; }`,
      `add rule inet ${TABLE_NAME} forward ip saddr . meta l4proto . ip daddr . th dport @block4 counter drop`,
      `add element inet ${TABLE_NAME} block4 { 192.168.1.10 . 17 . 203.0.113.5 . 5555 timeout 300s comment "dots:isp-a:cuidA/3" }`,
      `add element inet ${TABLE_NAME} block4 { 192.168.1.11 . 17 . 203.0.113.6 . 6666 timeout 300s comment "dots:isp-b:cuidB/4" }`,
    ].join("\n");
    await lab!.router.run(["nft", "-f", "-"], { input: legacy + "\n" });
    const a = enforcer("isp-a");
    await a.start();
    const rep = await a.reconcile([{ cuid: "cuidA", mid: 3 }]);
    assert.deepEqual(rep.kept, [{ cuid: "cuidA", mid: 3 }], "A's element moved to A's own sets and is kept");
    assert.deepEqual(await tags(), ["dots:isp-a:cuidA/3", "dots:isp-b:cuidB/4"]);
    const own = await new NftablesBackend(lab!.router, TABLE_NAME, "isp-a").list();
    assert.deepEqual(
      own.map((e) => [e.set, e.key, e.packets]),
      [["block4", "192.168.1.10 . 17 . 203.0.113.5 . 5555", 0]],
    );
    assert.ok(own[0].expiresSec! > 250, "the time it had left");
    // the shared sets are the owner-less dialer's to migrate: B's element is still there, untouched
    const shared = await new NftablesBackend(lab!.router, TABLE_NAME).list();
    assert.deepEqual(
      shared.map((e) => [e.key, e.comment, e.packets]),
      [["192.168.1.11 . 17 . 203.0.113.6 . 6666", "dots:isp-b:cuidB/4", undefined]],
    );
    // B's dialer starts: its element moves to B's sets, A's is left alone
    const b = enforcer("isp-b");
    await b.start();
    assert.deepEqual((await b.reconcile([{ cuid: "cuidB", mid: 4 }])).kept, [{ cuid: "cuidB", mid: 4 }]);
    assert.deepEqual(await new NftablesBackend(lab!.router, TABLE_NAME).list(), []);
    assert.deepEqual(await tags(), ["dots:isp-a:cuidA/3", "dots:isp-b:cuidB/4"]);
    // an owner-less dialer gives the shared sets their counters
    await enforcer(undefined).start();
    const { stdout } = await lab!.router.run(["nft", "-j", "list", "set", "inet", TABLE_NAME, "block4"]);
    assert.match(stdout, /"stmt": \[\{"counter": null\}\]/);
    await flush();
  });
});
