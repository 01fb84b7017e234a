// Which conntrack flows belong to an attack (RFC 9066 section 5.3.2), and the index that must give
// exactly the same answer as a full scan.
import { strict as assert } from "node:assert";
import fc from "fast-check";
import { parseConntrackLine, type ConntrackFlow } from "../../../src/home/conntrack-parse";
import { FlowIndex, matchFlow } from "../../../src/home/flow-index";
import { scopeToQuery } from "../../../src/home/scope";
import { InvalidScopeError } from "../../../src/home/errors";
import { fixture } from "./fixtures";

const CH = "ietf-dots-call-home:";
const all = fixture("list-extended.txt")
  .split("\n")
  .map(parseConntrackLine)
  .filter((p) => p !== undefined)
  .map((p) => p!.flow);

function q(extra: Record<string, unknown>) {
  return scopeToQuery({ "target-prefix": ["203.0.113.5/32"], [`${CH}source-prefix`]: ["198.51.100.2/32"], ...extra });
}

function devicesOf(flows: ConntrackFlow[]): string[] {
  return [...new Set(flows.map((f) => `${f.orig.src} ${f.protocol}`))].sort();
}

describe("attack flow matching", () => {
  it("finds the device by the public source port the ISP saw", () => {
    const m = all.filter((f) => matchFlow(q({ [`${CH}source-port-range`]: [{ "lower-port": 49149 }], "target-protocol": [17] }), f));
    assert.deepEqual(devicesOf(m), ["192.168.1.10 17"]);
  });

  it("tells two LAN hosts behind one public address apart by the port range", () => {
    const both = all.filter((f) =>
      matchFlow(q({ [`${CH}source-port-range`]: [{ "lower-port": 49000, "upper-port": 53000 }], "target-protocol": [17] }), f),
    );
    assert.deepEqual(devicesOf(both), ["192.168.1.10 17", "192.168.1.11 17"]);
    const one = all.filter((f) => matchFlow(q({ [`${CH}source-port-range`]: [{ "lower-port": 52256 }] }), f));
    assert.deepEqual(devicesOf(one), ["192.168.1.11 17"]);
  });

  it("requires the target port and protocol when the scope names them", () => {
    assert.equal(all.filter((f) => matchFlow(q({ "target-port-range": [{ "lower-port": 8080 }], "target-protocol": [6] }), f)).length, 1);
    assert.equal(all.filter((f) => matchFlow(q({ "target-port-range": [{ "lower-port": 8081 }], "target-protocol": [6] }), f)).length, 0);
    assert.equal(all.filter((f) => matchFlow(q({ "target-port-range": [{ "lower-port": 8080 }], "target-protocol": [17] }), f)).length, 0);
  });

  it("matches ICMP by the type the device sent, and never by port", () => {
    const echo = all.filter((f) => matchFlow(q({ [`${CH}source-icmp-type-range`]: [{ "lower-type": 8 }] }), f));
    assert.deepEqual(devicesOf(echo), ["192.168.1.10 1"]);
    assert.equal(
      all.filter((f) => matchFlow(q({ [`${CH}source-icmp-type-range`]: [{ "lower-type": 0 }] }), f)).length,
      0,
      "the reply's type 0 is not the attack",
    );
    assert.equal(
      all.filter((f) => matchFlow(q({ [`${CH}source-port-range`]: [{ "lower-port": 4660 }] }), f)).length,
      0,
      "an ICMP id is no port",
    );
  });

  it("matches IPv6 directly (no NAT): source-prefix is the device", () => {
    const v6 = scopeToQuery({
      "target-prefix": ["2001:db8:c000::/64"],
      [`${CH}source-prefix`]: ["2001:db8:1::10/128"],
      "target-protocol": [58],
      [`${CH}source-icmp-type-range`]: [{ "lower-type": 128, "upper-type": 129 }],
    });
    assert.deepEqual(devicesOf(all.filter((f) => matchFlow(v6, f))), ["2001:db8:1::10 58"]);
    const wide = scopeToQuery({ "target-prefix": ["2001:db8:c000::5/128"], [`${CH}source-prefix`]: ["2001:db8:1::/64"] });
    assert.equal(all.filter((f) => matchFlow(wide, f)).length, 4);
  });

  it("does not match a target outside target-prefix or a source outside source-prefix", () => {
    assert.equal(
      all.filter((f) => matchFlow(scopeToQuery({ "target-prefix": ["203.0.113.6/32"], [`${CH}source-prefix`]: ["198.51.100.2/32"] }), f))
        .length,
      0,
    );
    assert.equal(
      all.filter((f) => matchFlow(scopeToQuery({ "target-prefix": ["203.0.113.0/24"], [`${CH}source-prefix`]: ["198.51.100.3/32"] }), f))
        .length,
      0,
    );
  });
});

