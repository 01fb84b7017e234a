// Our DTLS 1.2 PSK / ECDHE_PSK server against real peers on loopback: openssl s_client, libcoap's
// coap-client-openssl and node-dtls-client 2.0.3.
import { strict as assert } from "node:assert";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DtlsServer, type DtlsServerConnection, type HandshakeFailure } from "../../src/transport/dtls";
import { decodeUdp, encodeUdp } from "../../src/coap/udp-codec";
import { hasCommand, requireOrSkip } from "../support/env";

const IDENTITY = "dots-client-1";
const KEY = "secretPSK-0123456789";
const PSK = Buffer.from(KEY);
const ECDHE_CHACHA = "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256";

interface NdcSocket {
  on(event: "connected" | "close", cb: () => void): NdcSocket;
  on(event: "message", cb: (msg: Buffer) => void): NdcSocket;
  on(event: "error", cb: (err: Error) => void): NdcSocket;
  send(data: Buffer): void;
  close(): void;
}
interface NdcModule {
  dtls: { createSocket(opts: Record<string, unknown>): NdcSocket };
}
// node-dtls-client 2.x is ESM; Node 20.20 loads it through require(esm).
const ndc = (): NdcModule => require("node-dtls-client") as NdcModule;

interface Run {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

const children: ChildProcess[] = [];

function run(cmd: string, args: string[]): Run {
  const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
  children.push(child);
  let text = "";
  child.stdout!.on("data", (d: Buffer) => (text += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (text += d.toString()));
  child.stdin!.on("error", () => undefined);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, out: () => text, exited };
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 8000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("interop: our DTLS server with real peers", function () {
  let server: DtlsServer;
  let port: number;
  const failures: HandshakeFailure[] = [];
  const connections: DtlsServerConnection[] = [];
  let onConnection: (c: DtlsServerConnection) => void = () => undefined;

  before(function () {
    requireOrSkip(this, "openssl", hasCommand("openssl"));
  });

  beforeEach(async () => {
    failures.length = 0;
    connections.length = 0;
    onConnection = (c) => c.on("message", (m) => c.send(Buffer.concat([Buffer.from("echo:"), m])));
    server = new DtlsServer({
      pskLookup: (identity) => (identity === IDENTITY ? PSK : undefined),
      cipherSuites: [ECDHE_CHACHA, "TLS_PSK_WITH_AES_128_CCM_8", "TLS_PSK_WITH_AES_128_GCM_SHA256", "TLS_PSK_WITH_AES_128_CCM"],
    });
    server.on("handshake-failed", (f: HandshakeFailure) => failures.push(f));
    server.on("connection", (c: DtlsServerConnection) => {
      connections.push(c);
      onConnection(c);
    });
    port = (await server.listen(0, "127.0.0.1")).port;
  });

  afterEach(async () => {
    for (const c of children.splice(0)) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill("SIGKILL");
        await new Promise((r) => c.once("exit", r));
      }
    }
    await server.close();
  });

  const sClient = (cipher: string, keyHex: string, identity: string, extra: string[] = []): Run =>
    run("openssl", [
      "s_client",
      "-dtls1_2",
      "-connect",
      `127.0.0.1:${port}`,
      "-psk",
      keyHex,
      "-psk_identity",
      identity,
      "-cipher",
      cipher,
      ...extra,
    ]);

  for (const [cipher, suite, extra, tempKey] of [
    ["ECDHE-PSK-CHACHA20-POLY1305", ECDHE_CHACHA, [], /Server Temp Key: X25519/],
    ["ECDHE-PSK-CHACHA20-POLY1305", ECDHE_CHACHA, ["-curves", "prime256v1"], /Server Temp Key: ECDH, prime256v1/],
    ["PSK-AES128-CCM8", "TLS_PSK_WITH_AES_128_CCM_8", [], undefined],
    ["PSK-AES128-GCM-SHA256", "TLS_PSK_WITH_AES_128_GCM_SHA256", [], undefined],
  ] as const) {
    it(`openssl s_client ${[cipher, ...extra].join(" ")}: handshake with EMS and secure renegotiation, data both ways`, async () => {
      onConnection = (c) => {
        c.send(Buffer.from("hello-from-our-server\n"));
        c.on("message", (m) => c.send(Buffer.concat([Buffer.from("echo:"), m])));
      };
      const s = sClient(cipher, PSK.toString("hex"), IDENTITY, [...extra]);
      await waitFor(() => s.out().includes("hello-from-our-server"), "server data at s_client");
      assert.match(s.out(), new RegExp(`Cipher is ${cipher}`));
      // An ephemeral ECDH key is announced only for ECDHE_PSK (forward secrecy); plain PSK has none.
      if (tempKey) assert.match(s.out(), tempKey);
      else assert.doesNotMatch(s.out(), /Server Temp Key/);
      assert.match(s.out(), /Extended master secret: yes/);
      assert.match(s.out(), /Secure Renegotiation IS supported/);
      const received: string[] = [];
      connections[0].on("message", (m) => received.push(m.toString()));
      s.child.stdin!.write("hello-from-openssl\n");
      await waitFor(() => s.out().includes("echo:hello-from-openssl"), "echo at s_client");
      assert.deepEqual(received, ["hello-from-openssl\n"]);
      assert.equal(connections[0].cipher, `DTLSv1.2 ${suite}`);
      assert.equal(connections[0].peer.pskIdentity, IDENTITY);
    });
  }

  for (const [cipher, extra] of [
    ["PSK-AES128-CCM8", []],
    ["ECDHE-PSK-CHACHA20-POLY1305", ["-curves", "prime256v1"]], // identity + 65-byte point in the fragmented message
  ] as const) {
    it(`openssl s_client ${cipher} with MTU 256 and a 250-byte identity: its fragmented ClientKeyExchange is reassembled`, async () => {
      const longIdentity = "x".repeat(250);
      const lookups: number[] = [];
      await server.close();
      server = new DtlsServer({ pskLookup: (identity) => (lookups.push(identity.length), identity === longIdentity ? PSK : undefined) });
      server.on("connection", (c: DtlsServerConnection) => {
        connections.push(c);
        c.on("message", (m) => c.send(Buffer.concat([Buffer.from("echo:"), m])));
      });
      port = (await server.listen(0, "127.0.0.1")).port;
      const s = run("openssl", [
        "s_client",
        "-dtls1_2",
        "-mtu",
        "256",
        "-connect",
        `127.0.0.1:${port}`,
        "-psk",
        PSK.toString("hex"),
        "-psk_identity",
        longIdentity,
        "-cipher",
        cipher,
        ...extra,
      ]);
      await waitFor(() => new RegExp(`Cipher is ${cipher}`).test(s.out()), "handshake");
      s.child.stdin!.write("small-mtu\n");
      await waitFor(() => s.out().includes("echo:small-mtu"), "echo");
      assert.deepEqual(lookups, [250]);
      assert.ok(server.stats.reassembledMessages >= 1, "OpenSSL did fragment its ClientKeyExchange");
      assert.equal(connections[0].peer.pskIdentity, longIdentity);
    });
  }

  it("openssl s_client over IPv6 with its default cipher list, on a dual-stack listener", async function () {
    await server.close();
    server = new DtlsServer({ pskLookup: (identity) => (identity === IDENTITY ? PSK : undefined) });
    server.on("connection", (c: DtlsServerConnection) => {
      connections.push(c);
      c.on("message", (m) => c.send(Buffer.concat([Buffer.from("echo:"), m])));
    });
    try {
      port = (await server.listen(0, "::")).port;
    } catch {
      this.skip(); // no IPv6 on this host
    }
    const s = run("openssl", ["s_client", "-dtls1_2", "-connect", `[::1]:${port}`, "-psk", PSK.toString("hex"), "-psk_identity", IDENTITY]);
    // OpenSSL's default list has ECDHE-PSK-CHACHA20-POLY1305, our default preference puts it first.
    await waitFor(() => /Cipher is ECDHE-PSK-CHACHA20-POLY1305/.test(s.out()), "handshake over ::1");
    s.child.stdin!.write("v6\n");
    await waitFor(() => s.out().includes("echo:v6"), "echo");
    assert.equal(connections[0].remoteAddress, "::1");
    assert.equal(connections[0].cipher, `DTLSv1.2 ${ECDHE_CHACHA}`);
  });

  for (const cipher of ["PSK-AES128-CCM8", "ECDHE-PSK-CHACHA20-POLY1305"]) {
    it(`openssl s_client ${cipher} with the wrong key gets decrypt_error (51)`, async () => {
      const s = sClient(cipher, Buffer.from("wrong-key-0123456789").toString("hex"), IDENTITY);
      await s.exited;
      assert.match(s.out(), /alert decrypt error|alert number 51/);
      assert.equal(connections.length, 0);
      assert.deepEqual(
        failures.map((f) => f.reason),
        ["bad-finished"],
      );
      assert.equal(server.sessionCount, 0);
    });
  }

  for (const cipher of ["ECDHE-PSK-CHACHA20-POLY1305", "PSK-AES128-CCM8"]) {
    it(`openssl s_client ${cipher}: a session ticket (RFC 5077) from the first connection resumes the second (-sess_out, -sess_in: Reused)`, async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-ticket-"));
      const session = path.join(dir, "session.pem");
      await server.close();
      let currentKey = PSK;
      server = new DtlsServer({ pskLookup: (identity) => (identity === IDENTITY ? currentKey : undefined) });
      server.on("connection", (c: DtlsServerConnection) => {
        connections.push(c);
        onConnection(c);
      });
      port = (await server.listen(0, "127.0.0.1")).port;
      try {
        const first = sClient(cipher, PSK.toString("hex"), IDENTITY, ["-sess_out", session]);
        first.child.stdin!.write("one\n");
        await waitFor(() => first.out().includes("echo:one"), "echo on the first connection");
        assert.match(first.out(), new RegExp(`New, TLSv1.2, Cipher is ${cipher}`));
        assert.match(first.out(), /TLS session ticket lifetime hint: 3600 \(seconds\)/);
        first.child.kill("SIGKILL");
        await waitFor(() => fs.existsSync(session), "the saved session");

        const second = sClient(cipher, PSK.toString("hex"), IDENTITY, ["-sess_in", session]);
        second.child.stdin!.write("two\n");
        await waitFor(() => second.out().includes("echo:two"), "echo on the resumed connection");
        assert.match(second.out(), new RegExp(`Reused, TLSv1.2, Cipher is ${cipher}`));
        assert.equal(server.stats.handshakesResumed, 1);
        assert.equal(connections.length, 2);
        assert.equal(connections[1].peer.pskIdentity, IDENTITY); // the identity comes back from the ticket
        second.child.kill("SIGKILL");

        // A ticket does not outlive the key it was issued under: after the identity's key changes
        // the same server refuses it and runs a full handshake with the new key.
        currentKey = Buffer.from("the-rotated-key-0123456789");
        const third = sClient(cipher, currentKey.toString("hex"), IDENTITY, ["-sess_in", session]);
        third.child.stdin!.write("three\n");
        await waitFor(() => third.out().includes("echo:three"), "echo after the key change");
        assert.match(third.out(), /New, TLSv1.2/);
        assert.equal(server.stats.handshakesResumed, 1);
        assert.equal(server.stats.handshakesCompleted, 3);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  it("openssl s_client with an unknown identity gets unknown_psk_identity (115)", async () => {
    const s = sClient("PSK-AES128-CCM8", PSK.toString("hex"), "intruder");
    await s.exited;
    assert.match(s.out(), /unknown psk identity|alert number 115/);
    assert.deepEqual(
      failures.map((f) => f.reason),
      ["unknown-identity"],
    );
    assert.equal(connections.length, 0);
  });

  for (const [label, suites, expected] of [
    ["default suites: libcoap picks ECDHE_PSK", undefined, ECDHE_CHACHA],
    ["plain PSK only", ["TLS_PSK_WITH_AES_128_CCM_8", "TLS_PSK_WITH_AES_128_GCM_SHA256"], "TLS_PSK_WITH_AES_128_CCM_8"],
  ] as const) {
    it(`coap-client-openssl GET over DTLS (${label}) is answered by our server through the CoAP codec`, async function () {
      requireOrSkip(this, "coap-client-openssl (libcoap3-bin)", hasCommand("coap-client-openssl"));
      await server.close();
      server = new DtlsServer({
        pskLookup: (identity) => (identity === IDENTITY ? PSK : undefined),
        pskHint: "CoAP",
        cipherSuites: suites ? [...suites] : undefined,
      });
      server.on("connection", (c: DtlsServerConnection) => {
        connections.push(c);
        onConnection(c);
      });
      port = (await server.listen(0, "127.0.0.1")).port;
      const paths: string[] = [];
      onConnection = (c) =>
        c.on("message", (m) => {
          const req = decodeUdp(m);
          paths.push(
            req.options
              .filter((o) => o.number === 11)
              .map((o) => o.value.toString())
              .join("/"),
          );
          c.send(
            encodeUdp({
              type: "ACK",
              code: 0x45,
              messageId: req.messageId,
              token: req.token,
              options: [{ number: 12, value: Buffer.alloc(0) }],
              payload: Buffer.from("answer from our DTLS server"),
            }),
          );
        });
      const c = run("coap-client-openssl", ["-m", "get", "-k", KEY, "-u", IDENTITY, `coaps://127.0.0.1:${port}/test`]);
      const code = await c.exited;
      assert.equal(code, 0, c.out());
      assert.match(c.out(), /answer from our DTLS server/);
      assert.deepEqual(paths, ["test"]);
      assert.equal(connections[0].cipher, `DTLSv1.2 ${expected}`);
    });
  }

  for (const suite of ["TLS_PSK_WITH_AES_128_CCM_8", "TLS_PSK_WITH_AES_128_GCM_SHA256", undefined] as const) {
    it(`node-dtls-client 2.0.3 (${suite ?? "its default offer: no ECDHE_PSK, so plain PSK"}) connects, echoes, and sees our close_notify`, async () => {
      const events: string[] = [];
      const ciphers: Record<string, unknown> = suite ? { ciphers: [suite] } : {};
      const sock = ndc().dtls.createSocket({
        type: "udp4",
        address: "127.0.0.1",
        port,
        psk: { [IDENTITY]: PSK },
        timeout: 3000,
        ...ciphers,
      });
      try {
        sock.on("connected", () => {
          events.push("connected");
          sock.send(Buffer.from("ndc-ping"));
        });
        sock.on("message", (m) => events.push(`message:${m.toString()}`));
        sock.on("error", (e) => events.push(`error:${e.message}`));
        sock.on("close", () => events.push("close"));
        await waitFor(() => events.includes("message:echo:ndc-ping"), "echo at node-dtls-client");
        // Our server prefers ECDHE_PSK, but node-dtls-client does not offer it: the first plain PSK suite we share.
        assert.equal(connections[0].cipher, `DTLSv1.2 ${suite ?? "TLS_PSK_WITH_AES_128_CCM_8"}`);
        await server.close();
        await waitFor(() => events.includes("close"), "client close after close_notify");
        assert.deepEqual(
          events.filter((e) => e.startsWith("error")),
          [],
        );
        assert.equal(connections[0].closed, true);
      } finally {
        if (!events.includes("close")) sock.close();
      }
    });
  }

  it("node-dtls-client completes handshakes while our flight 4 is repeated before its flight 5 arrives (timer at 1 ms)", async () => {
    // node-dtls-client takes handshake messages it has processed already, in records new to it, as
    // the start of a new flight and stalls; our flight 4 repeats the records as first sent, which
    // its replay window drops. 30 handshakes, each sees several repeats.
    const eager = new DtlsServer({ pskLookup: (identity) => (identity === IDENTITY ? PSK : undefined), initialRetransmitMs: 1 });
    eager.on("connection", () => undefined);
    const eagerPort = (await eager.listen(0, "127.0.0.1")).port;
    const errors: string[] = [];
    try {
      for (let i = 0; i < 30; i++) {
        await new Promise<void>((resolve) => {
          const sock = ndc().dtls.createSocket({
            type: "udp4",
            address: "127.0.0.1",
            port: eagerPort,
            psk: { [IDENTITY]: PSK },
            timeout: 3000,
          });
          const done = (error?: string): void => {
            if (error) errors.push(error);
            try {
              sock.close();
            } catch {
              /* closed by the library after an error */
            }
            resolve();
          };
          sock.on("connected", () => done());
          sock.on("error", (e) => done(e.message));
        });
      }
      assert.deepEqual(errors, []);
    } finally {
      await eager.close();
    }
  });
});
