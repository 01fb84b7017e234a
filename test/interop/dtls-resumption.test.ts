// RFC 5077 session tickets in our DTLS client (src/transport/dtls/client.ts) against openssl
// s_server -dtls1_2 with PSK on loopback: a full handshake that gets a ticket, an abbreviated
// handshake resuming it (no key exchange messages, data flows), and full-handshake fallback when
// the server cannot use the ticket (corrupted, or a restarted server with new ticket keys); and the
// home dialer's reconnect after a lost session resuming (RFC 9132 4.7).
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import { once } from "node:events";
import { CallHomeDialer } from "../../src/dots/home-engine";
import { TransportError } from "../../src/transport/connection";
import { connectDtls } from "../../src/transport/dtls-client";
import { DtlsClient, dtlsClientConnect, type DtlsClientOptions } from "../../src/transport/dtls/client";
import { HandshakeType, type DtlsCipherSuiteName } from "../../src/transport/dtls/constants";
import type { DtlsResumption } from "../../src/transport/dtls/resumption";
import { hasCommand, requireOrSkip } from "../support/env";
import { PSK_KEY, openSslDtlsServer, openSslPskServerArgs, stopAllPeers, type Peer } from "./transport-peers";

const KEY_EXCHANGE = [HandshakeType.ServerKeyExchange, HandshakeType.ClientKeyExchange, HandshakeType.ServerHelloDone];

