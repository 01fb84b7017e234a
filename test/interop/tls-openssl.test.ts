// Our TLS client and server against real OpenSSL peers (openssl s_server / s_client), TLS 1.2 and
// 1.3, certificates (good and bad) and PSK, ALPN coap. All on loopback.
import { strict as assert } from "node:assert";
import { TransportError, type Connection } from "../../src/transport/connection";
import { connectTls, createTlsServer, type TlsHandshakeFailure, type TlsServer } from "../../src/transport/tls";
import { makeTestPki, type TestPki } from "../support/certs";
import { hasCommand, requireOrSkip } from "../support/env";
import { PSK_HEX, PSK_KEY, freePort, spawnPeer, stopAllPeers } from "./transport-peers";

// RFC 8323 frame: Len 13 (+3), code 0.01, no token, payload marker + "hello-from-node".
const HELLO_FRAME = Buffer.concat([Buffer.from([0xd0, 0x03, 0x01, 0xff]), Buffer.from("hello-from-node")]);
// A text line openssl sends from stdin that is also one whole RFC 8323 frame:
// '!' = Len 2, TKL 1; 'E' = 2.05; token 't'; 2 bytes "ok". The trailing newline starts an
// incomplete frame that is never delivered.
const LINE = "!Etok\n";
const isCode =
  (...codes: string[]) =>
  (e: unknown) =>
    e instanceof TransportError && codes.includes(e.code);

async function firstMessage(conn: Connection, ms = 5000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no message")), ms);
    conn.once("message", (m: Buffer) => (clearTimeout(t), resolve(m)));
  });
}

