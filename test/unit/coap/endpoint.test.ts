// The CoAP endpoint over real loopback sockets (NoSec coap:// and coap+tcp://), both roles on one
// connection, with real packet loss from a relay and raw datagrams for replay and malformed input.
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import * as net from "node:net";
import { once } from "node:events";
import {
  CoapEndpoint,
  CoapEndpointError,
  type EndpointOptions,
  type ObserverHandle,
  type CoapResponse,
  diagnosticPayload,
  MAX_DIAGNOSTIC_BYTES,
} from "../../../src/coap/endpoint";
import { Code, type CoapMessage } from "../../../src/coap/message";
import { decodeUdp, encodeUdp } from "../../../src/coap/udp-codec";
import { decodeTcp, encodeTcp, frameLength } from "../../../src/coap/tcp-codec";
import { getBlock2, getObserve, observeOption, uriPathOptions } from "../../../src/coap/options";
import { parseSignal, csmMessage } from "../../../src/coap/signalling";
import {
  connectPlainTcp,
  connectPlainUdp,
  listenPlainTcp,
  listenPlainUdp,
  startLossyUdpRelay,
  type PlainTcpServer,
  type PlainUdpServer,
  type UdpRelay,
} from "../../support/plain-connection";

const FAST = { ackTimeoutMs: 100, ackRandomFactor: 1.5, maxRetransmit: 3 };
const empty = Buffer.alloc(0);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Kind = "udp" | "tcp";
interface Pair {
  client: CoapEndpoint;
  server: CoapEndpoint;
}

// Everything a test opens is registered here and closed in afterEach.
let cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

async function udpServer(opts: EndpointOptions, setup: (ep: CoapEndpoint) => void): Promise<PlainUdpServer> {
  const srv = await listenPlainUdp();
  srv.on("connection", (conn) => {
    const ep = new CoapEndpoint(conn, { transmission: FAST, ...opts });
    cleanups.push(() => ep.close());
    setup(ep);
  });
  cleanups.push(() => srv.close());
  return srv;
}

/** A connected pair; the server endpoint exists once the client sent its first message (UDP). */
async function pair(
  kind: Kind,
  serverOpts: EndpointOptions = {},
  clientOpts: EndpointOptions = {},
  viaPort?: (port: number) => Promise<number>,
): Promise<Pair> {
  let server!: CoapEndpoint;
  let ready!: () => void;
  const serverReady = new Promise<void>((r) => (ready = r));
  const setup = (ep: CoapEndpoint) => {
    server = ep;
    ready();
  };
  let client: CoapEndpoint;
  if (kind === "udp") {
    const srv = await udpServer(serverOpts, setup);
    const port = viaPort ? await viaPort(srv.port) : srv.port;
    client = new CoapEndpoint(await connectPlainUdp(port), { transmission: FAST, ...clientOpts });
    cleanups.push(() => client.close());
    await client.ping(); // creates the server-side connection
  } else {
    const srv = await listenPlainTcp();
    cleanups.push(() => srv.close());
    srv.on("connection", (conn) => {
      const ep = new CoapEndpoint(conn, { transmission: FAST, ...serverOpts });
      cleanups.push(() => ep.close());
      setup(ep);
    });
    client = new CoapEndpoint(await connectPlainTcp(srv.port), { transmission: FAST, ...clientOpts });
    cleanups.push(() => client.close());
  }
  await serverReady;
  return { client, server };
}

function rawUdp(): Promise<{ socket: dgram.Socket; send(port: number, b: Buffer): void; next(ms?: number): Promise<CoapMessage> }> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket("udp4");
    const queue: Buffer[] = [];
    const waiters: Array<(b: Buffer) => void> = [];
    socket.on("message", (b) => {
      const w = waiters.shift();
      if (w) w(b);
      else queue.push(b);
    });
    cleanups.push(() => new Promise<void>((r) => socket.close(() => r())));
    socket.bind(0, "127.0.0.1", () =>
      resolve({
        socket,
        send: (port, b) => socket.send(b, port, "127.0.0.1"),
        next: (ms = 2000) =>
          new Promise<CoapMessage>((res, rej) => {
            const q = queue.shift();
            if (q) return res(decodeUdp(q));
            const t = setTimeout(() => rej(new Error("no datagram")), ms);
            waiters.push((b) => {
              clearTimeout(t);
              res(decodeUdp(b));
            });
          }),
      }),
    );
  });
}

function getMsg(mid: number, token: string, path: string[], type: "CON" | "NON" = "CON", extra: CoapMessage["options"] = []): Buffer {
  return encodeUdp({
    type,
    code: Code.GET,
    messageId: mid,
    token: Buffer.from(token, "hex"),
    options: [...uriPathOptions(path), ...extra],
    payload: empty,
  });
}

