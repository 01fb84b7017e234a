// RFC 9146 Connection ID in our DTLS client and server: the record format and its additional data,
// negotiation, a NAT rebinding mid-session (a relay whose upstream port changes, as a CGN's does)
// answered with no new handshake, records that must not move a session (forged, replayed), and a
// mutation fuzz of tls12_cid records at the server.
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import { DtlsServer, type DtlsServerConnection } from "../../../src/transport/dtls";
import { dtlsClientConnect, type DtlsClient } from "../../../src/transport/dtls/client";
import type { DtlsCipherSuiteName } from "../../../src/transport/dtls/constants";
import { cidAdditionalData, encodeCidRecord, innerPlaintext, openInnerPlaintext, parseDatagram } from "../../../src/transport/dtls/record";
import { fuzzRuns, mutator } from "../../support/fuzz";

const PSK = Buffer.from("secretPSK-0123456789");

/** A relay standing in for a NAT: every datagram from the client leaves through `up`, which `rebind()` replaces (a new public port). */
async function rebindingRelay(target: number) {
  const front = dgram.createSocket("udp4");
  let client: dgram.RemoteInfo | undefined;
  const fromClient: Buffer[] = [];
  const open = async (): Promise<dgram.Socket> => {
    const s = dgram.createSocket("udp4");
    s.on("message", (m) => client && front.send(m, client.port, client.address));
    await new Promise<void>((r) => s.bind(0, "127.0.0.1", r));
    return s;
  };
  let up = await open();
  front.on("message", (m, r) => {
    client = r;
    fromClient.push(m);
    up.send(m, target, "127.0.0.1");
  });
  await new Promise<void>((r) => front.bind(0, "127.0.0.1", r));
  return {
    port: front.address().port,
    fromClient,
    get publicPort(): number {
      return up.address().port;
    },
    async rebind(): Promise<void> {
      const old = up;
      up = await open();
      old.close();
    },
    close(): void {
      up.close();
      front.close();
    },
  };
}

