import { strict as assert } from "node:assert";
import { MitigationStore, MitigationStatus, scopesOverlap, sameScope, Mitigation, RemovalReason } from "../../../src/dots/mitigation-store";

const SP = "ietf-dots-call-home:source-prefix";
const scope = (target: string, source: string, extra: Record<string, unknown> = {}) => ({
  "target-prefix": [target],
  [SP]: [source],
  ...extra,
});
const waitRemoved = (store: MitigationStore) =>
  new Promise<[Mitigation, RemovalReason]>((res) => store.on("removed", (m, r) => res([m, r])));

describe("dots/mitigation-store", () => {
  let store: MitigationStore;
  afterEach(() => store?.clear());

  it("creates with status 1 and the granted lifetime; refresh with same parameters keeps the mid", () => {
    store = new MitigationStore();
    const r = store.put("c1", 5, { ...scope("192.0.2.1/32", "10.0.0.0/24"), lifetime: 3600 }, 3600);
    assert.equal(r.kind, "created");
    const m = store.get("c1", 5)!;
    assert.equal(m.status, MitigationStatus.InProgress);
    assert.equal(m.lifetime, 3600);
    assert.equal(store.remainingLifetime(m), 3600);
    const view = store.toScopeJson(m);
    assert.equal(view.mid, 5);
    assert.equal(view.status, "attack-mitigation-in-progress");
    assert.equal(typeof view["mitigation-start"], "string");
    assert.equal(view.lifetime, 3600);
    assert.equal(store.put("c1", 5, { ...scope("192.0.2.1/32", "10.0.0.0/24"), lifetime: 60 }, 60).kind, "refreshed");
    assert.equal(store.get("c1", 5)!.lifetime, 60);
  });

  it("a refresh that changes any parameter other than lifetime is refused", () => {
    store = new MitigationStore();
    store.put("c1", 5, scope("192.0.2.1/32", "10.0.0.0/24"), 3600);
    const r = store.put("c1", 5, scope("192.0.2.2/32", "10.0.0.0/24"), 3600);
    assert.equal(r.kind, "bad");
    assert.deepEqual(store.get("c1", 5)!.scope["target-prefix"], ["192.0.2.1/32"]);
  });

  it("lifetime caps, -1 granted only when allowed", () => {
    store = new MitigationStore({ maxLifetime: 100 });
    assert.equal(store.grantLifetime(3600), 100);
    assert.equal(store.grantLifetime(-1), 100);
    store.clear();
    store = new MitigationStore({ allowIndefiniteLifetime: true });
    store.put("c", 1, scope("192.0.2.1/32", "10.0.0.1/32"), -1);
    assert.equal(store.remainingLifetime(store.get("c", 1)!), -1);
    assert.equal(new MitigationStore().grantLifetime(-1), 3600);
  });

  it("expires when the lifetime lapses and reports it as 'expired'", async () => {
    store = new MitigationStore({ msPerSecond: 10 });
    const activity: boolean[] = [];
    store.on("activity", (a) => activity.push(a));
    const removed = waitRemoved(store);
    store.put("c1", 1, scope("192.0.2.1/32", "10.0.0.1/32"), 2);
    const [m, reason] = await removed;
    assert.equal(reason, "expired");
    assert.equal(m.mid, 1);
    assert.equal(store.get("c1", 1), undefined);
    assert.deepEqual(activity, [true, false]);
  });

  it("overlap: a higher mid replaces the lower one; a lower new mid gets conflict cause 1 with the winner's scope", () => {
    store = new MitigationStore();
    const removed: Array<[number, string]> = [];
    store.on("removed", (m, r) => removed.push([m.mid, r]));
    store.put("c1", 10, scope("192.0.2.0/24", "10.0.0.5/32", { "target-port-range": [{ "lower-port": 80 }] }), 3600);
    const r = store.put("c1", 11, scope("192.0.2.7/32", "10.0.0.0/24"), 3600);
    assert.equal(r.kind, "created");
    assert.deepEqual(removed, [[10, "replaced"]]);
    assert.equal(store.get("c1", 10), undefined);
    const c = store.put("c1", 9, scope("192.0.2.7/32", "10.0.0.5/32"), 3600);
    assert.equal(c.kind, "conflict");
    if (c.kind === "conflict") {
      assert.equal(c.withMid, 11);
      assert.deepEqual(c.conflictScope, { "target-prefix": ["192.0.2.7/32"] });
    }
    // Another client's request never conflicts.
    assert.equal(store.put("c2", 1, scope("192.0.2.7/32", "10.0.0.5/32"), 3600).kind, "created");
  });

  it("overlap reads prefixes with the one strict parser: octal-looking 010.1.1.1 is not 8.1.1.1", () => {
    assert.equal(scopesOverlap(scope("010.1.1.1/32", "10.0.0.1/32"), scope("8.1.1.1/32", "10.0.0.1/32")), false);
    assert.equal(scopesOverlap(scope("8.1.1.1/32", "10.0.0.1/32"), scope("8.1.1.0/24", "10.0.0.1/32")), true);
  });

  it("scopes overlap only when targets and sources (ports, protocols, ICMP types) intersect", () => {
    assert.equal(scopesOverlap(scope("192.0.2.1/32", "10.0.0.1/32"), scope("192.0.2.0/24", "10.0.0.0/8")), true);
    assert.equal(scopesOverlap(scope("192.0.2.1/32", "10.0.0.1/32"), scope("192.0.2.1/32", "10.0.0.2/32")), false);
    assert.equal(scopesOverlap(scope("2001:db8::/32", "10.0.0.1/32"), scope("192.0.2.1/32", "10.0.0.1/32")), false);
    const p = (lo: number, hi?: number) => ({
      [`ietf-dots-call-home:source-port-range`]: [{ "lower-port": lo, ...(hi ? { "upper-port": hi } : {}) }],
    });
    assert.equal(scopesOverlap(scope("192.0.2.1/32", "10.0.0.1/32", p(1000, 2000)), scope("192.0.2.1/32", "10.0.0.1/32", p(2000))), true);
    assert.equal(scopesOverlap(scope("192.0.2.1/32", "10.0.0.1/32", p(1000, 1999)), scope("192.0.2.1/32", "10.0.0.1/32", p(2000))), false);
    assert.equal(
      scopesOverlap(
        scope("192.0.2.1/32", "10.0.0.1/32", { "target-protocol": [6] }),
        scope("192.0.2.1/32", "10.0.0.1/32", { "target-protocol": [17] }),
      ),
      false,
    );
    assert.equal(
      sameScope(
        { ...scope("192.0.2.1/32", "10.0.0.1/32"), lifetime: 1, "trigger-mitigation": true },
        { ...scope("192.0.2.1/32", "10.0.0.1/32"), lifetime: 9 },
      ),
      true,
    );
  });

  it("efficacy update: known mid records attack-status and renews; unknown mid is ignored", () => {
    store = new MitigationStore();
    store.put("c1", 3, scope("192.0.2.1/32", "10.0.0.1/32"), 3600);
    assert.equal(store.put("c1", 4, scope("192.0.2.9/32", "10.0.0.1/32"), 3600, { efficacy: true, attackStatus: 1 }).kind, "ignored");
    assert.equal(store.get("c1", 4), undefined);
    const r = store.put("c1", 3, scope("192.0.2.1/32", "10.0.0.1/32"), 600, { efficacy: true, attackStatus: 1 });
    assert.equal(r.kind, "efficacy");
    assert.equal(store.toScopeJson(store.get("c1", 3)!)["attack-status"], "under-attack");
    assert.equal(store.get("c1", 3)!.lifetime, 600);
    assert.equal(store.put("c1", 3, scope("192.0.2.2/32", "10.0.0.1/32"), 600, { efficacy: true, attackStatus: 2 }).kind, "bad");
  });

  it("withdraw of an enforced mitigation: status 5 for the terminating period, then gone", async () => {
    store = new MitigationStore({ terminatingPeriodMs: 30 });
    store.put("c1", 1, scope("192.0.2.1/32", "10.0.0.1/32"), 3600);
    store.setStatus("c1", 1, MitigationStatus.Mitigated);
    const removed = waitRemoved(store);
    const m = store.withdraw("c1", 1)!;
    assert.equal(m.status, MitigationStatus.ClientWithdrawn);
    assert.equal(store.toScopeJson(m).status, "dots-client-withdrawn-mitigation");
    assert.equal(store.setStatus("c1", 1, MitigationStatus.Mitigated)!.status, MitigationStatus.ClientWithdrawn, "stays 5");
    const [gone, reason] = await removed;
    assert.equal(reason, "withdrawn");
    assert.equal(gone.status, MitigationStatus.Terminated);
    assert.equal(store.get("c1", 1), undefined);
    assert.equal(store.withdraw("c1", 1), undefined, "unknown mid");
  });

  it("withdraw of a pending mitigation removes it at once; re-request while terminating doubles the period up to the cap", () => {
    store = new MitigationStore({ terminatingPeriodMs: 1000, terminatingMaxMs: 3000 });
    store.put("c1", 1, scope("192.0.2.1/32", "10.0.0.1/32"), 3600);
    store.withdraw("c1", 1);
    assert.equal(store.get("c1", 1), undefined);
    store.put("c1", 2, scope("192.0.2.1/32", "10.0.0.1/32"), 3600);
    store.setStatus("c1", 2, MitigationStatus.Mitigated);
    store.withdraw("c1", 2);
    assert.equal(store.put("c1", 2, scope("192.0.2.1/32", "10.0.0.1/32"), 3600).kind, "refreshed");
    assert.equal(store.get("c1", 2)!.status, MitigationStatus.Mitigated);
    assert.equal(store.get("c1", 2)!.terminatingPeriodMs, 2000);
    store.withdraw("c1", 2);
    store.put("c1", 3, scope("192.0.2.1/32", "10.0.0.1/32"), 3600);
    assert.equal(store.get("c1", 2), undefined, "replaced by the re-request");
    assert.equal(store.get("c1", 3)!.terminatingPeriodMs, 3000);
  });

  it("deactivate (legitimate traffic) keeps the entry visible with conflict-cause 4, then drops it", async () => {
    store = new MitigationStore({ deactivatedKeepMs: 20 });
    store.put("c1", 1, scope("192.0.2.1/32", "10.0.0.1/32"), 3600);
    const reasons: string[] = [];
    store.on("removed", (_m, r) => reasons.push(r));
    const m = store.deactivate("c1", 1, 4)!;
    const view = store.toScopeJson(m);
    assert.deepEqual(view["conflict-information"], { "conflict-cause": "request-rejected-legitimate-traffic" });
    assert.equal(store.activeCount(), 0);
    assert.deepEqual(reasons, ["rejected"]);
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(store.get("c1", 1), undefined);
    assert.deepEqual(reasons, ["rejected"], "announced once");
  });

  it("bounds mitigations per client and clients", () => {
    store = new MitigationStore({ maxPerClient: 2, maxClients: 1 });
    store.put("c1", 1, scope("192.0.2.1/32", "10.0.0.1/32"), 3600);
    store.put("c1", 2, scope("192.0.2.2/32", "10.0.0.1/32"), 3600);
    assert.equal(store.put("c1", 3, scope("192.0.2.3/32", "10.0.0.1/32"), 3600).kind, "full");
    assert.equal(store.put("c1", 3, scope("192.0.2.2/32", "10.0.0.1/32"), 3600).kind, "created", "replacing an overlapped one fits");
    assert.equal(store.put("c2", 1, scope("192.0.2.1/32", "10.0.0.1/32"), 3600).kind, "full");
  });
});
