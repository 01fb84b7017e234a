// The home engine over real loopback sockets: a bare CoapEndpoint on top of the project's TLS and
// DTLS servers plays the ISP (Call Home DOTS client), the CallHomeDialer dials it.
import { strict as assert } from "node:assert";
import { once } from "node:events";
import { CallHomeDialer, HomeEngineOptions } from "../../../src/dots/home-engine";
import { CoapEndpoint, IncomingRequest, CoapResponse } from "../../../src/coap/endpoint";
import { Code, CONTENT_FORMAT_DOTS_CBOR } from "../../../src/coap/message";
import { encodeDotsCbor, decodeDotsCbor } from "../../../src/cbor";
import { createTlsServer, TlsServer } from "../../../src/transport/tls";
import { DtlsServer } from "../../../src/transport/dtls";
import type { Connection } from "../../../src/transport/connection";
import { makeTestPki, TestPki } from "../../support/certs";
import { SIGNAL_CONFIG_KEY } from "../../../src/dots/session-config";
import type { MitigationEvent } from "../../../src/dots/api";

const PSK = { identity: "home-1", key: Buffer.from("00112233445566778899aabbccddeeff", "hex") };
const MS = "ietf-dots-signal-channel:mitigation-scope";
const SP = "ietf-dots-call-home:source-prefix";
const CUID = "dz6pHjaADkaFTbjr0JGBpw";
const REQ = { [MS]: { scope: [{ "target-prefix": ["198.51.100.7/32"], [SP]: ["203.0.113.5/32"], lifetime: 3600 }] } };
const mitigatePath = (mid?: number) => [".well-known", "dots", "mitigate", `cuid=${CUID}`, ...(mid === undefined ? [] : [`mid=${mid}`])];

/** One ISP listener (TLS and/or DTLS) whose sessions are bare CoAP endpoints answering /hb. */
class FakeIsp {
  tls?: TlsServer;
  dtls?: DtlsServer;
  port = 0;
  sessions: Array<{ conn: Connection; ep: CoapEndpoint; hb: boolean[] }> = [];
  constructor(
    private readonly host = "127.0.0.1",
    private readonly serveHb = true,
  ) {}
  private accept(conn: Connection) {
    const ep = new CoapEndpoint(conn);
    const s = { conn, ep, hb: [] as boolean[] };
    if (this.serveHb) {
      ep.onRequest((req: IncomingRequest) => {
        if (req.path.join("/") === ".well-known/dots/hb") {
          s.hb.push((decodeDotsCbor(req.payload) as any)["ietf-dots-signal-channel:heartbeat"]["peer-hb-status"]);
          req.respond({ code: Code.Changed });
        } else req.respond({ code: Code.NotFound, payload: Buffer.from("no") });
      });
    }
    this.sessions.push(s);
    ep.on("protocol-error", () => undefined);
  }
  async startTls(opts: { psk?: boolean; pki?: TestPki; port?: number }) {
    this.tls = createTlsServer(
      opts.pki
        ? { certificate: { cert: opts.pki.isp.cert, key: opts.pki.isp.key, ca: opts.pki.ca.cert } }
        : { psk: { lookup: (id) => (id === PSK.identity ? PSK.key : undefined) } },
    );
    this.tls.on("connection", (c: Connection) => this.accept(c));
    this.tls.on("handshake-failed", () => undefined);
    this.port = (await this.tls.listen(opts.port ?? this.port, this.host)).port;
    return this;
  }
  async startDtls(port = this.port) {
    this.dtls = new DtlsServer({ pskLookup: (id) => (id === PSK.identity ? PSK.key : undefined) });
    this.dtls.on("connection", (c: Connection) => this.accept(c));
    this.dtls.on("handshake-failed", () => undefined);
    this.port = (await this.dtls.listen(port, this.host)).port;
    return this;
  }
  async waitSession(n = 1) {
    while (this.sessions.length < n) await new Promise((r) => setTimeout(r, 10));
    return this.sessions[n - 1];
  }
  async close() {
    for (const s of this.sessions) s.conn.close();
    await this.tls?.close();
    await this.dtls?.close();
  }
}

function put(ep: CoapEndpoint, mid: number, body: Record<string, unknown> = REQ): Promise<CoapResponse> {
  return ep.request({
    method: "PUT",
    path: mitigatePath(mid),
    confirmable: false,
    payload: encodeDotsCbor(body),
    contentFormat: CONTENT_FORMAT_DOTS_CBOR,
    repeatMs: 3000,
    timeoutMs: 10_000,
  });
}
const body = (r: CoapResponse) => decodeDotsCbor(r.payload) as any;

