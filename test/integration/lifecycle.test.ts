// The whole Call Home lifecycle between a real ISP listener and a real home dialer over loopback
// DTLS-PSK, TLS with certificates and TLS-PSK (RFC 9066 over RFC 9132).
import { strict as assert } from "node:assert";
import type { DotsJson, MitigationEnded, MitigationEvent, RequestOutcome, SessionInfo, StatusNotification } from "../../src/dots/api";
import { Encoder } from "cbor-x";
import { IspRequestError, mitigatePath } from "../../src/dots/isp-session";
import { CallHomeListener } from "../../src/dots/isp-engine";
import { FAST_ISP, HOME_PREFIX, VARIANTS, delay, listenerOptions, startPair, waitFor, type Pair } from "./harness";

const MS = "ietf-dots-signal-channel:mitigation-scope";

function request(scope: Record<string, unknown> = {}): DotsJson {
  return {
    [MS]: {
      scope: [
        {
          "target-prefix": ["198.51.100.7/32"],
          "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"],
          "ietf-dots-call-home:source-port-range": [{ "lower-port": 40000, "upper-port": 40010 }],
          "target-protocol": [6],
          lifetime: 3600,
          ...scope,
        },
      ],
    },
  };
}

/** A mitigation request in raw CBOR with integer keys, bypassing our encoder's schema checks. */
function rawCbor(scope: Map<number, unknown>): Buffer {
  return Buffer.from(
    new Encoder({ useRecords: false, mapsAsObjects: false }).encode(
      new Map<number, unknown>([[1, new Map<number, unknown>([[2, [scope]]])]]),
    ),
  );
}

function scopeEntry(o: RequestOutcome): Record<string, unknown> {
  const body = o.body as Record<string, { scope: Array<Record<string, unknown>> }>;
  assert.ok(typeof body === "object" && body[MS], `expected a mitigation-scope body, got ${JSON.stringify(o.body)}`);
  return body[MS].scope[0];
}

function conflictCause(o: RequestOutcome): unknown {
  return (scopeEntry(o)["conflict-information"] as Record<string, unknown> | undefined)?.["conflict-cause"];
}

