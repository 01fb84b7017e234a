// The dialer node finds the ISP by RFC 8973 DNS SRV discovery (a DNS server on loopback answers,
// node's real resolver asks), and the listener node's responses and status notifications carry
// the home name and the RFC 9132 status number beside the label.
import { strict as assert } from "node:assert";
import { freePort, helper, waitFor, collect, allNodes } from "./support";
import { loopCredentials, loopFlow } from "./flows";
import { startTestDns, type TestDnsServer } from "./dns-server";
import { makeTestPki } from "../support/certs";
import { requireFromNodeRed } from "../support/node-red";
import { createTlsServer, type TlsServer } from "../../src/transport/tls";
import { CoapEndpoint } from "../../src/coap/endpoint";
import type { Connection } from "../../src/transport/connection";

/** The loop flow with the dialer finding the ISP by discovery instead of a configured host. */
function discoveryFlow(port: number, dialer: Record<string, unknown>): unknown[] {
  return loopFlow({ port }).map((n) => ((n as { id: string }).id === "homeEp" ? { ...(n as object), ...dialer } : n));
}

describe("dialer node: RFC 8973 discovery from a domain", function () {
  this.timeout(60000);
  let dns: TestDnsServer | undefined;
  afterEach(async () => {
    await helper.unload();
    await dns?.close();
    dns = undefined;
  });

  it("with no ISP address, dials what the SRV record names and sends discovered on the session-events output", async () => {
    const port = await freePort();
    dns = await startTestDns({
      srv: { "_dots-call-home._udp.isp.test": [{ priority: 0, weight: 0, port, target: "ch.isp.test" }] },
      a: { "ch.isp.test": ["127.0.0.1"] },
    });
    // the configured port (9, discard) is never used: the record names the port
    await helper.load(
      allNodes,
      discoveryFlow(port, { hosts: "", port: 9, discoverDomain: "isp.test", dnsServers: dns.server }),
      loopCredentials,
    );
    const homeEvents = collect("homeEvents");
    const ispEvents = collect("ispEvents");
    const caught = collect("caught");
    const found = await waitFor("discovered", () => homeEvents.find((m) => m.topic === "discovered"));
    assert.deepEqual(found.payload, {
      domain: "isp.test",
      candidates: [{ host: "ch.isp.test", address: "127.0.0.1", port, transport: "dtls" }],
    });
    assert.equal(found.dots.side, "home");
    const connected = await waitFor("connected", () => homeEvents.find((m) => m.topic === "connected"));
    assert.equal(connected.payload.remotePort, port);
    assert.ok(homeEvents.indexOf(found) < homeEvents.indexOf(connected), "discovered comes before connected");
    const up = await waitFor("session-up at the ISP", () => ispEvents.find((m) => m.topic === "session-up"));
    assert.equal(up.payload.home, "home-1");
    assert.ok(dns.queries.includes("SRV _dots-call-home._udp.isp.test"), dns.queries.join(", "));
    assert.deepEqual(
      caught.map((m) => m.error.message),
      [],
    );
  });

  it("when discovery finds nothing, the configured ISP address is the fallback and the miss reaches Catch", async () => {
    const port = await freePort();
    dns = await startTestDns({ srv: { "_dots-call-home._udp.isp.test": [{ priority: 0, weight: 0, port: 0, target: "." }] } });
    await helper.load(
      allNodes,
      discoveryFlow(port, { hosts: "127.0.0.1", port, discoverDomain: "isp.test", dnsServers: dns.server }),
      loopCredentials,
    );
    const homeEvents = collect("homeEvents");
    const caught = collect("caught");
    await waitFor("connected over the fallback address", () => homeEvents.find((m) => m.topic === "connected"));
    assert.ok(!homeEvents.some((m) => m.topic === "discovered"), "nothing was discovered");
    const miss = await waitFor("the discovery miss at Catch", () =>
      caught.find((m) => /RFC 8973 discovery found no Call Home client for isp\.test/.test(m.error.message)),
    );
    assert.match(miss.error.message, /using the configured hosts/);
  });

  it("with a certificate, the ISP's must name the discovery domain; 'DNS answers are DNSSEC-validated' lets it name the SRV target", async () => {
    const pki = await makeTestPki();
    // The SRV answer for isp.example names wrong.example; the TLS listener there presents a
    // certificate (trusted CA) naming only wrong.example.
    const tls: TlsServer = createTlsServer({ certificate: { cert: pki.wrongName.cert, key: pki.wrongName.key, ca: pki.ca.cert } });
    tls.on("handshake-failed", () => undefined);
    tls.on("connection", (c: Connection) => new CoapEndpoint(c).on("protocol-error", () => undefined));
    const { port } = await tls.listen(0, "127.0.0.1");
    try {
      dns = await startTestDns({
        srv: { "_dots-call-home._tcp.isp.example": [{ priority: 0, weight: 0, port, target: "wrong.example" }] },
        a: { "wrong.example": ["127.0.0.1"] },
      });
      const flow = (discoverDnssec: boolean | undefined) => [
        { id: "t", type: "tab" },
        { id: "tc", type: "tls-config", cert: pki.home1.certPath, key: pki.home1.keyPath, ca: pki.ca.certPath, verifyservercert: true },
        {
          id: "ep",
          type: "dots-home-endpoint",
          version: 1,
          hosts: "",
          port: 9,
          transport: "tcp",
          tlsConfig: "tc",
          homePrefixes: "198.51.100.0/24",
          discoverDomain: "isp.example",
          dnsServers: dns!.server,
          ...(discoverDnssec === undefined ? {} : { discoverDnssec }),
        },
        { id: "dia", type: "dots-call-home-dialer", z: "t", endpoint: "ep", version: 2, wires: [[], [], ["events"]] },
        { id: "events", type: "helper", z: "t" },
      ];
      const tlsNode = requireFromNodeRed("@node-red/nodes/core/network/05-tls.js");
      // Saved before the setting existed (none), then unticked: the certificate must name isp.example.
      for (const setting of [undefined, false]) {
        await helper.load([tlsNode, ...allNodes], flow(setting));
        const events = collect("events");
        const down = await waitFor("refused", () => events.find((m) => m.topic === "disconnected"));
        assert.equal(down.payload.code, "CERT_NAME_MISMATCH", JSON.stringify(down.payload));
        assert.match(down.payload.reason, /isp\.example/);
        assert.ok(!events.some((m) => m.topic === "connected"));
        await helper.unload();
      }
      await helper.load([tlsNode, ...allNodes], flow(true));
      const events = collect("events");
      const up = await waitFor("connected", () => events.find((m) => m.topic === "connected" || m.topic === "disconnected"));
      assert.equal(up.topic, "connected", JSON.stringify(up.payload));
    } finally {
      await tls.close();
    }
  });

  const base = {
    type: "dots-call-home-dialer",
    port: 4647,
    transport: "udp",
    psk: "k",
    homePrefixes: "198.51.100.0/24",
    decisionWait: 1000,
    heartbeatInterval: 30,
    terminatingPeriod: 0,
  };
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    [
      "neither an ISP address nor a domain",
      { hosts: "", discoverDomain: "" },
      /errors\.no-hosts|Give at least one ISP address, or a domain to discover it from/,
    ],
    [
      "DNS servers without a domain",
      { hosts: "127.0.0.1", dnsServers: "127.0.0.1:53" },
      /errors\.dns-without-domain|DNS servers are only used to discover from a domain/,
    ],
    [
      "a domain that is no DNS name",
      { hosts: "", discoverDomain: "isp test!" },
      /(label\.discoverDomain|Discover from): "isp test!" is not a DNS domain name/,
    ],
    [
      "a DNS server that is no address",
      { hosts: "", discoverDomain: "isp.test", dnsServers: "dns.isp.test" },
      /(label\.dnsServers|DNS servers): "dns\.isp\.test" is not a DNS server address/,
    ],
  ];
  // The test runtime loads no message catalogs: an error reads as its i18n key there.
  for (const [what, fields, pattern] of cases) {
    it(`refuses ${what}: red status and an error for Catch, no connection attempt`, async () => {
      const flow = [
        { id: "t", type: "tab" },
        { id: "k", type: "dots-psk", home: "home-1", keyFormat: "hex" },
        { ...base, ...fields, id: "n", z: "t", wires: [["out"], ["out"], ["out"]] },
        { id: "out", type: "helper", z: "t" },
        { id: "c1", type: "catch", z: "t", scope: null, uncaught: false, wires: [["caught"]] },
        { id: "caught", type: "helper", z: "t" },
      ];
      await helper.load(allNodes, flow, loopCredentials);
      const caught = collect("caught");
      const out = collect("out");
      const n = helper.getNode("n");
      const statuses = (n.status.getCalls() as Array<{ thisValue: unknown; args: Array<{ fill?: string }> }>)
        .filter((c) => c.thisValue === n)
        .map((c) => c.args[0]);
      assert.equal(statuses[statuses.length - 1]?.fill, "red");
      const err = await waitFor("the configuration error", () => caught[0]);
      assert.match(String(err.error.message), pattern);
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(
        out.map((m) => m.topic),
        [],
        "no session events: nothing was started",
      );
    });
  }
});