for (const kind of ["udp", "tcp"] as const) {
  describe(`CoAP endpoint over ${kind === "udp" ? "UDP (coap://)" : "TCP (coap+tcp://)"}`, function () {
    this.timeout(10000);

    it("serves and requests on both sides of one connection", async () => {
      const { client, server } = await pair(kind);
      server.onRequest((req) =>
        req.respond({
          code: Code.Content,
          payload: Buffer.from(`server saw ${req.method} /${req.path.join("/")}?${req.query.join("&")}`),
          contentFormat: 0,
        }),
      );
      client.onRequest((req) => req.respond({ code: Code.Changed, payload: Buffer.from(`client got ${req.payload.toString()}`) }));
      const r1 = await client.request({ method: "GET", path: ["a", "b"], query: ["x=1"] });
      assert.equal(r1.code, Code.Content);
      assert.equal(r1.contentFormat, 0);
      assert.equal(r1.payload.toString(), "server saw GET /a/b?x=1");
      const r2 = await server.request({ method: "PUT", path: ["hb"], payload: Buffer.from("beat"), confirmable: false });
      assert.equal(r2.code, Code.Changed);
      assert.equal(r2.payload.toString(), "client got beat");
    });

    it("observes: registration, notifications in order, cancel reaches the server", async () => {
      const { client, server } = await pair(kind);
      let handle: ObserverHandle | undefined;
      let cancelled = false;
      server.onRequest((req) => {
        if (req.observe === 0) {
          handle = req.acceptObserve();
          handle.onCancel(() => (cancelled = true));
        }
        req.respond({ code: Code.Content, payload: Buffer.from("v0") });
      });
      const seen: string[] = [];
      const obs = await client.observe({ method: "GET", path: ["status"] }, (res) => seen.push(res.payload.toString()));
      assert.equal(obs.first.payload.toString(), "v0");
      assert.ok(obs.first.observe !== undefined);
      assert.ok(handle?.active);
      handle.notify({ code: Code.Content, payload: Buffer.from("v1") });
      handle.notify({ code: Code.Content, payload: Buffer.from("v2") });
      while (seen.length < 2) await sleep(10);
      assert.deepEqual(seen, ["v1", "v2"]);
      await obs.cancel();
      assert.equal(cancelled, true);
      assert.equal(handle.active, false);
    });

    it("fetches and reassembles a 10 KB Block2 response transparently", async () => {
      // Over TCP the client announces a small Max-Message-Size so the server must split.
      const { client, server } = await pair(kind, {}, kind === "tcp" ? { maxMessageSize: 1200 } : {});
      const body = Buffer.from(Array.from({ length: 10240 }, (_, i) => i % 251));
      let handlerCalls = 0;
      server.onRequest((req) => {
        handlerCalls++;
        req.respond({ code: Code.Content, payload: body, contentFormat: 271 });
      });
      if (kind === "tcp") while (server.peerMaxMessageSizeBytes !== 1200) await sleep(5);
      const res = await client.request({ method: "GET", path: ["mitigate"] });
      assert.equal(res.code, Code.Content);
      assert.ok(res.payload.equals(body), "reassembled payload differs");
      assert.equal(res.contentFormat, 271);
      assert.equal(getBlock2(res.options), undefined);
      assert.equal(handlerCalls, 1, "later blocks come from the server's cache");
    });

    it("answers 4.29 with Max-Age and a diagnostic beyond the per-peer rate limit", async () => {
      const { client, server } = await pair(kind, { rateLimit: { requestsPerSecond: 1, burst: 3 } });
      server.onRequest((req) => req.respond({ code: Code.Content }));
      const codes: number[] = [];
      let limited: CoapResponse | undefined;
      for (let i = 0; i < 5; i++) {
        const r = await client.request({ method: "GET", path: ["x"] });
        codes.push(r.code);
        if (r.code === Code.TooManyRequests) limited = r;
      }
      assert.deepEqual(codes, [Code.Content, Code.Content, Code.Content, Code.TooManyRequests, Code.TooManyRequests]);
      assert.ok((limited?.maxAge ?? 0) >= 1);
      assert.match(limited?.payload.toString() ?? "", /too many requests/);
      assert.equal(limited?.contentFormat, 0);
    });

    it("answers an unknown critical option with 4.02 and a silent handler with 5.00", async () => {
      const { client, server } = await pair(kind, { handlerTimeoutMs: 200 });
      server.onRequest((req) => {
        if (req.path[0] === "ok") req.respond({ code: Code.Content });
      });
      const bad = await client.request({ method: "GET", path: ["ok"], options: [{ number: 2049, value: Buffer.from([1]) }] });
      assert.equal(bad.code, Code.BadOption);
      assert.match(bad.payload.toString(), /2049/);
      const elective = await client.request({ method: "GET", path: ["ok"], options: [{ number: 2048, value: Buffer.from([1]) }] });
      assert.equal(elective.code, Code.Content);
      const silent = await client.request({ method: "GET", path: ["silent"], timeoutMs: 3000 });
      assert.equal(silent.code, Code.InternalServerError);
      assert.match(silent.payload.toString(), /not answered/);
    });

    it("requestWithCallback: the answer, a Block2 body, a timeout and a closed endpoint each reach the callback once, never inside the call", async () => {
      const { client, server } = await pair(kind, {}, kind === "tcp" ? { maxMessageSize: 1200 } : {});
      const body = Buffer.from(Array.from({ length: 4000 }, (_, i) => i % 253));
      server.onRequest((req) => {
        if (req.path[0] === "silent") return;
        req.respond(req.path[0] === "big" ? { code: Code.Content, payload: body } : { code: Code.Changed });
      });
      if (kind === "tcp") while (server.peerMaxMessageSizeBytes !== 1200) await sleep(5);
      const call = (path: string, timeoutMs = 5000) =>
        new Promise<{ err: Error | undefined; res?: CoapResponse; calls: number; inCall: boolean }>((resolve) => {
          let calls = 0;
          let inCall = true;
          const seen = { inCall: false };
          client.requestWithCallback({ method: "PUT", path: [path], confirmable: false, timeoutMs }, (err, res) => {
            calls++;
            seen.inCall ||= inCall;
            // Later calls would show up in `calls` before this settles.
            setTimeout(() => resolve({ err, res, calls, inCall: seen.inCall }), 50);
          });
          inCall = false;
        });
      const hb = await call("hb");
      assert.equal(hb.err, undefined);
      assert.equal(hb.res?.code, Code.Changed);
      assert.equal(hb.calls, 1);
      assert.equal(hb.inCall, false);
      const big = await call("big");
      assert.ok(big.res?.payload.equals(body), "Block2 body reassembled");
      const silent = await call("silent", 150);
      assert.ok(silent.err instanceof CoapEndpointError && silent.err.code === "TIMEOUT", String(silent.err));
      assert.equal(silent.calls, 1);
      client.close();
      const closed = await call("hb");
      assert.ok(closed.err instanceof CoapEndpointError && closed.err.code === "CLOSED", String(closed.err));
      assert.equal(closed.inCall, false);
    });

    it("measures a ping round trip and rejects pending requests with CLOSED on close()", async () => {
      const { client, server } = await pair(kind);
      server.onRequest(() => undefined); // never answers
      const rtt = await client.ping();
      assert.ok(rtt >= 0);
      const pending = client.request({ method: "GET", path: ["never"], timeoutMs: 5000 });
      await sleep(20);
      client.close();
      await assert.rejects(pending, (e: unknown) => e instanceof CoapEndpointError && e.code === "CLOSED");
      await assert.rejects(client.request({ method: "GET", path: ["x"] }), /closed/);
    });

    it("keeps an RTT estimate from pings and, over UDP, from CON requests answered first time", async () => {
      const { client, server } = await pair(kind);
      client.onRequest((req) => req.respond({ code: Code.Content, payload: Buffer.from("ok") }));
      // The server side has not asked anything yet.
      assert.equal(server.rttEstimateMs, undefined, "no estimate before any exchange");
      if (kind === "udp") {
        // A NON exchange gives none: its answer may include the peer's processing time.
        await server.request({ method: "GET", path: ["a"], confirmable: false });
        assert.equal(server.rttEstimateMs, undefined);
        await server.request({ method: "GET", path: ["a"], confirmable: true });
        assert.ok(server.rttEstimateMs !== undefined && server.rttEstimateMs >= 0, "CON exchange gave a sample");
      } else {
        await server.ping();
        assert.ok(server.rttEstimateMs !== undefined && server.rttEstimateMs >= 0, "Pong gave a sample");
      }
    });
  });
}

