// Recovery time (issue 9) with a real listener and a real dialer on loopback, RFC 9132 reconnect
// spacing left at its defaults (60 s / 300 s): a graceful listener stop brings the home back within
// the first-attempt jitter, and a crashed listener process (kill -9, UDP) is detected by the
// liveness probe long before heartbeat loss would declare the session dead.
import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import type { SessionInfo } from "../../src/dots/api";
import { CallHomeListener } from "../../src/dots/isp-engine";
import { CallHomeDialer } from "../../src/dots/home-engine";
import { STATUS_LABELS } from "../../src/dots/mitigation-store";
import type { DtlsClient } from "../../src/transport/dtls/client";
import { HandshakeType } from "../../src/transport/dtls/constants";
import { CliProcess } from "../support/cli-process";
import { makeTestPki, type TestPki } from "../support/certs";
import { FAST_ISP, HOME_PREFIX, PSK_IDENTITY, PSK_KEY, dialerOptions, listenerOptions, waitFor, type Variant } from "./harness";

const RFC_SPACING = { minMs: 60_000, maxMs: 300_000 };

describe("recovery: graceful listener stop", function () {
  this.timeout(30_000);
  let pki: TestPki;
  const open: Array<{ stop(): Promise<void> }> = [];
  before(async () => {
    pki = await makeTestPki();
  });
  afterEach(async () => {
    for (const o of open.splice(0).reverse()) await o.stop();
  });

  for (const v of [
    { name: "dtls-psk", transport: "udp" },
    { name: "tls-psk", transport: "tcp" },
  ] as Variant[]) {
    it(`over ${v.name}: the home is told, and is back on the restarted listener within the jitter (not after 60 s)`, async () => {
      const first = new CallHomeListener(listenerOptions(v, pki), FAST_ISP);
      first.on("error", () => undefined);
      await first.start();
      const port = first.port as number;
      const dialer = new CallHomeDialer({
        ...dialerOptions(v, pki, port, { reconnect: RFC_SPACING, heartbeatInterval: 30 }),
        tuning: { dtlsHandshakeTimeoutMs: 500 },
      });
      dialer.on("error", () => undefined);
      open.push(dialer);
      const up1 = waitFor<[SessionInfo]>(first, "session-up");
      await dialer.start();
      await up1;
      const told = waitFor<[{ reason: string; retryInMs?: number }]>(dialer, "disconnected", () => true, 3000);
      const t0 = Date.now();
      await first.stop();
      const [gone] = await told;
      assert.ok(gone.retryInMs !== undefined && gone.retryInMs < 5000, `first attempt in ${gone.retryInMs} ms`);
      // The restarted listener (a new process would do the same) comes up 300 ms later.
      await new Promise((r) => setTimeout(r, 300));
      const again = new CallHomeListener(listenerOptions(v, pki, { port }), FAST_ISP);
      again.on("error", () => undefined);
      open.push(again);
      const up2 = waitFor<[SessionInfo]>(again, "session-up", () => true, 9000);
      await again.start();
      const [s] = await up2;
      const backMs = Date.now() - t0;
      assert.equal(s.home, PSK_IDENTITY);
      assert.ok(backMs < 8000, `back after ${backMs} ms`);
    });
  }

  // The same set-up (the hooks above apply here too).
  describe("a restarted listener with the ISP's ticket secret resumes DTLS sessions", () => {
    const dtls: Variant = { name: "dtls-psk", transport: "udp" };
    const secret = randomBytes(48);

    for (const shared of [true, false]) {
      it(`${shared ? "the same ticket secret: the home's redial is an abbreviated handshake" : "no ticket secret: the redial is a full handshake"}`, async () => {
        const extra = shared ? { ticketSecret: secret } : {};
        const first = new CallHomeListener(listenerOptions(dtls, pki, extra), FAST_ISP);
        first.on("error", () => undefined);
        await first.start();
        const port = first.port as number;
        const dialer = new CallHomeDialer({ ...dialerOptions(dtls, pki, port), tuning: { dtlsHandshakeTimeoutMs: 500 } });
        dialer.on("error", () => undefined);
        open.push(dialer);
        const up1 = waitFor<[SessionInfo]>(first, "session-up");
        await dialer.start();
        await up1;
        assert.equal((dialer.connection as DtlsClient).resumed, false);
        await first.stop();
        // Another listener object, as a restarted process or another member of the cluster would be.
        const again = new CallHomeListener(listenerOptions(dtls, pki, { port, ...extra }), FAST_ISP);
        again.on("error", () => undefined);
        open.push(again);
        const up2 = waitFor<[SessionInfo]>(again, "session-up", () => true, 9000);
        await again.start();
        const [s] = await up2;
        assert.equal(s.home, PSK_IDENTITY);
        const c = dialer.connection as DtlsClient;
        assert.equal(c.resumed, shared);
        assert.equal(c.handshakeTypes.includes(HandshakeType.ClientKeyExchange), !shared);
      });
    }

    it("a ticket secret shorter than 32 bytes is refused when the listener is made", () => {
      assert.throws(() => new CallHomeListener(listenerOptions(dtls, pki, { ticketSecret: randomBytes(31) })), /at least 32 bytes, got 31/);
    });
  });
});

