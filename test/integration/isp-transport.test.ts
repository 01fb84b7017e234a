// What the ISP listener refuses at the (D)TLS layer and what it caps, proved with real sockets on
// loopback: old protocol versions (R6) and the session limit (R57).
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import * as tls from "node:tls";
import type { SessionInfo } from "../../src/dots/api";
import { CallHomeListener } from "../../src/dots/isp-engine";
import { CallHomeDialer } from "../../src/dots/home-engine";
import { waitFor } from "./harness";

const KEY = Buffer.from("isp-transport-key-0123");
const PREFIX = "203.0.113.0/24";

function listener(transports: { dtls: boolean; tls: boolean }, extra: { maxSessions?: number; homes?: string[] } = {}): CallHomeListener {
  const homes = extra.homes ?? ["home-a"];
  return new CallHomeListener(
    {
      port: 0,
      host: "127.0.0.1",
      transports,
      psk: homes.map((h) => ({ identity: h, key: KEY, home: h })),
      homePrefixes: Object.fromEntries(homes.map((h) => [h, [PREFIX]])),
    },
    { maxSessions: extra.maxSessions, nonRepeatMs: 200, requestTimeoutMs: 5000, configTimeoutMs: 5000 },
  );
}

/** A DTLS ClientHello without cookie, offering TLS_PSK_WITH_AES_128_CCM_8, for client_version `version`. */
function clientHello(version: number): Buffer {
  const body = Buffer.concat([
    Buffer.from([version >> 8, version & 0xff]),
    Buffer.alloc(32, 7),
    Buffer.from([0, 0, 0, 2, 0xc0, 0xa8, 1, 0]),
  ]);
  const hs = Buffer.alloc(12);
  hs[0] = 1; // client_hello
  hs.writeUIntBE(body.length, 1, 3);
  hs.writeUIntBE(body.length, 9, 3); // one fragment: offset 0, whole length
  const fragment = Buffer.concat([hs, body]);
  const record = Buffer.alloc(13);
  record[0] = 22; // handshake
  record.writeUInt16BE(0xfeff, 1); // first-flight record version, as DTLS 1.2 clients send it
  record.writeUInt16BE(fragment.length, 11);
  return Buffer.concat([record, fragment]);
}

/** Sends one datagram; resolves with the first reply or null after `ms`. */
async function firstReply(port: number, datagram: Buffer, ms: number): Promise<Buffer | null> {
  const sock = dgram.createSocket("udp4");
  try {
    return await new Promise<Buffer | null>((resolve) => {
      const timer = setTimeout(() => resolve(null), ms);
      sock.on("message", (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      sock.send(datagram, port, "127.0.0.1");
    });
  } finally {
    sock.close();
  }
}

describe("ISP listener at the (D)TLS layer", function () {
  this.timeout(20000);
  let l: CallHomeListener | undefined;
  const dialers: CallHomeDialer[] = [];

  afterEach(async () => {
    await Promise.all(dialers.splice(0).map((d) => d.stop()));
    await l?.stop();
    l = undefined;
  });

  it("refuses TLS 1.1 with a protocol_version alert while the same client gets in with TLS 1.2 (R6)", async () => {
    l = listener({ dtls: false, tls: true });
    l.on("error", () => undefined);
    await l.start();
    const port = l.port as number;
    const attempt = (version: tls.SecureVersion): Promise<string> =>
      new Promise((resolve) => {
        // SECLEVEL=0 lets this client offer TLS 1.1 at all; the refusal must come from the listener.
        const c = tls.connect({
          host: "127.0.0.1",
          port,
          minVersion: version,
          maxVersion: version,
          ciphers: "PSK-AES128-CBC-SHA:PSK-AES128-GCM-SHA256:@SECLEVEL=0",
          pskCallback: () => ({ identity: "home-a", psk: KEY }),
          ALPNProtocols: ["coap"],
          checkServerIdentity: () => undefined,
        });
        c.on("secureConnect", () => {
          resolve(`connected ${c.getProtocol()}`);
          c.destroy();
        });
        c.on("error", (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
      });
    assert.equal(await attempt("TLSv1.1"), "error ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION");
    assert.equal(await attempt("TLSv1.2"), "connected TLSv1.2");
  });

  it("ignores a DTLS 1.0 ClientHello, and answers the same hello as DTLS 1.2 with a HelloVerifyRequest (R6)", async () => {
    l = listener({ dtls: true, tls: false });
    l.on("error", () => undefined);
    await l.start();
    const port = l.port as number;
    const v12 = await firstReply(port, clientHello(0xfefd), 2000);
    assert.ok(v12, "DTLS 1.2 hello answered");
    assert.equal(v12[0], 22, "handshake record");
    assert.equal(v12[13], 3, "hello_verify_request");
    assert.equal(await firstReply(port, clientHello(0xfeff), 500), null, "DTLS 1.0 hello gets no answer");
  });

  for (const [implementation, suite] of [
    [undefined, "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"],
    ["node-dtls-client", "TLS_PSK_WITH_AES_128_CCM_8"],
  ] as const) {
    it(`home <-> ISP over DTLS with ${implementation ?? "the default client"} negotiates ${suite} (both sides report it)`, async () => {
      l = listener({ dtls: true, tls: false });
      l.on("error", () => undefined);
      await l.start();
      const d = new CallHomeDialer({
        hosts: ["127.0.0.1"],
        port: l.port as number,
        transport: "udp",
        psk: { identity: "home-a", key: KEY },
        homePrefixes: [PREFIX],
        heartbeatInterval: 1,
        reconnect: { minMs: 60_000, maxMs: 60_000 },
        dtlsImplementation: implementation,
      });
      d.on("error", () => undefined);
      dialers.push(d);
      const up = waitFor<[SessionInfo]>(l, "session-up");
      const connected = waitFor<[{ cipher: string; transport: string }]>(d, "connected");
      await d.start();
      const [home] = await connected;
      const [isp] = await up;
      assert.equal(home.transport, "dtls");
      assert.equal(home.cipher, `DTLSv1.2 ${suite}`);
      assert.equal(isp.cipher, `DTLSv1.2 ${suite}`);
    });
  }

  it("closes connections beyond maxSessions and says so, keeping the sessions it has (R57)", async () => {
    l = listener({ dtls: false, tls: true }, { maxSessions: 1, homes: ["home-a", "home-b"] });
    const errors: string[] = [];
    l.on("error", (e: Error) => errors.push(e.message));
    await l.start();
    const port = l.port as number;
    const dial = (identity: string): CallHomeDialer => {
      const d = new CallHomeDialer({
        hosts: ["127.0.0.1"],
        port,
        transport: "tcp",
        psk: { identity, key: KEY },
        homePrefixes: [PREFIX],
        heartbeatInterval: 1,
        reconnect: { minMs: 60_000, maxMs: 60_000 },
      });
      d.on("error", () => undefined);
      dialers.push(d);
      return d;
    };
    const upA = waitFor<[SessionInfo]>(l, "session-up");
    await dial("home-a").start();
    const [a] = await upA;
    const b = dial("home-b");
    const refused = waitFor(b, "disconnected", () => true, 5000);
    await b.start();
    await refused;
    assert.ok(
      errors.some((m) => /session limit 1/.test(m)),
      errors.join("; "),
    );
    assert.deepEqual(
      l.sessions().map((s) => s.home),
      ["home-a"],
    );
    assert.equal(l.findSession("home-a")?.id, a.id);
  });
});