describe("CoAP endpoint over UDP: reliability and dedup", function () {
  this.timeout(15000);

  it("retransmits a CON through real packet loss and the handler runs once", async () => {
    let relay!: UdpRelay;
    let handlerCalls = 0;
    // Drop the first two copies of the request (after the ping) and the first response.
    const { client, server } = await pair("udp", {}, {}, async (port) => {
      relay = await startLossyUdpRelay(port, (dir, _data, i) => (dir === "up" ? i === 1 || i === 2 : i === 1));
      cleanups.push(() => relay.close());
      return relay.port;
    });
    server.onRequest((req) => {
      handlerCalls++;
      req.respond({ code: Code.Content, payload: Buffer.from("through loss") });
    });
    const res = await client.request({ method: "GET", path: ["lossy"] });
    assert.equal(res.payload.toString(), "through loss");
    assert.equal(handlerCalls, 1, "the retransmission after the lost ACK was deduplicated");
    assert.deepEqual([relay.stats.droppedUp, relay.stats.droppedDown], [2, 1]);
  });

  it("gives up after MAX_RETRANSMIT retransmissions when everything is lost", async () => {
    let relay!: UdpRelay;
    let dropAll = false;
    const { client } = await pair("udp", {}, {}, async (port) => {
      relay = await startLossyUdpRelay(port, (dir) => dir === "up" && dropAll);
      cleanups.push(() => relay.close());
      return relay.port;
    });
    dropAll = true;
    const before = relay.stats.droppedUp;
    await assert.rejects(
      client.request({ method: "GET", path: ["x"], timeoutMs: 10000 }),
      (e: unknown) => e instanceof CoapEndpointError && e.code === "TIMEOUT" && /3 retransmissions/.test(e.message),
    );
    assert.equal(relay.stats.droppedUp - before, 1 + FAST.maxRetransmit);
  });

  it("repeats a NON request until answered", async () => {
    let relay!: UdpRelay;
    const { client, server } = await pair("udp", {}, {}, async (port) => {
      relay = await startLossyUdpRelay(port, (dir, _d, i) => dir === "up" && (i === 1 || i === 2));
      cleanups.push(() => relay.close());
      return relay.port;
    });
    let calls = 0;
    server.onRequest((req) => {
      calls++;
      assert.equal(req.confirmable, false);
      req.respond({ code: Code.Created });
    });
    const res = await client.request({ method: "PUT", path: ["m"], confirmable: false, repeatMs: 50, timeoutMs: 3000 });
    assert.equal(res.code, Code.Created);
    assert.equal(res.message.type, "NON");
    assert.equal(calls, 1);
    assert.equal(relay.stats.droppedUp, 2);
  });

  it("answers a replayed CON with the cached response and ignores a replayed NON", async () => {
    const srv = await udpServer({}, (ep) => {
      ep.onRequest((req) => {
        calls++;
        req.respond({ code: Code.Content, payload: Buffer.from(`call ${calls}`) });
      });
    });
    let calls = 0;
    const raw = await rawUdp();
    const con = getMsg(0x1111, "aa", ["x"]);
    raw.send(srv.port, con);
    const first = await raw.next();
    raw.send(srv.port, con);
    const second = await raw.next();
    assert.deepEqual([first.type, first.messageId, first.payload.toString()], ["ACK", 0x1111, "call 1"]);
    assert.deepEqual(encodeUdp(second), encodeUdp(first));
    const non = getMsg(0x2222, "bb", ["y"], "NON");
    raw.send(srv.port, non);
    const r = await raw.next();
    assert.equal(r.type, "NON");
    raw.send(srv.port, non);
    await assert.rejects(raw.next(300), /no datagram/);
    assert.equal(calls, 2);
  });

  it("ignore(): a CON gets only its empty ACK, and no 5.00 follows after the handler timeout", async () => {
    const srv = await udpServer({ handlerTimeoutMs: 150 }, (ep) => ep.onRequest((req) => req.ignore()));
    const raw = await rawUdp();
    raw.send(srv.port, getMsg(0x4444, "dd", ["unknown-mid"]));
    const ack = await raw.next();
    assert.deepEqual([ack.type, ack.code, ack.messageId, ack.payload.length], ["ACK", Code.Empty, 0x4444, 0]);
    await assert.rejects(raw.next(600), /no datagram/);
  });

  it("sends an empty ACK and then a separate CON response when the handler is slow", async () => {
    const srv = await udpServer({}, (ep) =>
      ep.onRequest((req) => void setTimeout(() => req.respond({ code: Code.Content, payload: Buffer.from("late") }), 300)),
    );
    const raw = await rawUdp();
    raw.send(srv.port, getMsg(0x3333, "cc", ["slow"]));
    const ack = await raw.next();
    assert.deepEqual([ack.type, ack.code, ack.messageId], ["ACK", Code.Empty, 0x3333]);
    const res = await raw.next();
    assert.deepEqual([res.type, res.code, res.token.toString("hex"), res.payload.toString()], ["CON", Code.Content, "cc", "late"]);
    raw.send(srv.port, encodeUdp({ type: "ACK", code: 0, messageId: res.messageId, token: empty, options: [], payload: empty }));
  });

  it("answers a CoAP ping with RST and ends an observation on RST to a notification", async () => {
    let handle: ObserverHandle | undefined;
    const srv = await udpServer({}, (ep) =>
      ep.onRequest((req) => {
        handle = req.acceptObserve();
        req.respond({ code: Code.Content, payload: Buffer.from("v0") });
      }),
    );
    const raw = await rawUdp();
    raw.send(srv.port, encodeUdp({ type: "CON", code: 0, messageId: 7, token: empty, options: [], payload: empty }));
    const rst = await raw.next();
    assert.deepEqual([rst.type, rst.messageId], ["RST", 7]);
    raw.send(srv.port, getMsg(0x4444, "dd", ["obs"], "CON", [observeOption(0)]));
    const first = await raw.next();
    assert.ok(getObserve(first.options) !== undefined);
    assert.ok(handle?.active);
    handle.notify({ code: Code.Content, payload: Buffer.from("v1") });
    const note = await raw.next();
    assert.deepEqual([note.type, note.payload.toString()], ["NON", "v1"]);
    assert.ok((getObserve(note.options) ?? 0) > (getObserve(first.options) ?? 0));
    raw.send(srv.port, encodeUdp({ type: "RST", code: 0, messageId: note.messageId, token: empty, options: [], payload: empty }));
    await sleep(100);
    assert.equal(handle.active, false);
  });

  it("survives malformed datagrams: RST for a broken CON, protocol-error events, service continues", async () => {
    const errors: Error[] = [];
    const srv = await udpServer({}, (ep) => {
      ep.on("protocol-error", (e: Error) => errors.push(e));
      ep.onRequest((req) => req.respond({ code: Code.Content, payload: Buffer.from("still here") }));
    });
    const raw = await rawUdp();
    raw.send(srv.port, Buffer.from("40015555ff", "hex")); // CON, payload marker without payload
    const rst = await raw.next();
    assert.deepEqual([rst.type, rst.messageId], ["RST", 0x5555]);
    for (const junk of ["", "ff", "5001", "4f010001", "40010001f0", "400100010d", "deadbeefcafebabe"])
      raw.send(srv.port, Buffer.from(junk, "hex"));
    await sleep(100);
    raw.send(srv.port, getMsg(0x6666, "ee", ["x"]));
    let res = await raw.next();
    while (res.type === "RST") res = await raw.next(); // the broken CONs among the junk get RSTs
    assert.equal(res.token.toString("hex"), "ee");
    assert.equal(res.payload.toString(), "still here");
    assert.ok(errors.length >= 6, `protocol errors: ${errors.length}`);
  });

  it("4.xx built by the endpoint: unknown method 4.05 with diagnostic", async () => {
    const srv = await udpServer({}, (ep) => ep.onRequest((req) => req.respond({ code: Code.Content })));
    const raw = await rawUdp();
    raw.send(
      srv.port,
      encodeUdp({ type: "CON", code: 0x05 /* FETCH */, messageId: 9, token: Buffer.from("01", "hex"), options: [], payload: empty }),
    );
    const res = await raw.next();
    assert.equal(res.code, Code.MethodNotAllowed);
    assert.match(res.payload.toString(), /not supported/);
  });
});

