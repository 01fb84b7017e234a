// Compliance points of the home side (Call Home DOTS server) that only show on the wire: Block2
// for a GET-all that does not fit one datagram (R37), Observe notifications as NON and their
// cancellation (R38), the idle-config / mitigating-config switch (R46). A bare CoapEndpoint over
// the project's DTLS server plays the ISP; the raw datagrams it receives are decoded to look at
// what the home actually sent.
import { strict as assert } from "node:assert";
import { once } from "node:events";
import { CallHomeDialer, HomeEngineOptions, notificationSpacingMs, NOTIFY_SPACING_NO_RTT_MS } from "../../../src/dots/home-engine";
import { CoapEndpoint, IncomingRequest } from "../../../src/coap/endpoint";
import { Code, CONTENT_FORMAT_DOTS_CBOR, CoapMessage } from "../../../src/coap/message";
import { decodeUdp } from "../../../src/coap/udp-codec";
import { getBlock2, getETag, getObserve, getSize2, getUriPath } from "../../../src/coap/options";
import { encodeDotsCbor, decodeDotsCbor } from "../../../src/cbor";
import { DtlsServer } from "../../../src/transport/dtls";
import { callHomeSrvName, discoverCandidates, dnsResolver } from "../../../src/dots/dialer-connect";
import * as dgram from "node:dgram";
import * as ipaddr from "ipaddr.js";
import type { Connection } from "../../../src/transport/connection";
import { createTlsServer, type TlsServer } from "../../../src/transport/tls";
import { makeTestPki, type KeyPair } from "../../support/certs";

