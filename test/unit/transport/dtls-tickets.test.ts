// RFC 5077 session tickets at our DTLS server: the sealing keys (what a ticket may carry, for how
// long, under which key) and a server fed tickets it never issued. Resumption with real peers is in
// test/interop/dtls-server.test.ts (openssl s_client -sess_out / -sess_in).
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import { X509Certificate, createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { DtlsServer, type DtlsServerConnection, type DtlsServerOptions, type HandshakeFailure } from "../../../src/transport/dtls";
import { dtlsClientConnect } from "../../../src/transport/dtls/client";
import { encodeHandshake } from "../../../src/transport/dtls/handshake";
import { encodeRecord, parseDatagram } from "../../../src/transport/dtls/record";
import { MAX_TICKET_LENGTH, TicketKeys, pskDigest, type TicketState } from "../../../src/transport/dtls/ticket";
import { VerifiedCertificates } from "../../../src/transport/dtls/certificate";
import { makeTestPki, type TestPki } from "../../support/certs";
import { fuzzRuns, mutator } from "../../support/fuzz";
import { LossyRelay } from "../../support/lossy-relay";
import { CallHomeListener } from "../../../src/dots/isp-engine";

const LIFETIME = 600;

function state(issuedAtMs: number): TicketState {
  return {
    suiteId: 0xccac,
    extendedMasterSecret: true,
    identity: "home-1",
    master: randomBytes(48),
    issuedAt: Math.floor(issuedAtMs / 1000),
    pskDigest: pskDigest(Buffer.from("a key of the home")),
  };
}

/** HKDF-SHA256 key or name of a period, as ticket.ts derives them (salt names the version). */
function derived(secret: Buffer, version: 1 | 2, what: "key" | "name", period: number): Buffer {
  const salt = `dots-call-home dtls ticket keys v${version}`;
  return Buffer.from(hkdfSync("sha256", secret, salt, `${what} ${LIFETIME} ${period}`, what === "key" ? 32 : 16));
}

/** A PSK session's ticket as the release before ChaCha20-Poly1305 tickets sealed it: AES-256-GCM under v1 keys. */
function legacyTicket(secret: Buffer, period: number, s: TicketState): Buffer {
  const identity = Buffer.from(s.identity);
  const plain = Buffer.alloc(10 + identity.length + 16 + 48);
  plain[0] = 1;
  plain.writeUInt16BE(s.suiteId, 1);
  plain[3] = s.extendedMasterSecret ? 1 : 0;
  plain.writeUInt32BE(s.issuedAt, 4);
  plain.writeUInt16BE(identity.length, 8);
  identity.copy(plain, 10);
  s.pskDigest.copy(plain, 10 + identity.length);
  s.master.copy(plain, 26 + identity.length);
  const name = derived(secret, 1, "name", period);
  const iv = randomBytes(12);
  const c = createCipheriv("aes-256-gcm", derived(secret, 1, "key", period), iv, { authTagLength: 16 });
  c.setAAD(name);
  return Buffer.concat([name, iv, c.update(plain), c.final(), c.getAuthTag()]);
}

describe("DTLS session tickets: the sealing keys", () => {
  it("a sealed ticket opens to the same session; the master secret is not readable in it", () => {
    const keys = new TicketKeys({ lifetimeSeconds: LIFETIME });
    const s = state(Date.now());
    const ticket = keys.seal(s);
    assert.ok(ticket.length <= MAX_TICKET_LENGTH);
    assert.equal(ticket.indexOf(s.master), -1);
    assert.equal(ticket.indexOf(Buffer.from("home-1")), -1);
    assert.deepEqual(keys.open(ticket), s);
    assert.equal(new TicketKeys({ lifetimeSeconds: LIFETIME }).open(ticket), undefined); // another server's key
  });

  it("a certificate session's ticket carries the leaf, subject, key, anchor and expiry, and opens to the same; malformed ones do not seal", () => {
    const keys = new TicketKeys({ lifetimeSeconds: LIFETIME });
    const certificate = {
      leafDer: randomBytes(700),
      subject: "CN=home-1.example, O=Példa",
      spki: randomBytes(91),
      anchor: randomBytes(32),
      validUntil: 253402300799, // 9999-12-31T23:59:59Z: past 2^32 seconds, so 48 bits
    };
    const s = { ...state(Date.now()), identity: "", certificate };
    const ticket = keys.seal(s);
    assert.equal(ticket.indexOf(certificate.leafDer), -1);
    assert.deepEqual(keys.open(ticket), s);
    assert.throws(() => keys.seal({ ...s, certificate: { ...certificate, anchor: randomBytes(31) } }), RangeError);
    assert.throws(() => keys.seal({ ...s, certificate: { ...certificate, spki: Buffer.alloc(0) } }), RangeError);
    assert.throws(() => keys.seal({ ...s, certificate: { ...certificate, validUntil: Number.NaN } }), RangeError);
    for (let i = 0; i < ticket.length * 8; i += 7) {
      const bad = Buffer.from(ticket);
      bad[i >> 3] ^= 1 << (i & 7);
      assert.equal(keys.open(bad), undefined, `bit ${i}`);
    }
  });

  it("every single-bit change anywhere in a ticket is refused", () => {
    const keys = new TicketKeys({ lifetimeSeconds: LIFETIME });
    const ticket = keys.seal(state(Date.now()));
    for (let i = 0; i < ticket.length * 8; i++) {
      const bad = Buffer.from(ticket);
      bad[i >> 3] ^= 1 << (i & 7);
      assert.equal(keys.open(bad), undefined, `bit ${i}`);
    }
    assert.equal(keys.open(ticket.subarray(0, ticket.length - 1)), undefined);
    assert.equal(keys.open(Buffer.concat([ticket, Buffer.from([0])])), undefined);
  });

  it("a ticket lasts its lifetime from the full handshake, across one key rotation, and not longer", () => {
    let now = 1_000_000_000_000;
    const keys = new TicketKeys({ lifetimeSeconds: LIFETIME, now: () => now });
    now += 0.9 * LIFETIME * 1000; // the key is 90% through its life when the session is set up
    const s = state(now);
    const ticket = keys.seal(s);
    now += 0.2 * LIFETIME * 1000; // the key has rotated; the old one still opens
    assert.deepEqual(keys.open(ticket), s);
    now += 0.79 * LIFETIME * 1000;
    assert.deepEqual(keys.open(ticket), s);
    now += 0.02 * LIFETIME * 1000; // older than the lifetime
    assert.equal(keys.open(ticket), undefined);
    assert.throws(() => new TicketKeys({ lifetimeSeconds: 8 * 86400 }), RangeError);
    assert.throws(() => new TicketKeys({ lifetimeSeconds: 0 }), RangeError);
  });

  it("with a shared secret, another process's keys (or this one's after a restart) open the ticket; another secret does not", () => {
    const period = LIFETIME * 1000;
    let now = 1_700_000_000_000 - (1_700_000_000_000 % period) + period - 30_000; // 30 s before a key period ends
    const secret = randomBytes(48);
    const clock = { now: () => now };
    const s = state(now);
    const ticket = new TicketKeys({ lifetimeSeconds: LIFETIME, secret, ...clock }).seal(s);
    assert.deepEqual(new TicketKeys({ lifetimeSeconds: LIFETIME, secret, ...clock }).open(ticket), s);
    assert.equal(new TicketKeys({ lifetimeSeconds: LIFETIME, secret: randomBytes(48), ...clock }).open(ticket), undefined);
    assert.equal(new TicketKeys({ lifetimeSeconds: LIFETIME, ...clock }).open(ticket), undefined); // random keys
    // The same secret with another lifetime derives other keys.
    assert.equal(new TicketKeys({ lifetimeSeconds: LIFETIME + 1, secret, ...clock }).open(ticket), undefined);
    // A process started 60 s later, in the next period, still derives the previous period's key...
    now += 60_000;
    const restarted = new TicketKeys({ lifetimeSeconds: LIFETIME, secret, ...clock });
    assert.deepEqual(restarted.open(ticket), s);
    // ...and the ticket's own lifetime, from the full handshake, still rules.
    now = s.issuedAt * 1000 + period;
    assert.equal(restarted.open(ticket), undefined, "older than its lifetime");
  });

  it("tickets are ChaCha20-Poly1305 under the v2 keys; those the previous release sealed (AES-256-GCM, v1 keys) still open, for their lifetime", () => {
    const period = LIFETIME * 1000;
    let now = 1_700_000_000_000 - (1_700_000_000_000 % period) + period - 30_000;
    const secret = randomBytes(32);
    const keys = new TicketKeys({ lifetimeSeconds: LIFETIME, secret, now: () => now });
    const s = state(now);
    const p = Math.floor(now / period);
    // What we seal now, opened by node:crypto's ChaCha20-Poly1305 with the v2 key: the format, checked
    // against a second implementation.
    const ticket = keys.seal(s);
    assert.deepEqual(ticket.subarray(0, 16), derived(secret, 2, "name", p));
    const d = createDecipheriv("chacha20-poly1305", derived(secret, 2, "key", p), ticket.subarray(16, 28), { authTagLength: 16 });
    d.setAAD(ticket.subarray(0, 16), { plaintextLength: ticket.length - 44 });
    d.setAuthTag(ticket.subarray(ticket.length - 16));
    const plain = Buffer.concat([d.update(ticket.subarray(28, ticket.length - 16)), d.final()]);
    assert.equal(plain.indexOf(s.master), 26 + s.identity.length);
    // A ticket from a process of the previous release, in this period and in the one before.
    assert.deepEqual(keys.open(legacyTicket(secret, p, s)), s);
    assert.deepEqual(keys.open(legacyTicket(secret, p - 1, s)), s);
    assert.equal(keys.open(legacyTicket(randomBytes(32), p, s)), undefined, "another secret");
    assert.equal(new TicketKeys({ lifetimeSeconds: LIFETIME, now: () => now }).open(legacyTicket(secret, p, s)), undefined, "random keys");
    const flipped = legacyTicket(secret, p, s);
    flipped[40] ^= 1;
    assert.equal(keys.open(flipped), undefined, "a changed legacy ticket");
    // Across the next rotation the legacy keys move on with the period, and the lifetime still rules.
    now += 60_000;
    assert.deepEqual(keys.open(legacyTicket(secret, p, s)), s);
    assert.equal(keys.open(legacyTicket(secret, p - 1, s)), undefined, "two periods old");
    now = s.issuedAt * 1000 + period;
    assert.equal(keys.open(legacyTicket(secret, p + 1, s)), undefined, "older than its lifetime");
  });

  it("shared-secret keys rotate at the same instant in every process, and a ticket opens across one rotation only", () => {
    const secret = randomBytes(32);
    const period = LIFETIME * 1000;
    let now = 1_700_000_000_000 - (1_700_000_000_000 % period) + period - 5000; // 5 s before a boundary
    const a = new TicketKeys({ lifetimeSeconds: LIFETIME, secret, now: () => now });
    const b = new TicketKeys({ lifetimeSeconds: LIFETIME, secret, now: () => now });
    const s = state(now);
    const before = a.seal(s);
    now += 10_000; // both are in the next period now
    const after = b.seal(s);
    assert.notDeepEqual(before.subarray(0, 16), after.subarray(0, 16), "a new key name after the boundary");
    assert.deepEqual(a.open(after), s);
    assert.deepEqual(b.open(before), s);
    assert.throws(() => new TicketKeys({ secret: randomBytes(31) }), /at least 32/);
  });

  it(`seeded mutation fuzz: ${fuzzRuns(100_000)} mutated and random tickets never open and never throw`, function () {
    this.timeout(120_000);
    const keys = new TicketKeys({ lifetimeSeconds: LIFETIME });
    const ticket = keys.seal(state(Date.now()));
    const { int, mutate } = mutator(0x71c4e7);
    for (let i = 0; i < fuzzRuns(100_000); i++) {
      const input = i % 8 === 0 ? randomBytes(int(MAX_TICKET_LENGTH + 64)) : mutate(ticket);
      if (input.equals(ticket)) continue;
      assert.equal(keys.open(input), undefined, `case ${i}`);
    }
  });
});

describe("DtlsServer offered tickets it never issued", () => {
  it("random and truncated tickets with a session id get a full handshake, never an internal error", async function () {
    this.timeout(60_000);
    const failures: HandshakeFailure[] = [];
    const internal: unknown[] = [];
    const server = new DtlsServer({ pskLookup: () => Buffer.from("0123456789abcdef") });
    server.on("handshake-failed", (f: HandshakeFailure) => failures.push(f));
    server.on("internal-error", (e: unknown) => internal.push(e));
    const { port } = await server.listen(0, "127.0.0.1");
    const socket = dgram.createSocket("udp4");
    const serverHellos: Buffer[] = [];
    let cookieWaiter: ((c: Buffer) => void) | undefined;
    socket.on("message", (m) => {
      for (const r of parseDatagram(m, 4096).records) {
        if (r.type !== 22 || r.epoch !== 0) continue;
        if (r.fragment[0] === 3) cookieWaiter?.(r.fragment.subarray(15, 15 + r.fragment[14]));
        if (r.fragment[0] === 2) serverHellos.push(r.fragment.subarray(12));
      }
    });
    await new Promise<void>((r) => socket.bind(0, "127.0.0.1", () => r()));
    const hello = (random: Buffer, sessionId: Buffer, cookie: Buffer, ticket: Buffer): Buffer => {
      const ext = Buffer.concat([Buffer.from([0x00, 0x23, ticket.length >> 8, ticket.length & 0xff]), ticket]);
      const body = Buffer.concat([
        Buffer.from([0xfe, 0xfd]),
        random,
        Buffer.from([sessionId.length]),
        sessionId,
        Buffer.from([cookie.length]),
        cookie,
        Buffer.from([0, 2, 0xc0, 0xa8]), // TLS_PSK_WITH_AES_128_CCM_8
        Buffer.from([1, 0]),
        Buffer.from([ext.length >> 8, ext.length & 0xff]),
        ext,
      ]);
      return encodeRecord(22, 0xfefd, 0, cookie.length ? 1 : 0, encodeHandshake(1, cookie.length ? 1 : 0, body));
    };
    const { int } = mutator(0x5e5510);
    const cases = 200;
    try {
      for (let i = 0; i < cases; i++) {
        const random = randomBytes(32);
        const sessionId = randomBytes(1 + int(32));
        const ticket = randomBytes(int(400));
        const cookie = await new Promise<Buffer>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error(`case ${i}: no HelloVerifyRequest`)), 2000);
          cookieWaiter = (c) => {
            clearTimeout(t);
            resolve(c);
          };
          socket.send(hello(random, sessionId, Buffer.alloc(0), ticket), port, "127.0.0.1");
        });
        socket.send(hello(random, sessionId, cookie, ticket), port, "127.0.0.1");
        const end = Date.now() + 2000;
        while (serverHellos.length <= i && Date.now() < end) await new Promise((r) => setTimeout(r, 2));
        assert.equal(serverHellos.length, i + 1, `case ${i}: no ServerHello`);
        // A full handshake: an empty session id (ours are never echoed without a valid ticket) and a promise of a new ticket.
        assert.equal(serverHellos[i][34], 0, `case ${i}: the session id was echoed`);
      }
    } finally {
      socket.close();
      await server.close();
    }
    assert.equal(server.stats.handshakesResumed, 0);
    assert.deepEqual(internal, []);
  });
});