describe("CoAP endpoint over TCP: signalling", function () {
  this.timeout(10000);

  async function rawTcpTo(port: number): Promise<{ socket: net.Socket; frames: CoapMessage[]; closed: Promise<unknown> }> {
    const socket = net.connect(port, "127.0.0.1");
    cleanups.push(() => socket.destroy());
    await once(socket, "connect");
    const frames: CoapMessage[] = [];
    let buf = Buffer.alloc(0);
    socket.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const n = frameLength(buf);
        if (n === undefined || buf.length < n) break;
        frames.push(decodeTcp(buf.subarray(0, n)));
        buf = buf.subarray(n);
      }
    });
    return { socket, frames, closed: once(socket, "close") };
  }

  async function tcpServer(setup: (ep: CoapEndpoint) => void = () => undefined): Promise<PlainTcpServer> {
    const srv = await listenPlainTcp();
    cleanups.push(() => srv.close());
    srv.on("connection", (conn) => {
      const ep = new CoapEndpoint(conn, { transmission: FAST });
      cleanups.push(() => ep.close());
      setup(ep);
    });
    return srv;
  }

  it("sends its CSM first, answers Ping with Pong, and aborts on a request before the peer's CSM", async () => {
    const srv = await tcpServer((ep) => ep.onRequest((r) => r.respond({ code: Code.Content })));
    const ok = await rawTcpTo(srv.port);
    ok.socket.write(Buffer.concat([encodeTcp(csmMessage({ maxMessageSize: 4096 })), Buffer.from("01e242", "hex")]));
    while (ok.frames.length < 2) await sleep(10);
    assert.deepEqual(parseSignal(ok.frames[0]), { kind: "csm", maxMessageSize: 65536, blockWiseTransfer: false });
    assert.equal(encodeTcp(ok.frames[1]).toString("hex"), "01e342");

    const bad = await rawTcpTo(srv.port);
    bad.socket.write(Buffer.from("5201beefb474696d65", "hex")); // GET /time, no CSM first
    await bad.closed;
    assert.equal(bad.frames[0].code, Code.CSM);
    const abort = parseSignal(bad.frames[1]);
    assert.equal(abort.kind, "abort");
    assert.match(abort.kind === "abort" ? abort.diagnostic : "", /not a CSM/);
  });

  it("aborts on a malformed frame and reports a protocol error; the process keeps running", async () => {
    const errors: Error[] = [];
    const closed: unknown[] = [];
    const srv = await tcpServer((ep) => {
      ep.on("protocol-error", (e: Error) => errors.push(e));
      ep.on("close", (e: unknown) => closed.push(e));
    });
    const c = await rawTcpTo(srv.port);
    c.socket.write(Buffer.concat([encodeTcp(csmMessage()), Buffer.from("1001f1", "hex")])); // reserved delta nibble
    await c.closed;
    assert.equal(parseSignal(c.frames[c.frames.length - 1]).kind, "abort");
    assert.equal(errors.length, 1);
    assert.equal(closed.length, 1);
  });

  it("honours the peer's Max-Message-Size for requests and closes on Release once idle", async () => {
    let server!: CoapEndpoint;
    const srv = await tcpServer((ep) => (server = ep));
    const conn = await connectPlainTcp(srv.port);
    const client = new CoapEndpoint(conn, { transmission: FAST, maxMessageSize: 300 });
    cleanups.push(() => client.close());
    while (!server || server.peerMaxMessageSizeBytes !== 300) await sleep(5);
    await assert.rejects(
      server.request({ method: "PUT", path: ["x"], payload: Buffer.alloc(400) }),
      (e: unknown) => e instanceof CoapEndpointError && e.code === "TOO_LARGE",
    );
    const closedNow = once(client, "close");
    // The server's side sends a Release (7.04) to the client: it has nothing pending, so it closes.
    server.connection.send(Buffer.from("00e4", "hex"));
    await closedNow;
    assert.equal(client.isClosed, true);
  });

  it("close() ends with a Release (7.04) after the CSM, so the peer sees an orderly shutdown", async () => {
    const srv = await tcpServer((ep) => ep.close());
    const c = await rawTcpTo(srv.port);
    c.socket.write(encodeTcp(csmMessage()));
    await c.closed;
    assert.deepEqual(
      c.frames.map((f) => parseSignal(f).kind),
      ["csm", "release"],
    );
  });
});

