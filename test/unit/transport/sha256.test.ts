// Our SHA-256 and HMAC-SHA256 (src/transport/dtls/sha256.ts) against the FIPS 180-4 and RFC 4231
// vectors and against node:crypto over seeded random inputs: every length across the block and
// padding boundaries, messages fed in random pieces, forked running hashes, keys longer than a block.
import { strict as assert } from "node:assert";
import { createHash, createHmac } from "node:crypto";
import { HmacSha256, Sha256 } from "../../../src/transport/dtls/sha256";
import { mutator } from "../../support/fuzz";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

describe("transport/dtls SHA-256 and HMAC-SHA256", () => {
  it("matches the FIPS 180-4 examples (abc, the two-block message, a million a's)", () => {
    assert.equal(
      new Sha256().update(Buffer.from("abc")).digest().toString("hex"),
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
    assert.equal(
      new Sha256().update(Buffer.from("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")).digest().toString("hex"),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    );
    const h = new Sha256();
    const chunk = Buffer.alloc(1000, "a");
    for (let i = 0; i < 1000; i++) h.update(chunk);
    assert.equal(h.digest().toString("hex"), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    assert.equal(new Sha256().digest().toString("hex"), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  });

  it("matches RFC 4231 HMAC-SHA256 test cases 1, 2 and 6 (a 131-byte key)", () => {
    const mac = (key: Buffer, data: Buffer): string => hex(new HmacSha256(key).mac([data]));
    assert.equal(mac(Buffer.alloc(20, 0x0b), Buffer.from("Hi There")), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    assert.equal(
      mac(Buffer.from("Jefe"), Buffer.from("what do ya want for nothing?")),
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    );
    assert.equal(
      mac(Buffer.alloc(131, 0xaa), Buffer.from("Test Using Larger Than Block-Size Key - Hash Key First")),
      "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    );
  });

  it("equals node:crypto over 3,000 seeded inputs of every length to 300 bytes, fed in random pieces, and forks", () => {
    const m = mutator(20241205);
    const shared = new HmacSha256(Buffer.alloc(0));
    for (let i = 0; i < 3000; i++) {
      const len = i % 301;
      const data = Buffer.alloc(len);
      for (let j = 0; j < len; j++) data[j] = m.int(256);
      const h = new Sha256();
      let at = 0;
      while (at < len) {
        const step = Math.min(len - at, 1 + m.int(80));
        h.update(data, at, at + step);
        at += step;
      }
      const fork = new Sha256().copyFrom(h);
      const want = createHash("sha256").update(data).digest("hex");
      assert.equal(h.digest().toString("hex"), want, `length ${len}`);
      fork.update(Buffer.from([1, 2, 3]));
      assert.equal(
        fork.digest().toString("hex"),
        createHash("sha256")
          .update(data)
          .update(Buffer.from([1, 2, 3]))
          .digest("hex"),
      );
      const key = Buffer.alloc(m.int(150));
      for (let j = 0; j < key.length; j++) key[j] = m.int(256);
      const hmac = new HmacSha256(key);
      const cut = m.int(len + 1);
      assert.equal(hex(hmac.mac([data.subarray(0, cut), data.subarray(cut)])), createHmac("sha256", key).update(data).digest("hex"));
      // the same key object serves the next MAC unchanged, and a re-keyed one forgets the old key
      assert.equal(hex(hmac.mac([data])), createHmac("sha256", key).update(data).digest("hex"));
      const other = Buffer.from(key.map((b) => b ^ 0x5a));
      assert.equal(hex(shared.rekey(other).mac([data])), createHmac("sha256", other).update(data).digest("hex"));
    }
  });

  it("wipe() leaves no key-derived state behind", () => {
    const hmac = new HmacSha256(Buffer.alloc(32, 7));
    hmac.wipe();
    const internals = hmac as unknown as Record<"inner" | "outer", { state: Int32Array; block: Uint8Array }>;
    for (const h of [internals.inner, internals.outer]) {
      assert.ok(h.state.every((w) => w === 0));
      assert.ok(h.block.every((b) => b === 0));
    }
  });
});
