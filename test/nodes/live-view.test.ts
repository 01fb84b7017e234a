// The live-view registry (nodes/lib/live-view) without Node-RED: a real enforcer (dry-run, manual
// consent) with more pending mitigations than a snapshot carries, decisions by node id, the
// bounded list of recent errors, and a real listener on loopback whose snapshot names where it
// listens and never carries its key.
import { strict as assert } from "node:assert";
import { LiveView, MAX_ERRORS, MAX_ROWS } from "../../nodes/lib/live-view";
import { createHomeEnforcer, type HomeEnforcer } from "../../src/home/enforcer";
import { DryRunBackend } from "../../src/home/filter-backend";
import { NatLookup } from "../../src/home/nat-lookup";
import { StaticTableSource } from "../../src/home/nat-source";
import { CallHomeListener } from "../../src/dots/isp-engine";
import { PSK_HEX } from "./flows";

const CH = "ietf-dots-call-home:";
const TABLE = [
  {
    protocol: "tcp",
    device: "192.168.1.20",
    devicePort: 51000,
    public: "198.51.100.7",
    publicPort: 40001,
    target: "203.0.113.5",
    targetPort: 443,
  },
];
const scope = {
  "target-prefix": ["203.0.113.5/32"],
  "target-port-range": [{ "lower-port": 443 }],
  "target-protocol": [6],
  [`${CH}source-prefix`]: ["198.51.100.7/32"],
  [`${CH}source-port-range`]: [{ "lower-port": 40001 }],
};

describe("live view registry", () => {
  let enforcer: HomeEnforcer | undefined;
  let listener: CallHomeListener | undefined;
  afterEach(async () => {
    await enforcer?.close();
    await listener?.stop();
    enforcer = listener = undefined;
  });

  it(`caps each list at ${MAX_ROWS} rows with the total; decides by filter node id; a decided mid is no longer pending`, async () => {
    const view = new LiveView();
    enforcer = createHomeEnforcer({
      nat: new NatLookup({ source: new StaticTableSource({ entries: TABLE }) }),
      backend: new DryRunBackend(),
      action: "block",
      consent: { mode: "manual", timeoutMs: 60_000, onTimeout: "reject" },
    });
    const remove = view.addFilter({ id: "f1", name: "blocker" }, enforcer);
    const count = MAX_ROWS + 20;
    for (let mid = 1; mid <= count; mid++)
      assert.equal((await enforcer.handle({ cuid: "c1", mid, scope, lifetime: 600, kind: "new" })).outcome, "pending");
    let s = view.snapshot();
    assert.equal(s.filters.length, 1);
    assert.deepEqual([s.filters[0].name, s.filters[0].pending.total, s.filters[0].pending.rows.length], ["blocker", count, MAX_ROWS]);
    assert.deepEqual(s.filters[0].pending.rows[0], { mid: 1, cuid: "c1", devices: ["192.168.1.20"] });

    const decided = new Promise((r) => enforcer!.once("decision", r));
    assert.equal(view.decide("f1", 1, undefined, true), "ok");
    await decided;
    assert.equal(view.decide("f1", 1, undefined, true), "not-pending");
    assert.equal(view.decide("other", 2, undefined, true), "unknown-node");
    s = view.snapshot();
    assert.equal(s.filters[0].pending.total, count - 1);
    assert.deepEqual(
      s.filters[0].blocks.rows.map((b) => [b.mid, b.action, b.devices]),
      [[1, "block", ["192.168.1.20"]]],
    );
    remove();
    assert.deepEqual(view.snapshot().filters, [], "a closed node leaves the view");
    assert.equal(view.decide("f1", 2, undefined, false), "unknown-node");
  });

  it(`keeps the last ${MAX_ERRORS} errors, newest first, each cut to a bounded length, repeats counted`, () => {
    const view = new LiveView();
    for (let i = 1; i <= MAX_ERRORS + 10; i++) view.error({ id: "n1", name: "ISP" }, new Error(`failure ${i}`));
    view.error({ id: "n1" }, "x".repeat(5000));
    const errors = view.snapshot().errors;
    assert.equal(errors.length, MAX_ERRORS);
    assert.equal(errors[0].message.length, 300);
    assert.equal(errors[0].source, "n1");
    assert.equal(errors[1].message, `failure ${MAX_ERRORS + 10}`);
    assert.equal(errors[MAX_ERRORS - 1].message, "failure 12");
    // The same error again from the same source counts up instead of pushing others out.
    for (let i = 0; i < 3; i++) view.error({ id: "n2", name: "home" }, new Error("connect failed: ECONNREFUSED"));
    const again = view.snapshot().errors;
    assert.deepEqual([again.length, again[0].message, again[0].count, again[1].count], [MAX_ERRORS, "connect failed: ECONNREFUSED", 3, 1]);
  });

  it("a real listener: where it listens, no sessions yet, and no key in the snapshot", async () => {
    const view = new LiveView();
    listener = new CallHomeListener({
      port: 0,
      host: "127.0.0.1",
      transports: { dtls: true, tls: false },
      psk: [{ identity: "home-1", key: Buffer.from(PSK_HEX, "hex"), home: "home-1" }],
    });
    const remove = view.addEndpoint({ id: "ep1", name: "ISP" }, "isp", listener);
    await listener.start();
    const s = view.snapshot();
    assert.deepEqual([s.isp[0].id, s.isp[0].name, s.isp[0].listening], ["ep1", "ISP", `127.0.0.1:${listener.port} dtls`]);
    assert.deepEqual(
      [s.isp[0].sessions, s.isp[0].mitigations],
      [
        { total: 0, rows: [] },
        { total: 0, rows: [] },
      ],
    );
    assert.ok(!JSON.stringify(s).toLowerCase().includes(PSK_HEX.toLowerCase()));
    remove();
    assert.deepEqual(view.snapshot().isp, []);
  });
});