describe("CoAP endpoint: client-side rules against a hand-driven UDP peer", function () {
  this.timeout(10000);

  /** Our endpoint as client, talking to a raw socket that plays the server. */
  async function clientAgainstRaw(opts: EndpointOptions = {}) {
    const raw = await rawUdp();
    const port = (raw.socket.address() as { port: number }).port;
    const client = new CoapEndpoint(await connectPlainUdp(port), { transmission: FAST, ...opts });
    cleanups.push(() => client.close());
    const clientPort = () => client.connection.localPort as number;
    const reply = (m: CoapMessage) => raw.socket.send(encodeUdp(m), clientPort(), "127.0.0.1");
    return { raw, client, reply };
  }

  it("a deadline that passes while the process is busy first reads the answer already waiting: answered, not timed out", async () => {
    for (const [name, confirmable, timeoutMs, maxRetransmit] of [
      ["CON, request deadline", true, 100, 3],
      ["NON, request deadline", false, 100, 3],
      ["CON, retransmissions given up", true, 10_000, 0],
    ] as const) {
      const { raw, client, reply } = await clientAgainstRaw({ transmission: { ...FAST, maxRetransmit } });
      const answer = client.request({ method: "GET", path: ["late"], timeoutMs, confirmable });
      const req = await raw.next();
      // The answer goes into the client's socket buffer; then the process is busy past the deadline,
      // as in a long GC pause or a burst of other work.
      reply({
        type: confirmable ? "ACK" : "NON",
        code: Code.Content,
        messageId: confirmable ? req.messageId : 4242,
        token: req.token,
        options: [],
        payload: Buffer.from("in time"),
      });
      const until = Date.now() + 300;
      while (Date.now() < until) {
        /* busy */
      }
      assert.equal((await answer).payload.toString(), "in time", name);
    }
  });

  it("drops a stale notification (RFC 7641 section 3.4) and resets a notification for an unknown token", async () => {
    const { raw, client, reply } = await clientAgainstRaw();
    const seen: string[] = [];
    const obsP = client.observe({ method: "GET", path: ["s"] }, (r) => seen.push(r.payload.toString()));
    const req = await raw.next();
    const note = (seq: number, text: string, token = req.token, mid = seq & 0xffff) =>
      reply({ type: "NON", code: Code.Content, messageId: mid, token, options: [observeOption(seq)], payload: Buffer.from(text) });
    reply({
      type: "ACK",
      code: Code.Content,
      messageId: req.messageId,
      token: req.token,
      options: [observeOption(10)],
      payload: Buffer.from("first"),
    });
    const obs = await obsP;
    assert.equal(obs.first.payload.toString(), "first");
    note(12, "newer");
    await sleep(30);
    note(11, "stale");
    note(13, "newest");
    note(0x800000 + 20, "too far ahead is older"); // 2^23 away: counts as older
    await sleep(100);
    assert.deepEqual(seen, ["newer", "newest"]);
    note(14, "nobody", Buffer.from("0badc0de", "hex"), 777);
    const rst = await raw.next();
    assert.deepEqual([rst.type, rst.messageId], ["RST", 777]);
  });

  it("stops retransmitting a CON request once a separate response overtakes the lost empty ACK", async () => {
    const { raw, client, reply } = await clientAgainstRaw();
    const resP = client.request({ method: "GET", path: ["x"] });
    const req = await raw.next();
    reply({ type: "CON", code: Code.Content, messageId: 4242, token: req.token, options: [], payload: Buffer.from("separate") });
    const res = await resP;
    assert.equal(res.payload.toString(), "separate");
    const ack = await raw.next();
    assert.deepEqual([ack.type, ack.messageId], ["ACK", 4242]);
    // With ACK_TIMEOUT 100 ms a retransmission would come within 150 ms; none may.
    await assert.rejects(raw.next(600), /no datagram/);
  });

  it("rejects a Block2 transfer whose ETag changes between blocks", async () => {
    const { raw, client, reply } = await clientAgainstRaw();
    const resP = client.request({ method: "GET", path: ["all"] });
    const r0 = await raw.next();
    reply({
      type: "ACK",
      code: Code.Content,
      messageId: r0.messageId,
      token: r0.token,
      options: [
        { number: 4, value: Buffer.from([1]) },
        { number: 23, value: Buffer.from([0x0a]) },
      ],
      payload: Buffer.alloc(64, 1),
    });
    const r1 = await raw.next();
    assert.deepEqual(getBlock2(r1.options), { num: 1, more: false, szx: 2 });
    reply({
      type: "ACK",
      code: Code.Content,
      messageId: r1.messageId,
      token: r1.token,
      options: [
        { number: 4, value: Buffer.from([2]) },
        { number: 23, value: Buffer.from([0x12]) },
      ],
      payload: Buffer.alloc(10, 2),
    });
    await assert.rejects(resP, (e: unknown) => e instanceof CoapEndpointError && e.code === "BLOCK" && /ETag/.test(e.message));
  });

  it("bounds outstanding requests", async () => {
    const { client } = await clientAgainstRaw({ limits: { pendingRequests: 2 } });
    const a = client.request({ method: "GET", path: ["a"], timeoutMs: 5000 });
    const b = client.request({ method: "GET", path: ["b"], timeoutMs: 5000 });
    await assert.rejects(
      client.request({ method: "GET", path: ["c"] }),
      (e: unknown) => e instanceof CoapEndpointError && e.code === "LIMIT",
    );
    client.close();
    await assert.rejects(a, /closed/);
    await assert.rejects(b, /closed/);
  });
});

