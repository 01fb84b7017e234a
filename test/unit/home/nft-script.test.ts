// nft script generation: our own table only, set elements with the lifetime as timeout, and
// reading the table back from real `nft -j` output.
import { strict as assert } from "node:assert";
import {
  addElementsScript,
  blockElements,
  deleteElementsScript,
  elementId,
  mitigationTag,
  parseTableJson,
  quarantineElements,
  setupScript,
  checkTableName,
  kernelSetName,
  setsWithoutCounter,
  migrateSetsScript,
  adoptOwnedScript,
} from "../../../src/home/nft-script";
import { scopeToQuery } from "../../../src/home/scope";
import { InvalidScopeError } from "../../../src/home/errors";
import { fixture } from "./fixtures";

const CH = "ietf-dots-call-home:";
const device = { address: "192.168.1.10", family: 4 as const, mac: "2A:0F:71:EF:AF:8B" };

describe("nft script generation", () => {
  it("setup touches only table inet dots_call_home and rewrites its chain atomically", () => {
    const s = setupScript();
    const lines = s.trim().split("\n");
    assert.ok(
      lines.every((l) => l.startsWith("add table inet dots_call_home") || / inet dots_call_home /.test(l)),
      s,
    );
    assert.ok(!/\bdelete\b|\bflush ruleset\b/.test(s), "never deletes or flushes anything else");
    assert.ok(s.includes("flush chain inet dots_call_home forward\n"));
    assert.ok(
      s.includes(
        "add set inet dots_call_home block4 { type ipv4_addr . inet_proto . ipv4_addr . inet_service; flags interval,timeout; counter; }",
      ),
    );
    assert.ok(s.includes("add rule inet dots_call_home forward ether saddr @quarantinemac counter drop"));
    assert.equal(s.match(/add rule/g)!.length, 7);
  });

  it("blocks device -> target per protocol and port, by address and by MAC", () => {
    const q = scopeToQuery({
      "target-prefix": ["203.0.113.5/32"],
      "target-port-range": [{ "lower-port": 80 }, { "lower-port": 1000, "upper-port": 2000 }],
      "target-protocol": [6, 17],
      [`${CH}source-prefix`]: ["198.51.100.2/32"],
    });
    const els = blockElements([device], q);
    assert.deepEqual(els.map(elementId).sort(), [
      "block4 192.168.1.10 . 17 . 203.0.113.5 . 1000-2000",
      "block4 192.168.1.10 . 17 . 203.0.113.5 . 80",
      "block4 192.168.1.10 . 6 . 203.0.113.5 . 1000-2000",
      "block4 192.168.1.10 . 6 . 203.0.113.5 . 80",
      "blockmac4 2a:0f:71:ef:af:8b . 17 . 203.0.113.5 . 1000-2000",
      "blockmac4 2a:0f:71:ef:af:8b . 17 . 203.0.113.5 . 80",
      "blockmac4 2a:0f:71:ef:af:8b . 6 . 203.0.113.5 . 1000-2000",
      "blockmac4 2a:0f:71:ef:af:8b . 6 . 203.0.113.5 . 80",
    ]);
  });

  it("covers every protocol and port when the scope names none, and ICMP without ports", () => {
    const any = blockElements(
      [{ address: "192.168.1.10", family: 4 }],
      scopeToQuery({ "target-prefix": ["203.0.113.0/24"], [`${CH}source-prefix`]: ["198.51.100.2/32"] }),
    );
    assert.deepEqual(any.map(elementId), ["block4 192.168.1.10 . 0-255 . 203.0.113.0/24 . 0-65535"]);
    const icmp = blockElements(
      [{ address: "192.168.1.10", family: 4 }],
      scopeToQuery({
        "target-prefix": ["203.0.113.5/32"],
        "target-protocol": [1],
        "target-port-range": [{ "lower-port": 80 }],
        [`${CH}source-prefix`]: ["198.51.100.2/32"],
      }),
    );
    assert.deepEqual(icmp.map(elementId), ["block4 192.168.1.10 . 1 . 203.0.113.5 . 0-65535"]);
  });

  it("pairs addresses with targets of the same family; privacy addresses ride along", () => {
    const q = scopeToQuery({
      "target-prefix": ["2001:db8:c000::5/128", "203.0.113.5/32"],
      "target-protocol": [17],
      [`${CH}source-prefix`]: ["2001:db8:1::10/128"],
    });
    const els = blockElements([{ address: "2001:db8:1::10", family: 6, otherAddresses: ["2001:db8:1::beef", "192.168.1.10"] }], q);
    assert.deepEqual(els.map(elementId).sort(), [
      "block4 192.168.1.10 . 17 . 203.0.113.5 . 0-65535",
      "block6 2001:db8:1::10 . 17 . 2001:db8:c000::5 . 0-65535",
      "block6 2001:db8:1::beef . 17 . 2001:db8:c000::5 . 0-65535",
    ]);
  });

  it("quarantines every address and the MAC of the device", () => {
    const els = quarantineElements([{ ...device, otherAddresses: ["2001:db8:1::10"] }]);
    assert.deepEqual(els.map(elementId), ["quarantine4 192.168.1.10", "quarantine6 2001:db8:1::10", "quarantinemac 2a:0f:71:ef:af:8b"]);
  });

  it("adds elements with the lifetime as timeout and the mitigation as comment; -1 has no timeout", () => {
    const e = { set: "quarantine4" as const, key: "192.168.1.10" };
    assert.equal(
      addElementsScript("dots_call_home", [
        { element: e, opts: { timeoutSec: 3600, comment: mitigationTag("dz6pHjaADkaFTbjr0JGBpw", 56) } },
      ]),
      'add element inet dots_call_home quarantine4 { 192.168.1.10 timeout 3600s comment "dots:dz6pHjaADkaFTbjr0JGBpw/56" }\n',
    );
    assert.equal(
      addElementsScript("dots_call_home", [{ element: e, opts: { timeoutSec: -1 } }]),
      "add element inet dots_call_home quarantine4 { 192.168.1.10 }\n",
    );
    assert.equal(
      deleteElementsScript("dots_call_home", [e, { set: "quarantine4", key: "192.168.1.11" }]),
      "delete element inet dots_call_home quarantine4 { 192.168.1.10, 192.168.1.11 }\n",
    );
  });

  it("keeps hostile cuids and table names out of the script", () => {
    assert.equal(mitigationTag('a" } ; flush ruleset ; {', 1), "dots:a______flush_ruleset____/1");
    assert.throws(() => checkTableName("x; flush ruleset"), InvalidScopeError);
    assert.throws(() => setupScript("bad name"), InvalidScopeError);
  });

  it("reads elements, comments and expiry back from real nft -j output, keys identical to generated ones", () => {
    const els = parseTableJson(fixture("nft-list-table.json"));
    assert.equal(els.length, 23);
    const q = scopeToQuery({
      "target-prefix": ["203.0.113.0/24", "2001:db8:c000::5/128"],
      "target-port-range": [{ "lower-port": 80 }, { "lower-port": 1000, "upper-port": 2000 }],
      "target-protocol": [6, 17, 1],
      [`${CH}source-prefix`]: ["198.51.100.2/32"],
    });
    const devs = [
      { address: "192.168.1.10", family: 4 as const, mac: "2a:0f:71:ef:af:8b" },
      { address: "2001:db8:1::10", family: 6 as const, mac: "2a:0f:71:ef:af:8b" },
    ];
    const want = [...blockElements(devs, q), ...quarantineElements(devs)].map(elementId).sort();
    assert.deepEqual(els.map(elementId).sort(), want);
    const blocked = els.find((e) => e.set === "block4")!;
    assert.equal(blocked.comment, "dots:cuidA/7");
    assert.equal(blocked.timeoutSec, 3600);
    assert.ok(blocked.expiresSec! > 3500);
    const q4 = els.find((e) => e.set === "quarantine4")!;
    assert.equal(q4.timeoutSec, undefined, "indefinite");
    assert.equal(q4.comment, "dots:cuidB/8");
  });
  it("reads per-element counters; finds sets made without them; migrates them keeping elements, tags and time left", () => {
    const json = JSON.stringify({
      nftables: [
        {
          set: {
            family: "inet",
            name: "block4",
            table: "t",
            flags: ["interval", "timeout"],
            stmt: [{ counter: null }],
            elem: [
              {
                elem: {
                  val: { concat: ["192.168.1.10", "udp", "203.0.113.5", 5555] },
                  timeout: 600,
                  expires: 500,
                  comment: "dots:c/1",
                  counter: { packets: 20, bytes: 2560 },
                },
              },
            ],
          },
        },
        {
          set: {
            family: "inet",
            name: "quarantine4",
            table: "t",
            flags: ["timeout"],
            elem: [{ elem: { val: "192.168.1.11", timeout: 60, expires: 0, comment: "dots:c/2" } }],
          },
        },
        { set: { family: "inet", name: "block4_isp-a", table: "t", flags: ["interval", "timeout"], stmt: [{ counter: null }] } },
      ],
    });
    const els = parseTableJson(json);
    assert.deepEqual(
      els.map((e) => [e.set, e.key, e.packets, e.bytes]),
      [
        ["block4", "192.168.1.10 . 17 . 203.0.113.5 . 5555", 20, 2560],
        ["quarantine4", "192.168.1.11", undefined, undefined],
      ],
    );
    assert.deepEqual(setsWithoutCounter(json), ["quarantine4"]);
    assert.deepEqual(setsWithoutCounter(json, "isp-a"), [], "another owner's sets are not ours");
    const m = migrateSetsScript("t", ["quarantine4"], els);
    assert.match(m, /^add chain inet t forward .*\nflush chain inet t forward\ndelete set inet t quarantine4\n/);
    assert.match(m, /add set inet t quarantine4 \{ type ipv4_addr; flags timeout; counter; \}/);
    assert.match(m, /add element inet t quarantine4 \{ 192\.168\.1\.11 timeout 1s comment "dots:c\/2" \}\n$/);
    assert.doesNotMatch(m, /delete set inet t block4/);
  });

  it("gives each owner its own sets and chain; moves an owner's tagged elements out of the shared sets", () => {
    assert.equal(kernelSetName("block4"), "block4");
    assert.equal(kernelSetName("block4", "isp-a"), "block4_isp-a");
    assert.equal(kernelSetName("block4", 'x"; flush ruleset'), "block4_x___flush_ruleset");
    const s = setupScript("t", "isp-a");
    assert.match(s, /add chain inet t forward_isp-a \{ type filter hook forward/);
    assert.match(s, /flush chain inet t forward_isp-a\n/);
    assert.match(s, /add rule inet t forward_isp-a ip saddr \. meta l4proto \. ip daddr \. th dport @block4_isp-a counter drop/);
    assert.doesNotMatch(s, /chain inet t forward /);
    const e = { set: "block4" as const, key: "192.168.1.10 . 17 . 203.0.113.5 . 5555" };
    assert.match(addElementsScript("t", [{ element: e, opts: {} }], "isp-b"), /^add element inet t block4_isp-b \{/);
    assert.match(deleteElementsScript("t", [e], "isp-b"), /^delete element inet t block4_isp-b \{/);
    const shared = [
      { ...e, comment: "dots:isp-a:c/1", timeoutSec: 600, expiresSec: 300 },
      { set: "block4" as const, key: "192.168.1.11 . 17 . 203.0.113.5 . 5555", comment: "dots:isp-b:c/1" },
      { set: "block4" as const, key: "192.168.1.12 . 17 . 203.0.113.5 . 5555", comment: "dots:c/1" },
    ];
    assert.equal(
      adoptOwnedScript("t", shared, "isp-a"),
      "delete element inet t block4 { 192.168.1.10 . 17 . 203.0.113.5 . 5555 }\n" +
        'add element inet t block4_isp-a { 192.168.1.10 . 17 . 203.0.113.5 . 5555 timeout 300s comment "dots:isp-a:c/1" }\n',
    );
    assert.equal(adoptOwnedScript("t", shared, "isp-c"), "");
  });
});
