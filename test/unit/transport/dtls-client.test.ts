// The DTLS client seam, with each implementation (ours, the default, and node-dtls-client): retries with
// fresh sockets, survives garbage, and talks to our server.
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import { once } from "node:events";
import { TransportError, type Connection } from "../../../src/transport/connection";
import { connectDtls, type DtlsImplementation } from "../../../src/transport/dtls-client";
import { DtlsServer } from "../../../src/transport/dtls/server";

const KEY = Buffer.from("secretPSK-0123456789");
const isCode = (code: string) => (e: unknown) => e instanceof TransportError && e.code === code;

const IMPLEMENTATIONS: Array<[DtlsImplementation, string]> = [
  ["ours", "DTLSv1.2 TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"],
  ["node-dtls-client", "DTLSv1.2 TLS_PSK_WITH_AES_128_CCM_8"],
];

for (const [implementation, expectedCipher] of IMPLEMENTATIONS)
  describe(`transport/dtls-client (${implementation})`, () => {
    const sockets: dgram.Socket[] = [];
    const servers: DtlsServer[] = [];
    const conns: Connection[] = [];

    afterEach(async () => {
      for (const c of conns.splice(0)) c.close();
      for (const s of servers.splice(0)) await s.close();
      for (const s of sockets.splice(0)) s.close();
    });

    async function udpServer(onMessage: (sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo) => void): Promise<number> {
      const sock = dgram.createSocket("udp4");
      sockets.push(sock);
      sock.on("message", (m, r) => onMessage(sock, m, r));
      await new Promise<void>((r) => sock.bind(0, "127.0.0.1", r));
      return sock.address().port;
    }

    it("retries an unanswered handshake from a fresh socket per attempt, then fails with HANDSHAKE_TIMEOUT", async () => {
      const sources = new Set<number>();
      const port = await udpServer((_s, msg, rinfo) => {
        if (msg[0] === 22) sources.add(rinfo.port); // a handshake record (ClientHello)
      });
      const failed: number[] = [];
      await assert.rejects(
        connectDtls({
          implementation,
          host: "127.0.0.1",
          port,
          psk: { identity: "home-1", key: KEY },
          handshakeTimeoutMs: 150,
          attempts: 3,
          backoff: 1.5,
          onAttemptFailed: (n) => failed.push(n),
        }),
        (e: unknown) => isCode("HANDSHAKE_TIMEOUT")(e) && /after 3 attempts/.test((e as Error).message),
      );
      assert.deepEqual(failed, [1, 2]);
      assert.equal(sources.size, 3);
    });

    it("survives garbage datagrams from the server address and from strangers", async () => {
      let clientPort = 0;
      const port = await udpServer((sock, _msg, rinfo) => {
        clientPort = rinfo.port;
        // Truncated and nonsense records, a fake alert, a huge length field.
        for (const junk of [
          "16fefd00000000000000000005",
          "ff",
          "15fefd0000000000000000000202",
          "16fefd000000000000000000ffff0102",
          "17fefd0001000000000001000a00",
        ]) {
          sock.send(Buffer.from(junk, "hex"), rinfo.port, rinfo.address);
        }
      });
      const stranger = dgram.createSocket("udp4");
      sockets.push(stranger);
      const timer = setInterval(() => clientPort && stranger.send(Buffer.from("16fefd", "hex"), clientPort, "127.0.0.1"), 20);
      try {
        await assert.rejects(
          connectDtls({
            implementation,
            host: "127.0.0.1",
            port,
            psk: { identity: "home-1", key: KEY },
            handshakeTimeoutMs: 200,
            attempts: 2,
          }),
          isCode("HANDSHAKE_TIMEOUT"),
        );
      } finally {
        clearInterval(timer);
      }
    });

    it("connects to our DTLS server, exchanges datagrams and closes with close_notify", async () => {
      const server = new DtlsServer({ pskLookup: (id) => (id === "home-1" ? KEY : undefined) });
      servers.push(server);
      const { port } = await server.listen(0, "127.0.0.1");
      const accepted = once(server, "connection");
      const client = await connectDtls({ implementation, host: "127.0.0.1", port, psk: { identity: "home-1", key: KEY } });
      conns.push(client);
      assert.equal(client.transport, "dtls");
      assert.equal(client.cipher, expectedCipher);
      assert.deepEqual(client.local, { method: "psk", pskIdentity: "home-1" });
      assert.throws(() => client.send(Buffer.alloc(16385)), isCode("FRAME_TOO_LARGE"));
      assert.equal(client.remotePort, port);
      const [srv] = (await accepted) as [Connection];
      assert.equal(srv.peer.pskIdentity, "home-1");
      assert.equal(srv.remotePort, client.localPort);
      const toServer = once(srv, "message");
      client.send(Buffer.from("ping"));
      assert.equal(((await toServer)[0] as Buffer).toString(), "ping");
      const toClient = once(client, "message");
      srv.send(Buffer.from("pong"));
      assert.equal(((await toClient)[0] as Buffer).toString(), "pong");
      const srvClosed = once(srv, "close");
      const clientClosed = once(client, "close");
      client.close();
      await Promise.all([srvClosed, clientClosed]);
      assert.equal(client.send(Buffer.from("late")), false);
    });

    it("delivers a datagram the server sends right after the handshake", async () => {
      const server = new DtlsServer({ pskLookup: () => KEY });
      servers.push(server);
      server.on("connection", (c: Connection) => c.send(Buffer.from("welcome")));
      const { port } = await server.listen(0, "127.0.0.1");
      const client = await connectDtls({ implementation, host: "127.0.0.1", port, psk: { identity: "home-1", key: KEY } });
      conns.push(client);
      await new Promise((r) => setTimeout(r, 50)); // the datagram arrives before anyone listens
      const [msg] = await once(client, "message");
      assert.equal((msg as Buffer).toString(), "welcome");
    });

    it("a wrong PSK is an authentication failure and is not retried", async () => {
      const server = new DtlsServer({ pskLookup: () => KEY });
      servers.push(server);
      let failures = 0;
      server.on("handshake-failed", () => failures++);
      const { port } = await server.listen(0, "127.0.0.1");
      await assert.rejects(
        connectDtls({ implementation, host: "127.0.0.1", port, psk: { identity: "home-1", key: Buffer.from("wrong") }, attempts: 5 }),
        isCode("AUTH_FAILED"),
      );
      assert.equal(failures, 1);
    });

    it("an unknown identity is refused with an authentication failure", async () => {
      const server = new DtlsServer({ pskLookup: (id) => (id === "home-1" ? KEY : undefined) });
      servers.push(server);
      const { port } = await server.listen(0, "127.0.0.1");
      await assert.rejects(
        connectDtls({ implementation, host: "127.0.0.1", port, psk: { identity: "stranger", key: KEY } }),
        isCode("AUTH_FAILED"),
      );
    });

    it("works over IPv6 loopback", async () => {
      const server = new DtlsServer({ pskLookup: () => KEY });
      servers.push(server);
      const { port } = await server.listen(0, "::1");
      const client = await connectDtls({ implementation, host: "::1", port, psk: { identity: "home-1", key: KEY } });
      conns.push(client);
      assert.equal(client.remoteAddress, "::1");
    });

    it("an abort ends an attempt in flight with CLOSED", async () => {
      const port = await udpServer(() => undefined);
      const ac = new AbortController();
      const p = connectDtls({
        implementation,
        host: "127.0.0.1",
        port,
        psk: { identity: "home-1", key: KEY },
        handshakeTimeoutMs: 5000,
        attempts: 3,
        signal: ac.signal,
      });
      setTimeout(() => ac.abort(), 50);
      await assert.rejects(p, isCode("CLOSED"));
    });

    it("rejects bad options with CONFIG", async () => {
      await assert.rejects(
        connectDtls({ implementation, host: "127.0.0.1", port: 5684, psk: { identity: "", key: KEY } }),
        isCode("CONFIG"),
      );
      await assert.rejects(connectDtls({ implementation, host: "127.0.0.1", port: 0, psk: { identity: "a", key: KEY } }), isCode("CONFIG"));
      await assert.rejects(
        connectDtls({ implementation, host: "127.0.0.1", port: 5684, psk: { identity: "a", key: KEY }, attempts: 0 }),
        isCode("CONFIG"),
      );
    });
  });