describe("interop: DTLS session tickets (RFC 5077) of our client with openssl s_server", function () {
  this.timeout(30000);
  const conns: DtlsClient[] = [];

  before(function () {
    requireOrSkip(this, "openssl", hasCommand("openssl"));
  });

  afterEach(async () => {
    for (const c of conns.splice(0)) c.close();
    await new Promise((r) => setTimeout(r, 20));
    await stopAllPeers();
  });

  function sServer(cipher: string, accepts: number, port?: number, extra: string[] = []): Promise<{ port: number; peer: Peer }> {
    return openSslDtlsServer([...openSslPskServerArgs("home-1"), "-cipher", cipher, "-naccept", String(accepts), ...extra], { port });
  }

  async function connect(port: number, suite: DtlsCipherSuiteName, resumeFrom?: DtlsResumption): Promise<DtlsClient> {
    const opts: DtlsClientOptions = { address: "127.0.0.1", port, psk: { identity: "home-1", key: PSK_KEY }, suites: [suite], resumeFrom };
    const c = await dtlsClientConnect(opts);
    conns.push(c);
    return c;
  }

  /** Our line reaches s_server's stdout, and its line reaches us. */
  async function exchange(c: DtlsClient, peer: Peer, tag: string): Promise<void> {
    c.send(Buffer.from(`from-node-${tag}\n`));
    await peer.waitFor(new RegExp(`from-node-${tag}`));
    const got = once(c, "message");
    peer.write(`from-openssl-${tag}\n`);
    assert.equal(((await got)[0] as Buffer).toString(), `from-openssl-${tag}\n`);
  }

  async function closeAndWait(c: DtlsClient, peer: Peer, n: number): Promise<void> {
    c.close();
    // s_server prints DONE when a connection ends and then accepts the next one.
    await peer.waitFor(new RegExp(`(DONE[\\s\\S]*){${n}}`));
  }

  for (const [cipher, suite] of [
    ["PSK-AES128-CCM8", "TLS_PSK_WITH_AES_128_CCM_8"],
    ["ECDHE-PSK-CHACHA20-POLY1305", "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"],
  ] as const) {
    it(`-cipher ${cipher}: the first connection gets a ticket, the second resumes with an abbreviated handshake`, async () => {
      const { port, peer } = await sServer(cipher, 3);
      const first = await connect(port, suite);
      assert.equal(first.resumed, false);
      const r1 = first.resumption;
      assert.ok(r1, "openssl issued no ticket");
      assert.ok(r1.ticket.length > 0);
      assert.equal(r1.suite, suite);
      assert.equal(r1.extendedMasterSecret, true);
      assert.equal(r1.pskIdentity, "home-1");
      assert.ok(r1.lifetimeHintS > 0);
      assert.ok(first.handshakeTypes.includes(HandshakeType.NewSessionTicket));
      assert.ok(first.handshakeTypes.includes(HandshakeType.ClientKeyExchange));
      await exchange(first, peer, "full");
      await closeAndWait(first, peer, 1);

      const second = await connect(port, suite, r1);
      assert.equal(second.resumed, true);
      assert.equal(second.cipher, `DTLSv1.2 ${suite}`);
      assert.equal(second.extendedMasterSecret, true);
      for (const t of KEY_EXCHANGE) assert.ok(!second.handshakeTypes.includes(t), `message ${t} in ${second.handshakeTypes}`);
      assert.deepEqual(
        second.handshakeTypes.filter((t) => t !== HandshakeType.NewSessionTicket),
        [HandshakeType.ClientHello, HandshakeType.ServerHello, HandshakeType.Finished, HandshakeType.Finished],
      );
      await exchange(second, peer, "resumed");
      await peer.waitFor(/Reused session-id/); // openssl's own view: the session was resumed
      // The resumed connection hands on a ticket for the next one (a fresh one, or the one used).
      const r2 = second.resumption;
      assert.ok(r2);
      assert.ok(r2.masterSecret.equals(r1.masterSecret), "a resumed session keeps its master secret");
      await closeAndWait(second, peer, 2);

      const third = await connect(port, suite, r2);
      assert.equal(third.resumed, true);
      await exchange(third, peer, "again");
    });
  }

  it("a ticket the server cannot decrypt (corrupted) falls back to a full handshake with a new ticket", async () => {
    const { port, peer } = await sServer("PSK-AES128-CCM8", 2);
    const first = await connect(port, "TLS_PSK_WITH_AES_128_CCM_8");
    const r1 = first.resumption!;
    await closeAndWait(first, peer, 1);
    const bad = Buffer.from(r1.ticket);
    bad[bad.length - 1] ^= 0x01; // the ticket's MAC no longer verifies
    const second = await connect(port, "TLS_PSK_WITH_AES_128_CCM_8", { ...r1, ticket: bad });
    assert.equal(second.resumed, false);
    assert.ok(second.handshakeTypes.includes(HandshakeType.ClientKeyExchange));
    await exchange(second, peer, "fallback");
    assert.ok(second.resumption && !second.resumption.ticket.equals(bad), "a new ticket replaces the refused one");
  });

  it("RFC 7627 5.3: a resumed ServerHello whose extended_master_secret state differs from the session's is refused", async () => {
    const { port, peer } = await sServer("PSK-AES128-CCM8", 3);
    const first = await connect(port, "TLS_PSK_WITH_AES_128_CCM_8");
    const r1 = first.resumption!;
    assert.equal(r1.extendedMasterSecret, true);
    await closeAndWait(first, peer, 1);
    // The ticket says the session had no EMS; openssl resumes it with EMS: the states disagree.
    await assert.rejects(
      connect(port, "TLS_PSK_WITH_AES_128_CCM_8", { ...r1, extendedMasterSecret: false }),
      (e: unknown) => e instanceof TransportError && e.code === "HANDSHAKE_FAILED" && /extended_master_secret/.test(e.message),
    );
  });

  it("connectDtls: a resumption that fails (wrong master secret) is retried at once as a full handshake and the ticket dropped", async () => {
    const a = await sServer("PSK-AES128-CCM8", 2);
    const first = await connect(a.port, "TLS_PSK_WITH_AES_128_CCM_8");
    const r1 = first.resumption!;
    await closeAndWait(first, a.peer, 1);
    // s_server serves one handshake at a time and keeps retransmitting to the failed attempt: a
    // forwarder sends each new client socket (attempt) to the next server, recording what arrives.
    const b = await sServer("PSK-AES128-CCM8", 1);
    const targets = [a.port, b.port];
    const front = dgram.createSocket("udp4");
    const toServer: Array<{ target: number; data: Buffer }> = [];
    const routes = new Map<number, { sock: dgram.Socket; target: number }>();
    front.on("message", (m, rinfo) => {
      let route = routes.get(rinfo.port);
      if (!route) {
        route = { sock: dgram.createSocket("udp4"), target: targets[Math.min(routes.size, targets.length - 1)] };
        route.sock.on("message", (d) => front.send(d, rinfo.port, "127.0.0.1"));
        routes.set(rinfo.port, route);
      }
      toServer.push({ target: route.target, data: m });
      route.sock.send(m, route.target, "127.0.0.1");
    });
    await new Promise<void>((r) => front.bind(0, "127.0.0.1", r));
    try {
      const seen: Array<DtlsResumption | undefined> = [];
      const conn = (await connectDtls({
        host: "127.0.0.1",
        port: front.address().port,
        psk: { identity: "home-1", key: PSK_KEY },
        suites: ["TLS_PSK_WITH_AES_128_CCM_8"],
        attempts: 1,
        handshakeTimeoutMs: 500,
        resumeFrom: { ...r1, masterSecret: Buffer.alloc(48, 7) },
        onResumption: (r) => seen.push(r),
      })) as DtlsClient;
      conns.push(conn);
      assert.equal(conn.resumed, false);
      assert.deepEqual(
        seen.map((r) => r !== undefined),
        [false, true],
        "the failed ticket is dropped, then the full handshake's new ticket kept",
      );
      // Byte 59 of a first ClientHello datagram is its session_id length: 32 with the ticket, 0 after.
      const helloTo = (port: number) => toServer.find((x) => x.target === port)!.data;
      assert.equal(helloTo(a.port)[59], 32);
      assert.equal(helloTo(b.port)[59], 0, "the retry offers no ticket");
      await exchange(conn, b.peer, "retried");
    } finally {
      front.close();
      for (const r of routes.values()) r.sock.close();
    }
  });

  it("a restarted server (new ticket keys) gets a full handshake", async () => {
    const a = await sServer("ECDHE-PSK-CHACHA20-POLY1305", 1);
    const first = await connect(a.port, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256");
    const r1 = first.resumption!;
    first.close();
    await a.peer.exited();
    const b = await sServer("ECDHE-PSK-CHACHA20-POLY1305", 1, a.port);
    const second = await connect(a.port, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", r1);
    assert.equal(second.resumed, false);
    assert.ok(second.handshakeTypes.includes(HandshakeType.ServerKeyExchange));
    await exchange(second, b.peer, "restarted");
  });

  it("a server started with -no_ticket: no ticket kept, a later offer is a plain full handshake", async () => {
    const { port, peer } = await sServer("PSK-AES128-CCM8", 1, undefined, ["-no_ticket"]);
    const c = await connect(port, "TLS_PSK_WITH_AES_128_CCM_8");
    assert.equal(c.resumption, undefined);
    assert.ok(!c.handshakeTypes.includes(HandshakeType.NewSessionTicket));
    await exchange(c, peer, "noticket");
  });
  function homeDialer(port: number): CallHomeDialer {
    const d = new CallHomeDialer({
      hosts: ["127.0.0.1"],
      port,
      transport: "udp",
      psk: { identity: "home-1", key: PSK_KEY },
      homePrefixes: ["203.0.113.0/24"],
      heartbeatInterval: 1,
      decisionWaitMs: 0,
      reconnect: { minMs: 50, maxMs: 200 },
      tuning: {
        attemptDelayMs: 50,
        dtlsHandshakeTimeoutMs: 500,
        msPerSecond: 100,
        idleConfig: { missingHbAllowed: 3 },
        mitigatingConfig: { missingHbAllowed: 3 },
      },
    });
    d.on("error", () => undefined);
    return d;
  }

  it("the home's reconnect after its session was lost is a resumption (RFC 9132 4.7)", async () => {
    const { port, peer } = await sServer("ECDHE-PSK-CHACHA20-POLY1305", 2);
    const d = homeDialer(port);
    try {
      await d.start();
      await once(d, "connected");
      assert.equal((d.connection as DtlsClient).resumed, false);
      // The "ISP" says something (a CoAP ping through s_server's stdin): a session that was heard
      // keeps its ticket. Then it stays silent: the home's heartbeats go unanswered, it declares the
      // session lost, closes, and redials the same s_server.
      peer.write("\x40\x00\x12\x34");
      const [ev] = await once(d, "disconnected");
      assert.match(ev.reason, /session lost/);
      await once(d, "connected");
      const c = d.connection as DtlsClient;
      assert.equal(c.resumed, true, "the redial resumed the lost session");
      for (const t of KEY_EXCHANGE) assert.ok(!c.handshakeTypes.includes(t));
      await peer.waitFor(/Reused session-id/);
    } finally {
      await d.stop();
    }
  });
  it("a home session that ended before the ISP said anything drops its ticket: the redial is a full handshake", async () => {
    const { port, peer } = await sServer("PSK-AES128-CCM8", 2);
    const d = homeDialer(port);
    try {
      await d.start();
      await once(d, "connected");
      assert.ok((d.connection as DtlsClient).resumption, "openssl issued a ticket");
      await once(d, "disconnected"); // never heard: perhaps a stale ticket, so it is not offered again
      await once(d, "connected");
      const c = d.connection as DtlsClient;
      assert.equal(c.resumed, false);
      assert.ok(c.handshakeTypes.includes(HandshakeType.ClientKeyExchange));
      assert.doesNotMatch(peer.output(), /Reused session-id/);
    } finally {
      await d.stop();
    }
  });
});
