// The glue the CLI and the nodes use. The dialer here is a stand-in EventEmitter with decide():
// the real dialer over a DOTS session is exercised by the lead's end-to-end test.
import { strict as assert } from "node:assert";
import { EventEmitter } from "node:events";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Decision, MitigationEvent } from "../../../src/dots/api";
import { wireDialer, createHomeEnforcerFromFlags, InvalidOptionError } from "../../../src/home/wiring";
import type { HomeEnforcer } from "../../../src/home/enforcer";

const CH = "ietf-dots-call-home:";
const scope = {
  "target-prefix": ["203.0.113.5/32"],
  "target-protocol": [17],
  [`${CH}source-prefix`]: ["198.51.100.2/32"],
  [`${CH}source-port-range`]: [{ "lower-port": 61001 }],
};

class StandInDialer extends EventEmitter {
  decisions: Decision[] = [];
  decide(d: Decision): void {
    this.decisions.push(d);
  }
}

describe("wiring", () => {
  let dir: string;
  let file: string;
  const enforcers: HomeEnforcer[] = [];
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dots-wiring-"));
    file = path.join(dir, "nat.json");
    fs.writeFileSync(
      file,
      JSON.stringify([
        {
          protocol: "udp",
          device: "192.168.1.10",
          devicePort: 40001,
          public: "198.51.100.2",
          publicPort: 61001,
          target: "203.0.113.5",
          targetPort: 5555,
        },
      ]),
    );
  });
  after(async () => {
    for (const e of enforcers) await e.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("builds an enforcer from CLI flags and refuses bad ones by name", async () => {
    for (const [flags, option] of [
      [{ enforce: "iptables" }, "enforce"],
      [{ action: "nuke" }, "action"],
      [{ consent: "maybe" }, "consent"],
      [{ consent: "manual", consentOnTimeout: "shrug" }, "consent-on-timeout"],
      [{ consent: "manual", consentTimeoutMs: -1 }, "consent-timeout"],
      [{ nat: "magic" }, "nat"],
    ] as const) {
      await assert.rejects(
        createHomeEnforcerFromFlags(flags),
        (e: unknown) => e instanceof InvalidOptionError && e.option === option,
        option,
      );
    }
    const e = await createHomeEnforcerFromFlags({
      nat: `static:${file}`,
      enforce: "dry-run",
      action: "quarantine",
      consent: "manual",
      consentTimeoutMs: 1000,
    });
    enforcers.push(e);
    assert.equal(e.action, "quarantine");
    assert.equal(e.backend.kind, "dry-run");
    assert.deepEqual(e.consent.policy, { mode: "manual", timeoutMs: 1000, onTimeout: "reject" });
  });

  it("hands outcomes to dialer.decide, the late consent answer too, and lifts the block on ended", async () => {
    const e = await createHomeEnforcerFromFlags({ nat: `static:${file}`, enforce: "dry-run", consent: "manual", consentTimeoutMs: 60_000 });
    enforcers.push(e);
    const dialer = new StandInDialer();
    const unwire = wireDialer(dialer, e);
    const asked = new Promise((res) => e.once("consent-request", res));
    const m: MitigationEvent = { cuid: "c1", mid: 5, scope, lifetime: 600, kind: "new" };
    dialer.emit("mitigation", m);
    await asked;
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(
      dialer.decisions.map((d) => [d.mid, d.outcome]),
      [[5, "pending"]],
    );
    const enforced = new Promise((res) => e.once("enforcement", res));
    e.approve(5);
    await enforced;
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(
      dialer.decisions.map((d) => d.outcome),
      ["pending", "enforced"],
    );
    assert.equal(e.activeMitigations().length, 1);
    const removed = new Promise((res) => e.once("enforcement", res));
    dialer.emit("ended", { cuid: "c1", mid: 5, reason: "withdrawn", scope });
    assert.equal(((await removed) as { change: string }).change, "removed");
    assert.equal(e.activeMitigations().length, 0);
    unwire();
    assert.equal(dialer.listenerCount("mitigation"), 0);
  });

  it("a withdrawal racing the enforcement still removes the block", async () => {
    const e = await createHomeEnforcerFromFlags({ nat: `static:${file}`, enforce: "dry-run" });
    enforcers.push(e);
    const handled = e.handle({ cuid: "c1", mid: 6, scope, lifetime: 600 });
    const ended = e.end({ cuid: "c1", mid: 6 }); // arrives before the lookup finished
    assert.equal((await handled).outcome, "enforced");
    assert.ok((await ended).removed > 0);
    assert.deepEqual(e.activeMitigations(), []);
  });
});
