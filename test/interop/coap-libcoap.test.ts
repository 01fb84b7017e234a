// Interop with libcoap 4.3 (Debian libcoap3-bin, -notls tools) over NoSec coap:// and coap+tcp://:
// libcoap's client against our endpoint as server, and our endpoint as client against coap-server.
import { strict as assert } from "node:assert";
import { spawn, type ChildProcess } from "node:child_process";
import * as net from "node:net";
import { CoapEndpoint, type ObserverHandle } from "../../src/coap/endpoint";
import { Code, CONTENT_FORMAT_TEXT } from "../../src/coap/message";
import { connectPlainTcp, connectPlainUdp, listenPlainTcp, listenPlainUdp } from "../support/plain-connection";
import { hasCommand, requireOrSkip } from "../support/env";
import { freePort } from "../support/ports";

const CLIENT = "coap-client-notls";
const SERVER = "coap-server-notls";
const FAST = { ackTimeoutMs: 500, ackRandomFactor: 1.5, maxRetransmit: 3 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

function track(child: ChildProcess): void {
  cleanups.push(
    () =>
      new Promise<void>((done) => {
        if (child.exitCode !== null || child.signalCode !== null) return done();
        child.once("exit", () => done());
        child.kill("SIGKILL");
      }),
  );
}

/** Runs coap-client and resolves with its stdout once it exits. */
function coapClient(args: string[], timeoutMs = 15000): Promise<{ stdout: string; stderr: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(CLIENT, ["-B", String(Math.ceil(timeoutMs / 1000)), ...args], { stdio: ["ignore", "pipe", "pipe"] });
    track(child);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => reject(new Error(`${CLIENT} ${args.join(" ")} did not finish; stderr: ${stderr}`)), timeoutMs + 2000);
    child.once("error", reject);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code });
    });
  });
}

async function startCoapServer(extra: string[] = []): Promise<number> {
  const port = await freePort();
  const child = spawn(SERVER, ["-A", "127.0.0.1", "-p", String(port), "-v", "0", ...extra], { stdio: "ignore" });
  track(child);
  // Ready once its TCP listener accepts.
  for (let i = 0; i < 50; i++) {
    const up = await new Promise<boolean>((r) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        r(true);
      });
      s.once("error", () => r(false));
    });
    if (up) return port;
    await sleep(100);
  }
  throw new Error(`${SERVER} did not start`);
}

/** Our endpoint as server on both plain UDP and TCP, with a few resources. */
async function ourServer(): Promise<{ udpPort: number; tcpPort: number; puts: string[]; cancelled: string[] }> {
  const big = Buffer.from(Array.from({ length: 5000 }, (_, i) => String.fromCharCode(97 + (i % 26))).join(""));
  const puts: string[] = [];
  const cancelled: string[] = [];
  const setup = (ep: CoapEndpoint) => {
    cleanups.push(() => ep.close());
    ep.onRequest((req) => {
      const path = req.path.join("/");
      if (path === "hello" && req.method === "GET")
        return req.respond({ code: Code.Content, payload: Buffer.from("hello from dots"), contentFormat: CONTENT_FORMAT_TEXT });
      if (path === "store" && req.method === "PUT") {
        puts.push(`${req.contentFormat}:${req.payload.toString()}`);
        return req.respond({ code: Code.Changed, payload: Buffer.from(`stored ${req.payload.length} bytes`) });
      }
      if (path === "big") return req.respond({ code: Code.Content, payload: big, contentFormat: CONTENT_FORMAT_TEXT });
      if (path === "obs" && req.observe === 0) {
        const h: ObserverHandle = req.acceptObserve();
        h.onCancel(() => cancelled.push("obs"));
        req.respond({ code: Code.Content, payload: Buffer.from("v0") });
        let n = 0;
        const timer = setInterval(() => {
          if (!h.active || ++n > 3) return clearInterval(timer);
          h.notify({ code: Code.Content, payload: Buffer.from(`n${n}`) });
        }, 200);
        cleanups.push(() => clearInterval(timer));
        return;
      }
      req.respond({ code: Code.NotFound, payload: Buffer.from("no such resource"), contentFormat: CONTENT_FORMAT_TEXT });
    });
  };
  const udp = await listenPlainUdp();
  cleanups.push(() => udp.close());
  udp.on("connection", (c) => setup(new CoapEndpoint(c, { transmission: FAST })));
  const tcp = await listenPlainTcp();
  cleanups.push(() => tcp.close());
  tcp.on("connection", (c) => setup(new CoapEndpoint(c, { transmission: FAST })));
  return { udpPort: udp.port, tcpPort: tcp.port, puts, cancelled };
}

