// Reconnect timing after a session ends (issue 9): the first attempt is jittered, retries after a
// failed attempt keep the RFC 9132 section 4.7 spacing, and the default liveness-probe schedule
// redials a silent ISP well inside 90 s. Real TCP sockets on loopback for the refused-connect case.
import { strict as assert } from "node:assert";
import * as net from "node:net";
import { ReconnectPacer, resendWhileRefused, DEFAULT_FIRST_ATTEMPT_JITTER_MS } from "../../../src/dots/dialer-connect";
import { pingGiveUpMs, silenceToRedialMs, silentAfterMs } from "../../../src/dots/heartbeat";
import { DEFAULT_CONFIG_SET } from "../../../src/dots/session-config";

describe("dots/recovery pacing", function () {
  it("the first attempt after a session ends is jittered below firstAttemptJitterMs; a failed one is followed by the 60 s spacing", () => {
    let now = 1_000_000;
    const draws = [0, 0.5, 0.999];
    const seen: number[] = [];
    for (const r of draws) {
      const p = new ReconnectPacer(
        { minMs: 60_000, maxMs: 300_000 },
        () => now,
        () => r,
      );
      p.attempted(); // the attempt that brought the session up, a moment ago
      p.succeeded();
      now += 2000; // the session was up for 2 s: the old pacing made the home wait 58 s here
      const first = p.afterSessionEnded();
      assert.ok(first >= 0 && first < DEFAULT_FIRST_ATTEMPT_JITTER_MS, `first attempt after ${first} ms`);
      seen.push(first);
      now += first;
      p.attempted();
      p.failed();
      assert.equal(p.delayMs(), 60_000, "a failed attempt waits the RFC 9132 minimum of 60 s");
      now += 60_000;
      p.attempted();
      p.failed();
      assert.equal(p.delayMs(), 120_000, "then doubles");
    }
    assert.deepEqual(seen, [0, 2500, 4995], "uniform over [0, 5000)");
  });

  it("a session that ends again within 60 s of the last jittered reconnect gets the RFC spacing, not another fast path", () => {
    let now = 0;
    const p = new ReconnectPacer(
      { minMs: 60_000, maxMs: 300_000, firstAttemptJitterMs: 1000 },
      () => now,
      () => 0.5,
    );
    p.attempted();
    now = 100_000;
    assert.equal(p.afterSessionEnded(), 500);
    now += 500;
    p.attempted();
    p.succeeded();
    now += 3000; // up for 3 s, then closed again
    assert.equal(p.afterSessionEnded(), 57_000, "60 s after the last attempt");
    now += 60_000;
    assert.equal(p.afterSessionEnded(), 500, "fast path again once 60 s have passed");
    assert.throws(() => new ReconnectPacer({ minMs: 1, maxMs: 2, firstAttemptJitterMs: -1 }), RangeError);
  });

  it("default arithmetic: with the RFC 9132 default configuration a silent ISP is redialled within 78 s + 5 s jitter (heartbeat loss alone: 450 s)", () => {
    const set = DEFAULT_CONFIG_SET;
    assert.equal(silentAfterMs(set.ackTimeout, set.ackRandomFactor), 3000, "ack-timeout 2 s x random factor 1.5");
    assert.equal(pingGiveUpMs(set.ackTimeout, set.ackRandomFactor, set.maxRetransmit), 45_000, "3 s x (1 + 2 + 4 + 8)");
    const worst = silenceToRedialMs(set);
    assert.equal(worst, 30_000 + 3000 + 45_000);
    // The parallel attempt then starts within the first-attempt jitter.
    assert.ok(worst + DEFAULT_FIRST_ATTEMPT_JITTER_MS < 90_000, `worst case ${worst} ms + ${DEFAULT_FIRST_ATTEMPT_JITTER_MS} ms jitter`);
    assert.equal(set.heartbeatInterval * set.missingHbAllowed * 1000, 450_000, "what heartbeat loss alone would take");
  });

  it("a TCP connect refused while the listener restarts succeeds inside one attempt; other errors and an abort end it at once", async () => {
    // A port that is closed now and opened 1.3 s later (a listener restarting).
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", () => r()));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    let tries = 0;
    const connect = () =>
      new Promise<net.Socket>((resolve, reject) => {
        tries++;
        const s = net.connect(port, "127.0.0.1");
        s.once("connect", () => resolve(s));
        s.once("error", reject);
      });
    const server = net.createServer((c) => c.end());
    const opened = new Promise<void>((r) => setTimeout(() => server.listen(port, "127.0.0.1", () => r()), 1300));
    const controller = new AbortController();
    try {
      const sock = await resendWhileRefused(connect, controller.signal, [500, 500, 500, 500]);
      sock.destroy();
      assert.ok(tries >= 2 && tries <= 5, `connect tries: ${tries}`);
    } finally {
      await opened;
      await new Promise<void>((r) => server.close(() => r()));
    }
    // Not a refusal: no re-send.
    let other = 0;
    await assert.rejects(
      resendWhileRefused(() => (other++, Promise.reject(new Error("certificate refused"))), controller.signal, [10, 10]),
      /certificate/,
    );
    assert.equal(other, 1);
    // An abort during the wait ends the attempt.
    const c2 = new AbortController();
    setTimeout(() => c2.abort(), 50);
    const t0 = Date.now();
    await assert.rejects(
      resendWhileRefused(
        () => Promise.reject(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" })),
        c2.signal,
        [5000],
      ),
    );
    assert.ok(Date.now() - t0 < 2000);
  });
});
