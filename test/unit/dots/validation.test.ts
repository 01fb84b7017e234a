// Every validation rule, accepted and refused, on both sides.
import { strict as assert } from "node:assert";
import {
  MitigationValidationContext,
  MitigationValidationError,
  assertValidMitigationRequest,
  nonSourceKind,
  parsePrefix,
  prefixContains,
  prefixesOverlap,
  PrefixSyntaxError,
  validateMitigationRequest,
} from "../../../src/dots/validation";

const MS = "ietf-dots-signal-channel:mitigation-scope";
const SRC = "ietf-dots-call-home:source-prefix";

function request(overrides: Record<string, unknown> = {}, drop: string[] = []): Record<string, unknown> {
  const scope: Record<string, unknown> = {
    "target-prefix": ["198.51.100.7/32"],
    [SRC]: ["203.0.113.5/32"],
    lifetime: 3600,
    ...overrides,
  };
  for (const k of drop) delete scope[k];
  return { [MS]: { scope: [scope] } };
}

const HOME: MitigationValidationContext = { side: "home", homePrefixes: ["203.0.113.0/24", "2001:db8:123::/48"] };
const ISP: MitigationValidationContext = { side: "isp", homePrefixes: ["203.0.113.0/24", "2001:db8:123::/48"] };

function rules(json: unknown, ctx: MitigationValidationContext = HOME): string[] {
  const r = validateMitigationRequest(json, ctx);
  return r.ok ? [] : r.errors.map((e) => `${e.field} ${e.rule}`);
}

function accepts(json: unknown, ctx: MitigationValidationContext = HOME): Record<string, unknown> {
  const r = validateMitigationRequest(json, ctx);
  assert.ok(r.ok, r.ok ? "" : JSON.stringify(r.errors));
  return r.scope;
}