describe("certificate homes: resumption after a listener restart, without checking the chain again", function () {
  this.timeout(30_000);
  let pki: TestPki;
  before(async () => {
    pki = await makeTestPki();
  });

  it("the restarted server resumes from what the ticket vouches for; one that no longer trusts the home's CA makes it a full handshake (refused)", async () => {
    const secret = randomBytes(48);
    const serve = async (ca: string | Buffer): Promise<{ server: DtlsServer; port: number; peers: string[] }> => {
      const server = new DtlsServer({ certificate: { cert: pki.isp.cert, key: pki.isp.key, ca }, sessionTicketSecret: secret });
      const peers: string[] = [];
      server.on("connection", (c: DtlsServerConnection) => {
        peers.push(c.peer.subject ?? "");
        c.on("message", (m: Buffer) => c.send(m));
      });
      server.on("handshake-failed", () => undefined);
      return { server, port: (await server.listen(0, "127.0.0.1")).port, peers };
    };
    const home = { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert, servername: "isp.example" };
    const first = await serve(pki.ca.cert);
    const c1 = await dtlsClientConnect({ address: "127.0.0.1", port: first.port, certificate: home });
    const ticket = c1.resumption;
    assert.ok(ticket);
    c1.close();
    await first.server.close();

    const restarted = await serve(pki.ca.cert);
    try {
      const c2 = await dtlsClientConnect({ address: "127.0.0.1", port: restarted.port, certificate: home, resumeFrom: ticket });
      assert.equal(c2.resumed, true);
      const back = new Promise<Buffer>((r) => c2.once("message", r));
      c2.send(Buffer.from("ping"));
      assert.equal((await back).toString(), "ping");
      assert.equal(restarted.server.stats.handshakesResumed, 1);
      assert.deepEqual(restarted.peers, ["CN=home-1.example"], "the resumed session is still the home's certificate");
      c2.close();
    } finally {
      await restarted.server.close();
    }

    // Same ticket secret, but the home's CA is gone from the server's list: no resumption, and the
    // full handshake that follows refuses the home (unknown_ca).
    const distrusting = await serve(pki.rogueCa.cert);
    try {
      await assert.rejects(dtlsClientConnect({ address: "127.0.0.1", port: distrusting.port, certificate: home, resumeFrom: ticket }));
      assert.equal(distrusting.server.stats.handshakesResumed, 0);
      assert.deepEqual(distrusting.peers, []);
    } finally {
      await distrusting.server.close();
    }
  });

  it("VerifiedCertificates.resume: refused once the chain's expiry has passed or its anchor has, or for an anchor not configured", () => {
    const ca = new X509Certificate(pki.ca.cert);
    const verified = new VerifiedCertificates([ca]);
    const leaf = new X509Certificate(pki.home1.cert);
    const checked = verified.check([leaf.raw]);
    assert.ok(checked.ok);
    const sealed = {
      leafDer: leaf.raw,
      subject: checked.accepted.subject,
      spki: checked.accepted.identity.spki!,
      anchor: checked.accepted.anchor,
      validUntil: Math.floor(checked.accepted.validUntil / 1000),
    };
    const now = Date.now();
    const resumed = verified.resume(sealed, now);
    assert.ok(resumed);
    assert.deepEqual(resumed.identity, checked.accepted.identity);
    assert.equal(resumed.publicKey.asymmetricKeyType, "ec"); // made from the sealed SPKI when asked
    assert.equal(verified.resume({ ...sealed, validUntil: Math.floor(now / 1000) - 1 }, now), undefined);
    assert.equal(verified.resume(sealed, Date.parse(ca.validTo) + 1000), undefined);
    assert.equal(verified.resume({ ...sealed, anchor: randomBytes(32) }, now), undefined);
  });
});