describe("recovery: crashed listener process with a UDP home", function () {
  this.timeout(40_000);
  const procs: CliProcess[] = [];
  let dialer: CallHomeDialer | undefined;
  afterEach(async () => {
    await dialer?.stop();
    dialer = undefined;
    for (const p of procs.splice(0)) await p.stop("SIGKILL");
  });
  const listen = (port: number) => {
    const p = new CliProcess([
      "listen",
      "--dtls",
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      "--psk-identity",
      PSK_IDENTITY,
      "--psk-key",
      `text:${PSK_KEY.toString()}`,
      "--home-prefix",
      HOME_PREFIX,
      "--request-repeat-ms",
      "200",
      "--request-timeout-ms",
      "5000",
    ]);
    procs.push(p);
    return p;
  };

  it("kill -9 of `listen`: the silent ISP is probed (CoAP ping), a new session comes up in parallel, mitigations stay", async () => {
    const isp1 = listen(0);
    const port = (await isp1.waitFor((l) => l.event === "listening", 10_000, "listening")).port as number;
    // heartbeat-interval 1 s with the default missing-hb-allowed 15: loss would be declared after 15 s.
    // ack-timeout 0.2 s, max-retransmit 2: the CoAP ping gives up after at most 2.1 s.
    dialer = new CallHomeDialer({
      hosts: ["127.0.0.1"],
      port,
      transport: "udp",
      psk: { identity: PSK_IDENTITY, key: PSK_KEY },
      homePrefixes: [HOME_PREFIX],
      heartbeatInterval: 1,
      decisionWaitMs: 1000,
      reconnect: RFC_SPACING,
      tuning: {
        dtlsHandshakeTimeoutMs: 500,
        idleConfig: { ackTimeout: 0.2, maxRetransmit: 2 },
        mitigatingConfig: { ackTimeout: 0.2, maxRetransmit: 2 },
      },
    });
    dialer.on("error", () => undefined);
    dialer.on("mitigation", (m) => {
      if (m.kind === "new") dialer?.decide({ cuid: m.cuid, mid: m.mid, outcome: "enforced" });
    });
    const reasons: string[] = [];
    dialer.on("disconnected", (e) => reasons.push(e.reason));
    await dialer.start();
    await isp1.waitFor((l) => l.event === "session-up", 10_000, "session-up");
    isp1.send({
      cmd: "mitigate",
      id: "m1",
      session: PSK_IDENTITY,
      request: { "target-prefix": ["198.51.100.7/32"], "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"], lifetime: 600 },
    });
    const res = await isp1.waitFor((l) => l.event === "response" && l.id === "m1", 10_000, "mitigate response");
    assert.equal((res.outcome as { code: string }).code, "2.01");

    const t0 = Date.now();
    await isp1.stop("SIGKILL");
    const isp2 = listen(port);
    await isp2.waitFor((l) => l.event === "listening", 10_000, "listening again");
    const up = await isp2.waitFor((l) => l.event === "session-up", 12_000, "session-up on the restarted listener");
    const backMs = Date.now() - t0;
    assert.equal((up.session as { home: string }).home, PSK_IDENTITY);
    assert.ok(backMs < 10_000, `back after ${backMs} ms (heartbeat loss alone: 15 s + the redial)`);
    assert.ok(
      reasons.some((r) => /replaced by a new session/.test(r)),
      `reasons: ${reasons.join(" | ")}`,
    );
    assert.ok(!reasons.some((r) => /session lost/.test(r)), "never declared lost");
    assert.equal(dialer.mitigations().length, 1, "the mitigation stays active across the crash");
    assert.equal(dialer.mitigations()[0].status, STATUS_ACTIVE);
  });
});

const STATUS_ACTIVE = STATUS_LABELS[2];