describe("mitigation request validation", () => {
  it("accepts the RFC 9066 examples on both sides", () => {
    for (const ctx of [HOME, ISP]) {
      accepts(request(), ctx);
      accepts({ [MS]: { scope: [{ "target-prefix": ["2001:db8:c000::/128"], [SRC]: ["2001:db8:123::1/128"], lifetime: 3600 }] } }, ctx);
      accepts(
        request({
          "ietf-dots-call-home:source-port-range": [{ "lower-port": 40000, "upper-port": 40010 }],
          "target-protocol": [6],
        }),
        ctx,
      );
    }
  });

  it("requires exactly one scope", () => {
    assert.deepEqual(rules({ [MS]: { scope: [] } }), ["scope exactly-one-scope"]);
    const two = request();
    (two[MS] as { scope: unknown[] }).scope.push({ ...((two[MS] as { scope: unknown[] }).scope[0] as object) });
    assert.deepEqual(rules(two), ["scope exactly-one-scope"]);
    assert.deepEqual(rules({ [MS]: {} }), ["scope exactly-one-scope"]);
    assert.deepEqual(rules({}), [`${MS} required`]);
    assert.deepEqual(rules("nope"), [" type"]);
  });

  it("requires target-prefix and source-prefix", () => {
    assert.deepEqual(rules(request({}, ["target-prefix"])), ["scope[0].target-prefix required"]);
    assert.deepEqual(rules(request({}, [SRC])), [`scope[0].${SRC} required`]);
    assert.deepEqual(rules(request({ "target-prefix": [] })), ["scope[0].target-prefix required"]);
  });

  it("checks prefix lengths (<=32 IPv4, <=128 IPv6)", () => {
    accepts(request({ "target-prefix": ["198.51.100.0/24", "2001:db8::/32"] }));
    assert.deepEqual(rules(request({ "target-prefix": ["198.51.100.7/33"] })), ["scope[0].target-prefix[0] prefix-length"]);
    assert.deepEqual(rules(request({ [SRC]: ["2001:db8:123::1/129"] })), [`scope[0].${SRC}[0] prefix-length`]);
  });

  it("strict address syntax: no octal/short IPv4, no zone, no bare address", () => {
    for (const bad of [
      "010.1.1.1/32",
      "1.2.3/32",
      "0x1.2.3.4/32",
      "1.2.3.4",
      "203.0.113.5/032",
      "fe80::1%eth0/128",
      "::ffff:010.1.1.1/128",
      "203.0.113.5/ 32",
      "hello",
    ]) {
      assert.deepEqual(rules(request({ [SRC]: [bad] })), [`scope[0].${SRC}[0] prefix-syntax`], bad);
    }
    assert.deepEqual(rules(request({ [SRC]: [42] })), [`scope[0].${SRC}[0] prefix-syntax`]);
    assert.deepEqual(rules(request({ [SRC]: "203.0.113.5/32" })), [`scope[0].${SRC} type`]);
  });

  it("refuses host bits beyond the prefix length, suggesting the network", () => {
    const r = validateMitigationRequest(request({ [SRC]: ["203.0.113.5/24"] }), HOME);
    assert.ok(!r.ok);
    assert.equal(r.errors[0].rule, "prefix-host-bits");
    assert.match(r.errors[0].message, /did you mean 203\.0\.113\.0\/24/);
  });

  it("source prefixes: broadcast, loopback, multicast, unspecified invalid; link-local allowed", () => {
    const ctx: MitigationValidationContext = { side: "home" };
    for (const bad of [
      "255.255.255.255/32",
      "127.0.0.1/32",
      "224.0.0.5/32",
      "0.0.0.0/0",
      "192.0.0.0/2",
      "::1/128",
      "ff02::1/128",
      "::/0",
      "::ffff:127.0.0.1/128",
    ]) {
      assert.deepEqual(rules(request({ [SRC]: [bad] }), ctx), [`scope[0].${SRC}[0] source-special`], bad);
    }
    accepts(request({ [SRC]: ["169.254.10.1/32"] }), ctx);
    accepts(request({ [SRC]: ["fe80::1/128"] }), ctx);
    accepts(request({ [SRC]: ["192.168.1.10/32"] }), ctx); // internal address behind CGN (RFC 9066 5.3.2)
  });

  it("source prefixes must lie inside homePrefixes (both sides)", () => {
    for (const ctx of [HOME, ISP]) {
      accepts(request({ [SRC]: ["203.0.113.128/25", "2001:db8:123:5::/64"] }), ctx);
      assert.deepEqual(rules(request({ [SRC]: ["203.0.113.5/32", "198.51.100.9/32"] }), ctx), [`scope[0].${SRC}[1] source-outside-home`]);
      assert.deepEqual(rules(request({ [SRC]: ["203.0.112.0/23"] }), ctx), [`scope[0].${SRC}[0] source-outside-home`]); // wider than home
    }
    accepts(request({ [SRC]: ["198.51.100.9/32"] }), { side: "home" }); // no homePrefixes: not checked
    accepts(request(), { side: "home", homePrefixes: ["203.0.113.1/24"] }); // interface-style config is the subnet
    accepts(request(), { side: "home", homePrefixes: ["203.0.113.5"] }); // a bare address is a /32
    assert.deepEqual(rules(request(), { side: "isp", homePrefixes: ["010.0.0.0/8"] }), [
      "context.homePrefixes[0] prefix-syntax",
      `scope[0].${SRC}[0] source-outside-home`,
    ]);
  });

  it("port ranges 0-65535 with upper >= lower, unique lower-port", () => {
    for (const field of ["target-port-range", "ietf-dots-call-home:source-port-range"]) {
      accepts(request({ [field]: [{ "lower-port": 0 }, { "lower-port": 1000, "upper-port": 65535 }] }));
      assert.deepEqual(rules(request({ [field]: [{ "lower-port": 70000 }] })), [`scope[0].${field}[0].lower-port port-range`]);
      assert.deepEqual(rules(request({ [field]: [{ "lower-port": 100, "upper-port": 99 }] })), [
        `scope[0].${field}[0].upper-port port-range`,
      ]);
      assert.deepEqual(rules(request({ [field]: [{ "lower-port": -1 }] })), [`scope[0].${field}[0].lower-port port-range`]);
      assert.deepEqual(rules(request({ [field]: [{ "upper-port": 80 }] })), [`scope[0].${field}[0].lower-port required`]);
      assert.deepEqual(rules(request({ [field]: [{ "lower-port": 80 }, { "lower-port": 80 }] })), [
        `scope[0].${field}[1].lower-port duplicate`,
      ]);
      assert.deepEqual(rules(request({ [field]: [{ "lower-port": 80, port: 1 }] })), [`scope[0].${field}[0] unknown-field`]);
    }
  });

  it("ICMP type ranges 0-255 with upper >= lower", () => {
    const f = "ietf-dots-call-home:source-icmp-type-range";
    accepts(request({ [f]: [{ "lower-type": 0, "upper-type": 255 }, { "lower-type": 8 }] }));
    assert.deepEqual(rules(request({ [f]: [{ "lower-type": 256 }] })), [`scope[0].${f}[0].lower-type icmp-type-range`]);
    assert.deepEqual(rules(request({ [f]: [{ "lower-type": 9, "upper-type": 8 }] })), [`scope[0].${f}[0].upper-type icmp-type-range`]);
  });

  it("target-protocol 0-255", () => {
    accepts(request({ "target-protocol": [0, 6, 17, 255] }));
    assert.deepEqual(rules(request({ "target-protocol": [6, 256] })), ["scope[0].target-protocol[1] protocol"]);
    assert.deepEqual(rules(request({ "target-protocol": ["tcp"] })), ["scope[0].target-protocol[0] protocol"]);
  });

  it("lifetime: present, integer, not 0, -1 only when allowed", () => {
    assert.deepEqual(rules(request({}, ["lifetime"])), ["scope[0].lifetime required"]);
    assert.deepEqual(rules(request({ lifetime: 0 })), ["scope[0].lifetime lifetime"]);
    assert.deepEqual(rules(request({ lifetime: 1.5 })), ["scope[0].lifetime lifetime"]);
    assert.deepEqual(rules(request({ lifetime: "3600" })), ["scope[0].lifetime lifetime"]);
    assert.deepEqual(rules(request({ lifetime: -2 })), ["scope[0].lifetime lifetime"]);
    assert.deepEqual(rules(request({ lifetime: 2 ** 32 })), ["scope[0].lifetime lifetime"]);
    assert.deepEqual(rules(request({ lifetime: -1 })), ["scope[0].lifetime lifetime-indefinite"]);
    accepts(request({ lifetime: -1 }), { ...HOME, allowIndefiniteLifetime: true });
    accepts(request({ lifetime: 1 }));
  });

  it("trigger-mitigation false is refused (RFC 9066), true is fine", () => {
    assert.deepEqual(rules(request({ "trigger-mitigation": false })), ["scope[0].trigger-mitigation trigger-mitigation"]);
    accepts(request({ "trigger-mitigation": true }));
    assert.deepEqual(rules(request({ "trigger-mitigation": "false" })), ["scope[0].trigger-mitigation type"]);
  });

  it("cuid/cdid/mid must not appear in the body", () => {
    assert.deepEqual(rules(request({ mid: 123 })), ["scope[0].mid no-ids-in-body"]);
    assert.deepEqual(rules(request({ cuid: "dz6pHjaADkaFTbjr0JGBpw", cdid: "x" })), ["scope[0].cuid no-ids-in-body"]);
  });

  it("unknown fields in the scope are named", () => {
    const r = validateMitigationRequest(request({ "source-prefix": ["203.0.113.5/32"], status: "attack-stopped" }), HOME);
    assert.ok(!r.ok);
    assert.equal(r.errors.length, 1);
    assert.equal(r.errors[0].rule, "unknown-field");
    assert.match(r.errors[0].message, /source-prefix, status/);
    assert.deepEqual(rules({ [MS]: { scope: [request()[MS] && (request()[MS] as { scope: unknown[] }).scope[0]], extra: 1 } }), [
      `${MS} unknown-field`,
    ]);
    assert.deepEqual(rules(request({ "alias-name": ["web"] })), ["scope[0] unknown-field"]);
  });

  it("target prefixes that are loopback/unspecified are not routable targets", () => {
    assert.deepEqual(rules(request({ "target-prefix": ["127.0.0.1/32"] })), ["scope[0].target-prefix[0] target-routable"]);
    assert.deepEqual(rules(request({ "target-prefix": ["0.0.0.0/0"] })), ["scope[0].target-prefix[0] target-routable"]);
  });

  it("target prefixes that are multicast, broadcast or unspecified are refused on both sides, naming the field", () => {
    for (const ctx of [HOME, ISP]) {
      for (const [bad, kind] of [
        ["224.0.0.1/32", "multicast"],
        ["239.0.0.0/8", "multicast"],
        ["ff02::1/128", "multicast"],
        ["ff00::/8", "multicast"],
        ["::ffff:224.0.0.9/128", "multicast"],
        ["255.255.255.255/32", "broadcast"],
        ["0.0.0.0/32", "unspecified"],
        ["::/128", "unspecified"],
      ]) {
        const r = validateMitigationRequest(request({ "target-prefix": ["198.51.100.7/32", bad] }), ctx);
        assert.ok(!r.ok, `${ctx.side} ${bad}`);
        assert.deepEqual(
          r.errors.map((e) => `${e.field} ${e.rule}`),
          ["scope[0].target-prefix[1] target-routable"],
          `${ctx.side} ${bad}`,
        );
        assert.match(r.errors[0].message, new RegExp(kind), `${ctx.side} ${bad}`);
      }
      accepts(request({ "target-prefix": ["198.51.100.255/32", "223.255.255.255/32", "fe80::1/128"] }), ctx);
    }
  });

  it("the directed broadcast of a home prefix is refused as target and as source when the home prefixes are known", () => {
    for (const ctx of [HOME, ISP]) {
      assert.deepEqual(rules(request({ "target-prefix": ["203.0.113.255/32"] }), ctx), ["scope[0].target-prefix[0] target-routable"]);
      assert.deepEqual(rules(request({ [SRC]: ["203.0.113.255/32"] }), ctx), [`scope[0].${SRC}[0] source-special`]);
      accepts(request({ [SRC]: ["203.0.113.0/24"] }), ctx); // the whole prefix is fine
    }
    accepts(request({ "target-prefix": ["203.0.113.255/32"] }), { side: "isp" }); // unknown home: no directed broadcast to check
  });

  it("other members are type-checked through the CBOR schema", () => {
    accepts(request({ "target-fqdn": ["www.example.com"], "attack-status": "under-attack" }));
    accepts(request({ "ietf-dots-telemetry:attack-detail": [{ "vendor-id": 32473, "attack-id": 7, "attack-severity": "high" }] }));
    assert.deepEqual(rules(request({ "attack-status": "meh" })), ["scope[0].attack-status schema"]);
    assert.deepEqual(rules(request({ "ietf-dots-telemetry:attack-detail": [{ "attack-id": "seven" }] })), [
      "scope[0].ietf-dots-telemetry:attack-detail[0].attack-id schema",
    ]);
  });

  it("reports several failures at once and returns normalised prefixes on success", () => {
    assert.deepEqual(rules(request({ lifetime: 0, "trigger-mitigation": false, [SRC]: ["127.0.0.1/32"] }), { side: "home" }), [
      `scope[0].${SRC}[0] source-special`,
      "scope[0].lifetime lifetime",
      "scope[0].trigger-mitigation trigger-mitigation",
    ]);
    const scope = accepts({
      [MS]: { scope: [{ "target-prefix": ["2001:DB8:C000:0::/64"], [SRC]: ["2001:db8:123:0:0::1/128"], lifetime: 60 }] },
    });
    assert.deepEqual(scope["target-prefix"], ["2001:db8:c000::/64"]);
    assert.deepEqual(scope[SRC], ["2001:db8:123::1/128"]);
  });

  it("assertValidMitigationRequest throws MitigationValidationError with every failure", () => {
    assert.ok(assertValidMitigationRequest(request(), ISP));
    assert.throws(
      () => assertValidMitigationRequest(request({ lifetime: 0, mid: 5 }), ISP),
      (e: unknown) =>
        e instanceof MitigationValidationError &&
        e.errors.length === 2 &&
        /scope\[0\]\.mid: .*\[no-ids-in-body\]; scope\[0\]\.lifetime: .*\[lifetime\]/.test(e.message),
    );
  });
});