describe("interop: TLS with openssl s_server / s_client", function () {
  this.timeout(30000);
  let pki: TestPki;
  const conns: Connection[] = [];
  const servers: TlsServer[] = [];

  before(async function () {
    requireOrSkip(this, "openssl", hasCommand("openssl"));
    pki = await makeTestPki();
  });

  afterEach(async () => {
    for (const c of conns.splice(0)) c.close();
    for (const s of servers.splice(0)) await s.close();
    await stopAllPeers();
  });

  const home = () => ({ cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert });

  async function sServer(args: string[]): Promise<{ port: number; peer: ReturnType<typeof spawnPeer> }> {
    const port = await freePort();
    const peer = spawnPeer("openssl", ["s_server", "-accept", String(port), "-4", "-alpn", "coap", "-naccept", "1", ...args]);
    await peer.waitFor(/ACCEPT/);
    return { port, peer };
  }

  for (const version of ["tls1_2", "tls1_3"] as const) {
    const v = version === "tls1_2" ? "TLSv1.2" : "TLSv1.3";

    it(`our client -> s_server -${version}, mutual certificates: verified both ways, data both ways`, async () => {
      const { port, peer } = await sServer([
        `-${version}`,
        "-cert",
        pki.isp.certPath,
        "-key",
        pki.isp.keyPath,
        "-CAfile",
        pki.ca.certPath,
        "-Verify",
        "1",
        "-verify_return_error",
      ]);
      const conn = await connectTls({ host: "127.0.0.1", port, certificate: home(), servername: "isp.example" });
      conns.push(conn);
      assert.match(conn.cipher, new RegExp(`^${v.replace(".", "\\.")} `));
      assert.equal(conn.peer.subject, "CN=isp.example");
      conn.send(HELLO_FRAME);
      await peer.waitFor(/hello-from-node/);
      assert.match(peer.output(), /subject=CN = home-1\.example/);
      assert.match(peer.output(), /ALPN protocol: coap|ALPN protocols advertised by the client: coap/);
      const got = firstMessage(conn);
      peer.write(LINE);
      assert.equal((await got).toString("latin1"), "!Etok");
    });

    it(`our client -> s_server -${version}, PSK: data both ways`, async () => {
      const { port, peer } = await sServer([`-${version}`, "-nocert", "-psk", PSK_HEX, "-psk_identity", "home-1"]);
      const conn = await connectTls({ host: "127.0.0.1", port, psk: { identity: "home-1", key: PSK_KEY } });
      conns.push(conn);
      assert.match(conn.cipher, new RegExp(`^${v.replace(".", "\\.")} `));
      conn.send(HELLO_FRAME);
      await peer.waitFor(/hello-from-node/);
      const got = firstMessage(conn);
      peer.write(LINE);
      assert.equal((await got).toString("latin1"), "!Etok");
    });

    it(`our client refuses s_server -${version} with an expired or wrong-name certificate, or one from a CA it does not trust`, async () => {
      for (const [cert, ca] of [
        [pki.expired, pki.ca],
        [pki.wrongName, pki.ca],
        [pki.isp, pki.rogueCa],
      ] as const) {
        const { port } = await sServer([
          `-${version}`,
          "-cert",
          cert.certPath,
          "-key",
          cert.keyPath,
          "-CAfile",
          pki.ca.certPath,
          "-verify",
          "1",
        ]);
        await assert.rejects(connectTls({ host: "127.0.0.1", port, certificate: { ...home(), ca: ca.cert } }), isCode("AUTH_FAILED"));
        await stopAllPeers();
      }
    });

    it(`s_server -${version} -verify_return_error refuses our client's rogue certificate`, async () => {
      const { port, peer } = await sServer([
        `-${version}`,
        "-cert",
        pki.isp.certPath,
        "-key",
        pki.isp.keyPath,
        "-CAfile",
        pki.ca.certPath,
        "-Verify",
        "1",
        "-verify_return_error",
      ]);
      await assert.rejects(
        connectTls({ host: "127.0.0.1", port, certificate: { cert: pki.rogueHome.cert, key: pki.rogueHome.key, ca: pki.ca.cert } }),
        isCode("AUTH_FAILED", "HANDSHAKE_FAILED"),
      );
      await peer.waitFor(/verify error|certificate verify failed|unable to get local issuer/i);
    });

    it(`s_client -${version} -> our server with certificates: both verified, data both ways`, async () => {
      const server = createTlsServer({ certificate: { cert: pki.isp.cert, key: pki.isp.key, ca: pki.ca.cert } });
      servers.push(server);
      const accepted = new Promise<Connection>((r) => server.once("connection", r));
      const { port } = await server.listen(0, "127.0.0.1");
      const peer = spawnPeer("openssl", [
        "s_client",
        "-connect",
        `127.0.0.1:${port}`,
        `-${version}`,
        "-cert",
        pki.home1.certPath,
        "-key",
        pki.home1.keyPath,
        "-CAfile",
        pki.ca.certPath,
        "-verify_return_error",
        "-verify_hostname",
        "isp.example",
        "-servername",
        "isp.example",
        "-alpn",
        "coap",
      ]);
      const conn = await accepted;
      conns.push(conn);
      assert.equal(conn.peer.subject, "CN=home-1.example");
      assert.match(conn.cipher, new RegExp(`^${v.replace(".", "\\.")} `));
      conn.send(HELLO_FRAME);
      await peer.waitFor(/hello-from-node/);
      assert.match(peer.output(), /Verify return code: 0 \(ok\)/);
      assert.match(peer.output(), /ALPN protocol: coap/);
      const got = firstMessage(conn);
      peer.write(LINE);
      assert.equal((await got).toString("latin1"), "!Etok");
    });

    it(`s_client -${version} -> our server with PSK`, async () => {
      const server = createTlsServer({ psk: { lookup: (id) => (id === "home-1" ? PSK_KEY : undefined) } });
      servers.push(server);
      const accepted = new Promise<Connection>((r) => server.once("connection", r));
      const { port } = await server.listen(0, "127.0.0.1");
      const peer = spawnPeer("openssl", [
        "s_client",
        "-connect",
        `127.0.0.1:${port}`,
        `-${version}`,
        "-psk",
        PSK_HEX,
        "-psk_identity",
        "home-1",
        "-alpn",
        "coap",
      ]);
      const conn = await accepted;
      conns.push(conn);
      assert.deepEqual(conn.peer, { method: "psk", pskIdentity: "home-1" });
      const got = firstMessage(conn);
      peer.write(LINE);
      assert.equal((await got).toString("latin1"), "!Etok");
      conn.send(HELLO_FRAME);
      await peer.waitFor(/hello-from-node/);
    });

    it(`our server refuses s_client -${version} with a rogue certificate, an unknown PSK identity, or no ALPN`, async () => {
      const server = createTlsServer({
        certificate: { cert: pki.isp.cert, key: pki.isp.key, ca: pki.ca.cert },
        psk: { lookup: (id) => (id === "home-1" ? PSK_KEY : undefined) },
      });
      servers.push(server);
      const failures: TlsHandshakeFailure[] = [];
      let accepted = 0;
      server.on("handshake-failed", (f: TlsHandshakeFailure) => failures.push(f));
      server.on("connection", (c: Connection) => (accepted++, c.close()));
      const { port } = await server.listen(0, "127.0.0.1");
      const attempts: Array<[string[], string]> = [
        [["-cert", pki.rogueHome.certPath, "-key", pki.rogueHome.keyPath, "-CAfile", pki.ca.certPath, "-alpn", "coap"], "AUTH_FAILED"],
        [
          ["-psk", PSK_HEX, "-psk_identity", "intruder", "-alpn", "coap", ...(version === "tls1_2" ? ["-cipher", "PSK"] : [])],
          "AUTH_FAILED",
        ],
        [["-cert", pki.home1.certPath, "-key", pki.home1.keyPath, "-CAfile", pki.ca.certPath], "ALPN_MISMATCH"],
      ];
      for (const [args, code] of attempts) {
        const before = failures.length;
        const peer = spawnPeer("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, `-${version}`, ...args]);
        while (failures.length === before) await new Promise((r) => setTimeout(r, 10));
        assert.equal(failures[before].error.code, code, `${args.join(" ")}: ${failures[before].reason}`);
        assert.equal(failures[before].address, "127.0.0.1");
        await peer.stop();
      }
      assert.equal(accepted, 0);
    });
  }
});
