// coaps+tcp with libcoap (Debian libcoap3-bin): our TLS client asks coap-server-openssl for /time,
// coap-client-openssl asks our TLS server. CoAP bytes come from the project's RFC 8323 codec.
import { strict as assert } from "node:assert";
import * as net from "node:net";
import { decodeTcp, encodeTcp } from "../../src/coap/tcp-codec";
import type { CoapMessage } from "../../src/coap/message";
import type { Connection } from "../../src/transport/connection";
import { connectTls, createTlsServer, type TlsServer, type TlsConnectOptions } from "../../src/transport/tls";
import { makeTestPki, type TestPki } from "../support/certs";
import { hasCommand, requireOrSkip } from "../support/env";
import { PSK_KEY, PSK_TEXT, freePort, spawnPeer, stopAllPeers } from "./transport-peers";

const CSM: CoapMessage = { code: 0xe1, token: Buffer.alloc(0), options: [], payload: Buffer.alloc(0) };
const getTime = (token: Buffer): CoapMessage => ({
  code: 0x01,
  token,
  options: [{ number: 11, value: Buffer.from("time") }],
  payload: Buffer.alloc(0),
});

/** Sends CSM + GET /time and resolves with the response to the GET. */
async function askTime(conn: Connection): Promise<CoapMessage> {
  const token = Buffer.from("beef", "hex");
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no response to GET /time")), 5000);
    conn.on("message", (frame: Buffer) => {
      const msg = decodeTcp(frame);
      if (msg.token.equals(token) && msg.code !== 0xe1) {
        clearTimeout(t);
        resolve(msg);
      }
    });
    conn.send(encodeTcp(CSM));
    conn.send(encodeTcp(getTime(token)));
  });
}

/** Answers CSM with CSM and any GET with 2.05 "hello from our TLS server". */
function serveHello(conn: Connection): void {
  conn.on("message", (frame: Buffer) => {
    const msg = decodeTcp(frame);
    if (msg.code === 0xe1) conn.send(encodeTcp(CSM));
    else if (msg.code === 0x01)
      conn.send(encodeTcp({ code: 0x45, token: msg.token, options: [], payload: Buffer.from("hello from our TLS server") }));
  });
}

