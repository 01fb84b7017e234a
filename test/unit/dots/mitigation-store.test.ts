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

  it("scopes overlap per RFC 9132 4.4.1: a common target address, prefix, FQDN, URI or alias; sources, ports and protocols do not matter", () => {
    assert.equal(scopesOverlap(scope("192.0.2.1/32", "10.0.0.1/32"), scope("192.0.2.0/24", "10.0.0.0/8")), true);
    assert.equal(scopesOverlap(scope("192.0.2.1/32", "10.0.0.1/32"), scope("192.0.2.1/32", "10.0.0.2/32")), true, "other source");
    assert.equal(scopesOverlap(scope("192.0.2.1/32", "10.0.0.1/32"), scope("192.0.2.2/32", "10.0.0.1/32")), false, "other target");
    assert.equal(scopesOverlap(scope("2001:db8::/32", "10.0.0.1/32"), scope("192.0.2.1/32", "10.0.0.1/32")), false);
    const p = (lo: number, hi?: number) => ({
      [`ietf-dots-call-home:source-port-range`]: [{ "lower-port": lo, ...(hi ? { "upper-port": hi } : {}) }],
    });
    assert.equal(scopesOverlap(scope("192.0.2.1/32", "10.0.0.1/32", p(1000, 1999)), scope("192.0.2.1/32", "10.0.0.1/32", p(2000))), true);
    assert.equal(
      scopesOverlap(
        scope("192.0.2.1/32", "10.0.0.1/32", { "target-protocol": [6] }),
        scope("192.0.2.1/32", "10.0.0.1/32", { "target-protocol": [17] }),
      ),
      true,
      "other protocol, same target",
    );
    assert.equal(
      scopesOverlap(
        scope("192.0.2.1/32", "10.0.0.1/32", { "target-fqdn": ["www.example.com"] }),
        scope("198.51.100.1/32", "10.0.0.1/32", { "target-fqdn": ["www.example.com"] }),
      ),
      true,
      "shared FQDN",
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

  it("deactivate (legitimate traffic) keeps the entry visible with conflict-cause 4 and retry-timer, then drops it", async () => {
    // 10 ms per second: retry-timer 2 s, kept for retry-timer + 45 s = 470 ms.
    store = new MitigationStore({ retryTimerS: 2, msPerSecond: 10 });
    store.put("c1", 1, scope("192.0.2.1/32", "10.0.0.1/32"), 3600);
    const reasons: string[] = [];
    store.on("removed", (_m, r) => reasons.push(r));
    const m = store.deactivate("c1", 1, 4)!;
    const view = store.toScopeJson(m);
    assert.deepEqual(view["conflict-information"], { "conflict-cause": "request-rejected-legitimate-traffic", "retry-timer": 2 });
    assert.equal(view.lifetime, 0, "a deactivated request has no lifetime left");
    assert.equal(store.activeCount(), 0);
    assert.deepEqual(reasons, ["rejected"]);
    const resent = store.put("c1", 1, scope("192.0.2.1/32", "10.0.0.1/32"), 3600);
    assert.deepEqual(resent, { kind: "held", retryTimer: 2, conflictCause: 4 }, "resent inside retry-timer: refused");
    await new Promise((r) => setTimeout(r, 600));
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

  it("a scope re-issued under a higher mid with other sources replaces the lower mid (no orphan)", () => {
    store = new MitigationStore();
    store.put("c1", 1, scope("192.0.2.1/32", "10.0.0.1/32"), 3600);
    const r = store.put("c1", 2, scope("192.0.2.1/32", "10.0.0.2/32"), 3600);
    assert.equal(r.kind, "created");
    assert.deepEqual(r.kind === "created" ? r.replaced.map((m) => m.mid) : [], [1]);
    assert.equal(store.get("c1", 1), undefined);
    assert.equal(store.put("c1", 1, scope("192.0.2.1/32", "10.0.0.9/32"), 3600).kind, "conflict", "lower mid loses");
  });

  it("grants min(requested, maxLifetime); -1 gets the finite fallback capped by the maximum", () => {
    store = new MitigationStore({ maxLifetime: 86400 });
    store.put("c1", 1, scope("192.0.2.1/32", "10.0.0.1/32"), 4294967295);
    assert.equal(store.get("c1", 1)!.lifetime, 86400);
    store.put("c1", 2, scope("192.0.2.2/32", "10.0.0.1/32"), 600);
    assert.equal(store.get("c1", 2)!.lifetime, 600);
    store.put("c1", 3, scope("192.0.2.3/32", "10.0.0.1/32"), -1);
    assert.equal(store.get("c1", 3)!.lifetime, 3600);
    const tight = new MitigationStore({ maxLifetime: 60, allowIndefiniteLifetime: true });
    tight.put("c1", 1, scope("192.0.2.1/32", "10.0.0.1/32"), -1);
    assert.equal(tight.get("c1", 1)!.lifetime, -1, "indefinite explicitly allowed stays indefinite");
    tight.put("c1", 2, scope("192.0.2.2/32", "10.0.0.1/32"), 600);
    assert.equal(tight.get("c1", 2)!.lifetime, 60, "finite requests are capped");
    tight.clear();
  });

  it("status 5 reports the rest of the terminating period as lifetime, status 6 reports 0", async () => {
    store = new MitigationStore({ terminatingPeriodMs: 5000, msPerSecond: 1000 });
    store.put("c1", 1, scope("192.0.2.1/32", "10.0.0.1/32"), 3600);
    store.setStatus("c1", 1, MitigationStatus.Mitigated);
    const views: Array<Record<string, unknown>> = [];
    store.on("change", (m) => views.push(store.toScopeJson(m)));
    store.withdraw("c1", 1);
    assert.equal(views.at(-1)!.status, "dots-client-withdrawn-mitigation");
    assert.equal(views.at(-1)!.lifetime, 5, "remaining active-but-terminating period, not the 3600 s lifetime");
    const removed = waitRemoved(store);
    store.put("c1", 2, scope("192.0.2.1/32", "10.0.0.1/32"), 3600); // replaces mid 1
    const [m] = await removed;
    const view = store.toScopeJson(m);
    assert.equal(view.status, "attack-mitigation-terminated");
    assert.equal(view.lifetime, 0);
  });

  it("efficacy update without lifetime keeps the granted lifetime", () => {
    store = new MitigationStore();
    store.put("c1", 3, scope("192.0.2.1/32", "10.0.0.1/32"), 900);
    const r = store.put("c1", 3, scope("192.0.2.1/32", "10.0.0.1/32"), undefined, { efficacy: true, attackStatus: 2 });
    assert.equal(r.kind, "efficacy");
    assert.equal(store.get("c1", 3)!.lifetime, 900);
    assert.equal(store.get("c1", 3)!.attackStatus, 2);
  });

  it("a cuid is bound to the peer that created it: another peer gets cuid-collision, also after snapshot/restore", () => {
    store = new MitigationStore();
    store.put("c1", 1, scope("192.0.2.1/32", "10.0.0.1/32"), 3600, { peer: "psk:isp-a" });
    assert.equal(store.put("c1", 2, scope("192.0.2.2/32", "10.0.0.1/32"), 3600, { peer: "psk:isp-b" }).kind, "cuid-collision");
    assert.equal(store.put("c1", 2, scope("192.0.2.2/32", "10.0.0.1/32"), 3600, { peer: "psk:isp-a" }).kind, "created");
    const again = new MitigationStore();
    again.restore(JSON.parse(JSON.stringify(store.snapshot())));
    assert.equal(again.put("c1", 3, scope("192.0.2.3/32", "10.0.0.1/32"), 3600, { peer: "psk:isp-b" }).kind, "cuid-collision");
    again.clear();
  });
});