describe("our DTLS client and our DTLS server: resumption end to end", () => {
  it("a listener restarted with the same ticket secret resumes the home's session; one without it does a full handshake", async () => {
    const key = Buffer.from("our-own-pair-key-0123456789");
    const secret = randomBytes(48);
    const serve = async (withSecret: boolean): Promise<{ server: DtlsServer; port: number }> => {
      const server = new DtlsServer({
        pskLookup: (id) => (id === "home-1" ? key : undefined),
        ...(withSecret ? { sessionTicketSecret: secret } : {}),
      });
      // An echo: the answer shows the server has counted the handshake (at the client's Finished).
      server.on("connection", (c: DtlsServerConnection) => c.on("message", (m: Buffer) => c.send(m)));
      return { server, port: (await server.listen(0, "127.0.0.1")).port };
    };
    const first = await serve(true);
    const opts = { address: "127.0.0.1", psk: { identity: "home-1", key } };
    const echo = async (c: Awaited<ReturnType<typeof dtlsClientConnect>>): Promise<void> => {
      const back = new Promise<Buffer>((r) => c.once("message", r));
      c.send(Buffer.from("ping"));
      assert.equal((await back).toString(), "ping");
    };
    const c1 = await dtlsClientConnect({ ...opts, port: first.port });
    const ticket = c1.resumption;
    assert.ok(ticket);
    c1.close();
    await first.server.close(); // the listener process ends; nothing of the session is left
    const restarted = await serve(true);
    try {
      const c2 = await dtlsClientConnect({ ...opts, port: restarted.port, resumeFrom: ticket });
      assert.equal(c2.resumed, true);
      await echo(c2);
      assert.equal(restarted.server.stats.handshakesResumed, 1);
      c2.close();
    } finally {
      await restarted.server.close();
    }
    const other = await serve(false);
    try {
      const c3 = await dtlsClientConnect({ ...opts, port: other.port, resumeFrom: ticket });
      assert.equal(c3.resumed, false, "random keys cannot open the ticket: a full handshake");
      await echo(c3);
      assert.equal(other.server.stats.handshakesResumed, 0);
      assert.equal(other.server.stats.handshakesCompleted, 1);
      c3.close();
    } finally {
      await other.server.close();
    }
  });

  for (const suite of ["TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", "TLS_PSK_WITH_AES_128_CCM_8"] as const) {
    it(`${suite}: the ticket from the first handshake resumes the second, both sides say so, data flows`, async () => {
      const key = Buffer.from("our-own-pair-key-0123456789");
      const server = new DtlsServer({ pskLookup: (id) => (id === "home-1" ? key : undefined) });
      server.on("connection", (c: DtlsServerConnection) =>
        c.on("message", (m: Buffer) => c.send(Buffer.concat([Buffer.from("echo:"), m]))),
      );
      const { port } = await server.listen(0, "127.0.0.1");
      try {
        const opts = { address: "127.0.0.1", port, psk: { identity: "home-1", key }, suites: [suite] };
        const first = await dtlsClientConnect(opts);
        const ticket = first.resumption;
        assert.ok(ticket, "no ticket after the first handshake");
        assert.equal(first.resumed, false);
        first.close();
        const second = await dtlsClientConnect({ ...opts, resumeFrom: ticket });
        assert.equal(second.resumed, true);
        const echoed = new Promise<string>((r) => second.once("message", (m: Buffer) => r(m.toString())));
        second.send(Buffer.from("after resumption"));
        assert.equal(await echoed, "echo:after resumption");
        // The server counts the resumption once the client's Finished arrived (before the data).
        assert.equal(server.stats.handshakesResumed, 1);
        assert.equal(server.stats.handshakesCompleted, 2);
        second.close();
      } finally {
        await server.close();
      }
    });
  }
});

