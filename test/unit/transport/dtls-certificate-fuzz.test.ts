// Seeded mutation fuzz of certificate (ECDHE_ECDSA, ECDHE_RSA) handshakes in both roles: flights recorded from
// a real handshake of our client with our server, mutated (bit flips, truncation, insertion, length,
// epoch and type fields) and fed to the server's datagram handler and to fresh clients' handlers.
// Neither may throw or hit an internal error; the server keeps its peer table bounded and still
// serves a certificate home afterwards.
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import { randomBytes } from "node:crypto";
import { TransportError } from "../../../src/transport/connection";
import { DtlsServer, type DtlsServerConnection, type HandshakeFailure } from "../../../src/transport/dtls";
import { DtlsClient, dtlsClientConnect } from "../../../src/transport/dtls/client";
import { encodeHandshake, parseHandshakeFragments } from "../../../src/transport/dtls/handshake";
import { encodeRecord, parseDatagram } from "../../../src/transport/dtls/record";
import { makeTestPki, type KeyPair, type TestPki } from "../../support/certs";
import { hasCommand, requireOrSkip } from "../../support/env";
import { fuzzRuns, mutator } from "../../support/fuzz";

/** A UDP relay that records every datagram in each direction. */
async function recordingRelay(target: number): Promise<{ port: number; up: Buffer[]; down: Buffer[]; close(): Promise<void> }> {
  const front = dgram.createSocket("udp4");
  const back = dgram.createSocket("udp4");
  const up: Buffer[] = [];
  const down: Buffer[] = [];
  let client: dgram.RemoteInfo | undefined;
  front.on("message", (m, r) => {
    client = r;
    up.push(m);
    back.send(m, target, "127.0.0.1");
  });
  back.on("message", (m) => {
    down.push(m);
    if (client) front.send(m, client.port, client.address);
  });
  await new Promise<void>((r) => front.bind(0, "127.0.0.1", r));
  await new Promise<void>((r) => back.bind(0, "127.0.0.1", r));
  return {
    port: front.address().port,
    up,
    down,
    close: async () => {
      await new Promise<void>((r) => front.close(() => r()));
      await new Promise<void>((r) => back.close(() => r()));
    },
  };
}

/**
 * The server's key kind, with the suites and ClientHello extensions for it: EMS, supported_groups
 * [x25519, secp256r1] (an ECDSA certificate's curve must be one), ec_point_formats [uncompressed],
 * signature_algorithms [ecdsa_secp256r1_sha256] or [rsa_pss_rsae_sha256, rsa_pkcs1_sha256].
 */
const KINDS = [
  {
    kind: "EC",
    suites: [0xcca9, 0xc02b],
    extensions: "00170000" + "000a00060004001d0017" + "000b00020100" + "000d000400020403",
    runs: [70_000, 30_000],
  },
  {
    kind: "RSA",
    suites: [0xcca8, 0xc02f],
    extensions: "00170000" + "000a00060004001d0017" + "000b00020100" + "000d0006000408040401",
    runs: [20_000, 10_000],
  },
] as const;

function clientHello(seq: number, random: Buffer, cookie: Buffer, kind: (typeof KINDS)[number]): Buffer {
  const suites = Buffer.alloc(kind.suites.length * 2);
  kind.suites.forEach((v, i) => suites.writeUInt16BE(v, i * 2));
  const extensions = Buffer.from(kind.extensions, "hex");
  const body = Buffer.concat([
    Buffer.from([0xfe, 0xfd]),
    random,
    Buffer.from([0, cookie.length]),
    cookie,
    Buffer.from([0, suites.length]),
    suites,
    Buffer.from([1, 0]),
    Buffer.from([0, extensions.length]),
    extensions,
  ]);
  return encodeRecord(22, 0xfefd, 0, seq, encodeHandshake(1, seq, body));
}

