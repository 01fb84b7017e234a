// Our DTLS server behind a lossy UDP relay on loopback (30% of datagrams dropped each way, seeded):
// handshakes still complete through retransmission, data flows, nothing crashes.
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import { DtlsServer, type DtlsServerConnection } from "../../src/transport/dtls";
import { ScriptedDtlsClient } from "../support/scripted-dtls-client";

const ID = "dots-client-1";
const PSK = Buffer.from("secretPSK-0123456789");

/** Forwards client <-> server, one upstream socket per client, dropping `loss` of all datagrams. */
class LossyRelay {
  readonly front = dgram.createSocket("udp4");
  private readonly upstream = new Map<string, dgram.Socket>();
  private x: number;
  forwarded = 0;
  dropped = 0;

  constructor(
    private readonly serverPort: number,
    private readonly loss: number,
    seed: number,
  ) {
    this.x = seed;
    this.front.on("message", (m, rinfo) => {
      const key = `${rinfo.address}:${rinfo.port}`;
      let up = this.upstream.get(key);
      if (!up) {
        up = dgram.createSocket("udp4");
        up.bind(0, "127.0.0.1");
        up.on("message", (back) => this.pass() && this.front.send(back, rinfo.port, rinfo.address));
        this.upstream.set(key, up);
      }
      if (this.pass()) up.send(m, this.serverPort, "127.0.0.1");
    });
  }

  private pass(): boolean {
    this.x ^= this.x << 13;
    this.x >>>= 0;
    this.x ^= this.x >>> 17;
    this.x ^= this.x << 5;
    this.x >>>= 0;
    const keep = this.x / 0x100000000 >= this.loss;
    if (keep) this.forwarded++;
    else this.dropped++;
    return keep;
  }

  async bind(): Promise<number> {
    await new Promise<void>((r) => this.front.bind(0, "127.0.0.1", () => r()));
    return this.front.address().port;
  }

  async close(): Promise<void> {
    for (const s of this.upstream.values()) await new Promise<void>((r) => s.close(() => r()));
    await new Promise<void>((r) => this.front.close(() => r()));
  }
}

describe("interop: our DTLS server through 30% datagram loss", function () {
  this.timeout(120000);
  let server: DtlsServer;
  let relay: LossyRelay;
  let relayPort: number;
  const clients: ScriptedDtlsClient[] = [];
  const internal: unknown[] = [];

  beforeEach(async () => {
    server = new DtlsServer({ pskLookup: (id) => (id === ID ? PSK : undefined), initialRetransmitMs: 200 });
    server.on("internal-error", (e: unknown) => internal.push(e));
    server.on("handshake-failed", () => undefined);
    server.on("connection", (c: DtlsServerConnection) => c.on("message", (m) => c.send(m)));
    const { port } = await server.listen(0, "127.0.0.1");
    relay = new LossyRelay(port, 0.3, 0x1234567);
    relayPort = await relay.bind();
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close(false);
    await relay.close();
    await server.close();
    assert.deepEqual(internal.splice(0), []);
  });

  it("a retransmitting client completes 5 handshakes and exchanges data", async () => {
    for (let i = 0; i < 5; i++) {
      const c = new ScriptedDtlsClient({
        address: "127.0.0.1",
        port: relayPort,
        identity: ID,
        psk: PSK,
        retransmitMs: 200,
        extendedMasterSecret: true,
      });
      clients.push(c);
      await c.bind();
      await c.connect(30000);
      let echoed: string | undefined;
      for (let attempt = 0; attempt < 30 && echoed === undefined; attempt++) {
        c.send(Buffer.from(`ping ${i}`));
        echoed = await c.nextMessage(300).then(String, () => undefined);
      }
      assert.equal(echoed, `ping ${i}`);
    }
    assert.ok(relay.dropped > 0);
    assert.equal(server.sessionCount, 5);
  });
  // node-dtls-client through the same kind of path: test/interop/lossy-dtls.test.ts (transport helper).
});
