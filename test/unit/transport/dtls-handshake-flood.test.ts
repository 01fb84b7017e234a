// Half-open handshake floods against our DTLS server on loopback: one address (or a few) must not
// take every handshake slot from the homes (issue #11, hardening). The flood completes the cookie
// exchange, receives flight 4 and never answers, which is the cheapest state an attacker can make us hold.
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import { randomBytes } from "node:crypto";
import { DtlsServer, type DtlsServerOptions, type HandshakeFailure } from "../../../src/transport/dtls";
import { dtlsClientConnect, type DtlsClient } from "../../../src/transport/dtls/client";
import { encodeHandshake } from "../../../src/transport/dtls/handshake";
import { encodeRecord, parseDatagram } from "../../../src/transport/dtls/record";
import { sourceGroup } from "../../../src/transport/drop-list";
import { CallHomeListener } from "../../../src/dots/isp-engine";

const PSK = Buffer.from("flood-test-psk-0123456789");
const ID = "home-1";
const ECDHE_PSK_CHACHA = 0xccac;
const SUPPORTED_GROUPS_X25519 = Buffer.from([0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]);

function clientHello(random: Buffer, cookie: Buffer): Buffer {
  const body = Buffer.concat([
    Buffer.from([0xfe, 0xfd]),
    random,
    Buffer.from([0]), // session id
    Buffer.from([cookie.length]),
    cookie,
    Buffer.from([0, 2, ECDHE_PSK_CHACHA >> 8, ECDHE_PSK_CHACHA & 0xff]),
    Buffer.from([1, 0]),
    Buffer.from([0, SUPPORTED_GROUPS_X25519.length]),
    SUPPORTED_GROUPS_X25519,
  ]);
  return encodeRecord(22, 0xfefd, 0, cookie.length === 0 ? 0 : 1, encodeHandshake(1, cookie.length === 0 ? 0 : 1, body));
}

/** One half-open handshake from `address`: ClientHello, cookie, ClientHello again, then silence. */
class HalfOpen {
  readonly socket = dgram.createSocket("udp4");
  flight4 = false;
  private readonly random = randomBytes(32);

  async start(address: string, port: number): Promise<void> {
    this.socket.on("error", () => undefined);
    this.socket.on("message", (m) => {
      for (const r of parseDatagram(m, 4096).records) {
        if (r.type !== 22 || r.epoch !== 0) continue;
        if (r.fragment[0] === 3) {
          // HelloVerifyRequest: version(2) cookie<1>
          const cookie = r.fragment.subarray(12 + 3, 12 + 3 + r.fragment[12 + 2]);
          this.socket.send(clientHello(this.random, cookie), port, "127.0.0.1");
        } else if (r.fragment[0] === 2) {
          this.flight4 = true;
        }
      }
    });
    await new Promise<void>((resolve) => this.socket.bind(0, address, () => resolve()));
    this.socket.send(clientHello(this.random, Buffer.alloc(0)), port, "127.0.0.1");
  }

