// Continuity on the ISP side: a listener that restarts (or a second listener the home moves to)
// learns the home's mitigations at session-up, observes them again and continues above their
// mids; with a state directory mids keep increasing even when the home holds nothing.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { encodeDotsCbor } from "../../src/cbor";
import type { DotsJson, RequestOutcome, SessionInfo, StatusNotification } from "../../src/dots/api";
import { CallHomeDialer } from "../../src/dots/home-engine";
import { CallHomeListener } from "../../src/dots/isp-engine";
import type { ResyncEvent } from "../../src/dots/isp-session";
import { makeTestPki, type TestPki } from "../support/certs";
import { dialerOptions, FAST_ISP, listenerOptions, waitFor, type Variant } from "./harness";

const MS = "ietf-dots-signal-channel:mitigation-scope";
const request = (target: string, lifetime = 600): DotsJson => ({
  [MS]: { scope: [{ "target-prefix": [target], "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"], lifetime }] },
});

interface Recorded {
  listener: CallHomeListener;
  resynced: ResyncEvent[];
  statuses: StatusNotification[];
  errors: Error[];
}

function record(listener: CallHomeListener): Recorded {
  const r: Recorded = { listener, resynced: [], statuses: [], errors: [] };
  listener.on("resynced", (e) => r.resynced.push(e));
  listener.on("status", (n) => r.statuses.push(n));
  listener.on("error", (e) => r.errors.push(e));
  return r;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const VARIANTS: Variant[] = [
  { name: "tls-psk", transport: "tcp" },
  { name: "dtls-psk", transport: "udp" },
];

describe("ISP resync: a restarted or second listener learns the home's mitigations", function () {
  this.timeout(40000);
  let pki: TestPki;
  const cleanup: Array<() => Promise<void> | void> = [];
  let dir: string;

  before(async () => {
    pki = await makeTestPki();
  });
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "isp-resync-"));
  });
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function listenerOn(v: Variant, port: number, stateDir?: string): Promise<Recorded> {
    const l = new CallHomeListener(listenerOptions(v, pki, { port, ...(stateDir ? { stateDir } : {}) }), FAST_ISP);
    const r = record(l);
    await l.start();
    cleanup.push(() => l.stop());
    return r;
  }

  async function dialerTo(v: Variant, port: number): Promise<CallHomeDialer> {
    const d = new CallHomeDialer({ ...dialerOptions(v, pki, port), tuning: { dtlsHandshakeTimeoutMs: 500, terminatingPeriodMs: 300 } });
    d.on("error", () => undefined);
    d.on("mitigation", (m) => {
      if (m.kind === "new") d.decide({ cuid: m.cuid, mid: m.mid, outcome: "enforced" });
    });
    cleanup.push(() => d.stop());
    return d;
  }

  for (const v of VARIANTS) {
    it(`${v.name}: after a restart, resyncs three mitigations without any command, observes them, and new requests and withdrawals work at once`, async () => {
      const a = await listenerOn(v, 0);
      const port = a.listener.port as number;
      const dialer = await dialerTo(v, port);
      const upA = waitFor<[SessionInfo]>(a.listener, "session-up", () => true, 10000);
      await dialer.start();
      const [sA] = await upA;
      assert.deepEqual(a.resynced[0]?.mitigations, [], "a fresh home holds nothing");

      const made: RequestOutcome[] = [];
      for (const t of ["198.51.100.1/32", "198.51.100.2/32", "198.51.100.3/32"]) made.push(await a.listener.mitigate(sA.id, request(t)));
      assert.deepEqual(
        made.map((m) => m.code),
        ["2.01", "2.01", "2.01"],
      );
      const mids = made.map((m) => m.mid as number);
      await until(
        () => mids.every((mid) => a.statuses.some((s) => s.mid === mid && s.status === "attack-successfully-mitigated")),
        10000,
        "status 2 for the three mids",
      );

      // The listener goes away (its memory with it); a new one takes the same port.
      await a.listener.stop();
      const b = await listenerOn(v, port);
      const [sB] = await waitFor<[SessionInfo]>(b.listener, "session-up", () => true, 20000);
      await until(() => b.resynced.length > 0, 5000, "resynced");
      const rs = b.resynced[0];
      assert.equal(rs.complete, true, rs.error);
      assert.equal(rs.home, sB.home);
      assert.deepEqual(
        rs.mitigations.map((m) => m.mid),
        mids,
      );
      assert.ok(
        rs.mitigations.every(
          (m) => m.status === "attack-successfully-mitigated" && typeof m.lifetime === "number" && m.lifetime > 0 && m.lifetime <= 600,
        ),
      );
      assert.deepEqual(
        rs.mitigations.map((m) => (m.scope["target-prefix"] as string[])[0]),
        ["198.51.100.1/32", "198.51.100.2/32", "198.51.100.3/32"],
      );
      // No command was sent: the status events come from the Observe registered again per mid.
      await until(
        () => mids.every((mid) => b.statuses.some((s) => s.mid === mid && s.status === "attack-successfully-mitigated")),
        10000,
        "status events for the old mids",
      );

      // A notification for a resynced mitigation: the home's decision changes.
      dialer.decide({ mid: mids[1], outcome: "failed" });
      await until(
        () => b.statuses.some((s) => s.mid === mids[1] && s.status === "attack-exceeded-capability"),
        10000,
        "notification for a resynced mid",
      );

      // Efficacy repeats the original parameters: the request rebuilt from the GET answer matches.
      const eff = await b.listener.efficacy(sB.id, mids[2], "under-attack");
      assert.equal(eff.code, "2.04", JSON.stringify(eff.body));

      // The first new request is accepted at once, above the old mids.
      const fresh = await b.listener.mitigate(sB.id, request("198.51.100.4/32"));
      assert.equal(fresh.code, "2.01", JSON.stringify(fresh.body));
      assert.ok((fresh.mid as number) > Math.max(...mids), `new mid ${fresh.mid} above ${mids}`);

      // An old mid is withdrawn through the usual command, and the home lets it go.
      const w = await b.listener.withdraw(sB.id, mids[0]);
      assert.equal(w.code, "2.02");
      await until(() => !dialer.mitigations().some((m) => m.mid === mids[0]), 10000, "the home ends the withdrawn mitigation");
      assert.ok(dialer.mitigations().some((m) => m.mid === mids[1]) && dialer.mitigations().some((m) => m.mid === fresh.mid));
    });
  }

  it("tls-psk: a home redirected to another listener is resynced there the same way (RFC 9066 redirect)", async () => {
    const v = VARIANTS[0];
    const a = await listenerOn(v, 0);
    const port = a.listener.port as number;
    const b = record(new CallHomeListener(listenerOptions(v, pki, { host: "127.0.0.2", port }), FAST_ISP));
    await b.listener.start();
    cleanup.push(() => b.listener.stop());
    const dialer = await dialerTo(v, port);
    const upA = waitFor<[SessionInfo]>(a.listener, "session-up", () => true, 10000);
    await dialer.start();
    const [s] = await upA;
    const made = [await a.listener.mitigate(s.id, request("198.51.100.1/32")), await a.listener.mitigate(s.id, request("198.51.100.2/32"))];
    assert.deepEqual(
      made.map((m) => m.code),
      ["2.01", "2.01"],
    );
    const arrived = waitFor<[SessionInfo]>(b.listener, "session-up", () => true, 15000);
    assert.equal((await a.listener.redirect(s.id, { altClient: "localhost", records: ["127.0.0.2"], ttl: 60 })).code, "2.01");
    const [sB] = await arrived;
    await until(() => b.resynced.length > 0, 5000, "resynced at the other listener");
    assert.deepEqual(
      b.resynced[0].mitigations.map((m) => m.mid),
      made.map((m) => m.mid),
    );
    await until(() => made.every((m) => b.statuses.some((x) => x.mid === m.mid)), 10000, "status events at the other listener");
    const fresh = await b.listener.mitigate(sB.id, request("198.51.100.3/32"));
    assert.equal(fresh.code, "2.01", JSON.stringify(fresh.body));
    assert.equal((await b.listener.withdraw(sB.id, made[0].mid as number)).code, "2.02");
  });

  it("dtls-psk: thirty mitigations come back through a Block2 GET answer larger than one datagram, each observed again", async () => {
    const v = VARIANTS[1];
    const a = await listenerOn(v, 0);
    const port = a.listener.port as number;
    const dialer = await dialerTo(v, port);
    const upA = waitFor<[SessionInfo]>(a.listener, "session-up", () => true, 10000);
    await dialer.start();
    const [s] = await upA;
    const mids: number[] = [];
    for (let i = 1; i <= 30; i++) {
      const r = await a.listener.mitigate(s.id, request(`198.51.100.${i}/32`), { observe: false });
      assert.equal(r.code, "2.01");
      mids.push(r.mid as number);
    }
    await until(
      () => dialer.mitigations().filter((m) => m.status === "attack-successfully-mitigated").length === 30,
      10000,
      "thirty enforced",
    );
    await a.listener.stop();
    const b = await listenerOn(v, port);
    await waitFor<[SessionInfo]>(b.listener, "session-up", () => true, 20000);
    await until(() => b.resynced.length > 0, 5000, "resynced");
    const rs = b.resynced[0];
    assert.equal(rs.complete, true, rs.error);
    assert.deepEqual(
      rs.mitigations.map((m) => m.mid),
      mids,
    );
    // The answer did not fit one DTLS datagram (1152 bytes): the CoAP layer fetched it in blocks.
    const size = encodeDotsCbor({ [MS]: { scope: rs.mitigations.map((m) => m.scope) } }).length;
    assert.ok(size > 1152, `GET answer of ${size} bytes`);
    await until(() => mids.every((mid) => b.statuses.some((x) => x.mid === mid)), 15000, "a status event per mid");
  });

  it("with a state directory, mids continue above the last one used even when nothing is active at the home", async () => {
    const v = VARIANTS[0];
    const a = await listenerOn(v, 0, dir);
    const port = a.listener.port as number;
    const dialer = await dialerTo(v, port);
    const upA = waitFor<[SessionInfo]>(a.listener, "session-up", () => true, 10000);
    await dialer.start();
    const [s] = await upA;
    const first = await a.listener.mitigate(s.id, request("198.51.100.1/32"));
    assert.equal(first.code, "2.01");
    const second = await a.listener.mitigate(s.id, request("198.51.100.2/32"));
    for (const m of [first, second]) assert.equal((await a.listener.withdraw(s.id, m.mid as number)).code, "2.02");
    await until(() => dialer.mitigations().length === 0, 10000, "the home holds nothing");

    // The mark on disk covers the mids used (a block of 64 reserved before the first left).
    const file = path.join(dir, "listener", `${s.id}.json`);
    const saved = JSON.parse(fs.readFileSync(file, "utf8")) as { home: string; mids: Record<string, number> };
    assert.equal(saved.home, s.home);
    assert.equal(saved.mids[first.cuid], (first.mid as number) + 63);
    assert.equal((fs.statSync(path.join(dir, "listener")).mode & 0o777).toString(8), "700");

    await a.listener.stop();
    const b = await listenerOn(v, port, dir);
    const [sB] = await waitFor<[SessionInfo]>(b.listener, "session-up", () => true, 20000);
    await until(() => b.resynced.length > 0, 5000, "resynced");
    assert.deepEqual(b.resynced[0].mitigations, [], "the home holds nothing: only the state file knows the mids");
    const next = await b.listener.mitigate(sB.id, request("198.51.100.3/32"));
    assert.equal(next.code, "2.01");
    assert.ok((next.mid as number) > (second.mid as number), `mid ${next.mid} after restart must exceed ${second.mid}`);
    assert.equal(b.errors.length, 0, b.errors.map((e) => e.message).join("; "));
  });
});
