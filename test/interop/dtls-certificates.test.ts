// ECDHE_ECDSA and ECDHE_RSA certificates over DTLS 1.2 (RFC 8422, RFC 9132 7.1 mutual authentication) in both of
// our roles against real peers on loopback: openssl s_client / s_server -dtls1_2 with -cert/-key/
// -CAfile/-Verify, libcoap's coap-client-openssl and coap-server-openssl with -c/-j/-C, and our
// client against our server. Refusals: no client certificate, a CA we do not trust, an expired
// certificate, a wrong name, and signatures broken in flight by a fault-injecting relay (a real
// peer never signs wrongly on demand).
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import { once } from "node:events";
import * as path from "node:path";
import { decodeUdp, encodeUdp } from "../../src/coap/udp-codec";
import type { TransportError } from "../../src/transport/connection";
import { connectDtls } from "../../src/transport/dtls-client";
import { dtlsClientConnect, type DtlsClient } from "../../src/transport/dtls/client";
import { HandshakeType } from "../../src/transport/dtls/constants";
import { DtlsServer, type DtlsServerConnection, type HandshakeFailure } from "../../src/transport/dtls";
import { makeTestPki, type KeyPair, type TestPki } from "../support/certs";
import { hasCommand, requireOrSkip } from "../support/env";
import { freePort, openSslDtlsServer, spawnPeer, stopAllPeers, type Peer } from "./transport-peers";

