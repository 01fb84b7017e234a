import { strict as assert } from "node:assert";
import { helper, nodeModule } from "./support";

const requestNode = nodeModule("dots-mitigation-request");

const scopeOf = (payload: any) => payload["ietf-dots-signal-channel:mitigation-scope"].scope[0]; // eslint-disable-line @typescript-eslint/no-explicit-any

function flow(overrides: Record<string, unknown>): unknown[] {
  return [
    {
      id: "req",
      type: "dots-mitigation-request",
      z: "t",
      home: "home-1",
      targetPrefix: "203.0.113.5",
      sourcePrefix: "198.51.100.7/32",
      sourcePort: "40000-40100, 5555",
      targetPort: "443",
      protocol: "tcp, 17",
      icmpType: "",
      lifetime: "600",
      attackDescription: "SYN flood",
      wires: [["out"]],
      ...overrides,
    },
    { id: "out", type: "helper", z: "t" },
    { id: "c1", type: "catch", z: "t", scope: null, uncaught: false, wires: [["caught"]] },
    { id: "caught", type: "helper", z: "t" },
    { id: "t", type: "tab" },
  ];
}

describe("dots-mitigation-request node", function () {
  afterEach(async () => {
    await helper.unload();
  });

  it("builds the DOTS JSON view from the form and routes it to the home", async () => {
    await helper.load([requestNode], flow({}));
    const out = helper.getNode("out");
    const got = new Promise<any>((resolve) => out.on("input", resolve)); // eslint-disable-line @typescript-eslint/no-explicit-any
    helper.getNode("req").receive({ payload: "go" });
    const msg = await got;
    const scope = scopeOf(msg.payload);
    assert.deepEqual(scope["target-prefix"], ["203.0.113.5/32"]);
    assert.deepEqual(scope["ietf-dots-call-home:source-prefix"], ["198.51.100.7/32"]);
    assert.deepEqual(scope["ietf-dots-call-home:source-port-range"], [
      { "lower-port": 40000, "upper-port": 40100 },
      { "lower-port": 5555 },
    ]);
    assert.deepEqual(scope["target-port-range"], [{ "lower-port": 443 }]);
    assert.deepEqual(scope["target-protocol"], [6, 17]);
    assert.equal(scope.lifetime, 600);
    assert.equal(scope["ietf-dots-telemetry:attack-detail"][0]["attack-description"], "SYN flood");
    assert.equal(msg.dots.session, "home-1");
    assert.equal(msg.dots.side, "isp");
  });

  it("reads fields from msg through TypedInput", async () => {
    await helper.load(
      [requestNode],
      flow({
        sourcePrefix: "payload.src",
        sourcePrefixType: "msg",
        home: "dots.session",
        homeType: "msg",
        icmpType: "payload.icmp",
        icmpTypeType: "msg",
        protocol: "icmp",
      }),
    );
    const out = helper.getNode("out");
    const got = new Promise<any>((resolve) => out.on("input", resolve)); // eslint-disable-line @typescript-eslint/no-explicit-any
    helper.getNode("req").receive({ payload: { src: ["2001:db8:123::1"], icmp: "8" }, dots: { session: "home-9" } });
    const msg = await got;
    const scope = scopeOf(msg.payload);
    assert.deepEqual(scope["ietf-dots-call-home:source-prefix"], ["2001:db8:123::1/128"]);
    assert.deepEqual(scope["ietf-dots-call-home:source-icmp-type-range"], [{ "lower-type": 8 }]);
    assert.equal(msg.dots.session, "home-9");
  });

  const invalid: Array<[string, Record<string, unknown>, RegExp]> = [
    ["a bad source prefix", { sourcePrefix: "300.1.1.1" }, /source-prefix/],
    ["a missing target prefix", { targetPrefix: "" }, /target-prefix/],
    ["a port above 65535", { sourcePort: "70000" }, /source-port-range/],
    ["an inverted port range", { targetPort: "90-80" }, /target-port-range/],
    ["an unknown protocol", { protocol: "tcpx" }, /target-protocol/],
    ["an ICMP type above 255", { icmpType: "300" }, /icmp-type-range/],
    ["a zero lifetime", { lifetime: "0" }, /lifetime/],
    ["an indefinite lifetime when not allowed", { lifetime: "-1" }, /lifetime/],
    ["a msg field that is missing", { sourcePrefix: "payload.nothing", sourcePrefixType: "msg" }, /source-prefix/],
    ["a multicast target", { targetPrefix: "224.0.0.1" }, /target-prefix.*multicast/],
    ["an IPv6 multicast target", { targetPrefix: "ff02::1" }, /target-prefix.*multicast/],
    ["a broadcast target", { targetPrefix: "255.255.255.255" }, /target-prefix.*broadcast/],
    ["an unspecified target", { targetPrefix: "0.0.0.0" }, /target-prefix.*unspecified/],
  ];
  for (const [what, overrides, field] of invalid) {
    it(`rejects ${what}: Catch gets an error naming the field and status turns red`, async () => {
      await helper.load([requestNode], flow(overrides));
      const req = helper.getNode("req");
      const statuses: any[] = []; // eslint-disable-line @typescript-eslint/no-explicit-any
      req.on("call:status", (call: { args: unknown[] }) => statuses.push(call.args[0]));
      let forwarded = false;
      helper.getNode("out").on("input", () => (forwarded = true));
      const caught = new Promise<any>((resolve) => helper.getNode("caught").on("input", resolve)); // eslint-disable-line @typescript-eslint/no-explicit-any
      req.receive({ payload: "go" });
      const msg = await caught;
      assert.match(msg.error.message, field);
      assert.equal(msg.error.source.id, "req");
      assert.equal(forwarded, false);
      assert.ok(
        statuses.some((s) => s.fill === "red"),
        "red status shown",
      );
    });
  }

  it("accepts -1 when indefinite lifetimes are allowed", async () => {
    await helper.load([requestNode], flow({ lifetime: "-1", allowIndefinite: true }));
    const got = new Promise<any>((resolve) => helper.getNode("out").on("input", resolve)); // eslint-disable-line @typescript-eslint/no-explicit-any
    helper.getNode("req").receive({ payload: "go" });
    assert.equal(scopeOf((await got).payload).lifetime, -1);
  });
});
