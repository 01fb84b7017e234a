import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import {
  MID_ROLLOVER,
  MidAllocator,
  MidExhaustedError,
  cuidForSession,
  cuidFromPskIdentity,
  cuidFromSpki,
  isCuidShaped,
  sessionIdForPeer,
} from "../../../src/dots/ids";
import { hasCommand, requireOrSkip } from "../../support/env";

// The reference digest comes from the openssl CLI, not from the code under test.
function opensslSha256(data: Buffer): Buffer {
  const r = spawnSync("openssl", ["dgst", "-sha256", "-binary"], { input: data });
  assert.equal(r.status, 0, String(r.stderr));
  return r.stdout;
}

describe("dots/ids", () => {
  describe("cuid (RFC 9132 section 4.4.1.1)", () => {
    it("is base64url of the first 16 bytes of SHA-256 over the DER SPKI, 22 characters, no padding", function () {
      requireOrSkip(this, "openssl CLI (reference SHA-256)", hasCommand("openssl"));
      const { publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
      const spki = publicKey.export({ type: "spki", format: "der" });
      const expected = opensslSha256(spki).subarray(0, 16).toString("base64url");
      const cuid = cuidFromSpki(spki);
      assert.equal(cuid, expected);
      assert.equal(cuid.length, 22);
      assert.ok(!cuid.includes("="));
      assert.ok(isCuidShaped(cuid));
    });

    it("derives from a PSK identity's bytes", function () {
      requireOrSkip(this, "openssl CLI (reference SHA-256)", hasCommand("openssl"));
      const expected = opensslSha256(Buffer.from("dots-client-1")).subarray(0, 16).toString("base64url");
      assert.equal(cuidFromPskIdentity("dots-client-1"), expected);
      assert.equal(cuidFromPskIdentity(Buffer.from("dots-client-1")), expected);
    });

    it("is stable and differs per identity", () => {
      assert.equal(cuidFromPskIdentity("a"), cuidFromPskIdentity("a"));
      assert.notEqual(cuidFromPskIdentity("a"), cuidFromPskIdentity("b"));
    });

    it("rejects empty inputs with a typed error", () => {
      assert.throws(() => cuidFromSpki(Buffer.alloc(0)), TypeError);
      assert.throws(() => cuidFromPskIdentity(""), TypeError);
    });

    it("prefers a configured identity, then our certificate SPKI, then the PSK identity the home used", () => {
      const spki = generateKeyPairSync("ec", { namedCurve: "prime256v1" }).publicKey.export({ type: "spki", format: "der" });
      const pskPeer = { method: "psk" as const, pskIdentity: "home-7" };
      assert.equal(cuidForSession({ method: "psk" }, pskPeer), cuidFromPskIdentity("home-7"));
      assert.equal(cuidForSession({ method: "psk" }, pskPeer, "isp-1"), cuidFromPskIdentity("isp-1"));
      assert.equal(cuidForSession({ method: "certificate", spki }, { method: "certificate", spki: Buffer.from([1]) }), cuidFromSpki(spki));
      assert.throws(() => cuidForSession({ method: "psk" }, { method: "psk" }), TypeError);
    });
  });

  describe("session ids", () => {
    it("are stable per authenticated identity and distinguish PSK from certificates", () => {
      const a = sessionIdForPeer({ method: "psk", pskIdentity: "home-1" });
      assert.equal(a, sessionIdForPeer({ method: "psk", pskIdentity: "home-1" }));
      assert.notEqual(a, sessionIdForPeer({ method: "psk", pskIdentity: "home-2" }));
      assert.match(a, /^psk-[A-Za-z0-9_-]{22}$/);
      assert.match(sessionIdForPeer({ method: "certificate", spki: Buffer.from("x") }), /^cert-/);
      assert.throws(() => sessionIdForPeer({ method: "certificate" }), TypeError);
    });
  });

  describe("MidAllocator", () => {
    it("increases monotonically per (server, cuid) and independently per pair", () => {
      const m = new MidAllocator();
      assert.deepEqual([m.next("s1", "c"), m.next("s1", "c"), m.next("s1", "c")], [0, 1, 2]);
      assert.equal(m.next("s2", "c"), 0);
      assert.equal(m.next("s1", "d"), 0);
      assert.equal(m.next("s1", "c"), 3);
    });

    it("never hands out an active mid and stays above mids the caller chose", () => {
      const m = new MidAllocator();
      m.note("s", "c", 10);
      assert.equal(m.next("s", "c"), 11);
      m.note("s", "c", 5); // lower: does not move the counter back
      assert.equal(m.next("s", "c", new Set([12, 13])), 14);
    });

    it("rolls over to 0 at 3221225471 when no attack is in progress", () => {
      const m = new MidAllocator(MID_ROLLOVER);
      assert.equal(m.next("s", "c"), MID_ROLLOVER);
      assert.equal(m.next("s", "c"), 0);
    });

    it("keeps increasing past the rollover point while requests are active", () => {
      const m = new MidAllocator(MID_ROLLOVER);
      assert.equal(m.next("s", "c"), MID_ROLLOVER);
      assert.equal(m.next("s", "c", [MID_ROLLOVER]), MID_ROLLOVER + 1);
    });

    it("fails with a typed error when the uint32 space is exhausted during an attack", () => {
      const m = new MidAllocator();
      m.note("s", "c", 0xffffffff);
      assert.throws(() => m.next("s", "c", [1]), MidExhaustedError);
    });

    it("rejects a start or a noted mid outside uint32", () => {
      assert.throws(() => new MidAllocator(-1), RangeError);
      assert.throws(() => new MidAllocator().note("s", "c", 2 ** 32), RangeError);
    });
  });
});