for (const v of VARIANTS) {
  describe(`call-home lifecycle over ${v.name}`, function () {
    this.timeout(30000);
    let pair: Pair | undefined;
    const sid = (): string => (pair as Pair).session.id;

    afterEach(async () => {
      await pair?.close();
      pair = undefined;
    });

    it("comes up with the home's authenticated identity and the configuration it served (R2, R5, R42)", async () => {
      pair = await startPair(v);
      const s = pair.session;
      assert.equal(s.transport, v.transport === "udp" ? "dtls" : "tls");
      assert.equal(s.peer.method, v.name === "tls-cert" ? "certificate" : "psk");
      assert.equal(s.home, v.name === "tls-cert" ? "home-1.example" : "home-1");
      const cfg = s.config as Record<string, Record<string, Record<string, Record<string, number>>>>;
      assert.equal(cfg["ietf-dots-signal-channel:signal-config"]["idle-config"]["heartbeat-interval"]["current-value"], 1);
      assert.deepEqual(pair.listener.findSession("home-1.example") ?? pair.listener.findSession("home-1"), s);
      assert.equal(pair.listener.sessions().length, 1);
      assert.equal(pair.listener.sessionCount(), 1, "the count status displays use agrees with the list");
    });

    it("exchanges heartbeats in both directions, answering the home's with 2.04 (R45)", async () => {
      pair = await startPair(v);
      const listener = pair.listener;
      await Promise.all([
        waitFor(listener, "heartbeat", (h: { direction: string }) => h.direction === "in", 4000),
        waitFor(listener, "heartbeat", (h: { direction: string }) => h.direction === "out", 4000),
      ]);
      // After a round both ways, each side reports the other's heartbeats as arriving.
      await waitFor(
        listener,
        "heartbeat",
        (h: { direction: string; peerHbStatus: boolean }) => h.direction === "in" && h.peerHbStatus,
        5000,
      );
      await waitFor(
        listener,
        "heartbeat",
        (h: { direction: string; peerHbStatus: boolean }) => h.direction === "out" && h.peerHbStatus,
        5000,
      );
      assert.equal(pair.listener.sessions().length, 1);
    });

    it("PUT -> decision -> 2.01 status 2; refresh 2.04; GET 2.05; efficacy 2.04 (R21, R31, R34, R37, R40)", async () => {
      pair = await startPair(v);
      const { listener, dialer } = pair;
      const seen = waitFor<[MitigationEvent]>(dialer, "mitigation", (m) => m.kind === "new");
      dialer.on("mitigation", (m: MitigationEvent) => {
        if (m.kind === "new") dialer.decide({ cuid: m.cuid, mid: m.mid, outcome: "enforced" });
      });
      const created = await listener.mitigate(sid(), request());
      const [event] = await seen;
      assert.equal(created.code, "2.01");
      assert.equal(event.mid, created.mid);
      assert.equal(event.cuid, created.cuid);
      assert.deepEqual((event.scope as Record<string, unknown>)["ietf-dots-call-home:source-prefix"], ["203.0.113.9/32"]);
      assert.equal(scopeEntry(created).status, "attack-successfully-mitigated");
      assert.equal(scopeEntry(created).lifetime, 3600);

      const refreshed = await listener.mitigate(sid(), request(), { mid: created.mid });
      assert.equal(refreshed.code, "2.04");

      const got = await listener.get(sid(), created.mid);
      assert.equal(got.code, "2.05");
      assert.equal(scopeEntry(got).mid, created.mid);
      const all = await listener.get(sid());
      assert.equal(all.code, "2.05");

      const efficacySeen = waitFor<[MitigationEvent]>(dialer, "mitigation", (m) => m.kind === "efficacy");
      const eff = await listener.efficacy(sid(), created.mid as number, "under-attack");
      assert.equal(eff.code, "2.04");
      await efficacySeen;
    });

    it("observes status: 2.01 status 1 while consent is pending, then a notification with status 2 (R33, R38, R39)", async () => {
      pair = await startPair(v, { dialer: { decisionWaitMs: 50 } });
      const { listener, dialer } = pair;
      const pending = waitFor<[MitigationEvent]>(dialer, "mitigation", (m) => m.kind === "new");
      const created = await listener.mitigate(sid(), request());
      assert.equal(created.code, "2.01");
      assert.equal(scopeEntry(created).status, "attack-mitigation-in-progress");
      const [m] = await pending;
      const notified = waitFor<[StatusNotification]>(
        listener,
        "status",
        (n) => n.mid === created.mid && n.status === "attack-successfully-mitigated",
      );
      dialer.decide({ cuid: m.cuid, mid: m.mid, outcome: "enforced" });
      const [n] = await notified;
      assert.equal(n.sessionId, sid());
      assert.equal(n.cuid, created.cuid);
    });

    it("notifies conflict-cause 4 when traffic is judged legitimate after the 2.01 (R34)", async () => {
      pair = await startPair(v, { dialer: { decisionWaitMs: 50 } });
      const { listener, dialer } = pair;
      const pending = waitFor<[MitigationEvent]>(dialer, "mitigation", (m) => m.kind === "new");
      const created = await listener.mitigate(sid(), request());
      assert.equal(created.code, "2.01");
      const [m] = await pending;
      const notified = waitFor<[StatusNotification]>(
        listener,
        "status",
        (n) => n.mid === created.mid && n.conflictCause === "request-rejected-legitimate-traffic",
      );
      dialer.decide({ cuid: m.cuid, mid: m.mid, outcome: "legitimate" });
      await notified;
    });

    it("DELETE -> 2.02, status 5 while terminating, then gone (R41)", async () => {
      pair = await startPair(v, { autoDecide: "enforced", home: { terminatingPeriodMs: 400 } });
      const { listener, dialer } = pair;
      const created = await listener.mitigate(sid(), request());
      assert.equal(created.code, "2.01");
      const terminating = waitFor<[StatusNotification]>(
        listener,
        "status",
        (n) => n.mid === created.mid && n.status === "dots-client-withdrawn-mitigation",
      );
      const ended = waitFor<[MitigationEnded]>(dialer, "ended", (e) => e.mid === created.mid, 5000);
      const del = await listener.withdraw(sid(), created.mid as number);
      assert.equal(del.code, "2.02");
      assert.equal(del.body, undefined);
      await terminating;
      const [e] = await ended;
      assert.equal(e.reason, "withdrawn");
      const after = await listener.get(sid(), created.mid);
      assert.equal(after.code, "4.04");
      // DELETE of an unknown mid still answers 2.02.
      assert.equal((await listener.withdraw(sid(), 999_999)).code, "2.02");
    });

    it("expires a mitigation whose lifetime runs out without refresh (R31)", async () => {
      pair = await startPair(v, { autoDecide: "enforced" });
      const { listener, dialer } = pair;
      const ended = waitFor<[MitigationEnded]>(dialer, "ended", (e) => e.reason === "expired", 6000);
      const created = await listener.mitigate(sid(), request({ lifetime: 1 }));
      assert.equal(created.code, "2.01");
      assert.equal(scopeEntry(created).lifetime, 1);
      await ended;
      assert.equal((await listener.get(sid(), created.mid)).code, "4.04");
    });

    it("answers an overlapping request with a lower mid 4.09 overlapping-targets (R32)", async () => {
      pair = await startPair(v, { autoDecide: "enforced" });
      const { listener } = pair;
      const high = await listener.mitigate(sid(), request(), { mid: 100 });
      assert.equal(high.code, "2.01");
      const low = await listener.mitigate(sid(), request(), { mid: 50 });
      assert.equal(low.code, "4.09");
      assert.equal(conflictCause(low), "overlapping-targets");
    });

    it("answers traffic judged legitimate with 4.09 request-rejected-legitimate-traffic (R34)", async () => {
      pair = await startPair(v, { autoDecide: "legitimate" });
      const res = await pair.listener.mitigate(sid(), request());
      assert.equal(res.code, "4.09");
      assert.equal(conflictCause(res), "request-rejected-legitimate-traffic");
    });

    it("issue 12 #5: the home's 4.09 legitimate-traffic carries retry-timer and our ISP holds the resend back (R39 pair)", async () => {
      pair = await startPair(v, { autoDecide: "legitimate" });
      const decided: MitigationEvent[] = [];
      pair.dialer.on("mitigation", (m: MitigationEvent) => decided.push(m));
      const res = await pair.listener.mitigate(sid(), request());
      assert.equal(res.code, "4.09");
      const body = res.body as Record<string, { scope: Array<Record<string, Record<string, unknown>>> }>;
      const ci = body[MS].scope[0]["conflict-information"];
      assert.deepEqual(Object.keys(ci).sort(), ["conflict-cause", "retry-timer"]);
      assert.ok(Number(ci["retry-timer"]) > 0, JSON.stringify(ci));
      await assert.rejects(
        pair.listener.mitigate(sid(), request()),
        (e: unknown) => e instanceof IspRequestError && e.code === "RETRY_TIMER",
      );
      assert.equal(decided.length, 1, "the held-back resend never reached the home");
    });

    it("gets 4.00 naming the field for each invalid request (R24, R25, R28, R29, R30, R16)", async () => {
      pair = await startPair(v, { autoDecide: "enforced" });
      const session = pair.listener.session(sid());
      const cases: Array<[string, DotsJson | Buffer, RegExp]> = [
        ["lifetime 0", request({ lifetime: 0 }), /lifetime/],
        ["trigger-mitigation false", request({ "trigger-mitigation": false }), /trigger-mitigation/],
        ["no source-prefix", { [MS]: { scope: [{ "target-prefix": ["198.51.100.7/32"], lifetime: 60 }] } }, /source-prefix/],
        ["source outside the home", request({ "ietf-dots-call-home:source-prefix": ["192.0.2.1/32"] }), /source-prefix/],
        ["loopback source", request({ "ietf-dots-call-home:source-prefix": ["127.0.0.1/32"] }), /source-prefix/],
        [
          "no target-prefix",
          { [MS]: { scope: [{ "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"], lifetime: 60 }] } },
          /target-prefix/,
        ],
        [
          "two scopes",
          { [MS]: { scope: [(request()[MS] as { scope: unknown[] }).scope[0], (request()[MS] as { scope: unknown[] }).scope[0]] } },
          /scope/,
        ],
        // Unknown comprehension-required key 127 inside the scope, sent as raw CBOR.
        [
          "unknown required key",
          rawCbor(
            new Map<number, unknown>([
              [6, ["198.51.100.7/32"]],
              [32768, ["203.0.113.9/32"]],
              [14, 60],
              [127, 1],
            ]),
          ),
          /127/,
        ],
      ];
      let mid = 1000;
      for (const [name, body, field] of cases) {
        const res = await session.mitigateRaw(mid++, body);
        assert.equal(res.code, "4.00", `${name}: expected 4.00, got ${res.code} ${JSON.stringify(res.body)}`);
        assert.equal(typeof res.body, "string", `${name}: diagnostic payload`);
        assert.match(res.body as string, field, `${name}: diagnostic names the field`);
      }
      // Uri-Path errors: no mid, empty cuid.
      const noMid = await session.mitigateRaw(2000, request(), { path: mitigatePath(session.cuid) });
      assert.equal(noMid.code, "4.00");
      const emptyCuid = await session.mitigateRaw(2001, request(), { path: [".well-known", "dots", "mitigate", "cuid=", "mid=2001"] });
      assert.equal(emptyCuid.code, "4.00");
    });

    it("refuses to send what the ISP-side validation rejects, and names sessions that are gone (R24, R25)", async () => {
      pair = await startPair(v, { autoDecide: "enforced" });
      const { listener } = pair;
      await assert.rejects(
        listener.mitigate(sid(), request({ "ietf-dots-call-home:source-prefix": ["192.0.2.1/32"] })),
        (e: unknown) => e instanceof IspRequestError && e.code === "INVALID_REQUEST",
      );
      await assert.rejects(
        listener.mitigate(sid(), request({ "trigger-mitigation": false })),
        (e: unknown) => e instanceof IspRequestError && e.code === "INVALID_REQUEST",
      );
      await assert.rejects(
        listener.mitigate("no-such-home", request()),
        (e: unknown) => e instanceof IspRequestError && e.code === "UNKNOWN_SESSION",
      );
      const down = waitFor<[SessionInfo, string]>(listener, "session-down");
      await pair.dialer.stop();
      await down;
      await assert.rejects(
        listener.mitigate(pair.session.home, request()),
        (e: unknown) => e instanceof IspRequestError && e.code === "SESSION_DOWN",
      );
    });

    it("survives the loss of the ISP side: the dialer reconnects and home mitigations keep their lifetimes (R49)", async () => {
      // missing-hb-allowed 3 x 1 s: over DTLS the home may only notice the loss by silence.
      pair = await startPair(v, {
        autoDecide: "enforced",
        home: { idleConfig: { missingHbAllowed: 3 }, mitigatingConfig: { missingHbAllowed: 3 } },
      });
      const { dialer, pki } = pair;
      const created = await pair.listener.mitigate(sid(), request({ lifetime: 600 }));
      assert.equal(created.code, "2.01");
      const port = pair.port;
      await pair.listener.stop();
      await waitFor(dialer, "disconnected", () => true, 10000);
      // A new ISP process on the same port.
      const again = new CallHomeListener(listenerOptions(v, pki, { port }), FAST_ISP);
      again.on("error", () => undefined);
      const up = waitFor<[SessionInfo]>(again, "session-up", () => true, 10000);
      await again.start();
      pair.listener = again;
      const [s] = await up;
      assert.equal(s.id, pair.session.id, "same identity, same session id");
      const kept = dialer.mitigations().find((m) => m.mid === created.mid);
      assert.ok(kept, "the home still holds the mitigation");
      assert.ok(kept.lifetime > 590 && kept.lifetime <= 600, `remaining lifetime ${kept.lifetime}`);
      const got = await again.get(s.id, created.mid);
      assert.equal(got.code, "2.05");
    });

    it("replaces the session when the same identity connects again", async () => {
      pair = await startPair(v, { autoDecide: "enforced" });
      const { listener, pki } = pair;
      const { CallHomeDialer } = await import("../../src/dots/home-engine");
      const { dialerOptions } = await import("./harness");
      const down = waitFor<[SessionInfo, string]>(listener, "session-down", (_s, reason) => /replaced/.test(reason));
      const up = waitFor<[SessionInfo]>(listener, "session-up", (s) => s.remotePort !== pair?.session.remotePort);
      const second = new CallHomeDialer(dialerOptions(v, pki, pair.port, { reconnect: { minMs: 60000, maxMs: 60000 } }));
      second.on("error", () => undefined);
      try {
        await second.start();
        const [[, reason], [s]] = await Promise.all([down, up]);
        assert.match(reason, /replaced/);
        assert.equal(s.id, pair.session.id);
        assert.equal(listener.sessions().length, 1);
      } finally {
        await second.stop();
      }
    });
  });
}

