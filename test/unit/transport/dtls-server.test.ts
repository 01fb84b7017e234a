// DTLS 1.2 PSK server: primitives (PRF, replay window, record and handshake decoding, cookies) and
// the server's behaviour towards a scripted client over real loopback sockets.
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import { randomBytes } from "node:crypto";
import { DtlsServer, type DtlsServerOptions, type HandshakeFailure, DtlsServerConnection } from "../../../src/transport/dtls";
import { prfSha256, pskPremasterSecret } from "../../../src/transport/dtls/prf";
import { ReplayWindow } from "../../../src/transport/dtls/replay";
import { encodeRecord, parseDatagram } from "../../../src/transport/dtls/record";
import {
  DtlsDecodeError,
  HandshakeReassembler,
  encodeHandshake,
  parseClientHello,
  parseHandshakeFragments,
} from "../../../src/transport/dtls/handshake";
import { CookieJar } from "../../../src/transport/dtls/cookie";
import { AeadState } from "../../../src/transport/dtls/cipher";
import { SecretSlab } from "../../../src/transport/dtls/secret-slab";
import { CIPHER_SUITES } from "../../../src/transport/dtls/constants";
import { DtlsAlertError, ScriptedDtlsClient } from "../../support/scripted-dtls-client";

const PSK = Buffer.from("secretPSK-0123456789");
const ID = "dots-client-1";