describe("DTLS Connection ID (RFC 9146)", function () {
  this.timeout(60000);
  let server: DtlsServer;
  let port: number;
  const connections: DtlsServerConnection[] = [];
  const clients: DtlsClient[] = [];
  const cleanups: Array<() => void> = [];

  beforeEach(async () => {
    connections.length = 0;
    server = new DtlsServer({ pskLookup: (id) => (id === "home-1" ? PSK : undefined) });
    server.on("connection", (c: DtlsServerConnection) => {
      connections.push(c);
      c.on("message", (m: Buffer) => c.send(Buffer.concat([Buffer.from("echo "), m])));
    });
    port = (await server.listen(0, "127.0.0.1")).port;
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const f of cleanups.splice(0)) f();
    await server.close();
  });

  async function ask(c: DtlsClient, text: string, ms = 1500): Promise<string> {
    const got = new Promise<Buffer>((r) => c.once("message", r));
    c.send(Buffer.from(text));
    const answer = await Promise.race([got, new Promise<undefined>((r) => setTimeout(() => r(undefined), ms))]);
    return answer ? answer.toString() : "(no answer)";
  }

  it("record layer: a tls12_cid record round-trips, and its additional data is RFC 9146 5's", () => {
    const cid = Buffer.from("0102030405060708", "hex");
    assert.equal(
      cidAdditionalData(0xfefd, 1, 5, cid, 30).toString("hex"),
      "ffffffffffffffff" + "19" + "08" + "19" + "fefd" + "0001" + "000000000005" + "0102030405060708" + "001e",
    );
    const record = encodeCidRecord(0xfefd, 1, 5, cid, Buffer.from("protected"));
    assert.equal(record[0], 25);
    const parsed = parseDatagram(record, 16384, 8);
    assert.equal(parsed.records.length, 1);
    assert.deepEqual(parsed.records[0].cid, cid);
    assert.equal(parsed.records[0].fragment.toString(), "protected");
    assert.equal(parsed.records[0].sequence, 5);
    // A receiver that handed out no CIDs cannot frame the record: it ends parsing.
    assert.equal(parseDatagram(record, 16384).malformed, "bad-type");
    const inner = Buffer.concat([innerPlaintext(23, Buffer.from("data")), Buffer.alloc(5)]); // padded with zeros
    assert.deepEqual(openInnerPlaintext(inner), { type: 23, content: Buffer.from("data") });
    assert.equal(openInnerPlaintext(Buffer.alloc(4)), undefined);
  });

  for (const suite of ["TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", "TLS_PSK_WITH_AES_128_CCM_8"] as DtlsCipherSuiteName[]) {
    it(`NAT rebinding (${suite}): the next request from the new public port is answered there, with no new handshake`, async () => {
      const relay = await rebindingRelay(port);
      cleanups.push(() => relay.close());
      const c = await dtlsClientConnect({ address: "127.0.0.1", port: relay.port, psk: { identity: "home-1", key: PSK }, suites: [suite] });
      clients.push(c);
      assert.equal(await ask(c, "before"), "echo before");
      // Our records carry the server's CID (content type tls12_cid).
      assert.equal(relay.fromClient[relay.fromClient.length - 1][0], 25);
      const moves: unknown[] = [];
      connections[0].on("moved", (m) => moves.push(m));
      const oldPort = relay.publicPort;
      await relay.rebind();
      assert.equal(await ask(c, "after"), "echo after");
      assert.equal(server.stats.handshakesCompleted, 1, "no new handshake");
      assert.equal(server.stats.peersMoved, 1);
      assert.equal(connections[0].remotePort, relay.publicPort);
      assert.deepEqual(moves, [{ from: { address: "127.0.0.1", port: oldPort }, to: { address: "127.0.0.1", port: relay.publicPort } }]);
      // And again: every rebinding is followed.
      await relay.rebind();
      assert.equal(await ask(c, "again"), "echo again");
      assert.equal(server.stats.peersMoved, 2);
    });
  }

  it("a forged record (bad tag) or a replayed one with the session's CID, sent from elsewhere, moves nothing", async () => {
    const relay = await rebindingRelay(port);
    cleanups.push(() => relay.close());
    const c = await dtlsClientConnect({ address: "127.0.0.1", port: relay.port, psk: { identity: "home-1", key: PSK } });
    clients.push(c);
    assert.equal(await ask(c, "first"), "echo first");
    const captured = relay.fromClient[relay.fromClient.length - 1];
    assert.equal(captured[0], 25);
    const attacker = dgram.createSocket("udp4");
    cleanups.push(() => attacker.close());
    await new Promise<void>((r) => attacker.bind(0, "127.0.0.1", r));
    const answers: Buffer[] = [];
    attacker.on("message", (m) => answers.push(m));
    const home = { port: connections[0].remotePort, address: connections[0].remoteAddress };
    const forged = Buffer.from(captured);
    forged[forged.length - 1] ^= 0x01; // the AEAD tag
    attacker.send(forged, port, "127.0.0.1");
    attacker.send(captured, port, "127.0.0.1"); // an exact replay
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(server.stats.peersMoved, 0);
    assert.deepEqual({ port: connections[0].remotePort, address: connections[0].remoteAddress }, home);
    assert.equal(answers.length, 0, "nothing was answered to the attacker");
    assert.equal(await ask(c, "still here"), "echo still here");
  });

  it(`${fuzzRuns(100_000)} mutated tls12_cid datagrams at the server: never a throw, the session lives on`, async () => {
    const relay = await rebindingRelay(port);
    cleanups.push(() => relay.close());
    const c = await dtlsClientConnect({ address: "127.0.0.1", port: relay.port, psk: { identity: "home-1", key: PSK } });
    clients.push(c);
    assert.equal(await ask(c, "seed"), "echo seed");
    const captured = relay.fromClient[relay.fromClient.length - 1];
    const internal: unknown[] = [];
    server.on("internal-error", (e: unknown) => internal.push(e));
    const { int, mutate } = mutator(0xc1d);
    const runs = fuzzRuns(100_000);
    for (let i = 0; i < runs; i++) {
      const d = mutate(captured);
      if (int(3) === 0 && d.length > 12) d[0] = 25; // keep many as CID records
      if (int(2) === 0 && d.length > 12) d.writeUIntBE(1000 + i, 5, 6); // fresh sequence numbers reach decryption
      server.handleDatagram(d, "127.0.0.1", 40000 + int(8));
      if (i % 2000 === 1999) await new Promise((r) => setImmediate(r));
    }
    assert.deepEqual(internal, []);
    assert.equal(server.stats.internalErrors, 0);
    assert.equal(server.stats.peersMoved, 0, "no mutated record authenticated");
    assert.ok(server.stats.badRecords > runs / 4, `records refused: ${server.stats.badRecords}`);
    assert.equal(await ask(c, "after the fuzz"), "echo after the fuzz");
  });
});