describe("call-home: several homes, pending requests on a lost session", function () {
  this.timeout(30000);

  it("serves two homes at once, each addressed by name, with their own mids (R58)", async () => {
    const v = VARIANTS[0];
    const pair = await startPair(v, {
      autoDecide: "enforced",
      listener: {
        psk: [
          { identity: "home-1", key: Buffer.from("secretPSK-0123456789"), home: "home-1" },
          { identity: "home-2", key: Buffer.from("second-home-key"), home: "home-2" },
        ],
        homePrefixes: { "home-1": [HOME_PREFIX], "home-2": ["198.51.100.0/24"] },
      },
    });
    const { CallHomeDialer } = await import("../../src/dots/home-engine");
    const { dialerOptions } = await import("./harness");
    const second = new CallHomeDialer({
      ...dialerOptions(v, pair.pki, pair.port, {
        psk: { identity: "home-2", key: Buffer.from("second-home-key") },
        homePrefixes: ["198.51.100.0/24"],
      }),
      tuning: { dtlsHandshakeTimeoutMs: 500 },
    });
    second.on("error", () => undefined);
    second.on("mitigation", (m: MitigationEvent) => m.kind === "new" && second.decide({ cuid: m.cuid, mid: m.mid, outcome: "enforced" }));
    try {
      const up = waitFor<[SessionInfo]>(pair.listener, "session-up", (s) => s.home === "home-2");
      await second.start();
      const [s2] = await up;
      assert.notEqual(s2.id, pair.session.id);
      assert.deepEqual(
        pair.listener
          .sessions()
          .map((s) => s.home)
          .sort(),
        ["home-1", "home-2"],
      );
      const a = await pair.listener.mitigate("home-1", request());
      const b = await pair.listener.mitigate(
        "home-2",
        request({ "ietf-dots-call-home:source-prefix": ["198.51.100.9/32"], "target-prefix": ["192.0.2.7/32"] }),
      );
      assert.equal(a.code, "2.01");
      assert.equal(b.code, "2.01");
      assert.notEqual(a.cuid, b.cuid, "cuid per home identity under PSK");
      // home-1's prefixes do not cover home-2's sources: refused before sending.
      await assert.rejects(
        pair.listener.mitigate("home-1", request({ "ietf-dots-call-home:source-prefix": ["198.51.100.9/32"] })),
        (e: unknown) => e instanceof IspRequestError && e.code === "INVALID_REQUEST",
      );
      assert.equal(second.mitigations().length, 1);
      assert.equal(pair.dialer.mitigations().length, 1);
    } finally {
      await second.stop();
      await pair.close();
    }
  });

  it("rejects a request still waiting for its answer when the session goes down, never silently", async () => {
    const v = VARIANTS[2];
    // The home holds the answer for up to 5 s waiting for a decision nobody gives.
    const pair = await startPair(v, { dialer: { decisionWaitMs: 5000 } });
    try {
      const pending = pair.listener.mitigate(pair.session.id, request());
      await waitFor(pair.dialer, "mitigation", () => true, 5000);
      await pair.dialer.stop();
      await assert.rejects(pending, (e: unknown) => e instanceof IspRequestError && e.code === "SESSION_DOWN");
    } finally {
      await pair.close();
    }
  });
});