describe("mitigation scope -> query", () => {
  it("accepts a whole mitigation-scope body with one entry", () => {
    const query = scopeToQuery({
      "ietf-dots-signal-channel:mitigation-scope": {
        scope: [{ "target-prefix": ["203.0.113.5/32"], [`${CH}source-prefix`]: ["198.51.100.2"] }],
      },
    });
    assert.equal(query.sourcePrefixes[0].text, "198.51.100.2/32");
  });

  it("names the offending field of a bad scope", () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ "target-prefix": ["203.0.113.5/32"] }, "source-prefix"],
      [{ [`${CH}source-prefix`]: ["198.51.100.2/32"] }, "target-prefix"],
      [{ "target-prefix": ["203.0.113.5/33"], [`${CH}source-prefix`]: ["198.51.100.2/32"] }, "target-prefix[0]"],
      [{ "target-prefix": ["victim.example"], [`${CH}source-prefix`]: ["198.51.100.2/32"] }, "target-prefix[0]"],
      [
        {
          "target-prefix": ["203.0.113.5/32"],
          [`${CH}source-prefix`]: ["198.51.100.2/32"],
          [`${CH}source-port-range`]: [{ "lower-port": 9, "upper-port": 8 }],
        },
        "source-port-range[0]",
      ],
      [
        { "target-prefix": ["203.0.113.5/32"], [`${CH}source-prefix`]: ["198.51.100.2/32"], "target-protocol": [256] },
        "target-protocol[0]",
      ],
      [
        {
          "target-prefix": ["203.0.113.5/32"],
          [`${CH}source-prefix`]: ["198.51.100.2/32"],
          [`${CH}source-icmp-type-range`]: [{ "lower-type": 300 }],
        },
        "source-icmp-type-range[0].lower-type",
      ],
    ];
    for (const [scope, fieldName] of cases) {
      assert.throws(
        () => scopeToQuery(scope),
        (e: unknown) => e instanceof InvalidScopeError && e.field === fieldName,
        fieldName,
      );
    }
  });
});

// Random tables from small pools, so queries hit often.
const addr4 = fc.constantFrom("192.168.1.10", "192.168.1.11", "192.168.1.12");
const pub4 = fc.constantFrom("198.51.100.2", "198.51.100.3");
const tgt4 = fc.constantFrom("203.0.113.5", "203.0.113.6", "203.0.113.77");
const port = fc.integer({ min: 1000, max: 1010 });
const flowArb = fc
  .record({
    proto: fc.constantFrom(6, 17, 1),
    src: addr4,
    pub: pub4,
    dst: tgt4,
    sport: port,
    pport: port,
    dport: port,
    type: fc.constantFrom(0, 8),
  })
  .map((r): ConntrackFlow => ({
    family: 4,
    protocol: r.proto,
    orig:
      r.proto === 1
        ? { src: r.src, dst: r.dst, type: r.type, code: 0, id: r.sport }
        : { src: r.src, dst: r.dst, sport: r.sport, dport: r.dport },
    reply:
      r.proto === 1
        ? { src: r.dst, dst: r.pub, type: 0, code: 0, id: r.sport }
        : { src: r.dst, dst: r.pub, sport: r.dport, dport: r.pport },
    flags: [],
  }));
const scopeArb = fc.record({
  src: fc.constantFrom("198.51.100.2/32", "198.51.100.0/30", "198.51.100.3/32"),
  tgt: fc.constantFrom("203.0.113.5/32", "203.0.113.0/24", "203.0.113.77/32"),
  ports: fc.option(fc.tuple(port, fc.integer({ min: 0, max: 4 })), { nil: undefined }),
  types: fc.option(fc.constantFrom(0, 8), { nil: undefined }),
  proto: fc.option(fc.constantFrom(6, 17, 1), { nil: undefined }),
  tport: fc.option(port, { nil: undefined }),
});

describe("flow index", () => {
  it("answers every lookup exactly like a full scan, also after removals", () => {
    fc.assert(
      fc.property(
        fc.array(flowArb, { maxLength: 80 }),
        fc.array(scopeArb, { minLength: 1, maxLength: 5 }),
        fc.nat(),
        (flows, scopes, cut) => {
          const index = new FlowIndex();
          for (const f of flows) index.upsert(f);
          const removed = flows.slice(0, cut % (flows.length + 1));
          for (const f of removed) index.remove(f);
          const live = [...index.all()];
          for (const s of scopes) {
            const query = scopeToQuery({
              "target-prefix": [s.tgt],
              [`${CH}source-prefix`]: [s.src],
              ...(s.ports ? { [`${CH}source-port-range`]: [{ "lower-port": s.ports[0], "upper-port": s.ports[0] + s.ports[1] }] } : {}),
              ...(s.types !== undefined ? { [`${CH}source-icmp-type-range`]: [{ "lower-type": s.types }] } : {}),
              ...(s.proto !== undefined ? { "target-protocol": [s.proto] } : {}),
              ...(s.tport !== undefined ? { "target-port-range": [{ "lower-port": s.tport }] } : {}),
            });
            const expected = live.filter((f) => matchFlow(query, f)).length;
            assert.equal(index.lookup(query).length, expected);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("replaces an entry seen twice (event after listing) and forgets it on DESTROY", () => {
    const index = new FlowIndex();
    const lines = fixture("events-extended.txt")
      .split("\n")
      .map(parseConntrackLine)
      .filter((p) => p !== undefined);
    for (const p of lines) index.upsert(p!.flow);
    assert.equal(index.size, 5, "five connections, updates replace");
    for (const p of fixture("events-destroy.txt").split("\n").map(parseConntrackLine)) if (p) index.remove(p.flow);
    assert.equal(index.size, 2, "the three destroyed connections are gone");
  });

  it("refuses flows beyond its limit instead of growing", () => {
    const index = new FlowIndex(2);
    const fl = all.slice(0, 3);
    assert.deepEqual(
      fl.map((f) => index.upsert(f)),
      [true, true, false],
    );
    assert.deepEqual(index.stats(), { flows: 2, refused: 1 });
  });
});