describe("DTLS certificate handshakes under mutation (both roles)", function () {
  this.timeout(300_000);
  let pki: TestPki;

  before(async function () {
    requireOrSkip(this, "openssl (test PKI)", hasCommand("openssl"));
    pki = await makeTestPki();
  });

  for (const kind of KINDS) {
    // RSA: the server signs with RSA; the home's certificate is RSA in the server's case (its
    // CertificateVerify is what gets mutated) and EC in the client's (one RSA signature per case would be slow).
    const keys = (): { isp: KeyPair; home: KeyPair; after: KeyPair } =>
      kind.kind === "EC" ? { isp: pki.isp, home: pki.home1, after: pki.home2 } : { isp: pki.ispRsa, home: pki.homeRsa, after: pki.home2 };

    it(`server (${kind.kind} keys): ${fuzzRuns(kind.runs[0])} mutated certificate flights (Certificate, ClientKeyExchange, CertificateVerify) never throw`, async () => {
      const { isp, home, after: afterHome } = keys();
      const server = new DtlsServer({
        certificate: { cert: isp.cert, key: isp.key, ca: pki.ca.cert },
        maxPeers: 64,
        maxHandshaking: 32,
        handshakeTimeoutMs: 2000,
      });
      const internal: unknown[] = [];
      const failures: string[] = [];
      server.on("internal-error", (e: unknown) => internal.push(e));
      server.on("handshake-failed", (f: HandshakeFailure) => failures.push(f.reason));
      server.on("connection", (c: DtlsServerConnection) => c.on("message", (m: Buffer) => c.send(m)));
      const { port } = await server.listen(0, "127.0.0.1");
      const sinks: dgram.Socket[] = [];
      try {
        // A real handshake through a recorder: our client's flight 5 (Certificate, ClientKeyExchange,
        // CertificateVerify, ChangeCipherSpec, Finished).
        const relay = await recordingRelay(port);
        const c = await dtlsClientConnect({
          address: "127.0.0.1",
          port: relay.port,
          certificate: { cert: home.cert, key: home.key, ca: pki.ca.cert, servername: "isp.example" },
        });
        c.close();
        await relay.close();
        const flight5 = relay.up.slice(2).filter((d) => d[0] === 22); // after the two ClientHellos; not the close_notify
        assert.ok(flight5.length >= 1 && flight5[0].length > 400, "flight 5 carries the certificate");
        // Fuzz sources with real cookies: their (mutated) flight 5 meets a handshake in progress.
        const pool: Array<{ data: Buffer; port: number }> = [];
        for (let i = 0; i < 4; i++) {
          const sink = dgram.createSocket("udp4");
          sinks.push(sink);
          const replies: Buffer[] = [];
          sink.on("message", (m) => replies.push(m));
          await new Promise<void>((r) => sink.bind(0, "127.0.0.1", r));
          const sinkPort = sink.address().port;
          const random = randomBytes(32);
          server.handleDatagram(clientHello(0, random, Buffer.alloc(0), kind), "127.0.0.1", sinkPort);
          for (let k = 0; k < 100 && replies.length === 0; k++) await new Promise((r) => setTimeout(r, 5));
          const hvr = parseHandshakeFragments(parseDatagram(replies[0], 300).records[0].fragment)[0];
          const hello = clientHello(1, random, Buffer.from(hvr.body.subarray(3)), kind);
          for (const d of [hello, ...flight5, Buffer.concat([hello, ...flight5])]) pool.push({ data: d, port: sinkPort });
          for (const d of flight5) pool.push({ data: d, port: sinkPort }, { data: d, port: sinkPort });
        }
        const { int, mutate } = mutator(0xce47);
        const runs = fuzzRuns(kind.runs[0]);
        for (let i = 0; i < runs; i++) {
          const base = pool[int(pool.length)];
          server.handleDatagram(int(5) === 0 ? base.data : mutate(base.data), "127.0.0.1", base.port);
          if (i % 500 === 499) await new Promise((r) => setImmediate(r));
        }
        assert.deepEqual(internal, []);
        assert.equal(server.stats.internalErrors, 0);
        assert.ok(server.sessionCount <= 64);
        // The mutations reached the certificate messages: chains and signatures were refused.
        const seen = new Set(failures);
        for (const reason of ["decode-error", "bad-certificate-verify"])
          assert.ok(seen.has(reason), `${reason} among ${JSON.stringify([...seen])}`);
        // A certificate home still gets in.
        const after = await dtlsClientConnect({
          address: "127.0.0.1",
          port,
          certificate: { cert: afterHome.cert, key: afterHome.key, ca: pki.ca.cert, servername: "isp.example" },
        });
        const echoed = new Promise<Buffer>((r) => after.once("message", r));
        after.send(Buffer.from("after the certificate flood"));
        assert.equal((await echoed).toString(), "after the certificate flood");
        after.close();
      } finally {
        for (const s of sinks) s.close();
        await server.close();
      }
    });

    it(`client (${kind.kind} server key): ${fuzzRuns(kind.runs[1])} mutated server flights (Certificate, signed ServerKeyExchange, CertificateRequest) never throw`, async () => {
      const { isp } = keys();
      const server = new DtlsServer({ certificate: { cert: isp.cert, key: isp.key, ca: pki.ca.cert } });
      server.on("connection", () => undefined);
      const { port } = await server.listen(0, "127.0.0.1");
      const relay = await recordingRelay(port);
      const options = {
        address: "127.0.0.1",
        port: 9,
        certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert, servername: "isp.example" },
      };
      try {
        const c = await dtlsClientConnect({ ...options, port: relay.port });
        c.close();
        // HelloVerifyRequest, flight 4 (ServerHello, Certificate, ServerKeyExchange, CertificateRequest,
        // ServerHelloDone), flight 6.
        const flights = relay.down.slice(0, 3);
        type Internals = {
          onDatagram(m: Buffer): void;
          sendClientHello(): void;
          settle: { resolve(): void; reject(e: Error): void } | undefined;
        };
        const { int, mutate } = mutator(0xce47c1);
        const runs = fuzzRuns(kind.runs[1]);
        const outcomes = new Map<string, number>();
        for (let i = 0; i < runs; i++) {
          const client = new DtlsClient(options);
          const inner = client as unknown as Internals;
          let outcome = "pending";
          let detail = "";
          inner.settle = {
            resolve: () => (outcome = "connected"),
            reject: (e) => {
              outcome = !(e instanceof TransportError) || /internal error/.test(e.message) ? "other" : e.code;
              if (outcome === "other") detail = e.message;
            },
          };
          inner.sendClientHello();
          const target = 1 + int(2);
          try {
            for (let k = 0; k < flights.length && outcome === "pending"; k++) {
              inner.onDatagram(k === target ? mutate(flights[k]) : flights[k]);
              if (k === target && int(2) === 0) inner.onDatagram(mutate(flights[k]));
            }
          } catch (e) {
            assert.fail(`case ${i}: threw ${(e as Error).stack}`);
          }
          if (outcome === "other") assert.fail(`case ${i}: rejected with an internal error or a non-TransportError: ${detail}`);
          outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
          client.close();
        }
        // Unmutated, the recorded flight fails the signature check (signed over another client random):
        // AUTH_FAILED; mutations also give HANDSHAKE_FAILED (decode errors, unexpected messages).
        assert.ok((outcomes.get("AUTH_FAILED") ?? 0) > 0 && (outcomes.get("HANDSHAKE_FAILED") ?? 0) > 0, JSON.stringify([...outcomes]));
      } finally {
        await relay.close();
        await server.close();
      }
    });
  }
});
