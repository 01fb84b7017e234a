// node:tls both roles on loopback: our client against our server, with the test PKI.
import { strict as assert } from "node:assert";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import * as net from "node:net";
import * as tls from "node:tls";
import { TransportError, type Connection } from "../../../src/transport/connection";
import {
  connectTls,
  createTlsServer,
  pskIdentityFromSession,
  type TlsHandshakeFailure,
  type TlsServer,
  type TlsServerOptions,
  type TlsConnectOptions,
} from "../../../src/transport/tls";
import { makeTestPki, type TestPki } from "../../support/certs";

const spki = (pem: string) => new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
// CSM (7.01, Max-Message-Size 1152) and GET /time in RFC 8323 framing.
const CSM = Buffer.from("30e1220480", "hex");
const GET = Buffer.from("5201beefb474696d65", "hex");
const isCode = (code: string) => (e: unknown) => e instanceof TransportError && e.code === code;

describe("transport/tls", function () {
  let pki: TestPki;
  const servers: TlsServer[] = [];
  const conns: Connection[] = [];
  const raw: Array<net.Server | tls.Server> = [];

  before(async function () {
    this.timeout(60000);
    pki = await makeTestPki();
  });

  afterEach(async () => {
    for (const c of conns.splice(0)) c.close();
    for (const s of servers.splice(0)) await s.close();
    for (const s of raw.splice(0)) await new Promise((r) => s.close(r));
  });

  async function server(
    opts: TlsServerOptions,
  ): Promise<{ server: TlsServer; port: number; accepted: Connection[]; failures: TlsHandshakeFailure[] }> {
    const s = createTlsServer(opts);
    servers.push(s);
    const accepted: Connection[] = [];
    const failures: TlsHandshakeFailure[] = [];
    s.on("connection", (c: Connection) => {
      accepted.push(c);
      conns.push(c);
    });
    s.on("handshake-failed", (f: TlsHandshakeFailure) => failures.push(f));
    const { port } = await s.listen(0, "127.0.0.1");
    return { server: s, port, accepted, failures };
  }

  async function dial(opts: TlsConnectOptions): Promise<Connection> {
    const c = await connectTls(opts);
    conns.push(c);
    return c;
  }

  const certServer = (extra: Partial<TlsServerOptions> = {}) =>
    server({ certificate: { cert: pki.isp.cert, key: pki.isp.key, ca: pki.ca.cert }, ...extra });
  const homeCert = () => ({ cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert });

  for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
    it(`mutual certificates over ${version}: both sides see who the other is, frames flow both ways`, async () => {
      const { port, accepted } = await certServer();
      const client = await dial({ host: "127.0.0.1", port, certificate: homeCert(), minVersion: version, maxVersion: version });
      assert.equal(client.transport, "tls");
      assert.match(client.cipher, new RegExp(`^${version.replace(".", "\\.")} `));
      assert.equal(client.peer.method, "certificate");
      assert.equal(client.peer.subject, "CN=isp.example");
      assert.ok(client.peer.spki?.equals(spki(pki.isp.cert)));
      assert.ok(client.local.spki?.equals(spki(pki.home1.cert)));
      while (accepted.length === 0) await new Promise((r) => setImmediate(r));
      const srv = accepted[0];
      assert.equal(srv.peer.subject, "CN=home-1.example");
      assert.ok(srv.peer.spki?.equals(spki(pki.home1.cert)));
      assert.ok(srv.peer.certificate?.equals(new X509Certificate(pki.home1.cert).raw));
      assert.equal(srv.remoteAddress, "127.0.0.1");
      assert.equal(srv.remotePort, client.localPort);

      const got = once(srv, "message");
      // Two frames written with the second split across writes still arrive whole and in order.
      const both = Buffer.concat([CSM, GET]);
      client.send(both.subarray(0, 7));
      client.send(both.subarray(7));
      assert.ok((await got)[0].equals(CSM));
      const next = await once(srv, "message");
      assert.ok(next[0].equals(GET));
      const back = once(client, "message");
      srv.send(CSM);
      assert.ok((await back)[0].equals(CSM));
    });
  }

  for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
    it(`PSK over ${version}: the server's lookup sees identity and source, both know the identity`, async () => {
      const seen: Array<[string, string]> = [];
      const key = Buffer.from("secretPSK-0123456789");
      const { port, accepted } = await server({
        psk: { lookup: (id, remote) => (seen.push([id, remote.address]), id === "home-1" ? key : undefined) },
      });
      const client = await dial({ host: "127.0.0.1", port, psk: { identity: "home-1", key }, minVersion: version, maxVersion: version });
      assert.deepEqual(client.peer, { method: "psk", pskIdentity: "home-1" });
      assert.deepEqual(client.local, { method: "psk", pskIdentity: "home-1" });
      assert.match(client.cipher, new RegExp(`^${version.replace(".", "\\.")} .*(PSK|TLS_AES_128_GCM_SHA256|CHACHA20)`));
      while (accepted.length === 0) await new Promise((r) => setImmediate(r));
      assert.deepEqual(accepted[0].peer, { method: "psk", pskIdentity: "home-1" });
      assert.deepEqual(seen[0], ["home-1", "127.0.0.1"]);
      const got = once(accepted[0], "message");
      client.send(GET);
      assert.ok((await got)[0].equals(GET));
    });

    it(`PSK over ${version}: unknown identity and wrong key are refused on both sides`, async () => {
      const key = Buffer.from("secretPSK-0123456789");
      const { port, accepted, failures } = await server({ psk: { lookup: (id) => (id === "home-1" ? key : undefined) } });
      await assert.rejects(
        dial({ host: "127.0.0.1", port, psk: { identity: "intruder", key }, minVersion: version, maxVersion: version }),
        isCode("AUTH_FAILED"),
      );
      await assert.rejects(
        dial({
          host: "127.0.0.1",
          port,
          psk: { identity: "home-1", key: Buffer.from("not-the-key") },
          minVersion: version,
          maxVersion: version,
        }),
        isCode("AUTH_FAILED"),
      );
      while (failures.length < 2) await new Promise((r) => setTimeout(r, 5));
      assert.equal(accepted.length, 0);
      assert.ok(failures.every((f) => f.address === "127.0.0.1"));
    });
  }

  for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
    it(`a client certificate from an untrusted CA is refused (${version})`, async () => {
      const { port, accepted, failures } = await certServer();
      await assert.rejects(
        dial({
          host: "127.0.0.1",
          port,
          certificate: { cert: pki.rogueHome.cert, key: pki.rogueHome.key, ca: pki.ca.cert },
          minVersion: version,
          maxVersion: version,
        }),
        // TLS 1.2: the server aborts mid-handshake and node often reports only a reset.
        (e: unknown) => isCode("AUTH_FAILED")(e) || (version === "TLSv1.2" && isCode("HANDSHAKE_FAILED")(e)),
      );
      while (failures.length < 1) await new Promise((r) => setTimeout(r, 5));
      assert.equal(accepted.length, 0);
      assert.equal(failures[0].error.code, "AUTH_FAILED");
    });
  }

  it("a client without a certificate is refused by a certificate server", async () => {
    const { port, accepted, failures } = await certServer();
    const key = Buffer.from("k");
    await assert.rejects(dial({ host: "127.0.0.1", port, psk: { identity: "x", key } }));
    while (failures.length < 1) await new Promise((r) => setTimeout(r, 5));
    assert.equal(accepted.length, 0);
  });

  it("the client refuses an expired server certificate, a wrong name and an untrusted CA", async () => {
    const expired = await server({ certificate: { cert: pki.expired.cert, key: pki.expired.key, ca: pki.ca.cert } });
    await assert.rejects(
      dial({ host: "127.0.0.1", port: expired.port, certificate: homeCert() }),
      (e: unknown) => isCode("AUTH_FAILED")(e) && /expired/i.test((e as Error).message),
    );
    const wrong = await server({ certificate: { cert: pki.wrongName.cert, key: pki.wrongName.key, ca: pki.ca.cert } });
    await assert.rejects(dial({ host: "127.0.0.1", port: wrong.port, certificate: homeCert() }), isCode("AUTH_FAILED"));
    const good = await certServer();
    await assert.rejects(
      dial({ host: "127.0.0.1", port: good.port, certificate: { ...homeCert(), ca: pki.rogueCa.cert } }),
      isCode("AUTH_FAILED"),
    );
    // The server name may differ from the dialled address: checked against servername instead.
    await assert.rejects(
      dial({ host: "127.0.0.1", port: good.port, certificate: homeCert(), servername: "other.example" }),
      isCode("AUTH_FAILED"),
    );
    const ok = await dial({ host: "127.0.0.1", port: good.port, certificate: homeCert(), servername: "isp.example" });
    assert.equal(ok.peer.subject, "CN=isp.example");
  });

  it("sends SNI for a host name and checks the certificate against it", async () => {
    const { port } = await certServer();
    const c = await dial({ host: "localhost", port, family: 4, certificate: homeCert() });
    assert.equal(c.peer.subject, "CN=isp.example");
  });

  it("resumes a session from a stored ticket", async () => {
    const { port } = await certServer();
    const tickets: Buffer[] = [];
    const first = await dial({ host: "127.0.0.1", port, certificate: homeCert(), onSession: (t) => tickets.push(t) });
    const got = once(first, "close");
    while (tickets.length === 0) await new Promise((r) => setTimeout(r, 5));
    first.close();
    await got;
    const second = await connectTls({ host: "127.0.0.1", port, certificate: homeCert(), session: tickets[tickets.length - 1] });
    conns.push(second);
    assert.equal((second as unknown as { sessionReused: boolean }).sessionReused, true);
    assert.equal(second.peer.subject, "CN=isp.example");
  });

  it("a resumed TLS 1.2 PSK session keeps its identity on the server, and loses it once the identity is revoked", async () => {
    const key = Buffer.from("secretPSK-0123456789");
    const known = new Set(["home-1"]);
    const { port, accepted, failures } = await server({ psk: { lookup: (id) => (known.has(id) ? key : undefined) } });
    const tickets: Buffer[] = [];
    const opts: TlsConnectOptions = {
      host: "127.0.0.1",
      port,
      psk: { identity: "home-1", key },
      maxVersion: "TLSv1.2",
      onSession: (t) => tickets.push(t),
    };
    const first = await dial(opts);
    while (tickets.length === 0) await new Promise((r) => setTimeout(r, 5));
    first.close();
    const resumed = await dial({ ...opts, session: tickets[0] });
    assert.equal((resumed as unknown as { sessionReused: boolean }).sessionReused, true);
    while (accepted.length < 2) await new Promise((r) => setImmediate(r));
    assert.deepEqual(accepted[1].peer, { method: "psk", pskIdentity: "home-1" });
    known.delete("home-1");
    const closed = connectTls({ ...opts, session: tickets[0] }).then(
      (c) => once(c, "close"),
      () => undefined,
    );
    await closed;
    while (failures.length === 0) await new Promise((r) => setTimeout(r, 5));
    assert.equal(failures[0].error.code, "AUTH_FAILED");
    assert.equal(accepted.length, 2);
  });

  it("reading a PSK identity from session bytes never throws on garbage", () => {
    const valid = Buffer.from("300f020101a80a0408686f6d652d313233", "hex"); // SEQUENCE { INTEGER 1, [8] OCTET STRING "home-123" }
    assert.equal(pskIdentityFromSession(valid), "home-123");
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed & 0xff);
    for (let i = 0; i < 20000; i++) {
      const b = Buffer.from(valid);
      for (let k = 0; k < 3; k++) b[rnd() % b.length] = rnd();
      const cut = b.subarray(0, rnd() % (b.length + 1));
      const out = pskIdentityFromSession(cut);
      assert.ok(out === undefined || typeof out === "string");
    }
    assert.equal(pskIdentityFromSession(undefined), undefined);
    assert.equal(pskIdentityFromSession(Buffer.from("3084ffffffff", "hex")), undefined);
  });

  it("closes the receiving side with FRAME_TOO_LARGE when a peer announces an oversized frame", async () => {
    const { port, accepted } = await certServer({ maxFrameSize: 1024 });
    const client = await dial({ host: "127.0.0.1", port, certificate: homeCert() });
    while (accepted.length === 0) await new Promise((r) => setImmediate(r));
    const srvClosed = once(accepted[0], "close");
    const clientClosed = once(client, "close");
    accepted[0].on("message", () => assert.fail("no frame may be delivered"));
    client.send(Buffer.from([0xe0, 0x10, 0x00, 0x45])); // Len 14: 4096 + 269 bytes announced
    const [err] = await srvClosed;
    assert.ok(isCode("FRAME_TOO_LARGE")(err));
    await clientClosed;
    assert.equal(client.closed, true);
    assert.equal(client.send(CSM), false);
  });

  it("requires ALPN coap: a server that does not select it is left, a client that does not offer it is refused", async () => {
    const plain = tls.createServer({ cert: pki.isp.cert, key: pki.isp.key });
    raw.push(plain);
    plain.on("secureConnection", (s) => s.on("error", () => undefined));
    await new Promise<void>((r) => plain.listen(0, "127.0.0.1", r));
    const port = (plain.address() as net.AddressInfo).port;
    await assert.rejects(dial({ host: "127.0.0.1", port, certificate: homeCert() }), isCode("ALPN_MISMATCH"));

    const ours = await certServer();
    const sock = tls.connect({
      host: "127.0.0.1",
      port: ours.port,
      cert: pki.home1.cert,
      key: pki.home1.key,
      ca: pki.ca.cert,
      servername: "localhost",
    });
    sock.on("error", () => undefined);
    await once(sock, "close");
    while (ours.failures.length === 0) await new Promise((r) => setTimeout(r, 5));
    assert.equal(ours.failures[0].error.code, "ALPN_MISMATCH");
    assert.equal(ours.accepted.length, 0);
  });

  it("close() is seen once by the peer; server close() ends live connections", async () => {
    const { server: s, port, accepted } = await certServer();
    const a = await dial({ host: "127.0.0.1", port, certificate: homeCert() });
    const b = await dial({ host: "127.0.0.1", port, certificate: homeCert() });
    while (accepted.length < 2) await new Promise((r) => setImmediate(r));
    let closes = 0;
    accepted[0].on("close", () => closes++);
    const peerClosed = once(accepted[0], "close");
    a.close();
    a.close();
    const [err] = await peerClosed;
    assert.equal(err, undefined);
    const bClosed = once(b, "close");
    await s.close();
    await bClosed;
    assert.equal(closes, 1);
    await assert.rejects(connectTls({ host: "127.0.0.1", port, certificate: homeCert(), timeoutMs: 2000 }), isCode("CONNECT_FAILED"));
  });

  it("times out a handshake the server never answers", async () => {
    const silent = net.createServer(() => undefined);
    raw.push(silent);
    const sockets: net.Socket[] = [];
    silent.on("connection", (s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const port = (silent.address() as net.AddressInfo).port;
    await assert.rejects(dial({ host: "127.0.0.1", port, certificate: homeCert(), timeoutMs: 300 }), isCode("HANDSHAKE_TIMEOUT"));
    for (const s of sockets) s.destroy();
  });

  it("a server with both a certificate and PSKs accepts either kind of client", async () => {
    const key = Buffer.from("secretPSK-0123456789");
    const { port, accepted } = await certServer({ psk: { lookup: (id) => (id === "home-2" ? key : undefined) } });
    for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
      const viaPsk = await dial({ host: "127.0.0.1", port, psk: { identity: "home-2", key }, maxVersion: version });
      assert.deepEqual(viaPsk.peer, { method: "psk", pskIdentity: "home-2" });
      const viaCert = await dial({ host: "127.0.0.1", port, certificate: homeCert(), maxVersion: version });
      assert.equal(viaCert.peer.subject, "CN=isp.example");
    }
    while (accepted.length < 4) await new Promise((r) => setImmediate(r));
    assert.deepEqual(
      accepted.map((c) => c.peer.pskIdentity ?? c.peer.subject),
      ["home-2", "CN=home-1.example", "home-2", "CN=home-1.example"],
    );
  });

  it("holds frames that arrive before anyone listens and delivers all of them in order", async () => {
    const { port, accepted } = await certServer();
    const client = await dial({ host: "127.0.0.1", port, certificate: homeCert() });
    while (accepted.length === 0) await new Promise((r) => setImmediate(r));
    const frames = Array.from({ length: 500 }, (_, i) => Buffer.from([0x20, 0x45, i >> 8, i & 0xff])); // Len 2 body = counter
    for (const f of frames) accepted[0].send(f);
    await new Promise((r) => setTimeout(r, 100)); // all of it is here (or paused in TCP) before the listener
    const got: Buffer[] = [];
    await new Promise<void>((resolve) => client.on("message", (m: Buffer) => (got.push(m), got.length === frames.length && resolve())));
    assert.deepEqual(got, frames);
  });

  it("closes a connection whose peer stops reading once the send buffer limit is hit", async () => {
    const { port, accepted } = await certServer({ maxWriteBuffer: 64 * 1024 });
    const client = await dial({ host: "127.0.0.1", port, certificate: homeCert() });
    (client as unknown as { socket: tls.TLSSocket }).socket.pause(); // a peer that never reads
    while (accepted.length === 0) await new Promise((r) => setImmediate(r));
    const srv = accepted[0];
    const closed = once(srv, "close");
    const frame = Buffer.concat([Buffer.from([0xe0, 0x0e, 0xef, 0x45]), Buffer.alloc(4096 - 4)]); // one 4096-byte frame
    let refusedAt = -1;
    for (let i = 0; i < 20000 && refusedAt < 0; i++) {
      if (!srv.send(frame)) refusedAt = i;
      if (i % 64 === 0) await new Promise((r) => setImmediate(r));
    }
    assert.ok(refusedAt > 0, "send eventually refuses");
    const [err] = await closed;
    assert.ok(isCode("CLOSED")(err) && /not reading/.test((err as Error).message));
  });

  it("an aborted connect rejects with CLOSED and leaves nothing open", async () => {
    const silent = net.createServer(() => undefined);
    raw.push(silent);
    const sockets: net.Socket[] = [];
    silent.on("connection", (s) => (sockets.push(s), s.on("error", () => undefined), s.resume()));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const port = (silent.address() as net.AddressInfo).port;
    const ac = new AbortController();
    const p = connectTls({ host: "127.0.0.1", port, certificate: homeCert(), signal: ac.signal });
    while (sockets.length === 0) await new Promise((r) => setTimeout(r, 5));
    const serverSide = once(sockets[0], "close");
    ac.abort();
    await assert.rejects(p, isCode("CLOSED"));
    await serverSide;
    await assert.rejects(connectTls({ host: "127.0.0.1", port, certificate: homeCert(), signal: AbortSignal.abort() }), isCode("CLOSED"));
  });

  it("rejects bad options with CONFIG", async () => {
    await assert.rejects(connectTls({ host: "127.0.0.1", port: 1 }), isCode("CONFIG"));
    await assert.rejects(connectTls({ host: "127.0.0.1", port: 0, psk: { identity: "a", key: Buffer.from("k") } }), isCode("CONFIG"));
    await assert.rejects(connectTls({ host: "127.0.0.1", port: 5, psk: { identity: "", key: Buffer.from("k") } }), isCode("CONFIG"));
    assert.throws(() => createTlsServer({}), isCode("CONFIG"));
  });
});
