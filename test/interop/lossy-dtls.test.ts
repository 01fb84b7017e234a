// node-dtls-client (through our retrying wrapper) against our DTLS server with 30% of datagrams
// dropped each way by a seeded relay on loopback: handshakes still complete, nothing crashes.
import { strict as assert } from "node:assert";
import type { Connection } from "../../src/transport/connection";
import { connectDtls } from "../../src/transport/dtls-client";
import { DtlsServer } from "../../src/transport/dtls/server";
import { LossyRelay } from "../support/lossy-relay";

const KEY = Buffer.from("secretPSK-0123456789");

describe("interop: DTLS handshakes over a 30% lossy path", function () {
  this.timeout(120000);
  let server: DtlsServer;
  const relays: LossyRelay[] = [];
  const conns: Connection[] = [];

  afterEach(async () => {
    for (const c of conns.splice(0)) c.close();
    for (const r of relays.splice(0)) await r.close();
    await server?.close();
  });

  for (const seed of [1, 2, 3]) {
    it(`seed ${seed}: five clients complete their handshakes and exchange data`, async () => {
      server = new DtlsServer({
        pskLookup: (id) => (id.startsWith("home-") ? KEY : undefined),
        initialRetransmitMs: 100,
        maxRetransmitMs: 800,
      });
      const accepted: Connection[] = [];
      server.on("connection", (c: Connection) => {
        accepted.push(c);
        c.on("message", (m: Buffer) => c.send(Buffer.concat([Buffer.from("echo:"), m])));
      });
      const { port } = await server.listen(0, "127.0.0.1");
      const relay = new LossyRelay({ target: { address: "127.0.0.1", port }, lossRate: 0.3, seed });
      relays.push(relay);
      const front = await relay.start();
      let retries = 0;
      const clients = await Promise.all(
        [1, 2, 3, 4, 5].map((n) =>
          connectDtls({
            host: front.address,
            port: front.port,
            psk: { identity: `home-${n}`, key: KEY },
            handshakeTimeoutMs: 300,
            backoff: 1.2,
            maxHandshakeTimeoutMs: 1000,
            attempts: 60,
            onAttemptFailed: () => retries++,
          }),
        ),
      );
      conns.push(...clients);
      assert.equal(clients.length, 5);
      assert.ok(relay.stats.up.dropped + relay.stats.down.dropped > 0, "the relay did drop datagrams");
      // Data still flows (UDP: individual datagrams may be lost, so keep sending until one echo arrives).
      for (const c of clients) {
        const echoed = new Promise<Buffer>((r) => c.once("message", r));
        const pump = setInterval(() => c.send(Buffer.from(c.local.pskIdentity ?? "")), 50);
        try {
          assert.equal((await echoed).toString(), `echo:${c.local.pskIdentity}`);
        } finally {
          clearInterval(pump);
        }
      }
      assert.equal(server.stats.internalErrors, 0);
      assert.ok(accepted.length >= 5);
      // eslint-disable-next-line no-console
      console.log(
        `      seed ${seed}: ${retries} handshake retries; relay dropped ${relay.stats.up.dropped} up / ${relay.stats.down.dropped} down of ${relay.stats.up.dropped + relay.stats.up.forwarded} / ${relay.stats.down.dropped + relay.stats.down.forwarded}`,
      );
    });
  }
});
