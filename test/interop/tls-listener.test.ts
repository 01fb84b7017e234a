// The call-home listener (DTLS + TLS on one port) against openssl s_client: both transports on one
// port number, and the drop-list after repeated bad handshakes while another source (127.0.0.2)
// still gets in.
import { strict as assert } from "node:assert";
import type { Connection } from "../../src/transport/connection";
import { CallHomeTransportListener } from "../../src/transport/listener";
import { makeTestPki, type TestPki } from "../support/certs";
import { hasCommand, requireOrSkip } from "../support/env";
import { PSK_HEX, PSK_KEY, spawnPeer, stopAllPeers } from "./transport-peers";
import { recordListenerEvents } from "../support/listener-events";

const WRONG_HEX = Buffer.from("not-the-right-key").toString("hex");

describe("interop: call-home listener with openssl s_client", function () {
  this.timeout(60000);
  let pki: TestPki;
  let listener: CallHomeTransportListener | undefined;
  const conns: Connection[] = [];

  before(async function () {
    requireOrSkip(this, "openssl", hasCommand("openssl"));
    pki = await makeTestPki();
  });

  afterEach(async () => {
    for (const c of conns.splice(0)) c.close();
    await listener?.close();
    listener = undefined;
    await stopAllPeers();
  });

  async function start(maxFailures: number) {
    const l = new CallHomeTransportListener({
      port: 0,
      dtls: { pskLookup: (id) => (id === "home-1" ? PSK_KEY : undefined) },
      tls: { certificate: { cert: pki.isp.cert, key: pki.isp.key, ca: pki.ca.cert } },
      dropList: { maxFailures, windowMs: 60_000, banMs: 60_000 },
    });
    listener = l;
    const { accepted, failures, drops } = recordListenerEvents(l, conns);
    const { port } = await l.listen();
    return { port, accepted, failures, drops };
  }
  async function until(cond: () => boolean, ms = 10000): Promise<void> {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error("condition not met in time");
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  const dtlsClient = (port: number, from: string, hex: string) =>
    spawnPeer("openssl", [
      "s_client",
      "-dtls1_2",
      "-connect",
      `127.0.0.1:${port}`,
      "-bind",
      `${from}:0`,
      "-psk",
      hex,
      "-psk_identity",
      "home-1",
      "-cipher",
      "PSK-AES128-CCM8",
    ]);
  const tlsClient = (port: number, from: string, cert: { certPath: string; keyPath: string }) =>
    spawnPeer("openssl", [
      "s_client",
      "-connect",
      `127.0.0.1:${port}`,
      "-bind",
      `${from}:0`,
      "-cert",
      cert.certPath,
      "-key",
      cert.keyPath,
      "-CAfile",
      pki.ca.certPath,
      "-alpn",
      "coap",
      "-servername",
      "isp.example",
    ]);

  it("serves openssl DTLS and TLS clients on the same port number", async () => {
    const { port, accepted } = await start(5);
    const d = dtlsClient(port, "127.0.0.1", PSK_HEX);
    const t = tlsClient(port, "127.0.0.1", pki.home1);
    await until(() => accepted.length === 2);
    const kinds = accepted.map((c) => `${c.transport}:${c.peer.pskIdentity ?? c.peer.subject}`).sort();
    assert.deepEqual(kinds, ["dtls:home-1", "tls:CN=home-1.example"]);
    for (const c of accepted) c.send(Buffer.from(c.transport === "dtls" ? "dtls-data-ok" : "\xd0\x00\x01\xfftls-data-ok-x", "latin1"));
    await d.waitFor(/dtls-data-ok/);
    await t.waitFor(/tls-data-ok/);
  });

  it("drops a source after repeated wrong DTLS PSKs; 127.0.0.2 still connects", async () => {
    const { port, accepted, failures, drops } = await start(3);
    for (let i = 0; i < 3; i++) {
      const bad = dtlsClient(port, "127.0.0.1", WRONG_HEX);
      await bad.waitFor(/alert|error/i);
      await bad.stop();
    }
    await until(() => drops.length === 1);
    assert.equal(drops[0].address, "127.0.0.1");
    assert.ok(failures.every((f) => f.transport === "dtls" && f.address === "127.0.0.1"));
    // A correct key from the dropped address is ignored now ...
    const ignored = dtlsClient(port, "127.0.0.1", PSK_HEX);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(accepted.length, 0);
    await ignored.stop();
    // ... while another source is served.
    const good = dtlsClient(port, "127.0.0.2", PSK_HEX);
    await until(() => accepted.length === 1);
    assert.equal(accepted[0].remoteAddress, "127.0.0.2");
    accepted[0].send(Buffer.from("welcome-127.0.0.2"));
    await good.waitFor(/welcome-127\.0\.0\.2/);
  });

  it("drops a source after repeated rogue TLS certificates; 127.0.0.2 still connects", async () => {
    const { port, accepted, drops } = await start(2);
    for (let i = 0; i < 2; i++) {
      const bad = tlsClient(port, "127.0.0.1", pki.rogueHome);
      await bad.exited();
    }
    await until(() => drops.length === 1);
    const ignored = tlsClient(port, "127.0.0.1", pki.home1);
    await ignored.exited(); // the TCP connection is closed before TLS starts
    assert.match(ignored.output(), /SSL handshake has read 0 bytes/);
    const good = tlsClient(port, "127.0.0.2", pki.home1);
    await until(() => accepted.length === 1);
    assert.equal(accepted[0].remoteAddress, "127.0.0.2");
    await good.stop();
  });
});