describe("DTLS server primitives", () => {
  it("PRF-SHA256 matches the published TLS 1.2 test vector", () => {
    // Vector from the IETF TLS WG (also what `openssl kdf ... TLS1-PRF` prints for these inputs).
    const out = prfSha256(
      Buffer.from("9bbe436ba940f017b17652849a71db35", "hex"),
      "test label",
      Buffer.from("a0ba9f936cda311827a6f796ffd5198c", "hex"),
      100,
    );
    assert.equal(
      out.toString("hex"),
      "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701873" +
        "47b66",
    );
  });

  it("PSK premaster secret has the RFC 4279 layout", () => {
    assert.equal(pskPremasterSecret(Buffer.from("ab", "hex")).toString("hex"), "0001" + "00" + "0001" + "ab");
  });

  it("replay window accepts each sequence once, out of order within 64, and rejects older ones", () => {
    const w = new ReplayWindow();
    const accept = (s: number): boolean => {
      if (!w.isFresh(s)) return false;
      w.mark(s);
      return true;
    };
    assert.equal(accept(5), true);
    assert.equal(accept(5), false);
    assert.equal(accept(3), true);
    assert.equal(accept(3), false);
    assert.equal(accept(100), true);
    assert.equal(accept(37), true); // 63 behind: still inside the window
    assert.equal(accept(36), false); // 64 behind: too old
    assert.equal(accept(99), true);
    assert.equal(accept(99), false);
    assert.equal(accept(2 ** 48 - 1), true);
    assert.equal(accept(100), false);
    // a jump of exactly 32 keeps the bits in the upper half
    const v = new ReplayWindow();
    v.mark(0);
    v.mark(32);
    assert.equal(v.isFresh(0), false);
    assert.equal(v.isFresh(1), true);
  });

  it("records: malformed datagrams never throw; valid leading records are kept", () => {
    const good = encodeRecord(22, 0xfefd, 0, 7, Buffer.from("abc"));
    assert.equal(parseDatagram(good, 100).records[0].sequence, 7);
    assert.equal(parseDatagram(Buffer.alloc(0), 100).records.length, 0);
    assert.equal(parseDatagram(good.subarray(0, 12), 100).malformed, "short-header");
    assert.equal(parseDatagram(good.subarray(0, 15), 100).malformed, "length-overrun");
    const bigLen = Buffer.from(good);
    bigLen.writeUInt16BE(0xffff, 11);
    assert.equal(parseDatagram(bigLen, 100).malformed, "length-overrun");
    const badType = Buffer.from(good);
    badType[0] = 99;
    assert.equal(parseDatagram(badType, 100).malformed, "bad-type");
    const badVersion = Buffer.from(good);
    badVersion.writeUInt16BE(0x0303, 1);
    assert.equal(parseDatagram(badVersion, 100).malformed, "bad-version");
    const two = parseDatagram(Buffer.concat([good, good.subarray(0, 5)]), 100);
    assert.equal(two.records.length, 1);
    assert.equal(two.malformed, "short-header");
    for (let i = 0; i < 2000; i++) parseDatagram(randomBytes(i % 64), 1000); // must not throw
  });

  it("handshake fragments: bad framing is a typed DtlsDecodeError", () => {
    const msg = encodeHandshake(1, 0, Buffer.from("hello"));
    assert.equal(parseHandshakeFragments(msg)[0].body.toString(), "hello");
    assert.throws(() => parseHandshakeFragments(msg.subarray(0, 11)), DtlsDecodeError);
    assert.throws(() => parseHandshakeFragments(msg.subarray(0, 14)), DtlsDecodeError);
    const beyond = Buffer.from(msg);
    beyond.writeUIntBE(4, 6, 3); // offset 4 + length 5 > 5
    assert.throws(() => parseHandshakeFragments(beyond), DtlsDecodeError);
    assert.throws(() => parseClientHello(Buffer.alloc(10)), DtlsDecodeError);
  });

  it("reassembler joins out-of-order fragments, reports old messages and enforces its limits", () => {
    const r = new HandshakeReassembler(2, { maxMessageLength: 100, maxAhead: 2, maxBufferedBytes: 150 });
    const body = Buffer.from("0123456789");
    const frag = (seq: number, off: number, len: number, total = body) => ({
      msgType: 16,
      length: total.length,
      messageSeq: seq,
      fragmentOffset: off,
      fragmentLength: len,
      body: total.subarray(off, off + len),
    });
    assert.equal(r.feed(frag(3, 0, 10)), "accepted"); // next message arrives first
    assert.equal(r.feed(frag(2, 6, 4)), "accepted");
    assert.equal(r.take(), undefined);
    assert.equal(r.feed(frag(2, 0, 6)), "accepted");
    assert.equal(r.take()?.body.toString(), "0123456789");
    assert.equal(r.take()?.messageSeq, 3);
    assert.equal(r.feed(frag(2, 0, 10)), "old");
    assert.equal(r.feed(frag(9, 0, 10)), "dropped"); // too far ahead
    assert.throws(() => r.feed(frag(4, 0, 1, Buffer.alloc(200))), DtlsDecodeError);
    assert.equal(r.feed(frag(4, 0, 1, Buffer.alloc(100))), "accepted");
    assert.equal(r.feed(frag(5, 0, 1, Buffer.alloc(100))), "dropped"); // buffer budget used up
    assert.throws(() => r.feed({ ...frag(4, 1, 1, Buffer.alloc(100)), msgType: 20 }), DtlsDecodeError);
  });

  it("cookie: bound to address, port and hello; previous secret accepted after one rotation only", () => {
    const jar = new CookieJar(60000);
    const input = {
      address: "127.0.0.1",
      port: 4000,
      clientVersion: 0xfefd,
      random: randomBytes(32),
      sessionId: Buffer.alloc(0),
      suitesRaw: Buffer.from("c0a80100", "hex"),
    };
    const cookie = jar.issue(input);
    assert.equal(jar.verify(cookie, input), true);
    assert.equal(jar.verify(cookie, { ...input, port: 4001 }), false);
    assert.equal(jar.verify(cookie, { ...input, address: "127.0.0.2" }), false);
    assert.equal(jar.verify(cookie, { ...input, random: randomBytes(32) }), false);
    assert.equal(jar.verify(cookie.subarray(1), input), false);
    jar.rotate();
    assert.equal(jar.verify(cookie, input), true);
    jar.rotate();
    assert.equal(jar.verify(cookie, input), false);
  });

  it("secret slab: distinct zeroed slots, wiped on release and reused, grows by whole chunks", () => {
    const slab = new SecretSlab(8, 2);
    const a = slab.allocate();
    const b = slab.allocate();
    assert.notEqual(a, b);
    assert.equal(slab.bytesReserved, 16);
    slab.buffer(a).fill(0xaa, slab.offset(a), slab.offset(a) + 8);
    slab.buffer(b).fill(0xbb, slab.offset(b), slab.offset(b) + 8);
    const c = slab.allocate(); // third slot: a second chunk
    assert.equal(slab.bytesReserved, 32);
    assert.deepEqual([...slab.buffer(c).subarray(slab.offset(c), slab.offset(c) + 8)], Array(8).fill(0));
    slab.release(a);
    assert.deepEqual([...slab.buffer(a).subarray(slab.offset(a), slab.offset(a) + 8)], Array(8).fill(0), "released secrets are wiped");
    assert.deepEqual([...slab.buffer(b).subarray(slab.offset(b), slab.offset(b) + 8)], Array(8).fill(0xbb), "neighbours are untouched");
    assert.equal(slab.slotsInUse, 2);
    const d = slab.allocate();
    const e = slab.allocate();
    assert.ok([d, e].includes(a), "a released slot is handed out again");
    assert.equal(new Set([b, c, d, e]).size, 4);
    assert.throws(() => new SecretSlab(0), RangeError);
  });

  it("AEAD records: a flipped bit fails authentication without throwing", () => {
    for (const suite of Object.values(CIPHER_SUITES)) {
      const a = new AeadState(suite, randomBytes(suite.keyLength), randomBytes(suite.fixedIvLength));
      const rec = a.encrypt(23, 0xfefd, 1, 9, Buffer.from("payload"));
      assert.equal(a.decrypt(23, 0xfefd, 1, 9, rec)?.toString(), "payload");
      const bad = Buffer.from(rec);
      bad[bad.length - 1] ^= 1;
      assert.equal(a.decrypt(23, 0xfefd, 1, 9, bad), undefined);
      assert.equal(a.decrypt(23, 0xfefd, 1, 10, rec), undefined); // sequence is authenticated
      assert.equal(a.decrypt(23, 0xfefd, 1, 9, rec.subarray(0, 5)), undefined);
    }
  });
});