describe("CoAP endpoint: server-side rules", function () {
  this.timeout(10000);

  it("answers a repeated NON request whose answer was lost with the same answer; the handler runs once", async () => {
    let relay!: UdpRelay;
    // up: 0 ping, 1 PUT; down: 0 ping RST, 1 the first 2.01 (dropped)
    const { client, server } = await pair("udp", {}, {}, async (port) => {
      relay = await startLossyUdpRelay(port, (dir, _d, i) => dir === "down" && i === 1);
      cleanups.push(() => relay.close());
      return relay.port;
    });
    let calls = 0;
    server.onRequest((req) => {
      calls++;
      req.respond({ code: calls === 1 ? Code.Created : Code.Changed, payload: Buffer.from(`answer ${calls}`) });
    });
    const res = await client.request({
      method: "PUT",
      path: ["m"],
      payload: Buffer.from("p"),
      confirmable: false,
      repeatMs: 60,
      timeoutMs: 3000,
    });
    assert.deepEqual([res.code, res.payload.toString(), calls, relay.stats.droppedDown], [Code.Created, "answer 1", 1, 1]);
  });

  it("without replayNonAnswers (the ISP's /hb-only endpoint) a repeated NON request is answered afresh and nothing is kept", async () => {
    let relay!: UdpRelay;
    const { client, server } = await pair("udp", { replayNonAnswers: false }, {}, async (port) => {
      relay = await startLossyUdpRelay(port, (dir, _d, i) => dir === "down" && i === 1);
      cleanups.push(() => relay.close());
      return relay.port;
    });
    let calls = 0;
    server.onRequest((req) => {
      calls++;
      req.respond({ code: Code.Changed, payload: Buffer.from(`answer ${calls}`) });
    });
    const res = await client.request({
      method: "PUT",
      path: ["hb"],
      payload: Buffer.from("p"),
      confirmable: false,
      repeatMs: 60,
      timeoutMs: 3000,
    });
    assert.deepEqual([res.code, res.payload.toString(), calls, relay.stats.droppedDown], [Code.Changed, "answer 2", 2, 1]);
    assert.equal((server as unknown as { nonAnswers: Map<string, unknown> }).nonAnswers.size, 0, "no answer held for replay");
  });

  it("turns a throwing handler into 5.00 with a diagnostic and a handler-error event", async () => {
    for (const kind of ["udp", "tcp"] as const) {
      const { client, server } = await pair(kind);
      const errors: Error[] = [];
      server.on("handler-error", (e: Error) => errors.push(e));
      server.onRequest(async () => {
        throw new Error("database on fire");
      });
      const res = await client.request({ method: "GET", path: ["x"] });
      assert.equal(res.code, Code.InternalServerError, kind);
      assert.match(res.payload.toString(), /database on fire/);
      assert.equal(errors.length, 1);
    }
  });

  it("ends an observation on both sides with a non-2.xx notification, and caps observers", async () => {
    const { client, server } = await pair("udp", { limits: { observers: 1 } });
    const handles: ObserverHandle[] = [];
    server.onRequest((req) => {
      handles.push(req.acceptObserve());
      req.respond({ code: Code.Content, payload: Buffer.from("x") });
    });
    const seen: number[] = [];
    const first = await client.observe({ method: "GET", path: ["a"] }, (r) => seen.push(r.code));
    assert.ok(first.first.observe !== undefined);
    const second = await client.observe({ method: "GET", path: ["b"] }, () => undefined);
    assert.equal(second.first.observe, undefined, "second observer refused: plain response");
    assert.equal(handles[1].active, false);
    handles[0].notify({ code: Code.NotFound, payload: Buffer.from("gone") });
    assert.equal(handles[0].active, false);
    while (seen.length < 1) await sleep(10);
    assert.deepEqual(seen, [Code.NotFound]);
    handles[0].notify({ code: Code.Content, payload: Buffer.from("after end") });
    await sleep(100);
    assert.deepEqual(seen, [Code.NotFound]);
  });

  it("closes with ABORTED when the TCP peer sends Abort", async () => {
    const { client, server } = await pair("tcp");
    const aborts: unknown[] = [];
    client.on("peer-abort", (s: unknown) => aborts.push(s));
    const closed = once(client, "close");
    const pending = client.request({ method: "GET", path: ["x"], timeoutMs: 5000 });
    server.connection.send(encodeTcp({ code: Code.Abort, token: empty, options: [], payload: Buffer.from("shutting down") }));
    const [err] = (await closed) as [CoapEndpointError];
    assert.equal(err.code, "ABORTED");
    assert.match(err.message, /shutting down/);
    assert.deepEqual(aborts, [{ kind: "abort", diagnostic: "shutting down" }]);
    await assert.rejects(pending, (e: unknown) => e instanceof CoapEndpointError && e.code === "ABORTED");
  });
});