describe("interop: libcoap coap-client against our endpoint (server role)", function () {
  this.timeout(30000);
  before(function () {
    requireOrSkip(this, CLIENT, hasCommand(CLIENT));
  });

  it("GET and PUT with payload over coap:// and coap+tcp://", async () => {
    const s = await ourServer();
    for (const uri of [`coap://127.0.0.1:${s.udpPort}`, `coap+tcp://127.0.0.1:${s.tcpPort}`]) {
      const get = await coapClient(["-m", "get", `${uri}/hello`]);
      assert.equal(get.stdout.trim(), "hello from dots", uri);
      const put = await coapClient(["-m", "put", "-t", "0", "-e", "mitigate-me", `${uri}/store`]);
      assert.equal(put.stdout.trim(), "stored 11 bytes", uri);
      const missing = await coapClient(["-m", "get", `${uri}/nothing`]);
      // libcoap reports error responses on stderr as "4.04 Not Found".
      assert.match(missing.stdout + missing.stderr, /4\.04/, uri);
    }
    assert.deepEqual(s.puts, ["0:mitigate-me", "0:mitigate-me"]);
  });

  it("observe with -s over coap:// and coap+tcp://: first response and notifications arrive; the observation ends", async () => {
    const s = await ourServer();
    for (const uri of [`coap://127.0.0.1:${s.udpPort}/obs`, `coap+tcp://127.0.0.1:${s.tcpPort}/obs`]) {
      const before = s.cancelled.length;
      const out = await coapClient(["-w", "-s", "2", uri]);
      assert.deepEqual(out.stdout.split("\n").filter(Boolean), ["v0", "n1", "n2", "n3"], uri);
      await sleep(200);
      // libcoap deregisters (UDP) or closes the connection (TCP); either way our observer ends.
      assert.equal(s.cancelled.length, before + 1, uri);
    }
  });

  it("block-wise fetch of a 5000-byte resource over coap:// (Block2 1024) and coap+tcp:// with -X 1200", async () => {
    const s = await ourServer();
    const expected = Array.from({ length: 5000 }, (_, i) => String.fromCharCode(97 + (i % 26))).join("");
    // libcoap ends a block-wise body with a newline of its own.
    const same = (out: string) => out.replace(/\n$/, "") === expected;
    const udp = await coapClient([`coap://127.0.0.1:${s.udpPort}/big`]);
    assert.ok(same(udp.stdout), `UDP: got ${udp.stdout.length} chars`);
    const small = await coapClient(["-b", "256", `coap://127.0.0.1:${s.udpPort}/big`]);
    assert.ok(same(small.stdout), `client-chosen 256-byte blocks: got ${small.stdout.length} chars`);
    const tcp = await coapClient(["-X", "1200", `coap+tcp://127.0.0.1:${s.tcpPort}/big`]);
    assert.ok(same(tcp.stdout), `TCP: got ${tcp.stdout.length} chars`);
  });
});

describe("interop: our endpoint (client role) against libcoap coap-server", function () {
  this.timeout(30000);
  before(function () {
    requireOrSkip(this, SERVER, hasCommand(SERVER));
  });

  it("GET /time and ping over coap:// and coap+tcp://", async () => {
    const port = await startCoapServer();
    for (const connect of [connectPlainUdp, connectPlainTcp]) {
      const conn = await connect(port);
      const ep = new CoapEndpoint(conn, { transmission: FAST });
      cleanups.push(() => ep.close());
      const res = await ep.request({ method: "GET", path: ["time"] });
      assert.equal(res.code, Code.Content, conn.transport);
      assert.match(res.payload.toString(), /^[A-Z][a-z]{2} +\d+ \d\d:\d\d:\d\d/, conn.transport);
      assert.ok((await ep.ping()) >= 0);
    }
  });

  it("observes /time over coap:// and coap+tcp:// and cancels", async () => {
    const port = await startCoapServer();
    for (const connect of [connectPlainUdp, connectPlainTcp]) {
      const conn = await connect(port);
      const ep = new CoapEndpoint(conn, { transmission: FAST });
      cleanups.push(() => ep.close());
      const notes: string[] = [];
      const obs = await ep.observe({ method: "GET", path: ["time"] }, (r) => notes.push(r.payload.toString()));
      assert.equal(obs.first.code, Code.Content);
      assert.ok(obs.first.observe !== undefined, "registered");
      const deadline = Date.now() + 5000;
      while (notes.length < 1 && Date.now() < deadline) await sleep(50);
      assert.ok(notes.length >= 1, `${conn.transport}: a notification within 5 s`);
      await obs.cancel();
      const after = notes.length;
      await sleep(1500);
      assert.equal(notes.length, after, `${conn.transport}: no notifications after cancel`);
    }
  });

  it("reassembles libcoap's Block2 answer for a 4000-byte resource created over coap+tcp://", async () => {
    const port = await startCoapServer(["-d", "4"]);
    const body = Buffer.from(Array.from({ length: 4000 }, (_, i) => String.fromCharCode(65 + (i % 26))).join(""));
    const tcp = new CoapEndpoint(await connectPlainTcp(port), { transmission: FAST });
    cleanups.push(() => tcp.close());
    // Wait for libcoap's CSM so we know its Max-Message-Size before a 4 KB PUT.
    while (tcp.peerMaxMessageSizeBytes === 1152) await sleep(10);
    const put = await tcp.request({ method: "PUT", path: ["big"], payload: body, contentFormat: 0 });
    assert.equal(put.code >> 5, 2, `PUT answered ${put.code}`);
    const udp = new CoapEndpoint(await connectPlainUdp(port), { transmission: FAST });
    cleanups.push(() => udp.close());
    const res = await udp.request({ method: "GET", path: ["big"] });
    assert.equal(res.code, Code.Content);
    assert.ok(res.payload.equals(body), `got ${res.payload.length} bytes`);
  });
});
