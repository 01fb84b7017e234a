// The call-home listener on real loopback sockets: DTLS and TLS on one port, dual stack,
// drop-list per source address, and close() freeing the port.
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import * as net from "node:net";
import { once } from "node:events";
import { TransportError, type Connection } from "../../../src/transport/connection";
import { connectDtls } from "../../../src/transport/dtls-client";
import { dtlsClientConnect } from "../../../src/transport/dtls/client";
import { CallHomeTransportListener } from "../../../src/transport/listener";
import * as tls from "node:tls";
import { PSK_CIPHERS, connectTls } from "../../../src/transport/tls";
import { makeTestPki, type TestPki } from "../../support/certs";
import { LossyRelay } from "../../support/lossy-relay";
import { recordListenerEvents } from "../../support/listener-events";

const KEY = Buffer.from("secretPSK-0123456789");
const lookup = (id: string) => (id === "home-1" ? KEY : undefined);

describe("transport/listener", function () {
  this.timeout(30000);
  let pki: TestPki;
  const listeners: CallHomeTransportListener[] = [];
  const conns: Connection[] = [];
  const relays: LossyRelay[] = [];
  const sockets: dgram.Socket[] = [];
  const raws: tls.TLSSocket[] = [];

  before(async function () {
    this.timeout(60000);
    pki = await makeTestPki();
  });

  afterEach(async () => {
    for (const c of conns.splice(0)) c.close();
    for (const r of relays.splice(0)) await r.close();
    for (const l of listeners.splice(0)) await l.close();
    for (const s of sockets.splice(0)) s.close();
    for (const s of raws.splice(0)) s.destroy();
  });

  function make(extra: Partial<ConstructorParameters<typeof CallHomeTransportListener>[0]> = {}) {
    const l = new CallHomeTransportListener({
      port: 0,
      dtls: { pskLookup: lookup },
      tls: { certificate: { cert: pki.isp.cert, key: pki.isp.key, ca: pki.ca.cert }, pskLookup: lookup },
      ...extra,
    });
    listeners.push(l);
    const { accepted, failures, drops } = recordListenerEvents(l, conns);
    return { l, accepted, failures, drops };
  }
  const home = () => ({ cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert });
  const rogue = () => ({ cert: pki.rogueHome.cert, key: pki.rogueHome.key, ca: pki.ca.cert });
  async function until(cond: () => boolean): Promise<void> {
    while (!cond()) await new Promise((r) => setTimeout(r, 5));
  }

  it("accepts DTLS and TLS on one port number, over IPv4 and IPv6", async () => {
    const { l, accepted } = make();
    const { port, host } = await l.listen();
    assert.equal(host, "::");
    assert.equal(l.port, port);
    const tls4 = await connectTls({ host: "127.0.0.1", port, certificate: home() });
    const tls6 = await connectTls({ host: "::1", port, psk: { identity: "home-1", key: KEY } });
    const dtls4 = await connectDtls({ host: "127.0.0.1", port, psk: { identity: "home-1", key: KEY } });
    const dtls6 = await connectDtls({ host: "::1", port, psk: { identity: "home-1", key: KEY } });
    conns.push(tls4, tls6, dtls4, dtls6);
    await until(() => accepted.length === 4);
    const seen = accepted.map((c) => `${c.transport} ${c.remoteAddress} ${c.peer.subject ?? c.peer.pskIdentity}`).sort();
    assert.deepEqual(seen, ["dtls 127.0.0.1 home-1", "dtls ::1 home-1", "tls 127.0.0.1 CN=home-1.example", "tls ::1 home-1"]);
    assert.equal(l.connections.size, 4);
    assert.ok(accepted.every((c) => c.localPort === port));
  });

  it("ALPN per authentication method: { psk: false } admits PSK clients without ALPN (libcoap), certificate clients still need it", async () => {
    // A bare node:tls client offering no ALPN, as libcoap's PSK client does.
    const noAlpn = (port: number, kind: "psk" | "certificate"): void => {
      const s = tls.connect(
        kind === "psk"
          ? {
              host: "127.0.0.1",
              port,
              ciphers: PSK_CIPHERS,
              checkServerIdentity: () => undefined,
              pskCallback: () => ({ identity: "home-1", psk: KEY }),
            }
          : { host: "127.0.0.1", port, ...home(), servername: "localhost" },
      );
      s.on("error", () => undefined);
      s.on("close", () => undefined);
      raws.push(s);
    };
    const relaxed = make({
      dtls: undefined,
      tls: { certificate: { cert: pki.isp.cert, key: pki.isp.key, ca: pki.ca.cert }, pskLookup: lookup, requireAlpn: { psk: false } },
    });
    const relaxedPort = (await relaxed.l.listen()).port;
    noAlpn(relaxedPort, "psk");
    await until(() => relaxed.accepted.length === 1);
    assert.equal(relaxed.accepted[0].peer.pskIdentity, "home-1");
    noAlpn(relaxedPort, "certificate");
    await until(() => relaxed.failures.length === 1);
    assert.match(relaxed.failures[0].reason, /ALPN/);
    assert.equal(relaxed.accepted.length, 1);
    // The default requires ALPN "coap" of PSK clients too; clients offering it are unaffected.
    const strict = make({ dtls: undefined });
    const strictPort = (await strict.l.listen()).port;
    noAlpn(strictPort, "psk");
    await until(() => strict.failures.length === 1);
    assert.match(strict.failures[0].reason, /ALPN/);
    conns.push(await connectTls({ host: "127.0.0.1", port: strictPort, psk: { identity: "home-1", key: KEY } }));
    await until(() => strict.accepted.length === 1);
    assert.equal(strict.accepted[0].peer.pskIdentity, "home-1");
  });

  it("close() ends every connection and frees the port for a new listener", async () => {
    const first = make();
    const { port } = await first.l.listen();
    const t = await connectTls({ host: "127.0.0.1", port, certificate: home() });
    const d = await connectDtls({ host: "127.0.0.1", port, psk: { identity: "home-1", key: KEY } });
    await until(() => first.accepted.length === 2);
    const closed = Promise.all([once(t, "close"), once(d, "close")]);
    await first.l.close();
    await closed;
    assert.equal(first.l.connections.size, 0);
    const second = make({ port });
    assert.equal((await second.l.listen()).port, port);
    const again = await connectDtls({ host: "127.0.0.1", port, psk: { identity: "home-1", key: KEY } });
    conns.push(again);
    await until(() => second.accepted.length === 1);
  });

  it("refuses to start when the UDP half of a fixed port is taken, and leaves TCP free", async () => {
    const squatter = dgram.createSocket({ type: "udp6", ipv6Only: false });
    sockets.push(squatter);
    await new Promise<void>((r) => squatter.bind(0, "::", r));
    const port = squatter.address().port;
    const { l } = make({ port });
    await assert.rejects(l.listen(), (e: unknown) => e instanceof TransportError && e.code === "CONFIG" && /EADDRINUSE/.test(e.message));
    const tlsOnly = new CallHomeTransportListener({ port, tls: { pskLookup: lookup } });
    listeners.push(tlsOnly);
    assert.equal((await tlsOnly.listen()).port, port);
  });

  it("drops a TLS source after repeated bad certificates; another address still gets in", async () => {
    const { l, accepted, failures, drops } = make({ dropList: { maxFailures: 3, windowMs: 60_000, banMs: 60_000 } });
    const { port } = await l.listen();
    for (let i = 0; i < 3; i++) {
      await assert.rejects(connectTls({ host: "127.0.0.1", port, certificate: rogue(), localAddress: "127.0.0.1" }));
      await until(() => failures.length === i + 1);
    }
    assert.ok(failures.every((f) => f.transport === "tls" && f.address === "127.0.0.1"));
    assert.equal(drops.length, 1);
    assert.equal(drops[0].address, "127.0.0.1");
    assert.ok(drops[0].until > Date.now());
    // Now even a good client from that address is cut off before TLS starts.
    await assert.rejects(
      connectTls({ host: "127.0.0.1", port, certificate: home(), localAddress: "127.0.0.1", timeoutMs: 3000 }),
      TransportError,
    );
    // ... and over DTLS too: the address is ignored on both transports.
    await assert.rejects(
      connectDtls({ host: "127.0.0.1", port, psk: { identity: "home-1", key: KEY }, handshakeTimeoutMs: 200, attempts: 2 }),
      TransportError,
    );
    assert.equal(accepted.length, 0);
    const good = await connectTls({ host: "127.0.0.1", port, certificate: home(), localAddress: "127.0.0.2" });
    conns.push(good);
    await until(() => accepted.length === 1);
    assert.equal(accepted[0].remoteAddress, "127.0.0.2");
  });

  it("TCP health checks (connect, then close or reset before any byte) are not failed handshakes: the prober is never banned", async () => {
    const { l, accepted, failures, drops } = make({ dropList: { maxFailures: 2, windowMs: 60_000, banMs: 60_000 } });
    const { port } = await l.listen();
    // What a load balancer's TCP check does, e.g. keepalived TCP_CHECK or HAProxy "check" without SSL.
    for (let i = 0; i < 6; i++) {
      const probe = net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.1" });
      await once(probe, "connect");
      if (i % 2 === 0) probe.end();
      else probe.resetAndDestroy();
      await once(probe, "close");
    }
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(failures, []);
    assert.deepEqual(drops, []);
    const good = await connectTls({ host: "127.0.0.1", port, certificate: home(), localAddress: "127.0.0.1" });
    conns.push(good);
    await until(() => accepted.length === 1);
    // A client that does send bytes and then gives up is still counted.
    const garbage = net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.1" });
    await once(garbage, "connect");
    garbage.end(Buffer.from("GET / HTTP/1.0\r\n\r\n"));
    await until(() => failures.length === 1);
  });

  it("a TCP peer that stays silent until the TLS handshake timeout is a failed handshake", async () => {
    const { l, failures } = make({
      tls: { certificate: { cert: pki.isp.cert, key: pki.isp.key, ca: pki.ca.cert }, pskLookup: lookup, handshakeTimeoutMs: 300 },
    });
    const { port } = await l.listen();
    const silent = net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.1" });
    silent.on("error", () => undefined);
    await once(silent, "connect");
    await until(() => failures.length === 1);
    assert.match(failures[0].reason, /timeout|TIMEOUT/);
    silent.destroy();
  });

  it("replayed ticket ClientHellos answered without a cookie and left to time out are no one's failures: the address is not banned", async () => {
    const { l, accepted, failures, drops } = make({
      dtls: { pskLookup: lookup, pressureHandshakeTimeoutMs: 200, maxHandshakingPerSource: 64 },
      dropList: { maxFailures: 2, windowMs: 60_000, banMs: 60_000 },
    });
    const { port } = await l.listen();
    const first = await dtlsClientConnect({ address: "127.0.0.1", port, psk: { identity: "home-1", key: KEY } });
    const ticket = first.resumption;
    assert.ok(ticket);
    // The home's ClientHello with its ticket, as anyone on the path sees it: catch what our client
    // sends through a one-way relay that never answers.
    const catcher = dgram.createSocket("udp4");
    sockets.push(catcher);
    await new Promise<void>((r) => catcher.bind(0, "127.0.0.1", r));
    const hello = new Promise<Buffer>((r) => catcher.once("message", r));
    const pending = dtlsClientConnect({
      address: "127.0.0.1",
      port: catcher.address().port,
      psk: { identity: "home-1", key: KEY },
      resumeFrom: ticket,
      handshakeTimeoutMs: 300,
    });
    const replayed = await hello;
    await pending.catch(() => undefined);
    // Six replays from six ports of one address: each gets our abbreviated flight, none can finish.
    for (let i = 0; i < 6; i++) {
      const s = dgram.createSocket("udp4");
      sockets.push(s);
      const answered = new Promise((r) => s.once("message", r));
      s.send(replayed, port, "127.0.0.1");
      await answered;
    }
    await new Promise((r) => setTimeout(r, 700)); // past the 200 ms deadline of every replay
    assert.deepEqual(failures, [], "no auth-failure for an unproven address");
    assert.deepEqual(drops, []);
    assert.equal(l.dropList?.isDropped("127.0.0.1"), false);
    // The home comes back from that address, resumes, and is let in.
    const again = await dtlsClientConnect({ address: "127.0.0.1", port, psk: { identity: "home-1", key: KEY }, resumeFrom: ticket });
    assert.equal(again.resumed, true);
    first.close();
    again.close();
    await until(() => accepted.length === 2);
  });

  it("drops a DTLS source after repeated wrong PSKs; another address still gets in", async () => {
    const { l, accepted, failures, drops } = make({ dropList: { maxFailures: 2, windowMs: 60_000, banMs: 60_000 } });
    const { port } = await l.listen();
    for (let i = 0; i < 2; i++) {
      await assert.rejects(
        connectDtls({ host: "127.0.0.1", port, psk: { identity: "home-1", key: Buffer.from("wrong") } }),
        (e: unknown) => e instanceof TransportError && e.code === "AUTH_FAILED",
      );
    }
    await until(() => drops.length === 1);
    assert.ok(failures.every((f) => f.transport === "dtls" && f.address === "127.0.0.1"));
    await assert.rejects(
      connectDtls({ host: "127.0.0.1", port, psk: { identity: "home-1", key: KEY }, handshakeTimeoutMs: 200, attempts: 2 }),
      (e: unknown) => e instanceof TransportError && e.code === "HANDSHAKE_TIMEOUT",
    );
    // A relay that sends from 127.0.0.2 stands in for a second home.
    const relay = new LossyRelay({ target: { address: "127.0.0.1", port }, lossRate: 0, upstreamAddress: "127.0.0.2" });
    relays.push(relay);
    const front = await relay.start();
    const good = await connectDtls({ host: front.address, port: front.port, psk: { identity: "home-1", key: KEY } });
    conns.push(good);
    await until(() => accepted.length === 1);
    assert.equal(accepted[0].remoteAddress, "127.0.0.2");
  });

  it("caps simultaneous TCP connections per source address; other sources are unaffected", async () => {
    const { l, accepted } = make({ maxTcpPerAddress: 3 });
    const { port } = await l.listen();
    const stalled: net.Socket[] = [];
    for (let i = 0; i < 3; i++) {
      const s = net.connect({ host: "127.0.0.1", port, localAddress: "127.0.0.1" });
      s.on("error", () => undefined);
      stalled.push(s);
      await once(s, "connect");
    }
    try {
      await assert.rejects(
        connectTls({ host: "127.0.0.1", port, certificate: home(), localAddress: "127.0.0.1", timeoutMs: 3000 }),
        TransportError,
      );
      const other = await connectTls({ host: "127.0.0.1", port, certificate: home(), localAddress: "127.0.0.2" });
      conns.push(other);
      await until(() => accepted.length === 1);
      stalled.pop()?.destroy();
      await new Promise((r) => setTimeout(r, 50));
      const again = await connectTls({ host: "127.0.0.1", port, certificate: home(), localAddress: "127.0.0.1" });
      conns.push(again);
      await until(() => accepted.length === 2);
    } finally {
      for (const s of stalled) s.destroy();
    }
  });

  it("feeds failures reported from above into the same drop-list", async () => {
    const { l, drops } = make({ dropList: { maxFailures: 2 } });
    await l.listen();
    l.reportFailure("::ffff:192.0.2.44", "tls", "no home registered for this identity");
    l.reportFailure("192.0.2.44", "dtls", "no home registered for this identity");
    assert.equal(drops.length, 1);
    assert.equal(l.dropList?.isDropped("192.0.2.44"), true);
  });

  it("rejects a listener with nothing to accept", () => {
    assert.throws(() => new CallHomeTransportListener({}), TransportError);
    assert.throws(() => new CallHomeTransportListener({ tls: {} }), TransportError);
    assert.throws(() => new CallHomeTransportListener({ port: 70000, dtls: { pskLookup: lookup } }), TransportError);
  });
});