const SUITES = [
  ["ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
  ["ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"],
] as const;
/** The ISP's key is RSA-2048 for these (the home's stays P-256 unless a test says otherwise). */
const RSA_SUITES = [
  ["ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
  ["ECDHE-RSA-CHACHA20-POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"],
] as const;

/**
 * Fault injector: a UDP relay that flips the last byte of one handshake message type (the end of its
 * signature) in one direction, so a real peer's signature arrives broken.
 */
async function signatureBreakingRelay(
  target: number,
  direction: "up" | "down",
  msgType: number,
): Promise<{ port: number; flipped: () => number; close(): Promise<void> }> {
  const front = dgram.createSocket("udp4");
  const back = dgram.createSocket("udp4");
  let client: { address: string; port: number } | undefined;
  let flipped = 0;
  const tamper = (d: Buffer): Buffer => {
    const out = Buffer.from(d);
    for (let o = 0; o + 13 <= out.length;) {
      const length = out.readUInt16BE(o + 11);
      if (out[o] === 22 && out.readUInt16BE(o + 3) === 0) {
        for (let p = o + 13; p + 12 <= o + 13 + length;) {
          const fragmentLength = out.readUIntBE(p + 9, 3);
          const total = out.readUIntBE(p + 1, 3);
          const offset = out.readUIntBE(p + 6, 3);
          if (out[p] === msgType && offset + fragmentLength === total) {
            out[p + 12 + fragmentLength - 1] ^= 0x01;
            flipped++;
          }
          p += 12 + fragmentLength;
        }
      }
      o += 13 + length;
    }
    return out;
  };
  front.on("message", (m, r) => {
    client = { address: r.address, port: r.port };
    back.send(direction === "up" ? tamper(m) : m, target, "127.0.0.1");
  });
  back.on("message", (m) => {
    if (client) front.send(direction === "down" ? tamper(m) : m, client.port, client.address);
  });
  await new Promise<void>((r) => front.bind(0, "127.0.0.1", r));
  await new Promise<void>((r) => back.bind(0, "127.0.0.1", r));
  return {
    port: front.address().port,
    flipped: () => flipped,
    close: async () => {
      await new Promise<void>((r) => front.close(() => r()));
      await new Promise<void>((r) => back.close(() => r()));
    },
  };
}

describe("interop: certificates over DTLS (ECDHE_ECDSA, ECDHE_RSA), both roles", function () {
  this.timeout(30000);
  let pki: TestPki;
  const servers: DtlsServer[] = [];
  const clients: DtlsClient[] = [];
  const relays: Array<{ close(): Promise<void> }> = [];

  before(async function () {
    requireOrSkip(this, "openssl", hasCommand("openssl"));
    pki = await makeTestPki();
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await new Promise((r) => setTimeout(r, 20));
    for (const s of servers.splice(0)) await s.close();
    for (const r of relays.splice(0)) await r.close();
    await stopAllPeers();
  });

  async function ourServer(opts: { requireClientCert?: boolean; pair?: KeyPair } = {}) {
    const failures: HandshakeFailure[] = [];
    const connections: DtlsServerConnection[] = [];
    const { pair = pki.isp, ...rest } = opts;
    const server = new DtlsServer({ certificate: { cert: pair.cert, key: pair.key, ca: pki.ca.cert, ...rest } });
    servers.push(server);
    server.on("handshake-failed", (f: HandshakeFailure) => failures.push(f));
    server.on("connection", (c: DtlsServerConnection) => {
      connections.push(c);
      c.on("message", (m: Buffer) => c.send(Buffer.concat([Buffer.from("echo "), m])));
    });
    const { port } = await server.listen(0, "127.0.0.1");
    return { server, port, failures, connections };
  }

  function sClient(port: number, cipher: string, client: KeyPair | undefined, extra: string[] = []): Peer {
    return spawnPeer("openssl", [
      "s_client",
      "-dtls1_2",
      "-connect",
      `127.0.0.1:${port}`,
      "-cipher",
      cipher,
      "-CAfile",
      pki.ca.certPath,
      "-verify_return_error",
      "-verify_hostname",
      "localhost",
      ...(client ? ["-cert", client.certPath, "-key", client.keyPath] : []),
      ...extra,
    ]);
  }

  /** openssl s_server -dtls1_2 with `pair`, requiring a client certificate from our CA. */
  function sServer(pair: KeyPair, extra: string[] = []): Promise<{ port: number; peer: Peer }> {
    return openSslDtlsServer(["-cert", pair.certPath, "-key", pair.keyPath, "-CAfile", pki.ca.certPath, "-Verify", "1", ...extra]);
  }

  async function waitUntil(cond: () => boolean, what: string): Promise<void> {
    const end = Date.now() + 8000;
    while (!cond()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  for (const [cipher, suite] of SUITES) {
    it(`openssl s_client (${cipher}, mutual) -> our server: the home is its certificate, data both ways`, async () => {
      const { port, connections } = await ourServer();
      const peer = sClient(port, cipher, pki.home1);
      await peer.waitFor(/Verify return code: 0 \(ok\)/);
      await waitUntil(() => connections.length === 1, "the connection");
      const conn = connections[0];
      assert.equal(conn.cipher, `DTLSv1.2 ${suite}`);
      assert.equal(conn.peer.method, "certificate");
      assert.equal(conn.peer.subject, "CN=home-1.example");
      assert.ok(conn.peer.spki && conn.peer.spki.length > 60, "the SPKI the cuid is derived from");
      assert.equal(conn.local.method, "certificate");
      peer.write("ping-from-openssl\n");
      await peer.waitFor(/echo ping-from-openssl/);
    });
  }

  for (const [cipher, suite] of [...SUITES, ...RSA_SUITES]) {
    it(`our client (${suite}) -> openssl s_server -Verify 1: the ISP is its certificate (${suite.includes("_RSA_") ? "RSA-2048" : "P-256"}), data both ways`, async () => {
      const { port, peer } = await sServer(suite.includes("_RSA_") ? pki.ispRsa : pki.isp, ["-verify_return_error", "-cipher", cipher]);
      const c = await dtlsClientConnect({
        address: "127.0.0.1",
        port,
        certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert, servername: "isp.example" },
      });
      clients.push(c);
      assert.equal(c.cipher, `DTLSv1.2 ${suite}`);
      assert.equal(c.peer.method, "certificate");
      assert.equal(c.peer.subject, "CN=isp.example");
      c.send(Buffer.from("from-node\n"));
      await peer.waitFor(/from-node/);
      const got = once(c, "message");
      peer.write("from-openssl\n");
      assert.equal(((await got)[0] as Buffer).toString(), "from-openssl\n");
      // s_server verified our certificate (it prints the client's subject).
      await peer.waitFor(/subject=.*home-1\.example/);
    });
  }

  it("our client -> our server: ECDHE_ECDSA with ChaCha20-Poly1305 by default, both sides see the other's certificate", async () => {
    const { port, connections } = await ourServer();
    const c = await dtlsClientConnect({
      address: "127.0.0.1",
      port,
      certificate: { cert: pki.home2.cert, key: pki.home2.key, ca: pki.ca.cert, servername: "isp.example" },
    });
    clients.push(c);
    assert.equal(c.cipher, "DTLSv1.2 TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256");
    assert.equal(c.peer.subject, "CN=isp.example");
    await waitUntil(() => connections.length === 1, "the connection");
    assert.equal(connections[0].peer.subject, "CN=home-2.example");
    const got = once(c, "message");
    c.send(Buffer.from("hello"));
    assert.equal(((await got)[0] as Buffer).toString(), "echo hello");
  });

  it("resumption of a certificate session (RFC 5077): openssl s_client -sess_out/-sess_in shows Reused; our client resumes too, both keep the certificate identities", async () => {
    const { server, port, connections } = await ourServer();
    const sess = path.join(pki.dir, `dtls-cert-${process.pid}.sess`);
    const first = sClient(port, SUITES[0][0], pki.home1, ["-sess_out", sess]);
    await first.waitFor(/Verify return code: 0 \(ok\)/);
    await waitUntil(() => connections.length === 1, "the first connection");
    first.write("Q\n"); // s_client: close the connection
    await stopAllPeers();
    const second = sClient(port, SUITES[0][0], pki.home1, ["-sess_in", sess]);
    await second.waitFor(/Reused, TLSv1\.2/);
    await waitUntil(() => connections.length === 2, "the resumed connection");
    assert.equal(server.stats.handshakesResumed, 1);
    assert.equal(connections[1].peer.subject, "CN=home-1.example", "the resumed session is still the home's certificate");
    second.write("after resumption\n");
    await second.waitFor(/echo after resumption/);

    const opts = {
      address: "127.0.0.1",
      port,
      certificate: { cert: pki.home2.cert, key: pki.home2.key, ca: pki.ca.cert, servername: "isp.example" },
    };
    const full = await dtlsClientConnect(opts);
    clients.push(full);
    assert.ok(full.resumption, "our client keeps the certificate session's ticket");
    const resumed = await dtlsClientConnect({ ...opts, resumeFrom: full.resumption });
    clients.push(resumed);
    assert.equal(resumed.resumed, true);
    assert.equal(resumed.peer.subject, "CN=isp.example");
    await waitUntil(() => connections.length === 4, "our client's two connections");
    assert.equal(connections[3].peer.subject, "CN=home-2.example");
    assert.equal(server.stats.handshakesResumed, 2);
    // A ticket made for one ISP name is not offered to another.
    const other = await dtlsClientConnect({
      ...opts,
      certificate: { ...opts.certificate, servername: "localhost" },
      resumeFrom: full.resumption,
    });
    clients.push(other);
    assert.equal(other.resumed, false);
  });

  for (const keys of ["EC P-256", "RSA-2048"] as const) {
    it(`${keys} keys: coap-client-openssl -c/-j/-C gets a CoAP answer from our server; our client gets one from coap-server-openssl -c/-j/-C`, async function () {
      const [isp, home, suite] = keys === "EC P-256" ? [pki.isp, pki.home1, /ECDHE_ECDSA/] : [pki.ispRsa, pki.homeRsa, /ECDHE_RSA/];
      requireOrSkip(this, "coap-client-openssl (libcoap3-bin)", hasCommand("coap-client-openssl") && hasCommand("coap-server-openssl"));
      const failures: HandshakeFailure[] = [];
      const server = new DtlsServer({ certificate: { cert: isp.cert, key: isp.key, ca: pki.ca.cert } });
      servers.push(server);
      server.on("handshake-failed", (f: HandshakeFailure) => failures.push(f));
      const subjects: string[] = [];
      server.on("connection", (c: DtlsServerConnection) => {
        subjects.push(c.peer.subject ?? "");
        c.on("message", (m: Buffer) => {
          const req = decodeUdp(m);
          c.send(
            encodeUdp({
              type: "ACK",
              code: 0x45,
              messageId: req.messageId,
              token: req.token,
              options: [],
              payload: Buffer.from(`answer over ${c.cipher}`),
            }),
          );
        });
      });
      const { port } = await server.listen(0, "127.0.0.1");
      const client = spawnPeer("coap-client-openssl", [
        "-B",
        "10",
        "-m",
        "get",
        "-c",
        home.certPath,
        "-j",
        home.keyPath,
        "-C",
        pki.ca.certPath,
        `coaps://127.0.0.1:${port}/test`,
      ]);
      await client.waitFor(new RegExp(`answer over DTLSv1\\.2 TLS_${suite.source}`));
      assert.deepEqual(subjects, [`CN=${keys === "EC P-256" ? "home-1" : "home-rsa"}.example`]);
      assert.deepEqual(failures, []);

      const base = await freePort(2);
      spawnPeer("coap-server-openssl", [
        "-A",
        "127.0.0.1",
        "-p",
        String(base),
        "-c",
        isp.certPath,
        "-j",
        isp.keyPath,
        "-C",
        pki.ca.certPath,
      ]);
      const conn = await connectDtls({
        host: "127.0.0.1",
        port: base + 1,
        certificate: { cert: home.cert, key: home.key, ca: pki.ca.cert, servername: "isp.example" },
        handshakeTimeoutMs: 300,
        attempts: 10,
        backoff: 1,
      });
      try {
        assert.match(conn.cipher, suite);
        const got = new Promise<Buffer>((r) => conn.once("message", r));
        conn.send(
          encodeUdp({
            type: "CON",
            code: 0x01,
            messageId: 7,
            token: Buffer.from("ab", "hex"),
            options: [{ number: 11, value: Buffer.from("time") }],
            payload: Buffer.alloc(0),
          }),
        );
        const res = decodeUdp(await got);
        assert.equal(res.code, 0x45);
        assert.match(res.payload.toString(), /\d\d:\d\d:\d\d/);
      } finally {
        conn.close();
      }
    });
  }

  describe("refusals at our server", () => {
    it("no client certificate: handshake_failure (40), reported as certificate-required", async () => {
      const { port, failures, connections } = await ourServer();
      const peer = sClient(port, SUITES[0][0], undefined);
      await peer.waitFor(/alert handshake failure|alert number 40/);
      await waitUntil(() => failures.length === 1, "the failure event");
      assert.equal(failures[0].reason, "certificate-required");
      assert.equal(connections.length, 0);
    });

    it("a certificate from a CA we do not trust: unknown_ca (48), certificate-untrusted with its subject", async () => {
      const { port, failures, connections } = await ourServer();
      const peer = sClient(port, SUITES[0][0], pki.rogueHome);
      await peer.waitFor(/unknown ca|alert number 48/);
      await waitUntil(() => failures.length === 1, "the failure event");
      assert.equal(failures[0].reason, "certificate-untrusted");
      assert.equal(failures[0].subject, "CN=home-1.example");
      assert.match(failures[0].detail ?? "", /Rogue CA/);
      assert.equal(connections.length, 0);
    });

    it("an expired client certificate: certificate_expired (45)", async () => {
      const { port, failures } = await ourServer();
      const peer = sClient(port, SUITES[1][0], pki.expired);
      await peer.waitFor(/certificate expired|alert number 45/);
      await waitUntil(() => failures.length === 1, "the failure event");
      assert.equal(failures[0].reason, "certificate-expired");
    });

    it("a CertificateVerify whose signature was broken in flight: decrypt_error (51), no session", async () => {
      const { port, failures, connections } = await ourServer();
      const relay = await signatureBreakingRelay(port, "up", HandshakeType.CertificateVerify);
      relays.push(relay);
      const peer = sClient(relay.port, SUITES[0][0], pki.home1);
      await peer.waitFor(/decrypt error|alert number 51/);
      await waitUntil(() => failures.length === 1, "the failure event");
      assert.equal(failures[0].reason, "bad-certificate-verify");
      assert.equal(failures[0].subject, "CN=home-1.example");
      assert.ok(relay.flipped() >= 1);
      assert.equal(connections.length, 0);
    });

    it("without requireClientCert, a client without a certificate is served (server-authenticated only)", async () => {
      const { port, connections } = await ourServer({ requireClientCert: false });
      const peer = sClient(port, SUITES[0][0], undefined);
      await peer.waitFor(/Verify return code: 0 \(ok\)/);
      await waitUntil(() => connections.length === 1, "the connection");
      peer.write("anon\n");
      await peer.waitFor(/echo anon/);
    });
  });

  describe("refusals at our client", () => {
    const sServerWith = async (pair: KeyPair): Promise<number> => (await sServer(pair)).port;

    async function refused(port: number, ca: string, servername = "isp.example"): Promise<TransportError> {
      const err = await dtlsClientConnect({
        address: "127.0.0.1",
        port,
        handshakeTimeoutMs: 5000,
        certificate: { cert: pki.home1.cert, key: pki.home1.key, ca, servername },
      }).then(
        () => assert.fail("the handshake should have been refused"),
        (e: TransportError) => e,
      );
      assert.equal(err.code, "AUTH_FAILED", err.message);
      return err;
    }

    it("an ISP certificate from a CA we do not trust", async () => {
      const port = await sServerWith(pki.isp);
      assert.match((await refused(port, pki.rogueCa.cert)).message, /not signed by a CA we trust/);
    });

    it("an expired ISP certificate", async () => {
      const port = await sServerWith(pki.expired);
      assert.match((await refused(port, pki.ca.cert)).message, /expired/);
    });

    it("an ISP certificate for another name", async () => {
      const port = await sServerWith(pki.wrongName);
      assert.match((await refused(port, pki.ca.cert, "localhost")).message, /does not name localhost/);
    });

    it("a ServerKeyExchange whose signature was broken in flight", async () => {
      const port = await sServerWith(pki.isp);
      const relay = await signatureBreakingRelay(port, "down", HandshakeType.ServerKeyExchange);
      relays.push(relay);
      assert.match((await refused(relay.port, pki.ca.cert)).message, /ServerKeyExchange signature does not verify/);
      assert.ok(relay.flipped() >= 1);
    });
  });

  describe("RSA keys: ECDHE_RSA suites, RSA-PSS and PKCS#1 v1.5 signatures, RSA client certificates", () => {
    // What s_client prints for the scheme our server signed its ServerKeyExchange with.
    const SIGALGS = [
      ["rsa_pss_rsae_sha256", /Peer signature type: RSA-PSS/],
      ["rsa_pkcs1_sha256", /Peer signature type: RSA\b(?!-PSS)/],
    ] as const;

    for (const [cipher, suite] of RSA_SUITES) {
      for (const [sigalg, printed] of SIGALGS) {
        it(`openssl s_client (${cipher}, -sigalgs ${sigalg}, mutual) -> our server with an RSA-2048 certificate`, async () => {
          const { port, connections } = await ourServer({ pair: pki.ispRsa });
          // ecdsa_secp256r1_sha256 too: s_client signs its CertificateVerify (EC key) within -sigalgs.
          const peer = sClient(port, cipher, pki.home1, ["-sigalgs", `${sigalg}:ecdsa_secp256r1_sha256`]);
          await peer.waitFor(/Verify return code: 0 \(ok\)/);
          await peer.waitFor(printed);
          await waitUntil(() => connections.length === 1, "the connection");
          assert.equal(connections[0].cipher, `DTLSv1.2 ${suite}`);
          assert.equal(connections[0].peer.subject, "CN=home-1.example");
          peer.write("over ecdhe-rsa\n");
          await peer.waitFor(/echo over ecdhe-rsa/);
        });
      }
    }

    it("our client verifies a PKCS#1 v1.5 ServerKeyExchange too (openssl s_server -sigalgs rsa_pkcs1_sha256)", async () => {
      const { port, peer } = await sServer(pki.ispRsa, ["-verify_return_error", "-sigalgs", "rsa_pkcs1_sha256:ecdsa_secp256r1_sha256"]);
      const c = await dtlsClientConnect({
        address: "127.0.0.1",
        port,
        certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert, servername: "isp.example" },
      });
      clients.push(c);
      assert.match(c.cipher, /ECDHE_RSA/);
      c.send(Buffer.from("pkcs1\n"));
      await peer.waitFor(/pkcs1/);
    });

    it("an RSA client certificate: openssl s_client -cert -> our server, and our client -> openssl s_server -Verify 1", async () => {
      const { port, connections } = await ourServer();
      const peer = sClient(port, SUITES[1][0], pki.homeRsa);
      await peer.waitFor(/Verify return code: 0 \(ok\)/);
      await waitUntil(() => connections.length === 1, "the connection");
      assert.equal(connections[0].peer.subject, "CN=home-rsa.example");
      assert.equal(connections[0].peer.method, "certificate");

      const s = await sServer(pki.isp, ["-verify_return_error"]);
      const c = await dtlsClientConnect({
        address: "127.0.0.1",
        port: s.port,
        certificate: { cert: pki.homeRsa.cert, key: pki.homeRsa.key, ca: pki.ca.cert, servername: "isp.example" },
      });
      clients.push(c);
      c.send(Buffer.from("rsa-client\n"));
      await s.peer.waitFor(/rsa-client/);
      await s.peer.waitFor(/subject=.*home-rsa\.example/);
    });

    it("our client <-> our server with RSA keys on both sides: ECDHE_RSA with ChaCha20-Poly1305 by default; a ticket resumes it", async () => {
      const { server, port, connections } = await ourServer({ pair: pki.ispRsa });
      const opts = {
        address: "127.0.0.1",
        port,
        certificate: { cert: pki.homeRsa.cert, key: pki.homeRsa.key, ca: pki.ca.cert, servername: "isp.example" },
      };
      const c = await dtlsClientConnect(opts);
      clients.push(c);
      assert.equal(c.cipher, "DTLSv1.2 TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256");
      await waitUntil(() => connections.length === 1, "the connection");
      assert.equal(connections[0].peer.subject, "CN=home-rsa.example");
      const got = once(c, "message");
      c.send(Buffer.from("both rsa"));
      assert.equal(((await got)[0] as Buffer).toString(), "echo both rsa");
      const resumed = await dtlsClientConnect({ ...opts, resumeFrom: c.resumption });
      clients.push(resumed);
      assert.equal(resumed.resumed, true);
      await waitUntil(() => connections.length === 2, "the resumed connection");
      assert.equal(connections[1].peer.subject, "CN=home-rsa.example");
      assert.equal(server.stats.handshakesResumed, 1);
    });

    it("refusals: a broken RSA ServerKeyExchange signature at our client, a broken RSA CertificateVerify at our server (decrypt_error)", async () => {
      const { port: ispPort } = await sServer(pki.ispRsa, ["-verify_return_error"]);
      const down = await signatureBreakingRelay(ispPort, "down", HandshakeType.ServerKeyExchange);
      relays.push(down);
      const err = await dtlsClientConnect({
        address: "127.0.0.1",
        port: down.port,
        handshakeTimeoutMs: 5000,
        certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert, servername: "isp.example" },
      }).then(
        () => assert.fail("the handshake should have been refused"),
        (e: TransportError) => e,
      );
      assert.equal(err.code, "AUTH_FAILED");
      assert.match(err.message, /ServerKeyExchange signature does not verify/);
      assert.ok(down.flipped() >= 1);

      const { port, failures, connections } = await ourServer({ pair: pki.ispRsa });
      const up = await signatureBreakingRelay(port, "up", HandshakeType.CertificateVerify);
      relays.push(up);
      const peer = sClient(up.port, RSA_SUITES[0][0], pki.homeRsa);
      await peer.waitFor(/decrypt error|alert number 51/);
      await waitUntil(() => failures.length === 1, "the failure event");
      assert.equal(failures[0].reason, "bad-certificate-verify");
      assert.equal(failures[0].subject, "CN=home-rsa.example");
      assert.equal(connections.length, 0);
    });

    it("an ISP with an RSA-1024 key is refused by our client (unsupported_certificate), and our server will not load one", async () => {
      // SECLEVEL 0: OpenSSL's own default refuses 1024-bit keys too.
      const { port } = await sServer(pki.ispRsa1024, ["-cipher", "ALL:@SECLEVEL=0"]);
      const err = await dtlsClientConnect({
        address: "127.0.0.1",
        port,
        handshakeTimeoutMs: 5000,
        certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert, servername: "isp.example" },
      }).then(
        () => assert.fail("the handshake should have been refused"),
        (e: TransportError) => e,
      );
      assert.equal(err.code, "AUTH_FAILED");
      assert.match(err.message, /rsa 1024 bits, not EC P-256 or RSA of 2048 bits or more/);
      assert.throws(
        () => new DtlsServer({ certificate: { cert: pki.ispRsa1024.cert, key: pki.ispRsa1024.key, ca: pki.ca.cert } }),
        /EC P-256 key or an RSA key of 2048 bits or more; this key is rsa 1024 bits/,
      );
      assert.throws(
        () =>
          new DtlsServer({
            certificate: { cert: pki.ispRsa.cert, key: pki.ispRsa.key, ca: pki.ca.cert },
            cipherSuites: ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
          }),
        /needs an EC P-256 certificate key; this certificate's key is RSA/,
      );
    });
  });
});
