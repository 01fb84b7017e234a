// ECDHE_PSK in our DTLS server (RFC 5489 key exchange, RFC 7905 ChaCha20-Poly1305 records):
// primitives with fixed vectors, and the server's behaviour towards a scripted client on loopback.
import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import { createCipheriv, createECDH, randomBytes } from "node:crypto";
import { once } from "node:events";
import { DtlsServer, type DtlsServerOptions, type HandshakeFailure, type DtlsServerConnection } from "../../../src/transport/dtls";
import { AeadState, openRecord, sealRecord } from "../../../src/transport/dtls/cipher";
import { CIPHER_SUITES, keyBlockLength } from "../../../src/transport/dtls/constants";
import { generateEphemeralKey } from "../../../src/transport/dtls/ecdhe";
import {
  DtlsDecodeError,
  buildEcdhePskServerKeyExchange,
  buildServerHello,
  parseClientHello,
  parseEcdhePskClientKeyExchange,
} from "../../../src/transport/dtls/handshake";
import { aeadKeyBlock, ecdhePskPremasterSecret } from "../../../src/transport/dtls/prf";
import { encodeRecord } from "../../../src/transport/dtls/record";
import { DtlsAlertError, ScriptedDtlsClient } from "../../support/scripted-dtls-client";

const PSK = Buffer.from("secretPSK-0123456789");
const ID = "dots-client-1";
const CHACHA = CIPHER_SUITES.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256;
const X25519 = 29;
const P256 = 23;

// RFC 8439 section 2.8.2 AEAD test vector.
const RFC8439_KEY = Buffer.from("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f", "hex");
const RFC8439_PLAINTEXT = Buffer.from(
  "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
);