  close(): void {
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not reached");
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("DtlsServer under a half-open handshake flood", function () {
  this.timeout(60_000);
  let server: DtlsServer | undefined;
  const flood: HalfOpen[] = [];
  const homes: DtlsClient[] = [];
  const failures: HandshakeFailure[] = [];
  let internalErrors: unknown[] = [];

  async function start(extra: Partial<DtlsServerOptions> = {}): Promise<number> {
    server = new DtlsServer({ pskLookup: (id) => (id === ID ? PSK : undefined), ...extra });
    server.on("handshake-failed", (f: HandshakeFailure) => failures.push(f));
    server.on("internal-error", (e: unknown) => internalErrors.push(e));
    server.on("connection", (c: { on(e: string, f: (m: Buffer) => void): void; send(m: Buffer): void }) =>
      c.on("message", (m) => c.send(Buffer.concat([Buffer.from("echo:"), m]))),
    );
    return (await server.listen(0, "127.0.0.1")).port;
  }

  /** `count` half-open handshakes from the given addresses in turn, started in batches. */
  async function launch(port: number, count: number, addresses: string[]): Promise<void> {
    for (let i = 0; i < count; i += 100) {
      const batch: Array<Promise<void>> = [];
      for (let k = i; k < Math.min(count, i + 100); k++) {
        const h = new HalfOpen();
        flood.push(h);
        batch.push(h.start(addresses[k % addresses.length], port));
      }
      await Promise.all(batch);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async function home(port: number): Promise<{ client: DtlsClient; ms: number }> {
    const t0 = Date.now();
    const client = await dtlsClientConnect({ address: "127.0.0.1", port, psk: { identity: ID, key: PSK }, localAddress: "127.0.0.1" });
    homes.push(client);
    return { client, ms: Date.now() - t0 };
  }

  afterEach(async () => {
    for (const h of flood.splice(0)) h.close();
    for (const c of homes.splice(0)) c.close();
    await server?.close();
    server = undefined;
    assert.deepEqual(internalErrors, []);
    failures.length = 0;
    internalErrors = [];
  });

  it("1,100 half-open handshakes from one address hold 16 slots; a home from another address connects at once", async () => {
    const port = await start(); // defaults: 1000 handshakes in all, 16 per source, 30 s handshake timeout
    await launch(port, 1100, ["127.0.0.2"]);
    await waitFor(() => failures.filter((f) => f.reason === "capacity").length === 1100 - 16, 20_000);
    assert.equal(server!.handshakingCount, 16);
    assert.equal(flood.filter((h) => h.flight4).length, 16);
    assert.ok(failures.every((f) => f.address === "127.0.0.2"));

    const { client, ms } = await home(port);
    // Before the per-source cap the flood held all 1000 slots and this home waited ~30 s for them to expire.
    assert.ok(ms < 2000, `the home needed ${ms} ms`);
    assert.equal(client.cipher, "DTLSv1.2 TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256");
    assert.equal(server!.handshakingCount, 16); // the flood's slots are still held
  });

  it("a flood spread over many addresses fills the global cap; under pressure half-open handshakes expire early", async () => {
    const addresses = Array.from({ length: 64 }, (_, i) => `127.0.1.${i + 1}`);
    const port = await start({ maxHandshaking: 200, pressureHandshakeTimeoutMs: 1500 });
    await launch(port, 64 * 4, addresses);
    await waitFor(() => server!.handshakingCount === 200, 20_000);
    assert.ok(failures.some((f) => f.reason === "capacity"));
    const timeoutsBefore = failures.filter((f) => f.reason === "timeout").length;
    // The home is refused while the cap is full, retransmits its ClientHello, and gets in once the
    // pressure timeout (1.5 s, not the normal 30 s) frees slots.
    const { client, ms } = await home(port);
    assert.ok(ms < 10_000, `the home needed ${ms} ms`);
    assert.ok(failures.filter((f) => f.reason === "timeout").length >= timeoutsBefore + 100);
    client.send(Buffer.from("ping"));
    const echoed = await new Promise<string>((r) => client.once("message", (m: Buffer) => r(m.toString())));
    assert.equal(echoed, "echo:ping");
  });

  it("the ISP listener passes its per-source setting down (listen --max-handshakes-per-source)", async () => {
    for (const [perSource, expected] of [
      [undefined, 16],
      [40, 40],
    ] as const) {
      const listener = new CallHomeListener(
        { port: 0, host: "127.0.0.1", transports: { dtls: true, tls: false }, psk: [{ identity: ID, key: PSK, home: ID }] },
        perSource === undefined ? {} : { maxDtlsHandshakesPerSource: perSource },
      );
      listener.on("error", () => undefined);
      await listener.start();
      const port = listener.port!;
      try {
        await launch(port, 60, ["127.0.0.2"]);
        await waitFor(() => flood.filter((h) => h.flight4).length === expected, 10_000);
        await new Promise((r) => setTimeout(r, 200));
        assert.equal(flood.filter((h) => h.flight4).length, expected);
      } finally {
        for (const h of flood.splice(0)) h.close();
        await listener.stop();
      }
    }
  });

  it("sources are counted per IPv4 address and per IPv6 /64", () => {
    assert.equal(sourceGroup("192.0.2.7", 64), "192.0.2.7");
    assert.equal(sourceGroup("::ffff:192.0.2.7", 64), "192.0.2.7");
    assert.equal(sourceGroup("2001:db8:1:2:aaaa::1", 64), sourceGroup("2001:db8:1:2:bbbb::9", 64));
    assert.notEqual(sourceGroup("2001:db8:1:2::1", 64), sourceGroup("2001:db8:1:3::1", 64));
  });
});