describe("dots/home-engine (loopback)", function () {
  this.timeout(30_000);
  let isps: FakeIsp[] = [];
  let dialer: CallHomeDialer | undefined;
  let pki: TestPki;
  before(async () => {
    pki = await makeTestPki();
  });
  afterEach(async () => {
    await dialer?.stop();
    dialer = undefined;
    for (const i of isps) await i.close();
    isps = [];
  });
  const isp = (host?: string, serveHb?: boolean) => {
    const i = new FakeIsp(host, serveHb);
    isps.push(i);
    return i;
  };
  const dial = (o: Partial<HomeEngineOptions>) => {
    dialer = new CallHomeDialer({
      hosts: ["127.0.0.1"],
      port: 0,
      transport: "tcp",
      psk: PSK,
      homePrefixes: ["203.0.113.0/24"],
      heartbeatInterval: 1,
      decisionWaitMs: 2000,
      reconnect: { minMs: 50, maxMs: 200 },
      ...o,
      tuning: { attemptDelayMs: 50, dtlsHandshakeTimeoutMs: 500, ...(o.tuning ?? {}) },
    });
    dialer.on("error", () => undefined);
    return dialer;
  };

  it("TLS-PSK: connects, serves GET /config, PUT -> decision -> 2.01 status 2, Observe, DELETE -> 2.02, status 5, then gone", async () => {
    const i = await isp().startTls({ psk: true });
    const d = dial({ port: i.port, tuning: { terminatingPeriodMs: 300 } });
    const connected = once(d, "connected");
    await d.start();
    const [info] = await connected;
    assert.equal(info.transport, "tls");
    const s = await i.waitSession();
    assert.equal(s.conn.peer.pskIdentity, "home-1");

    const cfg = await s.ep.request({ method: "GET", path: [".well-known", "dots", "config"], confirmable: true, timeoutMs: 5000 });
    assert.equal(cfg.code, Code.Content);
    assert.equal(cfg.maxAge, 3600);
    assert.equal(body(cfg)[SIGNAL_CONFIG_KEY]["idle-config"]["heartbeat-interval"]["current-value"], 1);

    const events: MitigationEvent[] = [];
    d.on("mitigation", (e) => {
      events.push(e);
      setTimeout(() => d.decide({ mid: e.mid, outcome: "enforced", detail: "blocked 10.0.0.5" }), 20);
    });
    const r = await put(s.ep, 10);
    assert.equal(r.code, Code.Created);
    assert.deepEqual(body(r)[MS].scope[0], { mid: 10, lifetime: 3600, status: "attack-successfully-mitigated" });
    assert.equal(events[0].cuid, CUID);
    assert.deepEqual(
      d.mitigations().map((m) => [m.mid, m.status]),
      [[10, "attack-successfully-mitigated"]],
    );

    const notes: any[] = [];
    const obs = await s.ep.observe({ method: "GET", path: mitigatePath(10), confirmable: true, timeoutMs: 5000 }, (n) =>
      notes.push(body(n)),
    );
    assert.equal(obs.first.code, Code.Content);
    assert.equal(body(obs.first)[MS].scope[0].status, "attack-successfully-mitigated");

    const ended = once(d, "ended");
    const del = await s.ep.request({ method: "DELETE", path: mitigatePath(10), confirmable: false, repeatMs: 3000, timeoutMs: 5000 });
    assert.equal(del.code, Code.Deleted);
    const [end] = await ended;
    assert.equal(end.reason, "withdrawn");
    while (notes.length < 2) await new Promise((res) => setTimeout(res, 10));
    assert.deepEqual(
      notes.map((n) => n[MS].scope[0].status),
      ["dots-client-withdrawn-mitigation", "attack-mitigation-terminated"],
    );
    const gone = await s.ep.request({ method: "GET", path: mitigatePath(10), confirmable: true, timeoutMs: 5000 });
    assert.equal(gone.code, Code.NotFound);
    await obs.cancel();
  });

  it("TLS with certificates: mutual authentication, invalid request gets 4.00 naming the field", async () => {
    const i = await isp().startTls({ pki });
    const d = dial({ port: i.port, psk: undefined, certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert } });
    await d.start();
    await once(d, "connected");
    const s = await i.waitSession();
    assert.equal(s.conn.peer.method, "certificate");
    assert.match(s.conn.peer.subject ?? "", /home-1\.example/);
    const bad = await put(s.ep, 1, { [MS]: { scope: [{ "target-prefix": ["198.51.100.7/32"], [SP]: ["192.0.2.1/32"], lifetime: 3600 }] } });
    assert.equal(bad.code, Code.BadRequest);
    assert.match(bad.payload.toString(), /source-prefix.*(outside|not inside) this home/);
  });

  it("resolves a host name to all its addresses and checks that name on the ISP certificate", async () => {
    const i = await isp("::").startTls({ pki });
    const d = dial({
      hosts: ["localhost"],
      port: i.port,
      psk: undefined,
      certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert },
    });
    await d.start();
    const [info] = await once(d, "connected");
    assert.ok(["::1", "127.0.0.1", "::ffff:127.0.0.1"].includes(info.remoteAddress), info.remoteAddress);
    await d.stop();
    // The same ISP reached under a name its certificate does not carry is refused.
    const wrong = dial({
      hosts: ["127.0.0.1"],
      port: i.port,
      psk: undefined,
      certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert, servername: "other.example" },
    });
    await wrong.start();
    const [ev] = await once(wrong, "disconnected");
    assert.match(ev.reason, /connect failed/);
  });

  it("TLS with certificates: a reconnect resumes the TLS session from its ticket", async () => {
    const i = await isp().startTls({ pki });
    const d = dial({ port: i.port, psk: undefined, certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert } });
    await d.start();
    await once(d, "connected");
    const s = await i.waitSession();
    await s.ep.request({ method: "GET", path: [".well-known", "dots", "config"], confirmable: true, timeoutMs: 5000 });
    assert.equal((d.connection as any).sessionReused, false);
    s.conn.close();
    await once(d, "connected");
    assert.equal((d.connection as any).sessionReused, true);
    const s2 = await i.waitSession(2);
    assert.match(s2.conn.peer.subject ?? "", /home-1\.example/, "the resumed session still names the home");
  });

  it("TLS with certificates: a home whose CA the ISP does not trust never gets a session", async () => {
    const i = await isp().startTls({ pki });
    const d = dial({
      port: i.port,
      psk: undefined,
      certificate: { cert: pki.rogueHome.cert, key: pki.rogueHome.key, ca: pki.ca.cert },
      reconnect: { minMs: 60_000, maxMs: 300_000 },
    });
    const disc = once(d, "disconnected");
    await d.start();
    const [ev] = await disc;
    assert.match(ev.reason, /connect failed/);
    assert.ok(ev.retryInMs >= 59_000, `default pacing keeps retries >= 60 s apart (got ${ev.retryInMs})`);
    assert.equal(i.sessions.length, 0);
  });

  it("DTLS-PSK: connects over UDP, both sides heartbeat, PUT gets 2.01 with status 1 when no decision comes in time", async () => {
    const i = await isp().startDtls(0);
    const d = dial({ port: i.port, transport: "udp", decisionWaitMs: 50, tuning: { msPerSecond: 100 } });
    await d.start();
    const [info] = await once(d, "connected");
    assert.equal(info.transport, "dtls");
    const s = await i.waitSession();
    const r = await put(s.ep, 3);
    assert.equal(r.code, Code.Created);
    assert.equal(body(r)[MS].scope[0].status, "attack-mitigation-in-progress");
    while (s.hb.length < 2) await new Promise((res) => setTimeout(res, 20));
    assert.equal(s.hb[0], false, "the ISP sent no heartbeats, so peer-hb-status is false");
    // The ISP heartbeats now; the home reports them as arriving.
    await s.ep.request({
      method: "PUT",
      path: [".well-known", "dots", "hb"],
      confirmable: false,
      payload: encodeDotsCbor({ "ietf-dots-signal-channel:heartbeat": { "peer-hb-status": true } }),
      contentFormat: CONTENT_FORMAT_DOTS_CBOR,
      timeoutMs: 2000,
    });
    const n = s.hb.length;
    while (s.hb.length <= n) await new Promise((res) => setTimeout(res, 10));
    assert.equal(s.hb.at(-1), true);
  });

  it("happy eyeballs: with UDP and TCP on one port DTLS wins; with only TCP, TLS wins", async () => {
    const both = await isp().startTls({ psk: true });
    await both.startDtls(both.port);
    const d = dial({ port: both.port, transport: "auto" });
    const attempts: string[] = [];
    d.on("connecting", (c) => attempts.push(c.transport));
    await d.start();
    const [info] = await once(d, "connected");
    assert.equal(info.transport, "dtls");
    assert.equal(attempts[0], "dtls");
    await d.stop();

    const tcpOnly = await isp().startTls({ psk: true });
    const d2 = dial({ port: tcpOnly.port, transport: "auto" });
    await d2.start();
    const [info2] = await once(d2, "connected");
    assert.equal(info2.transport, "tls");
  });

  const redirectTo = (ep: CoapEndpoint, alt: string, records: string[], ttl?: number) =>
    ep.request({
      method: "PUT",
      path: [".well-known", "dots", "redirect"],
      confirmable: false,
      payload: encodeDotsCbor({
        "ietf-dots-signal-channel:redirected-signal": {
          "ietf-dots-call-home:alt-ch-client": alt,
          "ietf-dots-call-home:alt-ch-client-record": records,
          ...(ttl === undefined ? {} : { "ietf-dots-call-home:ttl": ttl }),
        },
      }),
      contentFormat: CONTENT_FORMAT_DOTS_CBOR,
      timeoutMs: 5000,
    });

  it("redirect: 2.01, the old connection closes, the home dials the alternate client", async () => {
    const first = await isp("127.0.0.1").startTls({ psk: true });
    const second = await isp("127.0.0.2").startTls({ psk: true, port: first.port });
    const d = dial({ port: first.port });
    await d.start();
    await once(d, "connected");
    const s = await first.waitSession();
    const redirected = once(d, "redirected");
    const r = await s.ep.request({
      method: "PUT",
      path: [".well-known", "dots", "redirect", `cuid=${CUID}`, "mid=5"],
      confirmable: false,
      payload: encodeDotsCbor({
        "ietf-dots-signal-channel:redirected-signal": {
          "ietf-dots-call-home:alt-ch-client": "alt.example",
          "ietf-dots-call-home:alt-ch-client-record": ["127.0.0.2"],
          "ietf-dots-call-home:ttl": 600,
        },
      }),
      contentFormat: CONTENT_FORMAT_DOTS_CBOR,
      timeoutMs: 5000,
    });
    assert.equal(r.code, Code.Created);
    const [red] = await redirected;
    assert.equal(red.altClient, "alt.example");
    const s2 = await second.waitSession();
    assert.equal(s2.conn.remoteAddress.replace(/^::ffff:/, ""), "127.0.0.1");
    if (!s.conn.closed) await once(s.conn, "close");
    const cfg = await s2.ep.request({ method: "GET", path: [".well-known", "dots", "config"], confirmable: true, timeoutMs: 5000 });
    assert.equal(cfg.code, Code.Content);
    // Sent back to the first client, then again to alt.example within 5 min: a loop, refused.
    assert.equal((await redirectTo(s2.ep, "isp-a.example", ["127.0.0.1"])).code, Code.Created);
    const s3 = await first.waitSession(2);
    const loop = await redirectTo(s3.ep, "alt.example", ["127.0.0.2"]);
    assert.equal(loop.code, Code.BadRequest);
    assert.match(loop.payload.toString(), /loop/);
  });

  it("redirect ttl: after it lapses the home returns to the provisioned client", async () => {
    const first = await isp("127.0.0.1").startTls({ psk: true });
    const second = await isp("127.0.0.2").startTls({ psk: true, port: first.port });
    const d = dial({ port: first.port });
    await d.start();
    await once(d, "connected");
    const s = await first.waitSession();
    assert.equal((await redirectTo(s.ep, "alt.example", ["127.0.0.2"], 1)).code, Code.Created);
    await second.waitSession();
    const back = await first.waitSession(2);
    assert.equal(back.conn.closed, false);
    assert.equal(d.connection?.remoteAddress, "127.0.0.1");
  });

  it("redirect without ttl: the alternate holds for the 60 s of an absent Max-Age (RFC 7252 5.10.5), then the provisioned client", async () => {
    const first = await isp("127.0.0.1").startTls({ psk: true });
    const second = await isp("127.0.0.2").startTls({ psk: true, port: first.port });
    // 60 protocol seconds pass in 1.2 s.
    const d = dial({ port: first.port, tuning: { redirectTtlMsPerSecond: 20 } });
    await d.start();
    await once(d, "connected");
    const s = await first.waitSession();
    const redirected = once(d, "redirected");
    assert.equal((await redirectTo(s.ep, "alt.example", ["127.0.0.2"])).code, Code.Created);
    const [red] = await redirected;
    assert.equal(red.ttl, 60);
    await second.waitSession();
    const back = await first.waitSession(2);
    assert.equal(back.conn.closed, false);
    assert.equal(d.connection?.remoteAddress, "127.0.0.1");
  });

  it("redirect ttl ending during an attack: the alternate stays (reconnects too) until the last mitigation ends, then the provisioned client", async () => {
    const first = await isp("127.0.0.1").startTls({ psk: true });
    const second = await isp("127.0.0.2").startTls({ psk: true, port: first.port });
    const d = dial({ port: first.port, decisionWaitMs: 0, tuning: { terminatingPeriodMs: 300 } });
    await d.start();
    await once(d, "connected");
    const s = await first.waitSession();
    assert.equal((await redirectTo(s.ep, "alt.example", ["127.0.0.2"], 1)).code, Code.Created);
    const s2 = await second.waitSession();
    assert.equal((await put(s2.ep, 21)).code, Code.Created);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(first.sessions.length, 1, "no fallback while the attack is active");
    assert.equal(d.connection?.remoteAddress, "127.0.0.2");
    // The alternate drops the session after the ttl: the home comes back to it, not to the provisioned client.
    s2.conn.close();
    const s3 = await second.waitSession(2);
    assert.equal(first.sessions.length, 1);
    // The attack ends (withdrawal, then the terminating period): now the home falls back.
    const del = await s3.ep.request({ method: "DELETE", path: mitigatePath(21), confirmable: false, repeatMs: 3000, timeoutMs: 5000 });
    assert.equal(del.code, Code.Deleted);
    const back = await first.waitSession(2);
    assert.equal(back.conn.closed, false);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(d.connection?.remoteAddress, "127.0.0.1");
    assert.equal(second.sessions.length, 2);
  });

  it("redirect ttl 0 applies only to an attack in progress: refused with 4.00 when none is active", async () => {
    const first = await isp("127.0.0.1").startTls({ psk: true });
    const d = dial({ port: first.port });
    await d.start();
    await once(d, "connected");
    const s = await first.waitSession();
    const r = await redirectTo(s.ep, "alt.example", ["127.0.0.2"], 0);
    assert.equal(r.code, Code.BadRequest);
    assert.match(r.payload.toString(), /ttl 0/);
    assert.equal(s.conn.closed, false);
  });

  it("redirect ttl 0 during an attack: the alternate serves until the last mitigation ends, then the provisioned client", async () => {
    const first = await isp("127.0.0.1").startTls({ psk: true });
    const second = await isp("127.0.0.2").startTls({ psk: true, port: first.port });
    const d = dial({ port: first.port, decisionWaitMs: 0, tuning: { terminatingPeriodMs: 300 } });
    await d.start();
    await once(d, "connected");
    const s = await first.waitSession();
    assert.equal((await put(s.ep, 31)).code, Code.Created);
    assert.equal((await redirectTo(s.ep, "alt.example", ["127.0.0.2"], 0)).code, Code.Created);
    const s2 = await second.waitSession();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(first.sessions.length, 1, "the alternate stays while the attack lasts");
    const del = await s2.ep.request({ method: "DELETE", path: mitigatePath(31), confirmable: false, repeatMs: 3000, timeoutMs: 5000 });
    assert.equal(del.code, Code.Deleted);
    const back = await first.waitSession(2);
    assert.equal(back.conn.closed, false);
  });

  it("redirect with certificates: alt-ch-client is the name checked on the alternate's certificate", async () => {
    const first = await isp("127.0.0.1").startTls({ pki });
    const second = await isp("127.0.0.2").startTls({ pki, port: first.port });
    const d = dial({ port: first.port, psk: undefined, certificate: { cert: pki.home1.cert, key: pki.home1.key, ca: pki.ca.cert } });
    const errors: string[] = [];
    d.on("error", (e) => errors.push(e.message));
    await d.start();
    await once(d, "connected");
    const s = await first.waitSession();
    // The alternate's certificate does not name alt.example: the home refuses it and falls back.
    assert.equal((await redirectTo(s.ep, "alt.example", ["127.0.0.2"])).code, Code.Created);
    const fallback = await first.waitSession(2);
    assert.equal(second.sessions.length, 0);
    assert.ok(
      errors.some((m) => /alt\.example unreachable, falling back/.test(m)),
      errors.join("; "),
    );
    // It does name isp.example: that redirect succeeds.
    assert.equal((await redirectTo(fallback.ep, "isp.example", ["127.0.0.2"])).code, Code.Created);
    const s2 = await second.waitSession();
    assert.equal(s2.conn.peer.method, "certificate");
  });

  it("reconnects after the ISP side disappears; mitigations keep their lifetimes", async () => {
    const i = await isp().startTls({ psk: true });
    const port = i.port;
    const d = dial({ port, decisionWaitMs: 0 });
    await d.start();
    await once(d, "connected");
    const s = await i.waitSession();
    assert.equal((await put(s.ep, 7)).code, Code.Created);
    await i.close();
    isps = isps.filter((x) => x !== i);
    const [disc] = await once(d, "disconnected");
    assert.equal(typeof disc.retryInMs, "number");
    assert.equal(d.mitigations().length, 1, "kept while the ISP is away");
    const back = await isp().startTls({ psk: true, port });
    await once(d, "connected");
    const s2 = await back.waitSession();
    const g = await s2.ep.request({ method: "GET", path: mitigatePath(7), confirmable: true, timeoutMs: 5000 });
    assert.equal(g.code, Code.Content);
    const lifetime = body(g)[MS].scope[0].lifetime;
    assert.ok(lifetime <= 3600 && lifetime > 3500, `remaining lifetime ${lifetime}`);
  });

  it("DTLS: when the ISP side goes away and comes back on the same port, the home redials over UDP", async () => {
    const i = await isp().startDtls(0);
    const port = i.port;
    const d = dial({
      port,
      transport: "udp",
      decisionWaitMs: 0,
      tuning: { dtlsAttempts: 2, msPerSecond: 50, idleConfig: { missingHbAllowed: 3 }, mitigatingConfig: { missingHbAllowed: 3 } },
    });
    await d.start();
    await once(d, "connected");
    const s = await i.waitSession();
    assert.equal((await put(s.ep, 9)).code, Code.Created);
    await i.close();
    isps = isps.filter((x) => x !== i);
    await once(d, "disconnected");
    const back = await isp().startDtls(port);
    const [info] = await once(d, "connected");
    assert.equal(info.transport, "dtls");
    const s2 = await back.waitSession();
    const g = await s2.ep.request({ method: "GET", path: mitigatePath(9), confirmable: true, timeoutMs: 5000 });
    assert.equal(g.code, Code.Content, "the mitigation outlived the DTLS session");
  });

  it("session loss: silence for missing-hb-allowed intervals closes and redials; answered traffic keeps it", async () => {
    const silent = await isp("127.0.0.1", false).startTls({ psk: true });
    // A TLS peer that never speaks CoAP: no CSM, no answers.
    silent.tls!.removeAllListeners("connection");
    const conns: Connection[] = [];
    silent.tls!.on("connection", (c: Connection) => conns.push(c));
    const d = dial({ port: silent.port, tuning: { msPerSecond: 50, idleConfig: { missingHbAllowed: 3 } } });
    await d.start();
    await once(d, "connected");
    const [disc] = await once(d, "disconnected");
    assert.match(disc.reason, /session lost/);
    await once(d, "connected");
    while (conns.length < 2) await new Promise((res) => setTimeout(res, 10));
    for (const c of conns) c.close();
    await d.stop();

    const talking = await isp().startTls({ psk: true });
    const d2 = dial({ port: talking.port, tuning: { msPerSecond: 50, idleConfig: { missingHbAllowed: 3 } } });
    let lost = false;
    d2.on("disconnected", () => (lost = true));
    await d2.start();
    await once(d2, "connected");
    await new Promise((r) => setTimeout(r, 600)); // 12 intervals
    assert.equal(lost, false);
    assert.ok((await talking.waitSession()).hb.length >= 5);
  });

  it("stop() closes the connection, frees timers and hands back active mitigations as 'session-reset'", async () => {
    const i = await isp().startTls({ psk: true });
    const d = dial({ port: i.port, decisionWaitMs: 0 });
    await d.start();
    await once(d, "connected");
    const s = await i.waitSession();
    assert.equal((await put(s.ep, 4)).code, Code.Created);
    const ended: Array<[number, string]> = [];
    d.on("ended", (e) => ended.push([e.mid, e.reason]));
    const closed = once(s.conn, "close");
    await d.stop();
    await closed;
    assert.deepEqual(ended, [[4, "session-reset"]]);
    assert.deepEqual(d.mitigations(), []);
    assert.equal(d.connected, false);
    await assert.rejects(d.start(), /stopped/);
  });
});