const PSK = { identity: "home-c", key: Buffer.from("0f1e2d3c4b5a69788796a5b4c3d2e1f0", "hex") };
const MS = "ietf-dots-signal-channel:mitigation-scope";
const SP = "ietf-dots-call-home:source-prefix";
const CUID = "dz6pHjaADkaFTbjr0JGBpw";
const mitigatePath = (mid?: number) => [".well-known", "dots", "mitigate", `cuid=${CUID}`, ...(mid === undefined ? [] : [`mid=${mid}`])];
const request = (source: string, targets = ["198.51.100.7/32"]) => ({
  [MS]: { scope: [{ "target-prefix": targets, [SP]: [source], lifetime: 3600 }] },
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface IspSession {
  conn: Connection;
  ep: CoapEndpoint;
  /** Every CoAP message the home sent, decoded, in arrival order. */
  wire: CoapMessage[];
  heartbeats: number;
}

describe("dots/home compliance on the wire (DTLS loopback)", function () {
  this.timeout(30_000);
  let server: DtlsServer | undefined;
  let dialer: CallHomeDialer | undefined;
  const sessions: IspSession[] = [];

  async function setup(opts: Partial<HomeEngineOptions> = {}): Promise<IspSession> {
    server = new DtlsServer({ pskLookup: (id) => (id === PSK.identity ? PSK.key : undefined) });
    server.on("handshake-failed", () => undefined);
    server.on("connection", (conn: Connection) => {
      const s: IspSession = { conn, ep: new CoapEndpoint(conn), wire: [], heartbeats: 0 };
      conn.on("message", (data) => {
        try {
          s.wire.push(decodeUdp(data));
        } catch {
          // not ours to judge here; the endpoint reports it
        }
      });
      s.ep.on("protocol-error", () => undefined);
      s.ep.onRequest((req: IncomingRequest) => {
        if (req.path.join("/") === ".well-known/dots/hb") {
          s.heartbeats++;
          req.respond({ code: Code.Changed });
        } else req.respond({ code: Code.NotFound, payload: Buffer.from("no such resource") });
      });
      sessions.push(s);
    });
    const { port } = await server.listen(0, "127.0.0.1");
    dialer = new CallHomeDialer({
      hosts: ["127.0.0.1"],
      port,
      transport: "udp",
      psk: PSK,
      homePrefixes: ["203.0.113.0/24"],
      heartbeatInterval: 30,
      decisionWaitMs: 0,
      reconnect: { minMs: 50, maxMs: 200 },
      ...opts,
      tuning: { attemptDelayMs: 50, dtlsHandshakeTimeoutMs: 500, ...(opts.tuning ?? {}) },
    });
    dialer.on("error", () => undefined);
    await dialer.start();
    await once(dialer, "connected");
    while (sessions.length === 0) await sleep(10);
    return sessions[0];
  }

  afterEach(async () => {
    await dialer?.stop();
    dialer = undefined;
    for (const s of sessions.splice(0)) s.conn.close();
    await server?.close();
    server = undefined;
  });

  const put = (s: IspSession, mid: number, body: Record<string, unknown>) =>
    s.ep.request({
      method: "PUT",
      path: mitigatePath(mid),
      confirmable: false,
      payload: encodeDotsCbor(body),
      contentFormat: CONTENT_FORMAT_DOTS_CBOR,
      repeatMs: 3000,
      timeoutMs: 10_000,
    });

  it("R37: a GET-all too big for one datagram goes out as Block2 NUM=0 with ETag and Size2, and reassembles to every mitigation", async () => {
    const s = await setup({ tuning: { maxMitigationsPerClient: 64 } });
    const mids = Array.from({ length: 24 }, (_, i) => 100 + i);
    // Distinct targets, so no request overlaps another (RFC 9132 4.4.1) and all stay active.
    for (const [i, mid] of mids.entries())
      assert.equal(
        (await put(s, mid, request(`203.0.113.${i + 1}/32`, [`198.51.100.${i + 1}/32`, `2001:db8:6401::${i + 1}/128`]))).code,
        Code.Created,
      );
    const before = s.wire.length;
    const all = await s.ep.request({ method: "GET", path: mitigatePath(), confirmable: true, timeoutMs: 5000 });
    assert.equal(all.code, Code.Content);
    assert.deepEqual(
      (decodeDotsCbor(all.payload) as any)[MS].scope.map((e: any) => e.mid),
      mids,
    );

    const responses = s.wire.slice(before).filter((m) => m.code === Code.Content);
    assert.ok(responses.length >= 2, `expected several blocks, got ${responses.length}`);
    const first = responses[0];
    const b0 = getBlock2(first.options);
    assert.ok(b0, "first response carries Block2");
    assert.equal(b0.num, 0);
    assert.equal(b0.more, true);
    assert.ok(first.payload.length <= 1024, "each block fits a 1280-byte PMTU");
    assert.ok(getETag(first.options), "dynamic resource: ETag on the first block");
    assert.equal(getSize2(first.options), all.payload.length);
    for (const r of responses) assert.ok(getETag(r.options)?.equals(getETag(first.options)!), "the same ETag on every block");
  });

  it("R38: notifications are NON; a GET with Observe=1 ends them, and later changes send nothing to that token", async () => {
    const s = await setup();
    assert.equal((await put(s, 7, request("203.0.113.9/32"))).code, Code.Created);
    const notes: any[] = [];
    const obs = await s.ep.observe({ method: "GET", path: mitigatePath(7), confirmable: true, timeoutMs: 5000 }, (n) =>
      notes.push(decodeDotsCbor(n.payload)),
    );
    dialer!.decide({ mid: 7, outcome: "enforced" });
    while (notes.length < 1) await sleep(10);
    assert.equal(notes[0][MS].scope[0].status, "attack-successfully-mitigated");
    const note = s.wire.find(
      (m) => m.code === Code.Content && m.type === "NON" && getObserve(m.options) !== undefined && m.messageId !== undefined,
    );
    assert.ok(note, "the notification arrived as NON with an Observe value");
    const token = note.token;

    await obs.cancel();
    const cancelGet = s.wire.length;
    dialer!.decide({ mid: 7, outcome: "failed" });
    await sleep(300);
    const later = s.wire.slice(cancelGet).filter((m) => m.token.equals(token) && getObserve(m.options) !== undefined);
    assert.deepEqual(later, [], "no notification after the cancel");
    assert.equal(notes.length, 1);
    // The observed request itself still answers a plain GET with its new status.
    const now = await s.ep.request({ method: "GET", path: mitigatePath(7), confirmable: true, timeoutMs: 5000 });
    assert.equal((decodeDotsCbor(now.payload) as any)[MS].scope[0].status, "attack-exceeded-capability");
  });

  it("R38: an RST to a notification ends the observation at the home side", async () => {
    const s = await setup();
    assert.equal((await put(s, 8, request("203.0.113.10/32"))).code, Code.Created);
    const notes: unknown[] = [];
    const obs = await s.ep.observe({ method: "GET", path: mitigatePath(8), confirmable: true, timeoutMs: 5000 }, (n) => notes.push(n));
    // Forget the observation only on the ISP side (no GET Observe=1): its endpoint answers the
    // next notification with RST, as a client that lost state would.
    const firstToken = s.wire.find((m) => m.code === Code.Content && getObserve(m.options) !== undefined)!.token;
    const internal = s.ep as unknown as { pending: Map<string, unknown> };
    internal.pending.delete(firstToken.toString("hex"));
    dialer!.decide({ mid: 8, outcome: "enforced" });
    while (!s.wire.some((m) => m.token.equals(firstToken) && m.type === "NON")) await sleep(10);
    await sleep(100); // the RST goes back
    const mark = s.wire.length;
    dialer!.decide({ mid: 8, outcome: "failed" });
    await sleep(300);
    const after = s.wire.slice(mark).filter((m) => m.token.equals(firstToken));
    assert.deepEqual(after, [], "the home stopped notifying after the RST");
    assert.equal(notes.length, 0);
    void obs;
  });

  it("R46: heartbeats follow mitigating-config while a mitigation is active and idle-config once none is", async () => {
    // 1 "second" = 50 ms: idle heartbeats every 100 s (none during the test), mitigating every 2 s.
    const s = await setup({
      tuning: { msPerSecond: 50, idleConfig: { heartbeatInterval: 100 }, mitigatingConfig: { heartbeatInterval: 2 } },
    });
    await sleep(400);
    assert.equal(s.heartbeats, 0, "idle: no heartbeat within 8 of the 100 idle-config seconds");
    assert.equal((await put(s, 3, request("203.0.113.20/32"))).code, Code.Created);
    while (s.heartbeats < 3) await sleep(10);
    // Withdraw (nothing enforced yet, so it ends at once): back to the idle set.
    assert.equal(
      (await s.ep.request({ method: "DELETE", path: mitigatePath(3), confirmable: false, repeatMs: 3000, timeoutMs: 5000 })).code,
      Code.Deleted,
    );
    await sleep(150);
    const n = s.heartbeats;
    await sleep(500);
    assert.equal(s.heartbeats, n, "idle again: heartbeats stop at the idle interval");
    // The heartbeat path never carries cuid/mid (R45).
    const hb = s.wire.filter((m) => getUriPath(m.options).join("/") === ".well-known/dots/hb");
    assert.ok(hb.length >= 3);
    for (const m of hb) assert.equal(m.type, "NON");
  });

  it("R38 pacing: over UDP the home pings at once for an RTT estimate; notifications are spaced one per RTT, else one per 3 s", async () => {
    assert.equal(notificationSpacingMs("dtls", undefined), NOTIFY_SPACING_NO_RTT_MS);
    assert.equal(NOTIFY_SPACING_NO_RTT_MS, 3000);
    assert.equal(notificationSpacingMs("dtls", 0.4), 1);
    assert.equal(notificationSpacingMs("dtls", 80.2), 81);
    assert.equal(notificationSpacingMs("tls", undefined), 0, "TCP has its own congestion control");
    const s = await setup();
    while (!s.wire.some((m) => m.code === Code.Empty && m.type === "CON")) await sleep(10);
    // With the estimate in place a change is notified without the 3 s wait.
    assert.equal((await put(s, 11, request("203.0.113.30/32"))).code, Code.Created);
    const notes: any[] = [];
    const obs = await s.ep.observe({ method: "GET", path: mitigatePath(11), confirmable: true, timeoutMs: 5000 }, (n) =>
      notes.push(decodeDotsCbor(n.payload)),
    );
    dialer!.decide({ mid: 11, outcome: "enforced" });
    const deadline = Date.now() + 2500;
    while (notes.length < 1 && Date.now() < deadline) await sleep(10);
    assert.equal(notes.length, 1, "notified well before the no-RTT spacing of 3 s");
    await obs.cancel();
  });
});

// A small authoritative DNS server on loopback (RFC 1035 wire format) answering SRV, A and AAAA
// from a table, so node's own resolver does real queries in the discovery tests.
interface Zone {
  srv?: Record<string, Array<{ priority: number; weight: number; port: number; target: string }>>;
  a?: Record<string, string[]>;
  aaaa?: Record<string, string[]>;
}
async function startDns(zone: Zone): Promise<{ server: string; queries: string[]; close(): void }> {
  const sock = dgram.createSocket("udp4");
  const queries: string[] = [];
  const nameBytes = (name: string) =>
    Buffer.concat([
      ...name
        .split(".")
        .filter(Boolean)
        .map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, "ascii")])),
      Buffer.from([0]),
    ]);
  sock.on("message", (q, rinfo) => {
    try {
      let i = 12;
      const labels: string[] = [];
      while (q[i] !== 0) {
        labels.push(q.subarray(i + 1, i + 1 + q[i]).toString("ascii"));
        i += q[i] + 1;
      }
      const question = q.subarray(12, i + 5);
      const qtype = q.readUInt16BE(i + 1);
      const name = labels.join(".").toLowerCase();
      queries.push(`${qtype === 33 ? "SRV" : qtype === 1 ? "A" : qtype === 28 ? "AAAA" : qtype} ${name}`);
      const answers: Buffer[] = [];
      const rr = (type: number, rdata: Buffer) => {
        const h = Buffer.alloc(12);
        h.writeUInt16BE(0xc00c, 0);
        h.writeUInt16BE(type, 2);
        h.writeUInt16BE(1, 4);
        h.writeUInt32BE(60, 6);
        h.writeUInt16BE(rdata.length, 10);
        answers.push(Buffer.concat([h, rdata]));
      };
      if (qtype === 33)
        for (const r of zone.srv?.[name] ?? []) {
          const d = Buffer.alloc(6);
          d.writeUInt16BE(r.priority, 0);
          d.writeUInt16BE(r.weight, 2);
          d.writeUInt16BE(r.port, 4);
          rr(33, Buffer.concat([d, nameBytes(r.target)]));
        }
      if (qtype === 1) for (const a of zone.a?.[name] ?? []) rr(1, Buffer.from(a.split(".").map(Number)));
      if (qtype === 28) for (const a of zone.aaaa?.[name] ?? []) rr(28, Buffer.from(ipaddr.parse(a).toByteArray()));
      const known = Boolean(zone.srv?.[name] || zone.a?.[name] || zone.aaaa?.[name]);
      const h = Buffer.alloc(12);
      q.copy(h, 0, 0, 2);
      h.writeUInt16BE(0x8400 | (known ? 0 : 3), 2); // response, authoritative, NOERROR / NXDOMAIN
      h.writeUInt16BE(1, 4);
      h.writeUInt16BE(answers.length, 6);
      sock.send(Buffer.concat([h, question, ...answers]), rinfo.port, rinfo.address);
    } catch {
      // a query we cannot parse gets no answer
    }
  });
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  return { server: `127.0.0.1:${sock.address().port}`, queries, close: () => sock.close() };
}

