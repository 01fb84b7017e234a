// Static NAT tables (labs, demo, a table in the msg) and the neighbour table parser.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { StaticTableSource, parseNatSpec, staticEntriesToFlows, createNatSource } from "../../../src/home/nat-source";
import { NatLookup } from "../../../src/home/nat-lookup";
import { NeighbourTable, parseIpNeigh, parseIpAddr } from "../../../src/home/neighbours";
import { InvalidTableError } from "../../../src/home/errors";
import { CommandRunner } from "../../../src/home/runner";
import { scopeToQuery } from "../../../src/home/scope";
import { fixture, fixturePath } from "./fixtures";

const CH = "ietf-dots-call-home:";
const scope = {
  "target-prefix": ["203.0.113.5/32"],
  [`${CH}source-prefix`]: ["198.51.100.2/32"],
  [`${CH}source-port-range`]: [{ "lower-port": 49149 }],
};

describe("static NAT tables", () => {
  let dir: string;
  before(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-home-"))));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it("reads a file of captured conntrack lines", async () => {
    const src = new StaticTableSource({ file: fixturePath("list-default.txt") });
    const flows = await src.lookup(scopeToQuery(scope));
    assert.deepEqual(
      flows.map((f) => f.orig.src),
      ["192.168.1.10"],
    );
  });

  it("reads a JSON file in the short form, with MACs", async () => {
    const file = path.join(dir, "nat.json");
    fs.writeFileSync(
      file,
      JSON.stringify([
        {
          protocol: "udp",
          device: "192.168.1.10",
          devicePort: 40001,
          public: "198.51.100.2",
          publicPort: 49149,
          target: "203.0.113.5",
          targetPort: 5555,
          mac: "02:AA:00:00:00:01",
        },
      ]),
    );
    const lookup = new NatLookup({ source: new StaticTableSource({ file }) });
    const r = await lookup.lookup(scope);
    assert.equal(r.found, true);
    assert.deepEqual(
      r.devices.map((d) => [d.address, d.mac, d.ports]),
      [["192.168.1.10", "02:aa:00:00:00:01", [40001]]],
    );
  });

  it("says no device found as its own outcome", async () => {
    const lookup = new NatLookup({ source: new StaticTableSource({ entries: [] }) });
    const r = await lookup.lookup(scope);
    assert.equal(r.found, false);
    assert.equal(r.found === false && r.reason, "no-device");
  });

  it("never reports the router's own address as a device", async () => {
    const lookup = new NatLookup({
      source: new StaticTableSource({
        entries: [{ protocol: "udp", device: "198.51.100.2", devicePort: 49149, target: "203.0.113.5", targetPort: 5555 }],
      }),
      localAddresses: ["198.51.100.2"],
    });
    const r = await lookup.lookup(scope);
    assert.equal(r.found, false);
    assert.match(r.detail, /router itself/);
  });

  it("rejects malformed tables with a typed error naming the entry", async () => {
    for (const [entries, re] of [
      [{}, /JSON array/],
      [[{ protocol: "udp", device: "host.example", target: "203.0.113.5" }], /entry 0\.device/],
      [[{ protocol: "carrier-pigeon", device: "192.168.1.10", target: "203.0.113.5" }], /entry 0: protocol/],
      [[{ protocol: 17, device: "192.168.1.10", target: "2001:db8::1" }], /different IP families/],
      [["not a conntrack line"], /entry 0/],
      [[{ protocol: 17, device: "192.168.1.10", target: "203.0.113.5", devicePort: 70000 }], /devicePort/],
    ] as Array<[unknown, RegExp]>) {
      assert.throws(
        () => staticEntriesToFlows(entries),
        (e: unknown) => e instanceof InvalidTableError && re.test(e.message),
        String(re),
      );
    }
    const bad = path.join(dir, "bad.json");
    fs.writeFileSync(bad, "[ {");
    await assert.rejects(new StaticTableSource({ file: bad }).start(), InvalidTableError);
    await assert.rejects(new StaticTableSource({ file: path.join(dir, "missing.json") }).start(), InvalidTableError);
    await assert.rejects(new StaticTableSource({ file: fixturePath("list-default.txt"), maxBytes: 10 }).start(), /larger than/);
  });

  it("parses the CLI --nat forms", async () => {
    assert.equal(parseNatSpec("auto"), "auto");
    assert.deepEqual(parseNatSpec("static:/etc/nat.json"), { kind: "static", file: "/etc/nat.json" });
    assert.deepEqual(parseNatSpec("proc:/tmp/ct"), { kind: "proc", path: "/tmp/ct" });
    assert.throws(() => parseNatSpec("magic"), InvalidTableError);
    assert.equal((await createNatSource({ kind: "table", entries: [] })).kind, "static");
  });
});

