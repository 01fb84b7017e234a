// Certificate homes over DTLS through the DOTS engines (issue #11): a listener with only a P-256
// (or RSA) certificate (no PSK) serves DTLS; a home dialling udp, and one on automatic transport, get a
// DTLS session that is their certificate (home name from its CN), and a mitigation round trip
// works. A home whose certificate the ISP's CA did not sign is refused with the listener's diagnosis.
import assert from "node:assert/strict";
import type { DotsJson, MitigationEvent, SessionInfo } from "../../src/dots/api";
import { CallHomeDialer } from "../../src/dots/home-engine";
import type { AuthFailureEvent } from "../../src/dots/auth-events";
import { CallHomeListener } from "../../src/dots/isp-engine";
import { makeTestPki, type KeyPair } from "../support/certs";
import { hasCommand, requireOrSkip } from "../support/env";
import { FAST_ISP, HOME_PREFIX, waitFor } from "./harness";

const MS = "ietf-dots-signal-channel:mitigation-scope";
const REQUEST: DotsJson = {
  [MS]: { scope: [{ "target-prefix": ["198.51.100.7/32"], "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"], lifetime: 600 }] },
};

describe("call-home with certificates over DTLS (ECDHE_ECDSA, ECDHE_RSA), engines end to end", function () {
  this.timeout(40000);
  const open: Array<{ stop(): Promise<void> }> = [];

  before(function () {
    requireOrSkip(this, "openssl (test PKI)", hasCommand("openssl"));
  });

  afterEach(async () => {
    for (const x of open.splice(0).reverse()) await x.stop().catch(() => undefined);
  });

  it("a certificate-only listener serves DTLS; homes on udp and on automatic transport get DTLS sessions as their certificates; a mitigation round trip", async () => {
    const pki = await makeTestPki();
    const listener = new CallHomeListener(
      {
        port: 0,
        host: "127.0.0.1",
        transports: { dtls: true, tls: false },
        certificate: { cert: pki.isp.cert, key: pki.isp.key, ca: pki.ca.cert },
        homePrefixes: { "home-1.example": [HOME_PREFIX], "home-2.example": [HOME_PREFIX] },
      },
      FAST_ISP,
    );
    listener.on("error", () => undefined);
    await listener.start();
    open.push(listener);
    const dial = (pair: KeyPair, transport: "udp" | "auto"): CallHomeDialer => {
      const d = new CallHomeDialer({
        hosts: ["127.0.0.1"],
        port: listener.port as number,
        transport,
        homePrefixes: [HOME_PREFIX],
        heartbeatInterval: 1,
        reconnect: { minMs: 100, maxMs: 500 },
        certificate: { cert: pair.cert, key: pair.key, ca: pki.ca.cert, servername: "isp.example" },
        tuning: { dtlsHandshakeTimeoutMs: 1000 },
      });
      d.on("error", () => undefined);
      open.push(d);
      return d;
    };

    const home1 = dial(pki.home1, "udp");
    const got: string[] = [];
    home1.on("mitigation", (m: MitigationEvent) => m.kind === "new" && got.push("home-1"));
    const up1 = waitFor<[SessionInfo]>(listener, "session-up", (s: SessionInfo) => s.home === "home-1.example", 15000);
    await home1.start();
    const [s1] = await up1;
    assert.equal(s1.transport, "dtls");
    assert.equal(s1.peer.method, "certificate");
    assert.equal(s1.peer.identity, "CN=home-1.example");
    assert.match(s1.cipher, /ECDHE_ECDSA/);
    const out = await listener.mitigate("home-1.example", REQUEST);
    assert.equal(out.code, "2.01");
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(got, ["home-1"]);

    // Automatic transport with a P-256 certificate tries DTLS too (the only one served here).
    const home2 = dial(pki.home2, "auto");
    const up2 = waitFor<[SessionInfo]>(listener, "session-up", (s: SessionInfo) => s.home === "home-2.example", 15000);
    await home2.start();
    const [s2] = await up2;
    assert.equal(s2.transport, "dtls");
    assert.equal(s2.peer.identity, "CN=home-2.example");
  });

  it("a listener with an RSA-2048 certificate serves DTLS (ECDHE_RSA); an RSA home on automatic transport gets a DTLS session and a mitigation round trip", async () => {
    const pki = await makeTestPki();
    const listener = new CallHomeListener(
      {
        port: 0,
        host: "127.0.0.1",
        transports: { dtls: true, tls: false },
        certificate: { cert: pki.ispRsa.cert, key: pki.ispRsa.key, ca: pki.ca.cert },
        homePrefixes: { "home-rsa.example": [HOME_PREFIX] },
      },
      FAST_ISP,
    );
    listener.on("error", () => undefined);
    await listener.start();
    open.push(listener);
    const home = new CallHomeDialer({
      hosts: ["127.0.0.1"],
      port: listener.port as number,
      transport: "auto",
      homePrefixes: [HOME_PREFIX],
      heartbeatInterval: 1,
      reconnect: { minMs: 100, maxMs: 500 },
      certificate: { cert: pki.homeRsa.cert, key: pki.homeRsa.key, ca: pki.ca.cert, servername: "isp.example" },
      tuning: { dtlsHandshakeTimeoutMs: 1000 },
    });
    home.on("error", () => undefined);
    open.push(home);
    const up = waitFor<[SessionInfo]>(listener, "session-up", (s: SessionInfo) => s.home === "home-rsa.example", 15000);
    await home.start();
    const [s] = await up;
    assert.equal(s.transport, "dtls");
    assert.equal(s.peer.identity, "CN=home-rsa.example");
    assert.equal(s.cipher, "DTLSv1.2 TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256");
    assert.equal((await listener.mitigate("home-rsa.example", REQUEST)).code, "2.01");
  });

  it("a home whose certificate our CA did not sign gets no session; the listener names the problem", async () => {
    const pki = await makeTestPki();
    const listener = new CallHomeListener(
      {
        port: 0,
        host: "127.0.0.1",
        transports: { dtls: true, tls: false },
        certificate: { cert: pki.isp.cert, key: pki.isp.key, ca: pki.ca.cert },
        homePrefixes: { "home-1.example": [HOME_PREFIX] },
      },
      FAST_ISP,
    );
    listener.on("error", () => undefined);
    await listener.start();
    open.push(listener);
    const failure = waitFor<[AuthFailureEvent]>(listener, "auth-failure", undefined, 15000);
    const rogue = new CallHomeDialer({
      hosts: ["127.0.0.1"],
      port: listener.port as number,
      transport: "udp",
      homePrefixes: [HOME_PREFIX],
      certificate: { cert: pki.rogueHome.cert, key: pki.rogueHome.key, ca: pki.ca.cert, servername: "isp.example" },
      reconnect: { minMs: 100, maxMs: 500 },
      tuning: { dtlsHandshakeTimeoutMs: 1000 },
    });
    rogue.on("error", () => undefined);
    open.push(rogue);
    await rogue.start();
    const [f] = await failure;
    assert.equal(f.transport, "dtls");
    assert.equal(f.reason, "CERT_UNTRUSTED");
    assert.equal(f.subject, "CN=home-1.example");
    assert.match(f.message, /not signed by a CA we trust/);
    assert.equal(listener.sessions().length, 0);
  });
});
