// The engine registry on its own, with real listeners on loopback: an engine given up with
// removed=false waits for its node (grace period), is stopped once the flows have started without
// it or stop without a deploy, and fingerprints never carry a key in plain.
import { strict as assert } from "node:assert";
import * as dgram from "node:dgram";
import { EventEmitter } from "node:events";
import * as path from "node:path";
import { outRoot } from "./support";
import { CallHomeListener } from "../../src/dots/isp-engine";

type Registry = {
  graceMs: number;
  fingerprint(s: unknown): string;
  hook(events: EventEmitter): void;
  keys(): string[];
  acquire(
    spec: unknown,
    sink: (e: string, a: unknown[]) => void,
  ): { engine: CallHomeListener; started: Promise<void>; adopted: boolean; release(removed: boolean): Promise<void> };
};
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { engines } = require(path.join(outRoot, "nodes", "lib", "endpoint-registry.js")) as { engines: Registry };

const KEY = Buffer.from("00112233445566778899aabbccddeeff", "hex");
let n = 0;

function spec(key: string, fingerprint = "fp-" + key) {
  return {
    key,
    kind: "isp",
    fingerprint,
    port: 0,
    events: ["listening", "session-up", "session-down", "error"],
    create: () =>
      new CallHomeListener({ port: 0, host: "127.0.0.1", transports: { dtls: true, tls: false }, psk: [{ identity: "home-1", key: KEY }] }),
  };
}

/** True while the engine holds its UDP socket (we cannot bind its port). */
function running(e: CallHomeListener): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket("udp4");
    s.once("error", () => resolve(true));
    s.bind(e.port ?? 0, "127.0.0.1", () => s.close(() => resolve(false)));
  });
}

describe("endpoint engine registry", function () {
  this.timeout(20000);
  const events = new EventEmitter();
  before(() => engines.hook(events));
  afterEach(async () => {
    engines.graceMs = 10000;
    // Nothing of ours may stay running (orphans are stopped here; owned ones were released).
    events.emit("runtime-event", { id: "runtime-state", payload: { state: "stop" } });
    for (let i = 0; i < 50 && engines.keys().some((k) => k.startsWith("reg-")); i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(
      engines.keys().filter((k) => k.startsWith("reg-")),
      [],
    );
  });

  it("an engine released with removed=false is adopted by the same key and fingerprint, and keeps running", async () => {
    const key = `reg-${++n}`;
    const a = engines.acquire(spec(key), () => undefined);
    await a.started;
    assert.equal(await running(a.engine), true);
    await a.release(false);
    assert.equal(await running(a.engine), true, "kept through the gap");
    const b = engines.acquire(spec(key), () => undefined);
    assert.equal(b.adopted, true);
    assert.equal(b.engine, a.engine);
    events.emit("flows:started");
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(await running(b.engine), true, "an owned engine survives flows:started");
    await b.release(true);
    assert.equal(await running(b.engine), false);
    assert.ok(!engines.keys().includes(key));
  });

  it("an engine nobody adopts is stopped when the flows have started, or after the grace period", async () => {
    const a = engines.acquire(spec(`reg-${++n}`), () => undefined);
    await a.started;
    await a.release(false);
    events.emit("flows:started");
    for (let i = 0; i < 50 && (await running(a.engine)); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(await running(a.engine), false, "stopped once the new flows run without it");

    engines.graceMs = 100;
    const b = engines.acquire(spec(`reg-${++n}`), () => undefined);
    await b.started;
    await b.release(false);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(await running(b.engine), true, "still waiting within the grace period");
    for (let i = 0; i < 50 && (await running(b.engine)); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await running(b.engine), false, "stopped after the grace period");
  });

  it("a stop of the flows that is not a deploy stops orphans at once; a deploy's stop does not", async () => {
    const a = engines.acquire(spec(`reg-${++n}`), () => undefined);
    await a.started;
    await a.release(false);
    events.emit("runtime-event", { id: "runtime-state", payload: { state: "stop", deploy: true } });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(await running(a.engine), true, "a deploy is under way: the node may come back");
    events.emit("runtime-event", { id: "runtime-state", payload: { state: "stop" } });
    for (let i = 0; i < 50 && (await running(a.engine)); i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(await running(a.engine), false);
  });

  it("other settings under the same key: the old engine stops first, a new one starts", async () => {
    const key = `reg-${++n}`;
    const a = engines.acquire(spec(key, "one"), () => undefined);
    await a.started;
    await a.release(false);
    const b = engines.acquire(spec(key, "two"), () => undefined);
    await b.started;
    assert.equal(b.adopted, false);
    assert.notEqual(b.engine, a.engine);
    assert.equal(await running(a.engine), false);
    assert.equal(await running(b.engine), true);
    await b.release(true);
  });

  it("events while no node owns the engine are kept for the next owner", async () => {
    const key = `reg-${++n}`;
    const a = engines.acquire(spec(key), () => undefined);
    await a.started;
    await a.release(false);
    a.engine.emit("session-down", { id: "x" } as never, "test" as never);
    const got: string[] = [];
    const b = engines.acquire(spec(key), (e) => got.push(e));
    assert.deepEqual(got, ["session-down"]);
    await b.release(true);
  });

  it("fingerprints are keyed hashes: equal settings agree, a different key differs, no key bytes appear", () => {
    const f1 = engines.fingerprint({ psk: [{ identity: "home-1", key: KEY }], port: 4647 });
    const f2 = engines.fingerprint({ port: 4647, psk: [{ key: Buffer.from(KEY), identity: "home-1" }] });
    const f3 = engines.fingerprint({ psk: [{ identity: "home-1", key: Buffer.alloc(16) }], port: 4647 });
    assert.equal(f1, f2, "key order and buffer identity do not matter");
    assert.notEqual(f1, f3);
    assert.match(f1, /^[0-9a-f]{64}$/);
    assert.ok(!f1.includes(KEY.toString("hex")));
  });
});