describe("listener node: home name and numeric status in responses and notifications", function () {
  this.timeout(60000);
  afterEach(async () => {
    await helper.unload();
  });

  it("mitigate response (status 1 while consent is pending) and the notification after approval (status 2) carry home and statusCode", async () => {
    const port = await freePort();
    await helper.load(allNodes, loopFlow({ port, consent: "manual" }), loopCredentials);
    const ispEvents = collect("ispEvents");
    const ispResp = collect("ispResp");
    const notices = collect("notices");
    const up = await waitFor("session-up", () => ispEvents.find((m) => m.topic === "session-up"));
    // a stale status on the incoming message must not survive into the answer
    helper.getNode("lis").receive({
      payload: {
        "ietf-dots-signal-channel:mitigation-scope": {
          scope: [
            {
              "target-prefix": ["203.0.113.5/32"],
              "target-port-range": [{ "lower-port": 443 }],
              "target-protocol": [6],
              "ietf-dots-call-home:source-prefix": ["198.51.100.7/32"],
              "ietf-dots-call-home:source-port-range": [{ "lower-port": 40001 }],
              lifetime: 600,
            },
          ],
        },
      },
      dots: { session: up.payload.id, statusCode: 99, status: "stale" },
    });
    const response = await waitFor("mitigate response", () => ispResp.find((m) => m.topic === "mitigate"));
    assert.equal(response.dots.code, "2.01");
    assert.equal(response.dots.home, "home-1", "the home name, though the request named the session by id");
    assert.equal(response.dots.session, up.payload.id);
    assert.equal(response.dots.status, "attack-mitigation-in-progress");
    assert.equal(response.dots.statusCode, 1);
    const mid = response.dots.mid;

    await waitFor("consent request", () => notices.find((m) => m.topic === "consent-request" && m.payload.mid === mid));
    helper.getNode("filter").receive({ topic: "approve", dots: { mid } });
    const note = await waitFor("status 2 notification", () =>
      ispResp.find((m) => m.topic === "status" && m.dots.mid === mid && m.dots.statusCode === 2),
    );
    assert.equal(note.dots.status, "attack-successfully-mitigated");
    assert.equal(note.dots.home, "home-1");
    assert.equal(note.dots.session, up.payload.id);
    for (const m of ispResp.filter((x) => x.topic === "status")) {
      assert.equal(m.dots.home, "home-1");
      assert.equal(typeof m.dots.statusCode, "number", `every notification has a number (${JSON.stringify(m.dots)})`);
    }

    // get by home name: the answer names the mitigation's status by label and number too
    helper.getNode("lis").receive({ dots: { action: "get", session: "home-1", mid } });
    const got = await waitFor("get response", () => ispResp.find((m) => m.topic === "get"));
    assert.deepEqual([got.dots.home, got.dots.status, got.dots.statusCode], ["home-1", "attack-successfully-mitigated", 2]);
    // a withdrawal's 2.02 has no status: none is made up
    helper.getNode("lis").receive({ dots: { action: "withdraw", session: "home-1", mid } });
    const withdrawn = await waitFor("withdraw response", () => ispResp.find((m) => m.topic === "withdraw"));
    assert.equal(withdrawn.dots.code, "2.02");
    assert.equal(withdrawn.dots.home, "home-1");
    assert.ok(!("statusCode" in withdrawn.dots) && !("status" in withdrawn.dots), JSON.stringify(withdrawn.dots));
  });

  it("a rejected request's notification carries the conflict cause as label and number", async () => {
    const port = await freePort();
    await helper.load(allNodes, loopFlow({ port, consent: "manual" }), loopCredentials);
    const ispEvents = collect("ispEvents");
    const ispResp = collect("ispResp");
    const notices = collect("notices");
    await waitFor("session-up", () => ispEvents.find((m) => m.topic === "session-up"));
    helper.getNode("req").receive({ payload: "x" });
    const response = await waitFor("mitigate response", () => ispResp.find((m) => m.topic === "mitigate"));
    const mid = response.dots.mid;
    await waitFor("consent request", () => notices.find((m) => m.topic === "consent-request" && m.payload.mid === mid));
    helper.getNode("filter").receive({ topic: "reject", dots: { mid } });
    const note = await waitFor("conflict notification", () =>
      ispResp.find((m) => m.topic === "status" && m.dots.mid === mid && m.dots.conflictCause !== undefined),
    );
    assert.deepEqual(
      [note.dots.home, note.dots.conflictCause, note.dots.conflictCauseCode],
      ["home-1", "request-rejected-legitimate-traffic", 4],
    );
  });
});