describe("CoAP endpoint: responses with unrecognized critical options", function () {
  this.timeout(5000);
  it("rejects the response (RST for a CON response) and fails the request with BAD_RESPONSE", async () => {
    const raw = await rawUdp();
    const port = (raw.socket.address() as { port: number }).port;
    const client = new CoapEndpoint(await connectPlainUdp(port), { transmission: FAST });
    cleanups.push(() => client.close());
    const resP = client.request({ method: "GET", path: ["x"] });
    const req = await raw.next();
    raw.socket.send(
      encodeUdp({ type: "ACK", code: 0, messageId: req.messageId, token: empty, options: [], payload: empty }),
      client.connection.localPort,
      "127.0.0.1",
    );
    raw.socket.send(
      encodeUdp({
        type: "CON",
        code: Code.Content,
        messageId: 99,
        token: req.token,
        options: [{ number: 2049, value: empty }],
        payload: empty,
      }),
      client.connection.localPort,
      "127.0.0.1",
    );
    await assert.rejects(resP, (e: unknown) => e instanceof CoapEndpointError && e.code === "BAD_RESPONSE" && /2049/.test(e.message));
    const rst = await raw.next();
    assert.deepEqual([rst.type, rst.messageId], ["RST", 99]);
  });
});

describe("CoAP endpoint: diagnostic payloads", () => {
  it("are cut to 512 bytes on a UTF-8 character boundary and marked", () => {
    assert.equal(diagnosticPayload("short").toString(), "short");
    const cut = diagnosticPayload("é".repeat(400));
    assert.ok(cut.length <= MAX_DIAGNOSTIC_BYTES);
    const text = cut.toString("utf8");
    assert.ok(text.endsWith("..."));
    assert.ok(!text.includes("\ufffd"), "no broken character");
    assert.equal(diagnosticPayload("x".repeat(512)).length, 512, "exactly the limit is kept whole");
  });
});