describe("dots/home RFC 8973 discovery (R3), real resolver against a loopback DNS server", function () {
  this.timeout(30_000);
  let dns: Awaited<ReturnType<typeof startDns>> | undefined;
  let server: DtlsServer | undefined;
  let tls: TlsServer | undefined;
  let dialer: CallHomeDialer | undefined;
  afterEach(async () => {
    await dialer?.stop();
    dialer = undefined;
    await server?.close();
    server = undefined;
    await tls?.close();
    tls = undefined;
    dns?.close();
    dns = undefined;
  });

  it("SRV _dots-call-home._udp/_tcp: UDP before TCP, IPv6 before IPv4, then SRV priority; ports and names from the records", async () => {
    assert.equal(callHomeSrvName("dtls", "isp.example."), "_dots-call-home._udp.isp.example");
    assert.equal(callHomeSrvName("tls", "isp.example"), "_dots-call-home._tcp.isp.example");
    dns = await startDns({
      srv: {
        "_dots-call-home._udp.isp.test": [
          { priority: 20, weight: 0, port: 4700, target: "backup.isp.test" },
          { priority: 10, weight: 0, port: 4647, target: "ch.isp.test" },
        ],
        "_dots-call-home._tcp.isp.test": [{ priority: 10, weight: 0, port: 4648, target: "ch.isp.test" }],
      },
      a: { "ch.isp.test": ["127.0.0.10"], "backup.isp.test": ["127.0.0.11"] },
      aaaa: { "ch.isp.test": ["2001:db8::10"] },
    });
    const found = await discoverCandidates("isp.test", ["dtls", "tls"], dnsResolver([dns.server]));
    assert.deepEqual(
      found.map((c) => `${c.transport} ${c.address} ${c.port} ${c.host}`),
      [
        "dtls 2001:db8::10 4647 ch.isp.test",
        "dtls 127.0.0.10 4647 ch.isp.test",
        "dtls 127.0.0.11 4700 backup.isp.test",
        "tls 2001:db8::10 4648 ch.isp.test",
        "tls 127.0.0.10 4648 ch.isp.test",
      ],
    );
    assert.ok(dns.queries.includes("SRV _dots-call-home._udp.isp.test"));
    await assert.rejects(
      discoverCandidates("nothing.test", ["dtls", "tls"], dnsResolver([dns.server])),
      /RFC 8973 discovery found no Call Home client for nothing\.test/,
    );
  });

  it("the dialer connects to the port and address an SRV record names, not its configured port", async () => {
    server = new DtlsServer({ pskLookup: (id) => (id === PSK.identity ? PSK.key : undefined) });
    server.on("handshake-failed", () => undefined);
    const conns: Connection[] = [];
    server.on("connection", (c: Connection) => {
      conns.push(c);
      new CoapEndpoint(c).on("protocol-error", () => undefined);
    });
    const { port } = await server.listen(0, "127.0.0.1");
    dns = await startDns({
      srv: { "_dots-call-home._udp.isp.test": [{ priority: 0, weight: 0, port, target: "ch.isp.test" }] },
      a: { "ch.isp.test": ["127.0.0.1"] },
    });
    dialer = new CallHomeDialer({
      hosts: [],
      port: 9, // never used: discovery names the port
      transport: "udp",
      psk: PSK,
      discover: { domain: "isp.test", dnsServers: [dns.server] },
      homePrefixes: ["203.0.113.0/24"],
      reconnect: { minMs: 50, maxMs: 200 },
      tuning: { attemptDelayMs: 50, dtlsHandshakeTimeoutMs: 500 },
    });
    dialer.on("error", () => undefined);
    const discovered = once(dialer, "discovered");
    await dialer.start();
    const [info] = await once(dialer, "connected");
    assert.equal(info.remotePort, port);
    assert.equal((await discovered)[0].candidates[0].port, port);
    while (conns.length === 0) await sleep(10);
    assert.equal(conns[0].peer.pskIdentity, PSK.identity);
    for (const c of conns) c.close();
  });

  // RFC 6125 section 6.2.1 (#12 finding 7): the source domain, not the SRV target, is the name
  // checked. The SRV answer for isp.example points at wrong.example, which resolves to a TLS
  // listener on loopback; the listener presents a certificate (trusted CA) naming either
  // isp.example or only wrong.example.
  async function discoverOverTls(serverCert: KeyPair, dnssecValidated?: boolean) {
    const pki = await makeTestPki();
    tls = createTlsServer({ certificate: { cert: serverCert.cert, key: serverCert.key, ca: pki.ca.cert } });
    tls.on("handshake-failed", () => undefined);
    tls.on("connection", (c: Connection) => new CoapEndpoint(c).on("protocol-error", () => undefined));
    const { port } = await tls.listen(0, "127.0.0.1");
    dns = await startDns({
      srv: { "_dots-call-home._tcp.isp.example": [{ priority: 0, weight: 0, port, target: "wrong.example" }] },
      a: { "wrong.example": ["127.0.0.1"] },
    });
    dialer = new CallHomeDialer({
      hosts: [],
      port: 9,
      transport: "tcp",
      certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert },
      discover: { domain: "isp.example", dnsServers: [dns.server], ...(dnssecValidated === undefined ? {} : { dnssecValidated }) },
      homePrefixes: ["203.0.113.0/24"],
      reconnect: { minMs: 50, maxMs: 200 },
      tuning: { attemptDelayMs: 50 },
    });
    dialer.on("error", () => undefined);
    const outcome = new Promise<{ connected: boolean; reason?: string; code?: string }>((resolve) => {
      dialer!.once("connected", () => resolve({ connected: true }));
      dialer!.once("disconnected", (d) => resolve({ connected: false, reason: d.reason, code: d.code }));
    });
    await dialer.start();
    return outcome;
  }

  it("discovery with certificates: the ISP certificate must name the discovery domain, not the SRV target", async () => {
    const pki = await makeTestPki();
    // Names isp.example (the configured domain), not wrong.example (the SRV target): accepted.
    const ok = await discoverOverTls(pki.isp);
    assert.equal(ok.connected, true, ok.reason);
  });

  it("discovery with certificates: a certificate naming only the unvalidated SRV target is refused", async () => {
    const pki = await makeTestPki();
    const refused = await discoverOverTls(pki.wrongName);
    assert.equal(refused.connected, false);
    assert.equal(refused.code, "CERT_NAME_MISMATCH", refused.reason);
    assert.match(refused.reason ?? "", /isp\.example/);
  });

  it("discovery with certificates and dnssecValidated: the SRV target is the name checked", async () => {
    const pki = await makeTestPki();
    const ok = await discoverOverTls(pki.wrongName, true);
    assert.equal(ok.connected, true, ok.reason);
  });

  it("without any usable record and without hosts, connecting fails with a clear reason and keeps retrying", async () => {
    dns = await startDns({ srv: { "_dots-call-home._udp.isp.test": [{ priority: 0, weight: 0, port: 0, target: "." }] } });
    dialer = new CallHomeDialer({
      hosts: [],
      port: 4647,
      transport: "udp",
      psk: PSK,
      discover: { domain: "isp.test", dnsServers: [dns.server] },
      homePrefixes: ["203.0.113.0/24"],
      reconnect: { minMs: 50, maxMs: 200 },
    });
    dialer.on("error", () => undefined);
    await dialer.start();
    const [d] = await once(dialer, "disconnected");
    assert.match(d.reason, /RFC 8973 discovery found no Call Home client for isp\.test/);
    assert.ok(d.retryInMs !== undefined);
  });
});