/** A bare UDP socket for crafted datagrams. */
class RawPeer {
  readonly socket = dgram.createSocket("udp4");
  readonly received: Buffer[] = [];
  constructor() {
    this.socket.on("message", (m) => this.received.push(m));
  }
  async bind(): Promise<number> {
    await new Promise<void>((r) => this.socket.bind(0, "127.0.0.1", () => r()));
    return this.socket.address().port;
  }
  send(port: number, d: Buffer): Promise<void> {
    return new Promise((r) => this.socket.send(d, port, "127.0.0.1", () => r()));
  }
  close(): Promise<void> {
    return new Promise((r) => this.socket.close(() => r()));
  }
}

function clientHelloRecord(seq: number, random: Buffer, cookie: Buffer = Buffer.alloc(0), suites = [0xc0a8]): Buffer {
  const s = Buffer.alloc(suites.length * 2);
  suites.forEach((v, i) => s.writeUInt16BE(v, i * 2));
  const body = Buffer.concat([
    Buffer.from([0xfe, 0xfd]),
    random,
    Buffer.from([0, cookie.length]),
    cookie,
    Buffer.from([0, s.length]),
    s,
    Buffer.from([1, 0]),
  ]);
  return encodeRecord(22, 0xfefd, 0, seq, encodeHandshake(1, 0, body));
}