describe("prefix helpers", () => {
  it("parsePrefix is strict and canonical", () => {
    assert.equal(parsePrefix("2001:DB8::0:1/128").text, "2001:db8::1/128");
    assert.equal(parsePrefix("::1.2.3.4/128").text, "::102:304/128"); // not ::ffff:1.2.3.4
    assert.equal(parsePrefix("203.0.113.7/24", { allowHostBits: true }).text, "203.0.113.0/24");
    assert.equal(parsePrefix("203.0.113.7", { allowBareAddress: true }).text, "203.0.113.7/32");
    assert.throws(
      () => parsePrefix("010.1.1.1/32"),
      (e: unknown) => e instanceof PrefixSyntaxError && e.reason === "syntax",
    );
    assert.throws(
      () => parsePrefix("1.2.3.4/33"),
      (e: unknown) => e instanceof PrefixSyntaxError && e.reason === "length",
    );
    assert.throws(
      () => parsePrefix("1.2.3.4/24"),
      (e: unknown) => e instanceof PrefixSyntaxError && e.reason === "host-bits",
    );
  });

  it("prefixContains / prefixesOverlap respect family and length", () => {
    assert.equal(prefixContains("203.0.113.0/24", "203.0.113.5/32"), true);
    assert.equal(prefixContains("203.0.113.0/24", "203.0.113.5"), true);
    assert.equal(prefixContains("203.0.113.0/24", "203.0.112.0/23"), false);
    assert.equal(prefixContains("203.0.113.0/24", "2001:db8::/32"), false);
    assert.equal(prefixContains("::/0", "2001:db8::1"), true);
    assert.equal(prefixesOverlap("203.0.112.0/23", "203.0.113.0/24"), true);
    assert.equal(prefixesOverlap("203.0.114.0/24", "203.0.113.0/24"), false);
    assert.equal(nonSourceKind("10.0.0.0/8"), null);
    assert.equal(nonSourceKind("239.1.1.1/32"), "multicast");
  });
});