/** Polls `ok` every 5 ms, for 2 s at most. */
async function waitFor(ok: () => boolean): Promise<void> {
  const until = Date.now() + 2000;
  while (!ok()) {
    if (Date.now() > until) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** First byte of the handshake message in a datagram's first record (2 ServerHello, 3 HelloVerifyRequest). */
function firstHandshakeType(datagram: Buffer): number | undefined {
  return datagram.length > 13 && datagram[0] === 22 ? datagram[13] : undefined;
}

/**
 * A UDP relay for one client that keeps the client's datagrams, so a test can replay its
 * ClientHello from the relay's own upstream socket (the address and port the server knows) or
 * from others; while `holdDown` is set, the server's answers are kept instead of forwarded.
 */
class RecordingRelay {
  readonly fromClient: Buffer[] = [];
  readonly heldDown: Buffer[] = [];
  holdDown = false;
  private readonly front = dgram.createSocket("udp4");
  readonly upstream = dgram.createSocket("udp4");
  private client: dgram.RemoteInfo | undefined;

  constructor(private readonly serverPort: number) {}

  async start(): Promise<number> {
    this.front.on("message", (m, r) => {
      this.client = r;
      this.fromClient.push(m);
      this.upstream.send(m, this.serverPort, "127.0.0.1");
    });
    this.upstream.on("message", (m) => {
      if (this.holdDown) this.heldDown.push(m);
      else if (this.client) this.front.send(m, this.client.port, this.client.address);
    });
    await new Promise<void>((r) => this.upstream.bind(0, "127.0.0.1", r));
    await new Promise<void>((r) => this.front.bind(0, "127.0.0.1", r));
    return this.front.address().port;
  }

  close(): void {
    this.front.close();
    this.upstream.close();
  }
}

describe("resumption without a cookie round (RFC 6347 4.2.1: the server MAY skip it when a session is resumed)", () => {
  const key = Buffer.from("our-own-pair-key-0123456789");
  const psk = { identity: "home-1", key };
  const echoServer = async (options: Partial<DtlsServerOptions>): Promise<{ server: DtlsServer; port: number }> => {
    const server = new DtlsServer({ pskLookup: (id) => (id === "home-1" ? key : undefined), ...options });
    server.on("connection", (c: DtlsServerConnection) => c.on("message", (m: Buffer) => c.send(m)));
    return { server, port: (await server.listen(0, "127.0.0.1")).port };
  };
  const echo = async (c: Awaited<ReturnType<typeof dtlsClientConnect>>, text: string): Promise<void> => {
    const back = new Promise<Buffer>((r) => c.once("message", r));
    c.send(Buffer.from(text));
    assert.equal((await back).toString(), text);
  };

  it("a home's ticket is answered at once, with no HelloVerifyRequest; with resumeWithoutCookie off, after the cookie round", async () => {
    for (const resumeWithoutCookie of [true, false]) {
      const { server, port } = await echoServer({ resumeWithoutCookie });
      try {
        const first = await dtlsClientConnect({ address: "127.0.0.1", port, psk });
        const ticket = first.resumption;
        assert.ok(ticket);
        first.close();
        assert.equal(server.stats.helloVerifyRequests, 1, "the full handshake had its cookie round");
        const second = await dtlsClientConnect({ address: "127.0.0.1", port, psk, resumeFrom: ticket });
        assert.equal(second.resumed, true);
        await echo(second, "resumed");
        assert.equal(server.stats.helloVerifyRequests, resumeWithoutCookie ? 1 : 2);
        assert.equal(server.stats.handshakesResumed, 1);
        assert.equal(server.stats.resumedWithoutCookie, resumeWithoutCookie ? 1 : 0);
        second.close();
      } finally {
        await server.close();
      }
    }
  });

  it("the ISP listener passes its setting down: tuning dtlsResumeWithoutCookie false (listen --dtls-cookie-always) keeps the cookie round", async () => {
    for (const cookieAlways of [false, true]) {
      const listener = new CallHomeListener(
        { port: 0, host: "127.0.0.1", transports: { dtls: true, tls: false }, psk: [{ identity: "home-1", key, home: "home-1" }] },
        cookieAlways ? { dtlsResumeWithoutCookie: false } : {},
      );
      listener.on("error", () => undefined);
      await listener.start();
      const relay = new RecordingRelay(listener.port!);
      try {
        const first = await dtlsClientConnect({ address: "127.0.0.1", port: listener.port!, psk });
        const ticket = first.resumption;
        assert.ok(ticket);
        first.close();
        const second = await dtlsClientConnect({ address: "127.0.0.1", port: await relay.start(), psk, resumeFrom: ticket });
        assert.equal(second.resumed, true);
        // The home's datagrams: one ClientHello without a cookie, and a second one with it only when asked.
        const hellos = relay.fromClient.filter((d) => firstHandshakeType(d) === 1);
        assert.equal(hellos.length, cookieAlways ? 2 : 1, cookieAlways ? "cookie round" : "no cookie round");
        second.close();
      } finally {
        relay.close();
        await listener.stop();
      }
    }
  });

  it("resumes over a 30% lossy path (5 seeds): our flight is sent again as new records, so the client answers each copy until its Finished gets through", async () => {
    const { server, port } = await echoServer({ initialRetransmitMs: 100 });
    const relays: LossyRelay[] = [];
    try {
      const first = await dtlsClientConnect({ address: "127.0.0.1", port, psk });
      const ticket = first.resumption;
      assert.ok(ticket);
      first.close();
      for (let seed = 1; seed <= 5; seed++) {
        const relay = new LossyRelay({ target: { address: "127.0.0.1", port }, lossRate: 0.3, seed });
        relays.push(relay);
        const front = await relay.start();
        const c = await dtlsClientConnect({ ...front, psk, resumeFrom: ticket, retransmitInitialMs: 50, handshakeTimeoutMs: 20000 });
        assert.equal(c.resumed, true, `seed ${seed}`);
        // Application data is not retransmitted by DTLS: retry the echo.
        let answer = "";
        for (let i = 0; i < 40 && !answer; i++) {
          answer = await new Promise<string>((r) => {
            const t = setTimeout(() => r(""), 200);
            c.once("message", (m: Buffer) => {
              clearTimeout(t);
              r(m.toString());
            });
            c.send(Buffer.from(`s${seed}`));
          });
        }
        assert.equal(answer, `s${seed}`);
        c.close();
      }
      assert.equal(server.stats.handshakesResumed, 5);
      assert.ok(server.stats.resumedWithoutCookie >= 1, "some of them without the cookie round");
    } finally {
      for (const r of relays) await r.close();
      await server.close();
    }
  });

  it("a replayed ClientHello with the ticket: answered at once only up to a quarter of the per-source cap, never sent after the short deadline, and never over the session at its address", async () => {
    const { server, port } = await echoServer({ maxHandshakingPerSource: 8, initialRetransmitMs: 50, pressureHandshakeTimeoutMs: 300 });
    const relay = new RecordingRelay(port);
    const sockets: dgram.Socket[] = [];
    try {
      const first = await dtlsClientConnect({ address: "127.0.0.1", port, psk });
      const ticket = first.resumption;
      assert.ok(ticket);
      first.close();
      const home = await dtlsClientConnect({ address: "127.0.0.1", port: await relay.start(), psk, resumeFrom: ticket });
      assert.equal(home.resumed, true);
      await echo(home, "resumed through the relay"); // the server has the home's Finished
      assert.equal(server.stats.resumedWithoutCookie, 1);
      const hello = relay.fromClient[0];
      assert.equal(firstHandshakeType(hello), 1, "the relay kept the home's ClientHello");

      // The same ClientHello again from the address and port of the home's session: a cookie is
      // asked for, and the session goes on.
      relay.holdDown = true;
      relay.upstream.send(hello, port, "127.0.0.1");
      await waitFor(() => relay.heldDown.length > 0);
      assert.equal(firstHandshakeType(relay.heldDown[0]), 3, "HelloVerifyRequest, not a new handshake");
      relay.holdDown = false;
      await echo(home, "still the same session");

      // From four other ports of the same address: the first two (a quarter of 8) are answered with
      // the abbreviated flight, the others with a HelloVerifyRequest.
      const answers: Buffer[][] = [];
      const arrivals: number[][] = [];
      for (let i = 0; i < 4; i++) {
        const s = dgram.createSocket("udp4");
        sockets.push(s);
        const got: Buffer[] = [];
        const at: number[] = [];
        answers.push(got);
        arrivals.push(at);
        s.on("message", (m) => {
          got.push(m);
          at.push(Date.now());
        });
        await new Promise<void>((r) => s.bind(0, "127.0.0.1", r));
        s.send(hello, port, "127.0.0.1");
        await waitFor(() => got.length > 0);
      }
      assert.deepEqual(
        answers.map((a) => firstHandshakeType(a[0])),
        [2, 2, 3, 3],
      );
      // To an unproven address the flight goes out at 0, 50 and 150 ms; not at 350 ms, past the
      // short deadline (300 ms), which also ends the handshake (the default deadline is 30 s).
      await new Promise((r) => setTimeout(r, 600));
      for (const at of arrivals.slice(0, 2)) {
        assert.ok(at.length >= 2, "the flight is retransmitted before the deadline");
        assert.ok(at[at.length - 1] - at[0] < 330, `a flight came ${at[at.length - 1] - at[0]} ms after the first`);
      }
      assert.equal(answers[2].length, 1, "a HelloVerifyRequest is never repeated by the server");
      assert.equal(server.stats.handshakesResumed, 1, "none of the replays completed");
      assert.equal(server.stats.handshakesFailed, 2, "both unproven handshakes timed out");
      home.close();
    } finally {
      for (const s of sockets) s.close();
      relay.close();
      await server.close();
    }
  });
});
