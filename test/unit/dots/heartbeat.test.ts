import { strict as assert } from "node:assert";
import {
  HeartbeatScheduler,
  buildHeartbeatJson,
  parseHeartbeatJson,
  HEARTBEAT_KEY,
  HeartbeatParseError,
} from "../../../src/dots/heartbeat";

// Time is compressed (msPerSecond) so an "interval" is a few milliseconds; assertions are on
// behaviour (what was sent, whether loss was declared), never on elapsed time.
describe("dots/heartbeat", () => {
  let sched: HeartbeatScheduler | undefined;
  afterEach(() => sched?.stop());

  it("builds and parses the heartbeat body; peer-hb-status is mandatory", () => {
    assert.deepEqual(buildHeartbeatJson(true), { [HEARTBEAT_KEY]: { "peer-hb-status": true } });
    assert.deepEqual(parseHeartbeatJson(buildHeartbeatJson(false)), { peerHbStatus: false });
    assert.throws(
      () => parseHeartbeatJson({ [HEARTBEAT_KEY]: {} }),
      (e: unknown) => e instanceof HeartbeatParseError && e.field === "peer-hb-status",
    );
    assert.throws(() => parseHeartbeatJson({ [HEARTBEAT_KEY]: { "peer-hb-status": "yes" } }), HeartbeatParseError);
    assert.throws(() => parseHeartbeatJson(null), HeartbeatParseError);
    assert.throws(() => parseHeartbeatJson({ x: 1, [HEARTBEAT_KEY]: { "peer-hb-status": true } }), HeartbeatParseError);
  });

  it("sends heartbeats; peer-hb-status reflects whether the peer's heartbeats arrive", async () => {
    const bodies: any[] = [];
    sched = new HeartbeatScheduler({
      intervalSeconds: 1,
      missingHbAllowed: 3,
      msPerSecond: 100,
      send: (b, answered) => {
        bodies.push(b);
        setImmediate(() => answered(true));
      },
    });
    sched.start();
    await new Promise<void>((res) => sched!.once("answered", () => res()));
    assert.equal(bodies[0][HEARTBEAT_KEY]["peer-hb-status"], false, "no peer heartbeat yet");
    sched.peerHeartbeat();
    assert.equal(sched.peerHbStatus, true);
    const next = await new Promise<boolean>((res) => sched!.once("sent", (e) => res(e.peerHbStatus)));
    assert.equal(next, true);
  });

  it("declares loss only after missing-hb-allowed unanswered intervals without traffic", async () => {
    let sent = 0;
    sched = new HeartbeatScheduler({
      intervalSeconds: 1,
      missingHbAllowed: 3,
      msPerSecond: 5,
      send: (_b, answered) => {
        sent++;
        setImmediate(() => answered(false));
      },
    });
    sched.start();
    const lost = await new Promise<{ missed: number }>((res) => sched!.once("lost", res));
    assert.equal(lost.missed, 3);
    assert.equal(sent, 3);
    assert.equal(sched.isRunning, false);
  });

  it("any traffic keeps the session even when heartbeats go unanswered", async () => {
    let lost = false;
    let sent = 0;
    sched = new HeartbeatScheduler({
      intervalSeconds: 1,
      missingHbAllowed: 2,
      msPerSecond: 5,
      send: (_b, answered) => {
        sent++;
        sched!.traffic();
        answered(false);
      },
    });
    sched.on("lost", () => (lost = true));
    sched.start();
    await new Promise<void>((res) => {
      const t = setInterval(() => {
        if (sent >= 8) {
          clearInterval(t);
          res();
        }
      }, 2);
    });
    assert.equal(lost, false);
    assert.equal(sched.isRunning, true);
  });

  it("a send that throws counts as unanswered and never escapes", async () => {
    sched = new HeartbeatScheduler({
      intervalSeconds: 1,
      missingHbAllowed: 1,
      msPerSecond: 5,
      send: () => {
        throw new Error("closed");
      },
    });
    sched.start();
    const lost = await new Promise<{ missed: number }>((res) => sched!.once("lost", res));
    assert.equal(lost.missed, 1);
  });

  it("interval 0 sends nothing and reconfigure re-arms", async () => {
    let sent = 0;
    sched = new HeartbeatScheduler({
      intervalSeconds: 0,
      missingHbAllowed: 3,
      msPerSecond: 5,
      send: (_b, answered) => {
        sent++;
        setImmediate(() => answered(true));
      },
    });
    sched.start();
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(sent, 0);
    sched.reconfigure(1, 3);
    await new Promise<void>((res) => sched!.once("answered", () => res()));
    assert.ok(sent >= 1);
    assert.throws(() => sched!.reconfigure(1, 0), RangeError);
  });
});