describe("call-home redirect and drop-list", function () {
  this.timeout(30000);

  for (const v of VARIANTS) {
    it(`redirects a home to another Call Home client over ${v.name} (R52, R53)`, async () => {
      const pair = await startPair(v, { autoDecide: "enforced" });
      const other = new CallHomeListener(listenerOptions(v, pair.pki, { host: "127.0.0.2", port: pair.port }), FAST_ISP);
      other.on("error", () => undefined);
      try {
        await other.start();
        const arrived = waitFor<[SessionInfo]>(other, "session-up", () => true, 10000);
        const left = waitFor<[SessionInfo, string]>(pair.listener, "session-down", () => true, 10000);
        // "localhost" is the name the ISP certificate carries: the home checks it against alt-ch-client.
        const res = await pair.listener.redirect(pair.session.id, { altClient: "localhost", records: ["127.0.0.2"], ttl: 60 });
        assert.equal(res.code, "2.01");
        const [s] = await arrived;
        assert.equal(s.id, pair.session.id, "the same home identity arrives at the other client");
        await left;
        assert.equal(pair.listener.sessions().length, 0);
        assert.equal(pair.listener.sessionCount(), 0, "a redirected session leaves the count");
      } finally {
        await pair.close();
        await other.stop();
      }
    });
  }

  for (const v of [VARIANTS[0], VARIANTS[2]]) {
    it(`drop-lists a source after repeated failed handshakes, then refuses even good credentials from it, over ${v.name} (R54)`, async () => {
      const { makeTestPki } = await import("../support/certs");
      const pki = await makeTestPki();
      const listener = new CallHomeListener(
        listenerOptions(v, pki, { dropList: { maxFailures: 2, windowMs: 60000, banMs: 60000 } }),
        FAST_ISP,
      );
      listener.on("error", () => undefined);
      const failures: unknown[] = [];
      listener.on("auth-failure", (f) => failures.push(f));
      await listener.start();
      const { CallHomeDialer } = await import("../../src/dots/home-engine");
      const { dialerOptions } = await import("./harness");
      const tuning = { dtlsHandshakeTimeoutMs: 300, dtlsAttempts: 1 };
      const bad = new CallHomeDialer({
        ...dialerOptions(v, pki, listener.port as number, {
          psk: { identity: "home-1", key: Buffer.from("wrong key") },
          reconnect: { minMs: 50, maxMs: 100 },
        }),
        tuning,
      });
      bad.on("error", () => undefined);
      const good = new CallHomeDialer({ ...dialerOptions(v, pki, listener.port as number), tuning });
      good.on("error", () => undefined);
      try {
        const dropped = waitFor<[{ remoteAddress: string }]>(listener, "drop", () => true, 15000);
        await bad.start();
        const [d] = await dropped;
        assert.equal(d.remoteAddress, "127.0.0.1");
        assert.ok(failures.length >= 2);
        await bad.stop();
        let up = false;
        listener.on("session-up", () => (up = true));
        await good.start();
        await delay(1500);
        assert.equal(up, false, "a dropped source gets no session, whatever its credentials");
      } finally {
        await bad.stop();
        await good.stop();
        await listener.stop();
      }
    });
  }
});

void HOME_PREFIX;
