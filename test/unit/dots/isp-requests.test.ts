import { strict as assert } from "node:assert";
import {
  DEFAULT_TUNING,
  HomeState,
  IspRequestError,
  efficacyBody,
  isBaseRedirect,
  isHeartbeatPath,
  mitigatePath,
  normalizeMitigationRequest,
  readScopeStatuses,
  redirectBody,
  redirectPath,
  scopeOf,
} from "../../../src/dots/isp-session";

const view = (scope: Record<string, unknown>) => ({ "ietf-dots-signal-channel:mitigation-scope": { scope: [scope] } });

describe("dots/isp-session request builders", () => {
  it("puts cuid before mid as separate Uri-Path segments (RFC 9132 section 4.2)", () => {
    assert.deepEqual(mitigatePath("dz6pHjaADkaFTbjr0JGBpw", 123), [
      ".well-known",
      "dots",
      "mitigate",
      "cuid=dz6pHjaADkaFTbjr0JGBpw",
      "mid=123",
    ]);
    assert.deepEqual(mitigatePath("c"), [".well-known", "dots", "mitigate", "cuid=c"]);
    assert.deepEqual(redirectPath("c", 7), [".well-known", "dots", "redirect", "cuid=c", "mid=7"]);
    assert.ok(isHeartbeatPath([".well-known", "dots", "hb"]));
    assert.ok(!isHeartbeatPath([".well-known", "dots", "hb", "cuid=x"]));
  });

  it("wraps a bare scope and fills the RECOMMENDED lifetime 3600, without touching the caller's object", () => {
    const bare = { "target-prefix": ["198.51.100.7/32"], "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"] };
    const full = normalizeMitigationRequest(bare);
    assert.deepEqual(full, view({ ...bare, lifetime: 3600 }));
    assert.equal((bare as Record<string, unknown>).lifetime, undefined);
    const explicit = normalizeMitigationRequest(view({ "target-prefix": ["2001:db8::1/128"], lifetime: -1 }));
    assert.equal(scopeOf(explicit)?.lifetime, -1);
  });

  it("rejects requests that are not objects or have no mitigation-scope, with a typed error", () => {
    for (const bad of [null, 5, "x", [], { foo: 1 }]) {
      assert.throws(
        () => normalizeMitigationRequest(bad),
        (e: unknown) => e instanceof IspRequestError && e.code === "INVALID_REQUEST",
      );
    }
  });

  it("builds the efficacy update from the original parameters plus attack-status (RFC 9132 section 4.4.3)", () => {
    const original = view({ "target-prefix": ["198.51.100.7/32"], "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"], lifetime: 600 });
    const upd = efficacyBody(original, "under-attack");
    assert.deepEqual(
      upd,
      view({
        "target-prefix": ["198.51.100.7/32"],
        "ietf-dots-call-home:source-prefix": ["203.0.113.9/32"],
        lifetime: 600,
        "attack-status": "under-attack",
      }),
    );
    assert.equal(scopeOf(original)?.["attack-status"], undefined);
  });

  it("builds the Call Home redirect body and validates each field (RFC 9066 section 5.2.2)", () => {
    assert.deepEqual(redirectBody({ altClient: "alt-call-home-client.example", records: ["2001:db8:6401::1", "192.0.2.1"], ttl: 600 }), {
      "ietf-dots-signal-channel:redirected-signal": {
        "ietf-dots-call-home:alt-ch-client": "alt-call-home-client.example",
        "ietf-dots-call-home:alt-ch-client-record": ["2001:db8:6401::1", "192.0.2.1"],
        "ietf-dots-call-home:ttl": 600,
      },
    });
    assert.throws(() => redirectBody({ altClient: "192.0.2.1" }), /alt-ch-client/);
    assert.throws(() => redirectBody({ altClient: "bad name!" }), /alt-ch-client/);
    assert.throws(() => redirectBody({ altClient: "a.example", records: ["not-an-ip"] }), /alt-ch-client-record/);
    assert.throws(() => redirectBody({ altClient: "a.example", ttl: -1 }), /ttl/);
  });

  it("recognises base 5.03 redirects, which Call Home clients discard (R51)", () => {
    assert.ok(isBaseRedirect("5.03", { "ietf-dots-signal-channel:redirected-signal": { "alt-server": "x.example" } }));
    assert.ok(!isBaseRedirect("5.03", "overloaded, retry later"));
    assert.ok(!isBaseRedirect("2.05", { "ietf-dots-signal-channel:redirected-signal": { "alt-server": "x.example" } }));
  });

  it("reads status and conflict-cause from labels or numeric codes", () => {
    const body = {
      "ietf-dots-signal-channel:mitigation-scope": {
        scope: [
          { mid: 5, lifetime: 30, status: "attack-successfully-mitigated" },
          { mid: 6, status: 5 },
          { mid: 7, "conflict-information": { "conflict-cause": 4 } },
        ],
      },
    };
    assert.deepEqual(readScopeStatuses(body), [
      { mid: 5, lifetime: 30, status: "attack-successfully-mitigated" },
      { mid: 6, status: "dots-client-withdrawn-mitigation" },
      { mid: 7, conflictCause: "request-rejected-legitimate-traffic" },
    ]);
    assert.deepEqual(readScopeStatuses("diagnostic"), []);
  });

  it("counts an attack as in progress until withdrawn or expired (R48)", () => {
    const st = new HomeState("psk-x", "home");
    assert.equal(st.attackInProgress(), false);
    st.mitigations.set(1, { mid: 1, cuid: "c", request: {}, lifetime: 10, expiresAt: 10_000, withdrawn: false });
    assert.equal(st.attackInProgress(5_000), true);
    assert.equal(st.attackInProgress(10_000), false);
    assert.deepEqual(st.sweepExpired(10_000), [1]);
    assert.equal(st.mitigations.size, 0);
  });

  it("defaults pace NON repeats at one per 3 s and keep the RFC's 60 s config refresh on (R21, R46)", () => {
    // Without an RTT estimate RFC 9132 section 4.4.1 allows at most one request copy per 3 s.
    assert.ok(DEFAULT_TUNING.nonRepeatMs >= 3000);
    assert.equal(DEFAULT_TUNING.msPerSecond, 1000);
    assert.equal(DEFAULT_TUNING.refreshConfig, true);
    assert.equal(DEFAULT_TUNING.answerHeartbeatsImmediately, false);
  });
});