describe("CoAP endpoint: robustness", function () {
  this.timeout(20000);

  it("drops every observer (onCancel fires) when the connection closes", async () => {
    const { client, server } = await pair("tcp");
    let cancelled = 0;
    let handle: ObserverHandle | undefined;
    server.onRequest((req) => {
      handle = req.acceptObserve();
      handle.onCancel(() => cancelled++);
      req.respond({ code: Code.Content });
    });
    await client.observe({ method: "GET", path: ["o"] }, () => undefined);
    const closed = once(server, "close");
    client.close();
    await closed;
    assert.equal(cancelled, 1);
    assert.equal(handle?.active, false);
  });

  it("survives 5,000 mutated datagrams of every kind over a real socket and still serves", async () => {
    const errors: Error[] = [];
    let endpoint!: CoapEndpoint;
    const srv = await udpServer({ rateLimit: { requestsPerSecond: 1e6, burst: 1e6 } }, (ep) => {
      endpoint ??= ep;
      ep.on("protocol-error", (e: Error) => errors.push(e));
      ep.onRequest((req) => {
        if (req.observe === 0) req.acceptObserve();
        req.respond({ code: Code.Content, payload: Buffer.alloc(req.path.length * 700, 1) });
      });
    });
    const raw = await rawUdp();
    const seeds = [
      getMsg(1, "0102", ["a", "b"], "CON", [observeOption(0)]),
      getMsg(2, "03", ["x"], "NON", [{ number: 23, value: Buffer.from([0x16]) }]),
      encodeUdp({
        type: "ACK",
        code: Code.Content,
        messageId: 3,
        token: Buffer.from("05", "hex"),
        options: [observeOption(9)],
        payload: Buffer.from("hi"),
      }),
      encodeUdp({ type: "RST", code: 0, messageId: 4, token: empty, options: [], payload: empty }),
      encodeUdp({
        type: "CON",
        code: Code.PUT,
        messageId: 5,
        token: Buffer.from("0607", "hex"),
        options: [
          { number: 12, value: Buffer.from("010f", "hex") },
          { number: 2049, value: empty },
        ],
        payload: Buffer.alloc(40, 7),
      }),
    ];
    let state = 12345;
    const rnd = (n: number) => {
      state = (state * 1103515245 + 12345) & 0x7fffffff;
      return state % n;
    };
    for (let i = 0; i < 5000; i++) {
      const b = Buffer.from(seeds[rnd(seeds.length)]);
      for (let k = rnd(4); k >= 0; k--) b[rnd(b.length)] = rnd(256);
      raw.send(srv.port, b.subarray(0, rnd(5) === 0 ? rnd(b.length + 1) : b.length));
      if (i % 200 === 0) await sleep(1); // let the receive buffer drain
    }
    await sleep(300);
    assert.ok(errors.length > 100, `malformed ones reported: ${errors.length}`);
    assert.equal(endpoint.isClosed, false);
    assert.equal(srv.connections.size, 1, "all from one peer, one endpoint");
    // The same endpoint still answers a clean request from the same peer.
    raw.send(srv.port, getMsg(60000, "c1ea", ["ok"]));
    for (;;) {
      const m = await raw.next();
      if (m.token.toString("hex") !== "c1ea") continue;
      assert.deepEqual([m.type, m.code, m.payload.length], ["ACK", Code.Content, 700]);
      break;
    }
  });
});