describe("ECDHE_PSK primitives", () => {
  it("node's ChaCha20-Poly1305 reproduces the RFC 8439 2.8.2 vector (the primitive the records use)", () => {
    const c = createCipheriv("chacha20-poly1305", RFC8439_KEY, Buffer.from("070000004041424344454647", "hex"), { authTagLength: 16 });
    c.setAAD(Buffer.from("50515253c0c1c2c3c4c5c6c7", "hex"), { plaintextLength: RFC8439_PLAINTEXT.length });
    const ct = Buffer.concat([c.update(RFC8439_PLAINTEXT), c.final()]);
    assert.equal(
      ct.toString("hex"),
      "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b" +
        "1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116",
    );
    assert.equal(c.getAuthTag().toString("hex"), "1ae10b594f09e26a7e902ecbd0600691");
  });

  it("sealRecord (RFC 7905): nonce = IV XOR padded epoch+sequence, no explicit nonce, 16-byte tag, TLS additional data", () => {
    // Hand-computed for IV 070000004041424344454647, epoch 1, sequence 0x0a0b0c0d0e0f:
    // padded 00000000 0001 0a0b0c0d0e0f XOR IV = 07000000 4040 484848484848.
    const iv = Buffer.from("070000004041424344454647", "hex");
    const expectedNonce = Buffer.from("070000004040484848484848", "hex");
    // additional_data = seq_num (epoch 0001 + 0a0b0c0d0e0f) + type 23 + version fefd + length 114.
    const expectedAad = Buffer.from("00010a0b0c0d0e0f" + "17" + "fefd" + "0072", "hex");
    const c = createCipheriv("chacha20-poly1305", RFC8439_KEY, expectedNonce, { authTagLength: 16 });
    c.setAAD(expectedAad, { plaintextLength: RFC8439_PLAINTEXT.length });
    const expected = Buffer.concat([c.update(RFC8439_PLAINTEXT), c.final(), c.getAuthTag()]);

    const material = Buffer.concat([Buffer.alloc(5), RFC8439_KEY, iv]); // offsets inside a shared slab
    const sealed = sealRecord(CHACHA, material, 5, 37, 23, 0xfefd, 1, 0x0a0b0c0d0e0f, RFC8439_PLAINTEXT);
    assert.equal(sealed.length, RFC8439_PLAINTEXT.length + 16);
    assert.equal(sealed.toString("hex"), expected.toString("hex"));
    assert.equal(openRecord(CHACHA, material, 5, 37, 23, 0xfefd, 1, 0x0a0b0c0d0e0f, sealed)?.toString(), RFC8439_PLAINTEXT.toString());
  });

  it("ChaCha20-Poly1305 records: tampering, another sequence, epoch or type, and truncation all fail without throwing", () => {
    const a = new AeadState(CHACHA, randomBytes(32), randomBytes(12));
    const rec = a.encrypt(23, 0xfefd, 1, 9, Buffer.from("payload"));
    assert.equal(a.decrypt(23, 0xfefd, 1, 9, rec)?.toString(), "payload");
    for (let i = 0; i < rec.length; i++) {
      const bad = Buffer.from(rec);
      bad[i] ^= 0x01;
      assert.equal(a.decrypt(23, 0xfefd, 1, 9, bad), undefined, `bit flip at ${i}`);
    }
    assert.equal(a.decrypt(23, 0xfefd, 1, 10, rec), undefined);
    assert.equal(a.decrypt(23, 0xfefd, 2, 9, rec), undefined);
    assert.equal(a.decrypt(22, 0xfefd, 1, 9, rec), undefined);
    assert.equal(a.decrypt(23, 0xfefd, 1, 9, rec.subarray(0, 15)), undefined);
    assert.throws(() => new AeadState(CHACHA, randomBytes(16), randomBytes(4)), RangeError);
  });

  it("key block for ChaCha20-Poly1305 is 32+32+12+12 bytes, AES stays 16+16+4+4", () => {
    assert.equal(keyBlockLength(CHACHA), 88);
    assert.equal(keyBlockLength(CIPHER_SUITES.TLS_PSK_WITH_AES_128_CCM_8), 40);
    const kb = aeadKeyBlock(randomBytes(48), randomBytes(32), randomBytes(32), 32, 12);
    assert.deepEqual([kb.clientKey.length, kb.serverKey.length, kb.clientSalt.length, kb.serverSalt.length], [32, 32, 12, 12]);
  });

  it("ECDHE_PSK premaster secret has the RFC 5489 layout", () => {
    assert.equal(
      ecdhePskPremasterSecret(Buffer.from("aabbcc", "hex"), Buffer.from("0102", "hex")).toString("hex"),
      "0003aabbcc" + "00020102",
    );
  });

  it("ServerKeyExchange / ClientKeyExchange encodings; bad ClientKeyExchange is a DtlsDecodeError", () => {
    const point = Buffer.alloc(32, 7);
    assert.equal(
      buildEcdhePskServerKeyExchange(Buffer.from("CoAP"), X25519, point).toString("hex"),
      "0004" + Buffer.from("CoAP").toString("hex") + "03001d20" + point.toString("hex"),
    );
    assert.equal(buildEcdhePskServerKeyExchange(Buffer.alloc(0), P256, Buffer.alloc(65, 4)).subarray(0, 6).toString("hex"), "000003001741");
    const cke = Buffer.concat([Buffer.from("0002", "hex"), Buffer.from("id"), Buffer.from([32]), point]);
    const parsed = parseEcdhePskClientKeyExchange(cke);
    assert.equal(parsed.identity.toString(), "id");
    assert.deepEqual(parsed.point, point);
    assert.throws(() => parseEcdhePskClientKeyExchange(cke.subarray(0, cke.length - 1)), DtlsDecodeError);
    assert.throws(() => parseEcdhePskClientKeyExchange(Buffer.concat([cke, Buffer.from([0])])), DtlsDecodeError);
    assert.throws(() => parseEcdhePskClientKeyExchange(Buffer.from("0002696400", "hex")), DtlsDecodeError); // empty point
  });

  it("ClientHello: supported_groups and ec_point_formats are read; malformed ones are DtlsDecodeError", () => {
    const hello = (ext: Buffer): Buffer =>
      Buffer.concat([
        Buffer.from("fefd", "hex"),
        Buffer.alloc(32),
        Buffer.from([0, 0]),
        Buffer.from("0002ccac0100", "hex"),
        Buffer.from([0, ext.length]),
        ext,
      ]);
    const groups = Buffer.from("000a0006" + "0004001d0017", "hex");
    const formats = Buffer.from("000b0002" + "0100", "hex");
    const h = parseClientHello(hello(Buffer.concat([groups, formats])));
    assert.deepEqual(h.supportedGroups, [29, 23]);
    assert.deepEqual([...h.ecPointFormats!], [0]);
    const none = parseClientHello(hello(Buffer.alloc(0)));
    assert.equal(none.supportedGroups, undefined);
    assert.equal(none.ecPointFormats, undefined);
    assert.throws(() => parseClientHello(hello(Buffer.from("000a0005" + "0003001d00", "hex"))), DtlsDecodeError);
    assert.throws(() => parseClientHello(hello(Buffer.from("000b0001" + "00", "hex"))), DtlsDecodeError);
    assert.throws(() => parseClientHello(hello(Buffer.from("000a0004" + "0004001d", "hex"))), DtlsDecodeError);
  });

  it("ServerHello answers ec_point_formats with uncompressed only when asked to", () => {
    const sh = buildServerHello(Buffer.alloc(32), 0xccac, false, true, true);
    assert.equal(sh.subarray(38).toString("hex"), "000a" + "00170000" + "000b00020100");
    assert.equal(buildServerHello(Buffer.alloc(32), 0xc0a8, false, false, false).length, 38);
  });

  it("ephemeral keys: both groups agree with a peer; invalid, identity and low-order points give undefined", () => {
    for (const group of [X25519, P256]) {
      const a = generateEphemeralKey(group);
      const b = generateEphemeralKey(group);
      const s1 = a.derive(b.publicKey);
      assert.ok(s1 && s1.length === 32);
      assert.deepEqual(b.derive(a.publicKey), s1);
      assert.equal(a.derive(Buffer.alloc(0)), undefined);
      assert.equal(a.derive(Buffer.from([0])), undefined); // point at infinity
      assert.equal(a.derive(Buffer.concat([a.publicKey, Buffer.from([1])])), undefined);
    }
    const x = generateEphemeralKey(X25519);
    assert.equal(x.publicKey.length, 32);
    assert.equal(x.derive(Buffer.alloc(32)), undefined); // order-1 point: all-zero secret
    assert.equal(x.derive(Buffer.concat([Buffer.from([1]), Buffer.alloc(31)])), undefined); // order-4 point
    const p = generateEphemeralKey(P256);
    assert.equal(p.publicKey.length, 65);
    const offCurve = Buffer.from(p.publicKey);
    offCurve[64] ^= 1;
    assert.equal(p.derive(offCurve), undefined);
    const compressed = createECDH("prime256v1");
    compressed.generateKeys();
    assert.equal(p.derive(compressed.getPublicKey(null, "compressed")), undefined); // only uncompressed was negotiated
    assert.throws(() => generateEphemeralKey(24), RangeError);
  });

  it("60,000 x25519 key pairs under heavy garbage collection complete (Node 20 deadlocked exporting a generated key)", async function () {
    this.timeout(90_000);
    // Node 20 held a key's mutex while allocating the exported JWK; a GC then finalised the finished
    // key-generation job, which took the same mutex: the main thread froze. A tiny young generation
    // makes that GC likely; a child process turns a freeze into a timeout instead of a stuck suite.
    const script = `
      const { generateEphemeralKey } = require(${JSON.stringify(require.resolve("../../../src/transport/dtls/ecdhe"))});
      let peer = generateEphemeralKey(${X25519}), agreed = 0;
      for (let i = 0; i < 60000; i++) {
        const k = generateEphemeralKey(${X25519});
        if (i % 16 === 0) { if (k.derive(peer.publicKey)?.length === 32) agreed++; peer = k; }
      }
      process.stdout.write(String(agreed));`;
    const child = spawn(process.execPath, ["--max-semi-space-size=1", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const killer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    const [code, signal] = (await once(child, "exit")) as [number | null, string | null];
    clearTimeout(killer);
    assert.equal(signal, null, "the key generation froze (killed after 60 s)");
    assert.equal(code, 0);
    assert.equal(out, "3750");
  });
});

describe("DtlsServer ECDHE_PSK with a scripted client on loopback", () => {
  let server: DtlsServer | undefined;
  let port: number;
  const failures: HandshakeFailure[] = [];
  const connections: DtlsServerConnection[] = [];
  const clients: ScriptedDtlsClient[] = [];
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
    const c = new ScriptedDtlsClient({ address: "127.0.0.1", port, identity: ID, psk: PSK, extendedMasterSecret: true, ...opts });
    clients.push(c);
    await c.bind();
    return c;
  }

  const BOTH = ["TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", "TLS_PSK_WITH_AES_128_CCM_8"] as const;

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close(false);
    await server?.close();
    server = undefined;
    assert.deepEqual(internalErrors, []);
    failures.length = 0;
    connections.length = 0;
    internalErrors = [];
  });

  for (const [name, group] of [
    ["x25519", X25519],
    ["secp256r1", P256],
  ] as const) {
    it(`${name}: handshake with EMS and point formats, data both ways, suite reported`, async () => {
      await start();
      const c = await client({ suites: [...BOTH], supportedGroups: [group] });
      await c.connect();
      assert.equal(c.suite, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256");
      assert.equal(c.extendedMasterSecretNegotiated, true);
      assert.equal(c.serverKeyExchange?.group, group);
      assert.equal(c.serverKeyExchange?.hint.length, 0);
      assert.equal(c.serverHelloExtensions.get(0x000b)?.toString("hex"), "0100");
      c.send(Buffer.from("ping"));
      assert.equal((await c.nextMessage()).toString(), "echo:ping");
      assert.equal(connections[0].cipher, "DTLSv1.2 TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256");
      assert.equal(connections[0].peer.pskIdentity, ID);
    });
  }

  it("each handshake uses a fresh ephemeral key; the identity hint is carried", async () => {
    await start({ pskHint: "CoAP" });
    const a = await client({ suites: [...BOTH] });
    const b = await client({ suites: [...BOTH] });
    await a.connect();
    await b.connect();
    assert.equal(a.serverKeyExchange?.hint.toString(), "CoAP");
    assert.equal(a.serverKeyExchange?.group, X25519); // our preference, the client offers both
    assert.notDeepEqual(a.serverKeyExchange?.point, b.serverKeyExchange?.point);
  });

  it("suite choice: ECDHE_PSK preferred when offered; plain PSK for clients without it; configurable", async () => {
    await start();
    const both = await client({ suites: ["TLS_PSK_WITH_AES_128_CCM_8", "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"] });
    await both.connect();
    assert.equal(both.suite, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256");
    const plain = await client({ suites: ["TLS_PSK_WITH_AES_128_CCM_8"] });
    await plain.connect();
    assert.equal(plain.suite, "TLS_PSK_WITH_AES_128_CCM_8");
    assert.equal(plain.serverHelloExtensions.has(0x000b), false);
    // No usable group, or no uncompressed points: fall back to plain PSK.
    const noGroup = await client({ suites: [...BOTH], supportedGroups: [24] });
    await noGroup.connect();
    assert.equal(noGroup.suite, "TLS_PSK_WITH_AES_128_CCM_8");
    const noFormat = await client({ suites: [...BOTH], ecPointFormats: [1] });
    await noFormat.connect();
    assert.equal(noFormat.suite, "TLS_PSK_WITH_AES_128_CCM_8");
    // Without supported_groups the server picks secp256r1.
    const silent = await client({ suites: [...BOTH], supportedGroups: null, ecPointFormats: null });
    await silent.connect();
    assert.equal(silent.serverKeyExchange?.group, P256);
    assert.equal(silent.serverHelloExtensions.has(0x000b), false);
    await server!.close();

    await start({
      cipherSuites: ["TLS_PSK_WITH_AES_128_CCM_8", "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"],
      ecdheGroups: ["secp256r1"],
    });
    const pskFirst = await client({ suites: [...BOTH] });
    await pskFirst.connect();
    assert.equal(pskFirst.suite, "TLS_PSK_WITH_AES_128_CCM_8");
    const onlyEcdhe = await client({ suites: ["TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"] });
    await onlyEcdhe.connect();
    assert.equal(onlyEcdhe.serverKeyExchange?.group, P256);
    const onlyX = await client({ suites: ["TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"], supportedGroups: [X25519] });
    await assert.rejects(onlyX.connect(), (e: unknown) => e instanceof DtlsAlertError && e.description === 40);
    assert.deepEqual(
      failures.map((f) => f.reason),
      ["no-shared-cipher"],
    );
    assert.throws(() => new DtlsServer({ pskLookup: () => PSK, ecdheGroups: ["secp384r1" as never] }), TypeError);
  });

  const badPoints: Array<[string, number, (own: Buffer) => Buffer]> = [
    ["x25519 all-zero (low order)", X25519, () => Buffer.alloc(32)],
    ["x25519 wrong length", X25519, (own) => own.subarray(0, 31)],
    ["secp256r1 off the curve", P256, (own) => Buffer.concat([own.subarray(0, 64), Buffer.from([own[64] ^ 1])])],
    ["secp256r1 point at infinity", P256, () => Buffer.from([0])],
    ["secp256r1 compressed", P256, (own) => Buffer.concat([Buffer.from([2 + (own[64] & 1)]), own.subarray(1, 33)])],
  ];
  for (const [what, group, replace] of badPoints) {
    it(`refuses a bad client point (${what}) with illegal_parameter (47), before any PSK lookup`, async () => {
      const lookups: string[] = [];
      await start({ pskLookup: (id) => (lookups.push(id), PSK) });
      const c = await client({ suites: [...BOTH], supportedGroups: [group], replaceEcdhPoint: replace });
      await assert.rejects(c.connect(), (e: unknown) => e instanceof DtlsAlertError && e.level === 2 && e.description === 47);
      assert.deepEqual(
        failures.map((f) => f.reason),
        ["illegal-parameter"],
      );
      assert.deepEqual(lookups, []);
      assert.equal(server!.sessionCount, 0);
      assert.equal(server!.handshakingCount, 0);
      // The server keeps serving.
      const good = await client({ suites: [...BOTH], supportedGroups: [group] });
      await good.connect();
      assert.equal(good.suite, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256");
    });
  }

  it("wrong PSK under ECDHE_PSK: fatal decrypt_error (51)", async () => {
    await start();
    const c = await client({ suites: [...BOTH], psk: Buffer.from("wrong-key-0123456789") });
    await assert.rejects(c.connect(), (e: unknown) => e instanceof DtlsAlertError && e.description === 51);
    assert.deepEqual(
      failures.map((f) => f.reason),
      ["bad-finished"],
    );
  });

  it("async PSK lookup under ECDHE_PSK; unknown identity gets 115", async () => {
    await start({ pskLookup: (id) => new Promise((r) => setTimeout(() => r(id === ID ? PSK : undefined), 20)) });
    const ok = await client({ suites: [...BOTH] });
    await ok.connect();
    assert.equal(ok.suite, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256");
    const stranger = await client({ suites: [...BOTH], identity: "intruder" });
    await assert.rejects(stranger.connect(), (e: unknown) => e instanceof DtlsAlertError && e.description === 115);
  });

  it("replayed, tampered and wrong-epoch ChaCha20-Poly1305 records are dropped; the session goes on", async () => {
    await start();
    const c = await client({ suites: [...BOTH] });
    await c.connect();
    const got: string[] = [];
    connections[0].on("message", (m) => got.push(m.toString()));
    c.send(Buffer.from("one"));
    assert.equal((await c.nextMessage()).toString(), "echo:one");
    const record = c.sent[c.sent.length - 1];
    c.sendRaw(record); // replay
    const tampered = Buffer.from(record);
    tampered[tampered.length - 17] ^= 0x55; // last ciphertext byte
    tampered.writeUIntBE(77, 5, 6);
    c.sendRaw(tampered);
    const otherSeq = Buffer.from(record);
    otherSeq.writeUIntBE(78, 5, 6); // the nonce depends on the sequence: no longer authenticates
    c.sendRaw(otherSeq);
    c.sendRaw(encodeRecord(23, 0xfefd, 2, 0, record.subarray(13)));
    const bad = server!.stats.badRecords;
    c.send(Buffer.from("two"));
    assert.equal((await c.nextMessage()).toString(), "echo:two");
    assert.deepEqual(got, ["one", "two"]);
    assert.ok(server!.stats.badRecords >= bad);
    assert.equal(connections[0].closed, false);
  });

  it("a ClientKeyExchange with an empty ECDH point under ECDHE_PSK is decode_error (50), never an exception", async () => {
    await start();
    const c = await client({ suites: [...BOTH], replaceEcdhPoint: () => Buffer.alloc(0) });
    await assert.rejects(c.connect(), (e: unknown) => e instanceof DtlsAlertError && e.description === 50);
    assert.deepEqual(
      failures.map((f) => f.reason),
      ["decode-error"],
    );
    assert.equal(server!.sessionCount, 0);
  });
});
