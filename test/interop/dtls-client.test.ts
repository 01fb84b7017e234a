// Our DTLS client (src/transport/dtls/client.ts, the dialer's default) against real DTLS servers:
// openssl s_server -dtls1_2 with PSK and ECDHE_PSK, and coap-server-openssl -k (CoAP GET /time over
// DTLS). All on loopback.
import { strict as assert } from "node:assert";
import { decodeUdp, encodeUdp } from "../../src/coap/udp-codec";
import { TransportError, type Connection } from "../../src/transport/connection";
import { connectDtls } from "../../src/transport/dtls-client";
import { hasCommand, requireOrSkip } from "../support/env";
import { PSK_KEY, PSK_TEXT, freePort, openSslDtlsServer, openSslPskServerArgs, spawnPeer, stopAllPeers } from "./transport-peers";

describe("interop: our DTLS client with openssl and libcoap", function () {
  this.timeout(30000);
  const conns: Connection[] = [];

  before(function () {
    requireOrSkip(this, "openssl", hasCommand("openssl"));
  });

  afterEach(async () => {
    for (const c of conns.splice(0)) c.close();
    await new Promise((r) => setTimeout(r, 20)); // let close_notify leave before the peer stops
    await stopAllPeers();
  });

  function sServer(extra: string[], family: 4 | 6 = 4) {
    return openSslDtlsServer([...openSslPskServerArgs("home-1"), "-naccept", "1", ...extra], { family });
  }

  for (const [cipher, name] of [
    ["PSK-AES128-CCM8", "TLS_PSK_WITH_AES_128_CCM_8"],
    ["PSK-AES128-GCM-SHA256", "TLS_PSK_WITH_AES_128_GCM_SHA256"],
    ["ECDHE-PSK-CHACHA20-POLY1305", "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"],
  ] as const) {
    it(`-> openssl s_server -dtls1_2 -cipher ${cipher}: handshake, data both ways, close_notify`, async () => {
      const { port, peer } = await sServer(["-cipher", cipher]);
      const conn = await connectDtls({ host: "127.0.0.1", port, psk: { identity: "home-1", key: PSK_KEY } });
      conns.push(conn);
      assert.equal(conn.cipher, `DTLSv1.2 ${name}`);
      conn.send(Buffer.from("hello-from-node\n"));
      await peer.waitFor(/hello-from-node/);
      assert.match(peer.output(), new RegExp(`CIPHER is ${cipher}`));
      const got = new Promise<Buffer>((r) => conn.once("message", r));
      peer.write("hello-from-openssl\n");
      assert.equal((await got).toString(), "hello-from-openssl\n");
      conn.close();
      await peer.waitFor(/DONE|shutting down|CONNECTION CLOSED/i);
    });
  }

  it("-> s_server that sends a PSK identity hint (crashed node-dtls-client 1.1.1)", async () => {
    const { port, peer } = await sServer(["-cipher", "PSK-AES128-CCM8", "-psk_hint", "isp-hint"]);
    const conn = await connectDtls({ host: "127.0.0.1", port, psk: { identity: "home-1", key: PSK_KEY } });
    conns.push(conn);
    conn.send(Buffer.from("hinted\n"));
    await peer.waitFor(/hinted/);
  });

  it("-> s_server over IPv6 (::1)", async () => {
    const { port, peer } = await sServer(["-cipher", "PSK-AES128-CCM8"], 6);
    const conn = await connectDtls({ host: "::1", port, psk: { identity: "home-1", key: PSK_KEY } });
    conns.push(conn);
    conn.send(Buffer.from("over-v6\n"));
    await peer.waitFor(/over-v6/);
  });

  it("a wrong key never yields a connection", async () => {
    // OpenSSL silently discards our Finished (it does not decrypt), as DTLS allows: we time out.
    const { port } = await sServer(["-cipher", "PSK-AES128-CCM8"]);
    await assert.rejects(
      connectDtls({
        host: "127.0.0.1",
        port,
        psk: { identity: "home-1", key: Buffer.from("wrong-key") },
        handshakeTimeoutMs: 500,
        attempts: 2,
      }),
      (e: unknown) => e instanceof TransportError && ["AUTH_FAILED", "HANDSHAKE_TIMEOUT"].includes(e.code),
    );
  });

  it("an s_server without a shared suite is refused, not hung on", async () => {
    const { port } = await sServer(["-cipher", "PSK-AES256-CBC-SHA"]);
    await assert.rejects(
      connectDtls({ host: "127.0.0.1", port, psk: { identity: "home-1", key: PSK_KEY }, handshakeTimeoutMs: 500, attempts: 2 }),
      TransportError,
    );
  });

  it("-> coap-server-openssl -k over DTLS: CoAP GET /time gets 2.05", async function () {
    requireOrSkip(this, "coap-server-openssl (libcoap3-bin)", hasCommand("coap-server-openssl"));
    const base = await freePort(2);
    const server = spawnPeer("coap-server-openssl", ["-A", "127.0.0.1", "-p", String(base), "-k", PSK_TEXT]);
    // The server prints nothing when ready; retries of the handshake cover its start-up.
    const conn = await connectDtls({
      host: "127.0.0.1",
      port: base + 1,
      psk: { identity: "home-1", key: PSK_KEY },
      handshakeTimeoutMs: 300,
      attempts: 10,
      backoff: 1,
    });
    conns.push(conn);
    // libcoap (OpenSSL) takes our first offer: forward secrecy with a PSK peer.
    assert.equal(conn.cipher, "DTLSv1.2 TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256");
    const got = new Promise<Buffer>((r) => conn.once("message", r));
    conn.send(
      encodeUdp({
        type: "CON",
        code: 0x01,
        messageId: 0x1234,
        token: Buffer.from("cafe", "hex"),
        options: [{ number: 11, value: Buffer.from("time") }],
        payload: Buffer.alloc(0),
      }),
    );
    const res = decodeUdp(await got);
    assert.equal(res.type, "ACK");
    assert.equal(res.code, 0x45);
    assert.equal(res.messageId, 0x1234);
    assert.ok(res.token.equals(Buffer.from("cafe", "hex")));
    assert.match(res.payload.toString(), /\d\d:\d\d:\d\d/);
    assert.equal(server.proc.exitCode, null);
  });
});
