import { strict as assert } from "node:assert";
import { pooledRandomBytes } from "../../../src/transport/random-pool";

describe("transport/random-pool", () => {
  it("never hands out the same bytes twice, across many pool refills", () => {
    // 20,000 tokens of 8 bytes span 40 refills of the 4 KiB pool; a repeated or stuck slice shows as a duplicate.
    const seen = new Set<string>();
    for (let i = 0; i < 20_000; i++) {
      const t = pooledRandomBytes(8);
      assert.equal(t.length, 8);
      const hex = t.toString("hex");
      assert.ok(!seen.has(hex), `token ${hex} repeated after ${i} draws`);
      seen.add(hex);
    }
  });

  it("gives each caller its own buffer: changing one leaves the next draws alone", () => {
    const a = pooledRandomBytes(32);
    const copy = Buffer.from(a);
    a.fill(0);
    const b = pooledRandomBytes(32);
    assert.notDeepEqual(b, Buffer.alloc(32), "the next draw is not the zeroes written into the previous one");
    assert.notDeepEqual(copy, b);
  });

  it("bytes are spread over all values (no zeroed or biased pool)", () => {
    const counts = new Array<number>(256).fill(0);
    for (let i = 0; i < 4096; i++) for (const byte of pooledRandomBytes(16)) counts[byte]++;
    // 65,536 bytes: 256 expected per value; a zeroed pool or a stuck byte would put thousands on one value.
    assert.ok(Math.max(...counts) < 400, `most frequent byte value seen ${Math.max(...counts)} times`);
    assert.ok(Math.min(...counts) > 140, `least frequent byte value seen ${Math.min(...counts)} times`);
  });

  it("serves sizes above the pooled limit straight from the CSPRNG", () => {
    const big = pooledRandomBytes(1024);
    assert.equal(big.length, 1024);
    assert.notDeepEqual(big.subarray(0, 64), Buffer.alloc(64));
  });
});
