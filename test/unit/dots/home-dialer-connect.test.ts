import { strict as assert } from "node:assert";
import { EventEmitter } from "node:events";
import {
  Candidate,
  HappyEyeballsError,
  ReconnectPacer,
  TransportCache,
  happyEyeballs,
  resolveCandidates,
  transportsFor,
} from "../../../src/dots/dialer-connect";
import type { Connection } from "../../../src/transport/connection";

// A stand-in connection: happy eyeballs only needs close(); real sockets are in home-engine.test.
class StubConnection extends EventEmitter {
  closed = false;
  constructor(readonly name: string) {
    super();
  }
  close() {
    this.closed = true;
  }
}
const conn = (name: string) => new StubConnection(name) as unknown as Connection & StubConnection;
const c = (transport: "dtls" | "tls", address: string): Candidate => ({
  transport,
  address,
  family: address.includes(":") ? 6 : 4,
  host: address,
});

describe("dots/dialer-connect", () => {
  it("orders candidates UDP/IPv6, UDP/IPv4, TCP/IPv6, TCP/IPv4 and resolves names with all addresses", async () => {
    const lookup = async (h: string) =>
      h === "isp.example"
        ? [
            { address: "192.0.2.1", family: 4 },
            { address: "2001:db8::1", family: 6 },
          ]
        : [];
    const list = await resolveCandidates(["isp.example", "127.0.0.1"], ["dtls", "tls"], lookup);
    assert.deepEqual(
      list.map((x) => `${x.transport}/${x.address}`),
      ["dtls/2001:db8::1", "dtls/192.0.2.1", "dtls/127.0.0.1", "tls/2001:db8::1", "tls/192.0.2.1", "tls/127.0.0.1"],
    );
    assert.equal(list[0].host, "isp.example", "the name stays for SNI and certificate checks");
    await assert.rejects(
      resolveCandidates(["nowhere.example"], ["tls"], async () => {
        throw new Error("ENOTFOUND");
      }),
      /ENOTFOUND/,
    );
  });

  it("transport choice: auto uses DTLS only with PSK", () => {
    assert.deepEqual(transportsFor("auto", true), ["dtls", "tls"]);
    assert.deepEqual(transportsFor("auto", false), ["tls"]);
    assert.deepEqual(transportsFor("udp", true), ["dtls"]);
    assert.deepEqual(transportsFor("tcp", true), ["tls"]);
  });

  it("the first success wins even if it started later; the slower attempt is aborted and a late success closed", async () => {
    const late = conn("udp");
    let aborted = false;
    const won = await happyEyeballs(
      [c("dtls", "::1"), c("tls", "::1")],
      (cand, signal) => {
        if (cand.transport === "dtls") {
          signal.addEventListener("abort", () => (aborted = true));
          return new Promise((res) => setTimeout(() => res(late), 80));
        }
        return Promise.resolve(conn("tcp"));
      },
      { attemptDelayMs: 10 },
    );
    assert.equal((won.connection as any).name, "tcp");
    assert.equal(aborted, true);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(late.closed, true);
  });

  it("a failed attempt starts the next one at once; all failing gives every reason", async () => {
    const started: string[] = [];
    await assert.rejects(
      happyEyeballs(
        [c("dtls", "127.0.0.1"), c("tls", "127.0.0.1")],
        async (cand) => {
          started.push(cand.transport);
          throw new Error(`${cand.transport} refused`);
        },
        { attemptDelayMs: 60_000 },
      ),
      (e: unknown) => e instanceof HappyEyeballsError && e.failures.length === 2 && /dtls refused.*tls refused/.test(e.message),
    );
    assert.deepEqual(started, ["dtls", "tls"]);
  });

  it("an outer abort rejects the race", async () => {
    const ac = new AbortController();
    const p = happyEyeballs([c("tls", "127.0.0.1")], () => new Promise(() => undefined), { signal: ac.signal });
    ac.abort();
    await assert.rejects(p, /aborted/);
  });

  it("caches the winning transport and tries it first until the cache expires", () => {
    let now = 0;
    const cache = new TransportCache(600_000, () => now);
    const list = [c("dtls", "127.0.0.1"), c("tls", "127.0.0.1")];
    assert.deepEqual(
      cache.order("k", list).map((x) => x.transport),
      ["dtls", "tls"],
    );
    cache.remember("k", "dtls");
    assert.deepEqual(
      cache.order("k", list).map((x) => x.transport),
      ["dtls", "tls"],
    );
    now = 600_001;
    assert.equal(cache.preferred("k"), undefined);
  });

  it("a TLS winner stays first for 24 h: UDP is not re-probed sooner, and never sooner than 5 min", () => {
    let now = 0;
    const cache = new TransportCache(600_000, () => now);
    const list = [c("dtls", "127.0.0.1"), c("tls", "127.0.0.1")];
    cache.remember("k", "tls");
    now = 600_001;
    assert.deepEqual(
      cache.order("k", list).map((x) => x.transport),
      ["tls", "dtls"],
      "still TLS after the 10-min cache",
    );
    now = 24 * 3600_000 - 1;
    assert.equal(cache.preferred("k"), "tls");
    now = 24 * 3600_000;
    assert.equal(cache.preferred("k"), undefined, "UDP first again after 24 h");
    // A configured re-probe below the 5-min MUST is clamped to 5 min.
    now = 0;
    const eager = new TransportCache(600_000, () => now, 1000);
    eager.remember("k", "tls");
    now = 299_999;
    assert.equal(eager.preferred("k"), "tls");
    now = 300_000;
    assert.equal(eager.preferred("k"), undefined);
  });

  it("reconnect pacing: attempts at least minMs apart, doubling on failures up to maxMs", () => {
    let now = 1_000_000;
    const p = new ReconnectPacer({ minMs: 60_000, maxMs: 300_000 }, () => now);
    p.attempted();
    p.failed();
    assert.equal(p.delayMs(), 60_000);
    const spacing: number[] = [];
    for (let i = 0; i < 5; i++) {
      now += p.delayMs();
      p.attempted();
      p.failed();
      spacing.push(p.delayMs());
    }
    assert.deepEqual(spacing, [120_000, 240_000, 300_000, 300_000, 300_000]);
    p.succeeded();
    now += 10_000;
    assert.equal(p.delayMs(), 50_000, "a session that lasted 10 s waits out the 60 s minimum");
    now += 100_000;
    assert.equal(p.delayMs(), 0);
    assert.throws(() => new ReconnectPacer({ minMs: 10, maxMs: 5 }), RangeError);
  });
});