async function waitFor(cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not reached");
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("DtlsServer with a scripted client on loopback", () => {
  let server: DtlsServer;
  let port: number;
  const failures: HandshakeFailure[] = [];
  const connections: DtlsServerConnection[] = [];
  const clients: ScriptedDtlsClient[] = [];
  const raws: RawPeer[] = [];
  let internalErrors: unknown[] = [];

  async function start(extra: Partial<DtlsServerOptions> = {}): Promise<void> {
    server = new DtlsServer({ pskLookup: (id) => (id === ID ? PSK : undefined), ...extra });
    server.on("handshake-failed", (f: HandshakeFailure) => failures.push(f));
    server.on("internal-error", (e: unknown) => internalErrors.push(e));
    server.on("connection", (c: DtlsServerConnection) => {
      connections.push(c);
      c.on("message", (m) => c.send(Buffer.concat([Buffer.from("echo:"), m])));
    });
    port = (await server.listen(0, "127.0.0.1")).port;
  }

  async function client(opts: Partial<ConstructorParameters<typeof ScriptedDtlsClient>[0]> = {}): Promise<ScriptedDtlsClient> {
    const c = new ScriptedDtlsClient({ address: "127.0.0.1", port, identity: ID, psk: PSK, ...opts });
    clients.push(c);
    await c.bind();
    return c;
  }

  async function raw(): Promise<RawPeer> {
    const r = new RawPeer();
    raws.push(r);
    await r.bind();
    return r;
  }

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close(false);
    for (const r of raws.splice(0)) await r.close();
    await server?.close();
    assert.deepEqual(internalErrors, []);
    failures.length = 0;
    connections.length = 0;
    internalErrors = [];
  });

  it("completes a handshake per suite, echoes data, reports identity, suite and EMS", async () => {
    await start({ cipherSuites: ["TLS_PSK_WITH_AES_128_CCM_8", "TLS_PSK_WITH_AES_128_GCM_SHA256", "TLS_PSK_WITH_AES_128_CCM"] });
    for (const suite of ["TLS_PSK_WITH_AES_128_CCM_8", "TLS_PSK_WITH_AES_128_GCM_SHA256", "TLS_PSK_WITH_AES_128_CCM"] as const) {
      const c = await client({ suites: [suite], extendedMasterSecret: true, renegotiationInfo: true });
      await c.connect();
      assert.equal(c.suite, suite);
      assert.equal(c.extendedMasterSecretNegotiated, true);
      c.send(Buffer.from("ping"));
      assert.equal((await c.nextMessage()).toString(), "echo:ping");
      const conn = connections[connections.length - 1];
      assert.equal(conn.cipher, `DTLSv1.2 ${suite}`);
      assert.deepEqual(conn.peer, { method: "psk", pskIdentity: ID });
      assert.equal(conn.local.method, "psk");
      assert.equal(conn.transport, "dtls");
      assert.equal(conn.remotePort, c.localPort);
    }
    assert.equal(server.sessionCount, 3);
  });

  it("a flood of cookieless or forged-cookie ClientHellos allocates no peer state", async () => {
    await start();
    const r = await raw();
    for (let batch = 0; batch < 6; batch++) {
      // in batches, so the loopback receive buffers never overflow and every hello gets its answer
      for (let i = batch * 50; i < (batch + 1) * 50; i++)
        await r.send(port, clientHelloRecord(i, randomBytes(32), i % 2 ? randomBytes(32) : Buffer.alloc(0)));
      await waitFor(() => r.received.length >= (batch + 1) * 50);
    }
    assert.equal(server.sessionCount, 0);
    assert.equal(server.handshakingCount, 0);
    // each answer is a HelloVerifyRequest echoing the ClientHello's record sequence, smaller than the hello
    const hvr = parseDatagram(r.received[5], 100).records[0];
    assert.equal(hvr.sequence, 5);
    assert.equal(parseHandshakeFragments(hvr.fragment)[0].msgType, 3);
    assert.ok(r.received[5].length < clientHelloRecord(5, randomBytes(32)).length + 32);
    assert.deepEqual(failures, []); // unauthenticated sources are never counted
  });

  it("wrong PSK: fatal decrypt_error (51) and a bad-finished failure", async () => {
    await start();
    const c = await client({ psk: Buffer.from("not-the-key") });
    await assert.rejects(c.connect(), (e: unknown) => e instanceof Error);
    const alert = await c.nextAlert();
    assert.deepEqual(alert, { level: 2, description: 51 });
    await waitFor(() => failures.length === 1);
    assert.equal(failures[0].reason, "bad-finished");
    assert.equal(server.sessionCount, 0);
  });

  it("unknown identity: alert 115; async lookup is awaited", async () => {
    await start({ pskLookup: async (id) => (id === ID ? PSK : undefined) });
    const bad = await client({ identity: "intruder" });
    await assert.rejects(bad.connect(), (e: unknown) => e instanceof DtlsAlertError && e.description === 115);
    assert.equal(failures[0].reason, "unknown-identity");
    const good = await client();
    await good.connect();
    assert.equal(server.sessionCount, 1);
  });

  it("PSK lookup sees the remote endpoint; a failing lookup is internal_error (80); a hung one times out", async () => {
    const seen: Array<{ address: string; port: number }> = [];
    let mode: "throw" | "reject" | "hang" = "throw";
    await start({
      handshakeTimeoutMs: 300,
      pskLookup: (_id, remote) => {
        seen.push(remote);
        if (mode === "throw") throw new Error("store unavailable");
        if (mode === "reject") return Promise.reject(new Error("store unavailable"));
        return new Promise<Buffer | undefined>(() => undefined);
      },
    });
    const a = await client();
    await assert.rejects(a.connect(), (e: unknown) => e instanceof DtlsAlertError && e.description === 80);
    assert.deepEqual(seen[0], { address: "127.0.0.1", port: a.localPort });
    mode = "reject";
    const b = await client();
    await assert.rejects(b.connect(), (e: unknown) => e instanceof DtlsAlertError && e.description === 80);
    mode = "hang";
    const c = await client();
    await assert.rejects(c.connect(1000));
    await waitFor(() => failures.some((f) => f.reason === "timeout"));
    assert.deepEqual(
      failures.map((f) => f.reason),
      ["lookup-error", "lookup-error", "timeout"],
    );
    assert.equal(server.sessionCount, 0);
    assert.equal(server.handshakingCount, 0);
  });

  it("no shared cipher suite: alert 40 handshake_failure", async () => {
    await start({ cipherSuites: ["TLS_PSK_WITH_AES_128_GCM_SHA256"] });
    const c = await client({ suites: ["TLS_PSK_WITH_AES_128_CCM_8"] });
    await assert.rejects(c.connect(), (e: unknown) => e instanceof DtlsAlertError && e.description === 40);
    assert.equal(failures[0].reason, "no-shared-cipher");
    assert.equal(server.sessionCount, 0);
  });

  it("replayed and tampered records are dropped silently; the session goes on", async () => {
    await start();
    const c = await client();
    await c.connect();
    const got: string[] = [];
    connections[0].on("message", (m) => got.push(m.toString()));
    c.send(Buffer.from("one"));
    assert.equal((await c.nextMessage()).toString(), "echo:one");
    const record = c.sent[c.sent.length - 1];
    c.sendRaw(record); // replay
    const tampered = Buffer.from(record);
    tampered[tampered.length - 1] ^= 0x55;
    tampered.writeUIntBE(77, 5, 6);
    c.sendRaw(tampered);
    c.sendRaw(encodeRecord(23, 0xfefd, 2, 0, Buffer.alloc(40))); // unknown epoch
    c.sendRaw(encodeRecord(23, 0xfefd, 0, 50, Buffer.from("plaintext app data"))); // epoch 0 data
    c.send(Buffer.from("two"));
    assert.equal((await c.nextMessage()).toString(), "echo:two");
    assert.deepEqual(got, ["one", "two"]);
    assert.equal(connections[0].closed, false);
  });

  it("renegotiation is refused with a no_renegotiation warning and the session continues", async () => {
    await start();
    const c = await client({ renegotiationInfo: true });
    await c.connect();
    c.sendRaw(c.protect(22, encodeHandshake(1, 4, Buffer.alloc(40))));
    assert.deepEqual(await c.nextAlert(), { level: 1, description: 100 });
    c.send(Buffer.from("still"));
    assert.equal((await c.nextMessage()).toString(), "echo:still");
  });

  it("close_notify both ways", async () => {
    await start();
    const a = await client();
    await a.connect();
    const closedA = new Promise((r) => connections[0].once("close", r));
    await a.close(true);
    assert.equal(await closedA, undefined); // clean close, no error
    assert.equal(server.sessionCount, 0);

    const b = await client();
    await b.connect();
    connections[1].close();
    assert.deepEqual(await b.nextAlert(), { level: 1, description: 0 });
    assert.equal(connections[1].send(Buffer.from("x")), false);
    assert.equal(server.sessionCount, 0);
    // records after close get no answer and create nothing
    b.send(Buffer.from("late"));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(server.sessionCount, 0);
  });

  it("server close() sends close_notify to every peer and frees them", async () => {
    await start();
    const a = await client();
    const b = await client();
    await a.connect();
    await b.connect();
    await server.close();
    assert.deepEqual(await a.nextAlert(), { level: 1, description: 0 });
    assert.deepEqual(await b.nextAlert(), { level: 1, description: 0 });
    assert.equal(server.sessionCount, 0);
    assert.ok(connections.every((c) => c.closed));
  });

  it("retransmits flight 4 with back-off and on a repeated ClientHello; handshake times out", async () => {
    await start({ initialRetransmitMs: 40, handshakeTimeoutMs: 400 });
    const r = await raw();
    const random = randomBytes(32);
    await r.send(port, clientHelloRecord(0, random));
    await waitFor(() => r.received.length === 1);
    const hvr = parseHandshakeFragments(parseDatagram(r.received[0], 100).records[0].fragment)[0];
    const cookie = hvr.body.subarray(3);
    const ch2 = clientHelloRecord(1, random, cookie);
    await r.send(port, ch2);
    await waitFor(() => r.received.length >= 4); // first flight 4 + at least two timer resends
    assert.equal(server.sessionCount, 1);
    const flight = r.received[1];
    assert.ok(r.received.slice(2).every((d) => d.equals(flight)));
    const before = r.received.length;
    await r.send(port, ch2); // client repeats its flight: server answers with the same flight
    await waitFor(() => r.received.length > before);
    assert.equal(server.sessionCount, 1);
    await waitFor(() => failures.length === 1, 3000);
    assert.deepEqual(failures[0], { address: "127.0.0.1", port: r.socket.address().port, reason: "timeout" });
    assert.equal(server.sessionCount, 0);
    assert.equal(server.handshakingCount, 0);
  });

  it("re-sends the final flight when the client repeats flight 5, rate-limited, and not after data", async () => {
    await start();
    const c = await client();
    await c.connect();
    const flight5 = c.sent[2];
    const before = c.received.length;
    c.sendRaw(flight5);
    c.sendRaw(flight5);
    c.sendRaw(flight5); // three repeats at once: one answer (anti-amplification)
    await waitFor(() => c.received.length === before + 1);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(c.received.length, before + 1);
    // The answer is a usable final flight: ChangeCipherSpec, then our Finished under the session
    // keys with the verify_data of the handshake, in records with new sequence numbers.
    const originalFlight = c.received
      .slice(0, before)
      .reverse()
      .find((d) => c.openRecords(d).some((r) => r.epoch === 1));
    const original = c.openRecords(originalFlight!);
    const resent = c.openRecords(c.received[before]);
    assert.deepEqual(
      resent.map((r) => [r.type, r.epoch]),
      [
        [20, 0],
        [22, 1],
      ],
    );
    const [finished] = parseHandshakeFragments(resent[1].plaintext!);
    assert.equal(finished.msgType, 20);
    assert.deepEqual(finished.body, c.serverVerifyData);
    assert.ok(resent[1].sequence > original[1].sequence);
    c.send(Buffer.from("data")); // proves the client has our Finished
    assert.equal((await c.nextMessage()).toString(), "echo:data");
    const afterData = c.received.length;
    c.sendRaw(flight5);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(c.received.length, afterData);
    assert.equal(server.sessionCount, 1);
  });

  it("a fragmented, out-of-order ClientKeyExchange is reassembled", async () => {
    await start();
    const r = await raw();
    const random = randomBytes(32);
    await r.send(port, clientHelloRecord(0, random));
    await waitFor(() => r.received.length === 1);
    const cookie = parseHandshakeFragments(parseDatagram(r.received[0], 100).records[0].fragment)[0].body.subarray(3);
    await r.send(port, clientHelloRecord(1, random, cookie));
    await waitFor(() => r.received.length === 2);
    // unknown identity of 300 bytes, sent in three fragments, last one first: the server must see it whole
    const identity = Buffer.alloc(300, 0x61);
    const body = Buffer.concat([Buffer.from([1, 44]), identity]);
    const frag = (off: number, len: number, seq: number): Buffer => {
      const h = Buffer.alloc(12);
      h[0] = 16;
      h.writeUIntBE(body.length, 1, 3);
      h.writeUInt16BE(1, 4); // CH2 above used message_seq 0
      h.writeUIntBE(off, 6, 3);
      h.writeUIntBE(len, 9, 3);
      return encodeRecord(22, 0xfefd, 0, seq, Buffer.concat([h, body.subarray(off, off + len)]));
    };
    await r.send(port, frag(200, 102, 2));
    await r.send(port, frag(0, 100, 3));
    assert.equal(failures.length, 0);
    await r.send(port, frag(100, 100, 4));
    await waitFor(() => failures.length === 1);
    assert.equal(failures[0].reason, "unknown-identity");
    assert.equal(server.stats.reassembledMessages, 1);
    const alert = parseDatagram(r.received[r.received.length - 1], 100).records[0];
    assert.deepEqual([...alert.fragment], [2, 115]);
  });

  it("a client restarting from the same address and port replaces its old session", async () => {
    await start();
    const a = await client();
    await a.connect();
    const firstClosed = new Promise<unknown>((r) => connections[0].once("close", r));
    // same socket, fresh handshake (state lost on the client side)
    a.socket.removeAllListeners("message");
    const again = new ScriptedDtlsClient({ address: "127.0.0.1", port, identity: ID, psk: PSK, socket: a.socket });
    await again.connect();
    assert.ok((await firstClosed) instanceof Error);
    assert.equal(server.sessionCount, 1);
    assert.equal(connections.length, 2);
  });

  it("caps peers; idle sessions time out; dropped addresses get no answer", async () => {
    await start({ maxPeers: 2, idleTimeoutMs: 1500 });
    const a = await client();
    const b = await client();
    await a.connect();
    await b.connect();
    const c = await client({ retransmitMs: 100 });
    await assert.rejects(c.connect(400));
    assert.equal(server.sessionCount, 2);
    assert.ok(failures.some((f) => f.reason === "capacity"));
    await waitFor(() => server.sessionCount === 0, 3000);
    assert.ok(connections.every((x) => x.closed));
    await server.close();

    await start({ isDropped: (address) => address === "127.0.0.1" });
    const r = await raw();
    await r.send(port, clientHelloRecord(0, randomBytes(32)));
    await new Promise((res) => setTimeout(res, 100));
    assert.equal(r.received.length, 0);
    assert.equal(server.stats.droppedDatagrams, 1);
  });

  it("dual stack: an IPv4 client of a '::' listener is reported as plain IPv4", async function () {
    server = new DtlsServer({ pskLookup: () => PSK });
    server.on("connection", (c: DtlsServerConnection) => connections.push(c));
    try {
      port = (await server.listen(0, "::")).port;
    } catch {
      this.skip(); // no IPv6 on this host
    }
    const c = await client();
    await c.connect();
    assert.equal(connections[0].remoteAddress, "127.0.0.1");
    const c6 = await client({ address: "::1" });
    await c6.connect();
    assert.equal(connections[1].remoteAddress, "::1");
  });

  it("oversized application data is refused with a typed error", async () => {
    await start({ maxRecordPlaintext: 100 });
    const c = await client();
    await c.connect();
    assert.throws(() => connections[0].send(Buffer.alloc(101)), /FRAME_TOO_LARGE|exceed/);
    assert.equal(connections[0].send(Buffer.alloc(100)), true);
  });
});