describe("neighbour table", () => {
  it("parses IPv4 and IPv6 neighbours with their MACs", () => {
    const n = parseIpNeigh(fixture("ip-neigh.txt"));
    assert.equal(n.length, 8);
    assert.deepEqual(
      n.find((x) => x.address === "2001:db8:1::10"),
      { address: "2001:db8:1::10", family: 6, mac: "2a:0f:71:ef:af:8b", dev: "br0", state: "REACHABLE" },
    );
    assert.equal(parseIpNeigh("192.168.1.99 dev br0 FAILED\n").length, 0, "no lladdr, no entry");
  });

  it("keeps the MAC of an address that left, and lists the addresses sharing a MAC", () => {
    const t = new NeighbourTable(new CommandRunner());
    t.load(parseIpNeigh(fixture("ip-neigh.txt")));
    assert.deepEqual(t.addressesFor("2a:0f:71:ef:af:8b").sort(), ["192.168.1.10", "2001:db8:1::10", "fe80::280f:71ff:feef:af8b"]);
    t.load([{ address: "2001:db8:1::beef", family: 6, mac: "2a:0f:71:ef:af:8b" }]);
    assert.equal(t.macFor("2001:db8:1::10"), "2a:0f:71:ef:af:8b", "remembered after the entry aged out");
    assert.deepEqual(t.addressesFor("2a:0f:71:ef:af:8b"), ["2001:db8:1::beef"]);
  });

  it("parses the router's own addresses from ip -o addr", () => {
    const text =
      "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n4: wan    inet 198.51.100.2/24 scope global wan\n4: wan    inet6 2001:db8:ff::2/64 scope global \\       valid_lft forever\n";
    assert.deepEqual(parseIpAddr(text), ["127.0.0.1", "198.51.100.2", "2001:db8:ff::2"]);
  });
});

describe("IPv6 privacy address change", () => {
  it("finds the device by the MAC its old address had, at its new address", async () => {
    const neighbours = new NeighbourTable(new CommandRunner());
    neighbours.load([{ address: "2001:db8:1::10", family: 6, mac: "02:00:00:00:00:10" }]);
    neighbours.load([{ address: "2001:db8:1::beef", family: 6, mac: "02:00:00:00:00:10" }]); // ::10 aged out
    const source = new StaticTableSource({
      entries: [{ protocol: "udp", device: "2001:db8:1::beef", devicePort: 40022, target: "2001:db8:c000::5", targetPort: 5555 }],
    });
    const lookup = new NatLookup({ source, neighbours });
    const r = await lookup.lookup({
      "target-prefix": ["2001:db8:c000::5/128"],
      [`${CH}source-prefix`]: ["2001:db8:1::10/128"],
      "target-protocol": [17],
    });
    assert.equal(r.found, true);
    assert.deepEqual(
      r.devices.map((d) => [d.address, d.mac, d.otherAddresses, d.flows.length]),
      [["2001:db8:1::beef", "02:00:00:00:00:10", ["2001:db8:1::10"], 1]],
    );
    assert.match(r.detail, /found by its MAC/);
    const unknown = await lookup.lookup({ "target-prefix": ["2001:db8:c000::5/128"], [`${CH}source-prefix`]: ["2001:db8:1::99/128"] });
    assert.equal(unknown.found, false, "an address never seen stays not found");
  });
});