describe("interop: coaps+tcp with libcoap", function () {
  this.timeout(30000);
  let pki: TestPki;
  const conns: Connection[] = [];
  const servers: TlsServer[] = [];

  before(async function () {
    requireOrSkip(
      this,
      "coap-server-openssl and coap-client-openssl (libcoap3-bin)",
      hasCommand("coap-server-openssl") && hasCommand("coap-client-openssl"),
    );
    pki = await makeTestPki();
  });

  afterEach(async () => {
    for (const c of conns.splice(0)) c.close();
    for (const s of servers.splice(0)) await s.close();
    await stopAllPeers();
  });

  async function coapServer(args: string[]): Promise<number> {
    const port = await freePort(2);
    const peer = spawnPeer("coap-server-openssl", ["-A", "127.0.0.1", "-p", String(port), "-v", "6", ...args]);
    // No readiness line at this verbosity: poll the TLS port.
    for (let i = 0; i < 100; i++) {
      const up = await new Promise<boolean>((r) => {
        const s = net.connect(port + 1, "127.0.0.1");
        s.once("connect", () => (s.destroy(), r(true)));
        s.once("error", () => r(false));
      });
      if (up) return port + 1;
      if (peer.proc.exitCode !== null) throw new Error(`coap-server-openssl exited: ${peer.output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("coap-server-openssl did not open its TLS port");
  }

  it("our TLS client (certificates, ALPN coap) -> coap-server-openssl: GET /time gets 2.05", async () => {
    const port = await coapServer(["-c", pki.isp.certPath, "-j", pki.isp.keyPath, "-C", pki.ca.certPath]);
    const conn = await connectTls({ host: "127.0.0.1", port, certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert } });
    conns.push(conn);
    assert.equal(conn.peer.subject, "CN=isp.example");
    const res = await askTime(conn);
    assert.equal(res.code, 0x45);
    assert.match(res.payload.toString(), /\w{3} \d+ \d\d:\d\d:\d\d/);
  });

  for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
    it(`our TLS client (PSK, ${version}) -> coap-server-openssl -k: GET /time gets 2.05`, async () => {
      const port = await coapServer(["-k", PSK_TEXT]);
      // libcoap 4.3.1 negotiates no ALPN in PSK mode, so the requirement is relaxed here only.
      const opts: TlsConnectOptions = {
        host: "127.0.0.1",
        port,
        psk: { identity: "home-1", key: PSK_KEY },
        maxVersion: version,
        requireAlpn: false,
      };
      const conn = await connectTls(opts);
      conns.push(conn);
      assert.match(conn.cipher, new RegExp(`^${version.replace(".", "\\.")} `));
      const res = await askTime(conn);
      assert.equal(res.code, 0x45);
      assert.match(res.payload.toString(), /\d\d:\d\d:\d\d/);
    });
  }

  it("coap-client-openssl with certificates -> our TLS server: 2.05 payload printed", async () => {
    const server = createTlsServer({ certificate: { cert: pki.isp.cert, key: pki.isp.key, ca: pki.ca.cert } });
    servers.push(server);
    const peers: string[] = [];
    server.on("connection", (c: Connection) => (conns.push(c), peers.push(c.peer.subject ?? ""), serveHello(c)));
    const { port } = await server.listen(0, "127.0.0.1");
    const client = spawnPeer("coap-client-openssl", [
      "-m",
      "get",
      "-B",
      "5",
      "-c",
      pki.home1.certPath,
      "-j",
      pki.home1.keyPath,
      "-C",
      pki.ca.certPath,
      `coaps+tcp://127.0.0.1:${port}/x`,
    ]);
    assert.equal(await client.exited(), 0);
    assert.match(client.output(), /hello from our TLS server/);
    assert.deepEqual(peers, ["CN=home-1.example"]);
  });

  it("coap-client-openssl -k/-u -> our TLS PSK server: 2.05 payload printed (ALPN relaxed for libcoap PSK)", async () => {
    const identities: string[] = [];
    const server = createTlsServer({ psk: { lookup: (id) => (id === "home-1" ? PSK_KEY : undefined) }, requireAlpn: false });
    servers.push(server);
    server.on("connection", (c: Connection) => (conns.push(c), identities.push(c.peer.pskIdentity ?? ""), serveHello(c)));
    const { port } = await server.listen(0, "127.0.0.1");
    const client = spawnPeer("coap-client-openssl", [
      "-m",
      "get",
      "-B",
      "5",
      "-k",
      PSK_TEXT,
      "-u",
      "home-1",
      `coaps+tcp://127.0.0.1:${port}/x`,
    ]);
    assert.equal(await client.exited(), 0);
    assert.match(client.output(), /hello from our TLS server/);
    assert.deepEqual(identities, ["home-1"]);
  });

  it("coap-client-openssl with an unknown PSK identity gets nothing from our server", async () => {
    let failures = 0;
    const server = createTlsServer({ psk: { lookup: (id) => (id === "home-1" ? PSK_KEY : undefined) }, requireAlpn: false });
    servers.push(server);
    server.on("connection", (c: Connection) => (conns.push(c), serveHello(c)));
    server.on("handshake-failed", () => failures++);
    const { port } = await server.listen(0, "127.0.0.1");
    const client = spawnPeer("coap-client-openssl", [
      "-m",
      "get",
      "-B",
      "3",
      "-k",
      PSK_TEXT,
      "-u",
      "intruder",
      `coaps+tcp://127.0.0.1:${port}/x`,
    ]);
    await client.exited();
    assert.doesNotMatch(client.output(), /hello from our TLS server/);
    assert.ok(failures >= 1);
  });
});
